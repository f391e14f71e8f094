//! Sentence embeddings on sprout's own engine: a sentence-transformers directory (a Hugging
//! Face text model, e.g. EmbeddingGemma's bidirectional Gemma 3 or all-MiniLM-L6-v2's BERT,
//! then its pooling, optional Dense projections and normalization, as `modules.json` lists
//! them) run through the same kernels and batched step as generation. Many texts go through one
//! forward pass; each text's vector is the mean of its tokens' final hidden states, projected,
//! L2-normalized. Task prompts are the model's own (`config_sentence_transformers.json`).

use std::path::{Path, PathBuf};

use crate::engine::{Engine, EngineConfig};
use crate::model::load::load_source;
use crate::model::Model;
use crate::quant::matmul::matmul;
use crate::quant::{GgmlType, WeightMatrix};
use crate::tokenizer::Tokenizer;
use crate::{EngineError, Result};

/// What a text is embedded as: the model's prompt for the task is prepended to the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// A search query: `task: search result | query: `.
    Query,
    /// A document to be found: `title: none | text: `.
    Document,
    /// Sentence similarity: `task: sentence similarity | query: `.
    Similarity,
    /// The text as given.
    Raw,
}

impl Task {
    /// EmbeddingGemma's prompt for the task (what a model directory without
    /// `config_sentence_transformers.json` gets).
    pub fn prefix(self) -> &'static str {
        match self {
            Task::Query => "task: search result | query: ",
            Task::Document => "title: none | text: ",
            Task::Similarity => "task: sentence similarity | query: ",
            Task::Raw => "",
        }
    }
}

/// How to load an embedding model.
#[derive(Debug, Clone, Default)]
pub struct EmbedOptions {
    /// Quantize the transformer's matrices on load (Q8_0 or Q4_K); None keeps the file's type.
    pub quantize: Option<GgmlType>,
    /// Kernel threads (None: all cores).
    pub threads: Option<usize>,
}

/// Tokens one batched step takes at most; larger batches are split.
const STEP_TOKENS: usize = 4096;

/// A loaded sentence embedder.
pub struct EmbeddingModel {
    engine: Engine,
    tokenizer: Tokenizer,
    /// Dense projections applied in order after pooling.
    dense: Vec<WeightMatrix>,
    dim: usize,
    max_tokens: usize,
    /// Special tokens before and after every input ([CLS] … [SEP], <bos> … <eos>).
    before: Vec<u32>,
    after: Vec<u32>,
    /// The prompts of [`Task::Query`], [`Task::Document`] and [`Task::Similarity`].
    prompts: [String; 3],
    id: String,
}

/// Reads one Dense module's weight (`linear.weight`, out × in, no bias, identity activation).
fn load_dense(dir: &Path) -> Result<WeightMatrix> {
    let cfg_path = dir.join("config.json");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).map_err(|e| io(&cfg_path, e))?)
            .map_err(|e| EngineError::invalid(format!("{}: {e}", cfg_path.display())))?;
    let act = cfg
        .get("activation_function")
        .and_then(|a| a.as_str())
        .unwrap_or("torch.nn.modules.linear.Identity");
    if !act.ends_with("Identity") || cfg.get("bias").and_then(|b| b.as_bool()) == Some(true) {
        return Err(EngineError::Unsupported(format!(
            "{}: only Dense layers without bias and activation are supported (got {act})",
            cfg_path.display()
        )));
    }
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| EngineError::invalid(format!("{}: {e}", path.display())))?;
    let t = st
        .tensor("linear.weight")
        .map_err(|e| EngineError::invalid(format!("{}: {e}", path.display())))?;
    let [rows, cols] = t.shape() else {
        return Err(EngineError::invalid(format!(
            "{}: linear.weight is not 2-D",
            path.display()
        )));
    };
    if t.dtype() != safetensors::Dtype::F32 {
        return Err(EngineError::Unsupported(format!(
            "{}: Dense weights must be F32",
            path.display()
        )));
    }
    WeightMatrix::new(GgmlType::F32, *rows, *cols, t.data().to_vec().into())
}

fn io(path: &Path, e: std::io::Error) -> EngineError {
    EngineError::invalid(format!("{}: {e}", path.display()))
}

