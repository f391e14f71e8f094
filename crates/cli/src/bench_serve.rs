//! `sprout bench serve`: load-tests an OpenAI-compatible server (sprout or llama-server).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use sprout_server::bench::{self, BenchOptions};

/// `sprout bench serve --url U -n N -c C [--rate R | --duration S] ...`.
#[derive(Args, Debug)]
pub struct BenchServeArgs {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    pub url: String,
    /// Model name sent in requests.
    #[arg(long, default_value = "default")]
    pub model: String,
    /// Bearer key.
    #[arg(long, env = "SPROUT_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Requests in all.
    #[arg(short = 'n', long, default_value_t = 32)]
    pub requests: usize,
    /// Concurrent clients (closed loop).
    #[arg(short = 'c', long, default_value_t = 8)]
    pub concurrency: usize,
    /// Open loop: Poisson arrivals at this many requests per second.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Run for this many seconds instead of -n requests.
    #[arg(long)]
    pub duration: Option<f64>,
    /// max_tokens per request.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Non-streaming requests (TTFT and inter-token latency are then unknown).
    #[arg(long)]
    pub no_stream: bool,
    /// Send ignore_eos so every request generates max_tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Prompts from a JSONL file: one {"prompt": "..."} (or a JSON string) per line.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Print the report as JSON instead of a Markdown table.
    #[arg(long)]
    pub json: bool,
}

fn load_prompts(path: &PathBuf) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), i + 1))?;
        let p = v
            .as_str()
            .or_else(|| v["prompt"].as_str())
            .with_context(|| format!("{}:{}: no prompt", path.display(), i + 1))?;
        out.push(p.to_string());
    }
    anyhow::ensure!(!out.is_empty(), "{} holds no prompts", path.display());
    Ok(out)
}

/// Runs the load test and prints the report.
pub fn run(args: BenchServeArgs) -> Result<()> {
    let prompts = match &args.prompts {
        Some(p) => load_prompts(p)?,
        None => bench::BUILTIN_PROMPTS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let opts = BenchOptions {
        url: args.url,
        model: args.model,
        api_key: args.api_key,
        requests: args.requests,
        concurrency: args.concurrency,
        rate: args.rate,
        duration: args.duration.map(Duration::from_secs_f64),
        max_tokens: args.max_tokens,
        stream: !args.no_stream,
        ignore_eos: args.ignore_eos,
        prompts,
    };
    let rt = tokio_runtime()?;
    // The progress line only where someone watches it (not into logs or pipes).
    let progress = !args.json && std::io::stderr().is_terminal();
    let report = rt
        .block_on(bench::run(opts, progress))
        .context("building the HTTP client")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", bench::markdown(&report));
    }
    Ok(())
}

fn tokio_runtime() -> Result<sprout_server::bench::Runtime> {
    Ok(sprout_server::bench::runtime()?)
}
