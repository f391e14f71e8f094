//! `sprout serve`: the OpenAI-compatible HTTP server over the continuous-batching engine.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use sprout_engine::engine::Engine;
use sprout_engine::kv::KvPool;
use sprout_engine::scheduler::{Fault, SchedulerConfig};
use sprout_server::{CatalogSource, LoadedModel, ServerConfig};

use crate::model_arg::ModelArgs;

/// `sprout serve [--model M] [--host H] [--port P] ...`; flags override the config file.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A TOML config file (keys as in ServerConfig: host, port, max_concurrent, ...).
    #[arg(long, env = "SPROUT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "SPROUT_HOST")]
    pub host: Option<String>,
    /// Port to listen on.
    #[arg(long, env = "SPROUT_PORT")]
    pub port: Option<u16>,
    /// Bearer key required on /v1 routes.
    #[arg(long, env = "SPROUT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// File holding the API key (first line).
    #[arg(long, env = "SPROUT_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Allowed CORS origin ("*" for any); repeatable.
    #[arg(long = "cors-origin")]
    pub cors_origins: Vec<String>,
    /// Largest request body in bytes.
    #[arg(long)]
    pub body_limit_bytes: Option<usize>,
    /// Requests generating at once.
    #[arg(long, env = "SPROUT_MAX_CONCURRENT")]
    pub max_concurrent: Option<usize>,
    /// Requests queued beyond those before answering 429.
    #[arg(long, env = "SPROUT_MAX_QUEUE")]
    pub max_queue: Option<usize>,
    /// Per-request generation time limit in milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Tokens per engine step (decode tokens plus prompt chunks).
    #[arg(long)]
    pub step_tokens: Option<usize>,
    /// Disable the prefix cache.
    #[arg(long)]
    pub no_prefix_cache: bool,
    /// Sample a grammar's forced text token by token instead of appending it (for comparison).
    #[arg(long)]
    pub no_jump_forward: bool,
    /// Where Leafresh descriptions come from: `catalog` (default) or `generated` by the model
    /// (an experiment, to compare with `sprout eval leafresh`).
    #[arg(long, value_name = "catalog|generated")]
    pub leafresh_descriptions: Option<sprout_server::config::DescriptionSource>,
    /// Serve a catalog file (JSONL, JSON or CSV) as NAME, beside the built-in `eco` and the
    /// ingested ones; repeatable; replaces a config file's catalog of the same name.
    #[arg(long = "catalog", value_name = "NAME=FILE")]
    pub catalogs: Vec<CatalogSource>,
    /// The sentence embedder for /v1/embeddings and dense retrieval: a pulled name or a
    /// sentence-transformers directory (pulled on first use).
    #[arg(long, env = "SPROUT_EMBEDDER", default_value = "embeddinggemma")]
    pub embedder: String,
    /// Serve without an embedder (BM25-only retrieval, no /v1/embeddings).
    #[arg(long)]
    pub no_embedder: bool,
    /// Test hook: `step:N` panics inside engine step N, `outside:N` after it.
    #[arg(long, hide = true)]
    pub inject_fault: Option<String>,
}

/// Parses `--inject-fault`.
fn fault(spec: &str) -> Result<Fault> {
    let (kind, n) = spec
        .split_once(':')
        .context("--inject-fault takes step:N or outside:N")?;
    let at_step: u64 = n.parse().context("--inject-fault: N is a step number")?;
    match kind {
        "step" => Ok(Fault::PanicInStep { at_step }),
        "outside" => Ok(Fault::PanicOutsideStep { at_step }),
        _ => anyhow::bail!("--inject-fault takes step:N or outside:N"),
    }
}

/// Fraction of available memory the KV cache may take when --kv-tokens is not given.
const KV_MEMORY_FRACTION: f64 = 0.25;

/// Bytes of memory available now (Linux), if known.
fn mem_available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// KV tokens to reserve: the flag, or a share of available memory, capped at every concurrent
/// request holding a full context.
pub fn kv_budget_tokens(
    explicit: Option<usize>,
    bytes_per_token: usize,
    context: usize,
    max_concurrent: usize,
) -> usize {
    if let Some(t) = explicit {
        return t.max(1);
    }
    let cap = context.saturating_mul(max_concurrent.max(1));
    match mem_available_bytes() {
        Some(mem) => (((mem as f64 * KV_MEMORY_FRACTION) as usize) / bytes_per_token.max(1))
            .clamp(1024.min(cap), cap),
        None => context.min(8192),
    }
}