impl EmbeddingModel {
    /// Loads a sentence-transformers directory (config.json, tokenizer.json,
    /// model.safetensors, modules.json with Pooling (mean), Dense and Normalize modules).
    pub fn open(dir: &Path, opts: &EmbedOptions) -> Result<Self> {
        let modules_path = dir.join("modules.json");
        let modules: Vec<serde_json::Value> = serde_json::from_str(
            &std::fs::read_to_string(&modules_path).map_err(|e| io(&modules_path, e))?,
        )
        .map_err(|e| EngineError::invalid(format!("{}: {e}", modules_path.display())))?;
        let mut dense = Vec::new();
        let mut normalize = false;
        for m in &modules {
            let kind = m.get("type").and_then(|t| t.as_str()).unwrap_or("");
            let sub = dir.join(m.get("path").and_then(|p| p.as_str()).unwrap_or(""));
            match kind.rsplit('.').next().unwrap_or("") {
                "Transformer" => {}
                "Pooling" => check_mean_pooling(&sub)?,
                "Dense" => dense.push(load_dense(&sub)?),
                "Normalize" => normalize = true,
                other => {
                    return Err(EngineError::Unsupported(format!(
                        "sentence-transformers module {other} in {}",
                        modules_path.display()
                    )))
                }
            }
        }
        if !normalize {
            return Err(EngineError::Unsupported(
                "embedding models without a Normalize module".into(),
            ));
        }
        let source = load_source(dir, None, opts.quantize)?;
        let model = Model::load(&source)?;
        let c = &model.config;
        let mut width = c.d_model;
        for d in &dense {
            if d.cols != width {
                return Err(EngineError::invalid(format!(
                    "a Dense layer takes {} features after {width}",
                    d.cols
                )));
            }
            width = d.rows;
        }
        let max_tokens = sentence_max_tokens(dir)
            .unwrap_or(512)
            .min(c.context_tokens);
        let mut cfg = EngineConfig {
            // One step's inputs, each rounded up to whole blocks, or one longest input.
            kv_capacity_tokens: STEP_TOKENS.max(max_tokens + 16),
            ..Default::default()
        };
        if let Some(t) = opts.threads {
            cfg.threads = t.max(1);
        }
        let tok_cfg = dir.join("tokenizer_config.json");
        let tokenizer = Tokenizer::from_file(
            &dir.join("tokenizer.json"),
            tok_cfg.exists().then_some(tok_cfg.as_path()),
        )?;
        // The post-processor's template says what surrounds an input (BERT has no BOS/EOS);
        // without one, BOS and EOS as tokenizer_config.json names them.
        let (before, after) = match tokenizer.single_input_affixes() {
            Some((b, a)) => (b.to_vec(), a.to_vec()),
            None => (
                tokenizer.bos_id().into_iter().collect(),
                tokenizer.eos_id().into_iter().collect(),
            ),
        };
        if before.len() + after.len() >= max_tokens {
            return Err(EngineError::invalid(format!(
                "{}: {max_tokens} tokens leave no room for text",
                dir.display()
            )));
        }
        let id = format!(
            "{}@{}",
            dir.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("embedder"),
            opts.quantize.map_or("file", |q| q.name())
        );
        Ok(Self {
            before,
            after,
            prompts: task_prompts(dir)?,
            engine: Engine::new(model, &cfg),
            tokenizer,
            dense,
            dim: width,
            max_tokens,
            id,
        })
    }

    /// Width of the vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Identifies the model and its weight type (indexes built with another are rebuilt).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Longest input in tokens (longer ones are cut).
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The prompt this model puts before a text embedded as `task` (may be empty).
    pub fn prompt(&self, task: Task) -> &str {
        match task {
            Task::Query => &self.prompts[0],
            Task::Document => &self.prompts[1],
            Task::Similarity => &self.prompts[2],
            Task::Raw => "",
        }
    }

    /// The token ids of `text` as the model reads it: the leading special tokens (BOS,
    /// [CLS]), the task prompt and text, the trailing ones (EOS, [SEP]), cut to `max_tokens`
    /// (keeping the trailing ones).
    pub fn tokenize(&self, text: &str, task: Task) -> Vec<u32> {
        let mut ids = Vec::with_capacity(text.len() / 2 + 4);
        ids.extend_from_slice(&self.before);
        ids.extend(
            self.tokenizer
                .encode(&format!("{}{text}", self.prompt(task)), false),
        );
        ids.truncate(self.max_tokens - self.after.len());
        ids.extend_from_slice(&self.after);
        ids
    }

