//! `--model` and friends: turning a model name, GGUF path or Hugging Face directory into a
//! loaded [`ModelBundle`], pulling registry models on first use.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use sprout_engine::bundle::{LoadOptions, ModelBundle, PromptFormat};
use sprout_engine::engine::{Engine, EngineConfig};
use sprout_engine::quant::GgmlType;
use sprout_engine::registry;

/// Options shared by every command that loads a model.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A pulled model name (see `sprout models`), a .gguf file, or a Hugging Face directory
    /// (config.json + tokenizer.json + *.safetensors).
    #[arg(long, short = 'm', env = "SPROUT_MODEL", default_value = "default")]
    pub model: String,
    /// Convert float weights of a safetensors model: f32, f16 or bf16.
    #[arg(long, env = "SPROUT_DTYPE")]
    pub dtype: Option<String>,
    /// Quantize weights on load: q8_0 or q4_k.
    #[arg(long, env = "SPROUT_QUANTIZE")]
    pub quantize: Option<String>,
    /// A Jinja chat template file, or a built-in template name (chatml, mistral).
    #[arg(long, env = "SPROUT_CHAT_TEMPLATE")]
    pub chat_template: Option<String>,
    /// Kernel threads (default: all cores).
    #[arg(long, short = 't', env = "SPROUT_THREADS")]
    pub threads: Option<usize>,
    /// Tokens of KV cache to reserve across all sequences (default: the model's context).
    #[arg(long, env = "SPROUT_KV_TOKENS")]
    pub kv_tokens: Option<usize>,
    /// sprout's data directory (models live in <home>/models).
    #[arg(long, env = "SPROUT_HOME")]
    pub home: Option<PathBuf>,
}

impl ModelArgs {
    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        registry::data_dir(self.home.as_deref())
    }

    /// Resolves `--model` to a path, pulling a registry model that is not on disk yet.
    pub fn resolve(&self) -> Result<PathBuf> {
        resolve_model(&self.model, &self.data_dir())
    }

    /// Loads the model with its tokenizer and chat template.
    pub fn load(&self) -> Result<ModelBundle> {
        let path = self.resolve()?;
        let parse =
            |flag: &str, v: &Option<String>, allowed: &[GgmlType]| -> Result<Option<GgmlType>> {
                let Some(v) = v else { return Ok(None) };
                match GgmlType::from_name(v).filter(|t| allowed.contains(t)) {
                    Some(t) => Ok(Some(t)),
                    None => {
                        let names: Vec<_> = allowed.iter().map(|t| t.name()).collect();
                        bail!("--{flag} {v}: expected one of {}", names.join(", "))
                    }
                }
            };
        let opts = LoadOptions {
            dtype: parse(
                "dtype",
                &self.dtype,
                &[GgmlType::F32, GgmlType::F16, GgmlType::BF16],
            )?,
            quantize: parse("quantize", &self.quantize, &[GgmlType::Q8_0, GgmlType::Q4K])?,
            chat_template: self.chat_template.clone(),
        };
        let started = std::time::Instant::now();
        let bundle = ModelBundle::open(&path, &opts)
            .with_context(|| format!("loading {}", path.display()))?;
        tracing::info!(path = %path.display(), ms = started.elapsed().as_millis() as u64, "model loaded");
        Ok(bundle)
    }

    /// An engine over the bundle's model, with its KV cache sized from the flags.
    pub fn engine_config(&self, context_tokens: usize) -> EngineConfig {
        let mut cfg = EngineConfig::default();
        if let Some(t) = self.threads {
            cfg.threads = t.max(1);
        }
        cfg.kv_capacity_tokens = self.kv_tokens.unwrap_or(context_tokens.min(8192));
        cfg
    }

    /// Loads the model and builds an engine for it, returning the tokenizer and template beside it.
    pub fn load_engine(&self) -> Result<(PromptFormat, Engine)> {
        let ModelBundle { model, prompt, .. } = self.load()?;
        let cfg = self.engine_config(model.config.context_tokens);
        Ok((prompt, Engine::new(model, &cfg)))
    }
}

/// A path that exists is used as is; otherwise the name is looked up in the registry and
/// pulled if missing.
pub fn resolve_model(spec: &str, data_dir: &Path) -> Result<PathBuf> {
    let as_path = Path::new(spec);
    if as_path.exists() {
        return Ok(as_path.to_path_buf());
    }
    if let Some(entry) = registry::find(spec) {
        let path = entry.path_in(data_dir);
        if path.exists() {
            return Ok(path);
        }
        eprintln!(
            "model {} is not on this machine yet: pulling it ({} MB)",
            entry.name,
            entry.total_bytes() / 1_000_000
        );
        return crate::pull::pull(entry, data_dir, true);
    }
    if spec.ends_with(".gguf") || spec.contains(std::path::MAIN_SEPARATOR) && !spec.contains('/') {
        bail!("model file {spec} does not exist");
    }
    if spec.split('/').count() == 2 && !spec.starts_with('.') && !spec.starts_with('/') {
        bail!(
            "{spec} looks like a Hugging Face hub id, but this build has no hub access; download the \
             directory (config.json, tokenizer.json, *.safetensors) and pass its path"
        );
    }
    let known: Vec<_> = registry::MODELS.iter().map(|m| m.name).collect();
    bail!(
        "unknown model {spec}: not a file or directory, and not one of {}",
        known.join(", ")
    )
}