/// Runs `sprout serve` until Ctrl-C or SIGTERM.
pub fn run(args: ServeArgs) -> Result<()> {
    let mut cfg = match &args.config {
        Some(p) => ServerConfig::from_toml_file(p)?,
        None => ServerConfig::default(),
    };
    if let Some(v) = args.host.clone() {
        cfg.host = v;
    }
    if let Some(v) = args.port {
        cfg.port = v;
    }
    if let Some(p) = &args.api_key_file {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        cfg.api_key = text
            .lines()
            .next()
            .map(|l| l.trim().to_string())
            .filter(|k| !k.is_empty());
        anyhow::ensure!(cfg.api_key.is_some(), "{} holds no key", p.display());
    }
    if let Some(v) = args.api_key.clone() {
        cfg.api_key = Some(v);
    }
    if !args.cors_origins.is_empty() {
        cfg.cors_allow_origins = args.cors_origins.clone();
    }
    macro_rules! set {
        ($($field:ident = $value:expr),*) => { $(if let Some(v) = $value { cfg.$field = v; })* };
    }
    set!(
        body_limit_bytes = args.body_limit_bytes,
        max_concurrent = args.max_concurrent,
        max_queue = args.max_queue,
        request_timeout_ms = args.timeout_ms,
        step_tokens = args.step_tokens,
        leafresh_descriptions = args.leafresh_descriptions
    );
    if args.no_prefix_cache {
        cfg.prefix_cache = false;
    }
    if args.no_jump_forward {
        cfg.jump_forward = false;
    }
    for source in &args.catalogs {
        cfg.catalogs.retain(|c| c.name != source.name);
        cfg.catalogs.push(source.clone());
    }
    // One data directory for models and catalogs: --home / SPROUT_HOME, else the config's
    // data_dir, else sprout's default.
    let mut model_args = args.model.clone();
    if model_args.home.is_none() {
        model_args.home = cfg.data_dir.clone();
    }
    cfg.data_dir = Some(model_args.data_dir());
    if !args.no_embedder {
        let dir = crate::model_arg::resolve_model(&args.embedder, &model_args.data_dir())
            .with_context(|| format!("the embedder {:?} (or pass --no-embedder)", args.embedder))?;
        cfg.embedder = Some(dir);
    }
    let sched = SchedulerConfig {
        max_running_seqs: cfg.max_concurrent.max(1),
        step_tokens: cfg.step_tokens.max(1),
        prefix_cache: cfg.prefix_cache,
        fault: args.inject_fault.as_deref().map(fault).transpose()?,
    };
    let max_concurrent = cfg.max_concurrent;
    let load = Box::new(move || -> Result<LoadedModel> {
        let path = model_args.resolve()?;
        let bundle = model_args.load()?;
        let c = &bundle.model.config;
        let bytes_per_token = KvPool::bytes_per_token(c.n_layers, c.kv_dim());
        let mut ecfg = model_args.engine_config(c.context_tokens);
        ecfg.kv_capacity_tokens = kv_budget_tokens(
            model_args.kv_tokens,
            bytes_per_token,
            c.context_tokens,
            max_concurrent,
        );
        eprintln!(
            "KV cache: {} tokens in blocks of {} = {:.0} MiB ({} bytes/token); context {} tokens",
            ecfg.kv_capacity_tokens,
            ecfg.kv_block_tokens,
            (ecfg.kv_capacity_tokens * bytes_per_token) as f64 / (1 << 20) as f64,
            bytes_per_token,
            c.context_tokens
        );
        let mut names = Vec::new();
        if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
            names.push(stem.to_string());
        }
        names.extend([model_args.model.clone(), "default".to_string()]);
        names.dedup();
        Ok(LoadedModel {
            names,
            engine: Engine::new(bundle.model, &ecfg),
            prompt: bundle.prompt,
        })
    });
    sprout_server::run_blocking(cfg, sched, load)
}