    /// Embeds texts as `task`, batched; vectors are L2-normalized, `dim()` wide.
    pub fn embed(&mut self, texts: &[&str], task: Task) -> Result<Vec<Vec<f32>>> {
        let inputs: Vec<Vec<u32>> = texts.iter().map(|t| self.tokenize(t, task)).collect();
        self.embed_tokens(&inputs)
    }

    /// Embeds already tokenized inputs (each a whole input with its special tokens).
    pub fn embed_tokens(&mut self, inputs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(inputs.len());
        let mut start = 0;
        while start < inputs.len() {
            // As many inputs as fit one step's token budget (at least one).
            // Counted in whole KV blocks, as the engine allocates them.
            let bt = self.engine.kv().block_tokens();
            let cost = |n: usize| n.div_ceil(bt) * bt;
            let mut end = start + 1;
            let mut tokens = cost(inputs[start].len());
            while end < inputs.len() && tokens + cost(inputs[end].len()) <= STEP_TOKENS {
                tokens += cost(inputs[end].len());
                end += 1;
            }
            let batch: Vec<&[u32]> = inputs[start..end].iter().map(Vec::as_slice).collect();
            if batch
                .iter()
                .any(|b| b.is_empty() || b.len() > self.max_tokens)
            {
                return Err(EngineError::InvalidRequest(format!(
                    "an embedding input must hold 1 to {} tokens",
                    self.max_tokens
                )));
            }
            let pooled = self.engine.pooled_hidden(&batch)?;
            out.extend(self.project(pooled));
            start = end;
        }
        Ok(out)
    }

    /// The Dense projections over all pooled rows at once, then L2 normalization.
    fn project(&self, pooled: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
        let n = pooled.len();
        let mut x: Vec<f32> = pooled.into_iter().flatten().collect();
        for w in &self.dense {
            let mut y = vec![0.0; n * w.rows];
            matmul(self.engine.thread_pool(), w, &x, n, &mut y);
            x = y;
        }
        x.chunks_exact(self.dim)
            .map(|row| {
                let norm = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
                let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
                row.iter().map(|v| (*v as f64 * inv) as f32).collect()
            })
            .collect()
    }
}

/// Refuses pooling other than the mean over all tokens.
fn check_mean_pooling(dir: &Path) -> Result<()> {
    let path = dir.join("config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(()); // sentence-transformers' default pooling is the mean
    };
    let cfg: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| EngineError::invalid(format!("{}: {e}", path.display())))?;
    let mean = cfg
        .get("pooling_mode_mean_tokens")
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    let others = [
        "pooling_mode_cls_token",
        "pooling_mode_max_tokens",
        "pooling_mode_mean_sqrt_len_tokens",
        "pooling_mode_lasttoken",
        "pooling_mode_weightedmean_tokens",
    ]
    .iter()
    .any(|k| cfg.get(*k).and_then(|v| v.as_bool()) == Some(true));
    if !mean || others {
        return Err(EngineError::Unsupported(format!(
            "{}: only mean pooling is supported",
            path.display()
        )));
    }
    Ok(())
}

/// The query, document and similarity prompts of `config_sentence_transformers.json`
/// (`prompts.query`, `prompts.document`, `prompts.STS`; a missing one is empty). Without the
/// file, EmbeddingGemma's ([`Task::prefix`]).
fn task_prompts(dir: &Path) -> Result<[String; 3]> {
    let path = dir.join("config_sentence_transformers.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok([Task::Query, Task::Document, Task::Similarity].map(|t| t.prefix().into()));
    };
    let cfg: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| EngineError::invalid(format!("{}: {e}", path.display())))?;
    let prompt = |name: &str| {
        cfg.get("prompts")
            .and_then(|p| p.get(name))
            .and_then(|p| p.as_str())
            .unwrap_or("")
            .to_string()
    };
    Ok([prompt("query"), prompt("document"), prompt("STS")])
}

/// `max_seq_length` of sentence_bert_config.json.
fn sentence_max_tokens(dir: &Path) -> Option<usize> {
    let text =
        std::fs::read_to_string(PathBuf::from(dir).join("sentence_bert_config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("max_seq_length")?.as_u64().map(|n| n as usize)
}
