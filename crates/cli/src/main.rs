//! The `sprout` command line: one binary for pulling models, generating, chatting,
//! measuring and serving.

mod bench_engine;
mod bench_serve;
mod bench_structured;
mod catalog;
mod doctor;
mod eval;
mod generate;
mod model_arg;
mod perplexity;
mod progress;
mod pull;
mod serve;
mod tokenize;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// sprout: a grounded recommendation chatbot server on open-weight LLMs, with its own engine.
#[derive(Parser, Debug)]
#[command(name = "sprout", version, about, propagate_version = true)]
struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info` or `sprout=debug` (default: info
    /// for serve, warn otherwise).
    #[arg(long, env = "SPROUT_LOG", global = true)]
    log: Option<String>,
    /// Log format: text or json (one object per line).
    #[arg(long, env = "SPROUT_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"], global = true)]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the OpenAI-compatible HTTP API (pulls the default model on first use).
    Serve(Box<serve::ServeArgs>),
    /// Download a model from the registry (default: the default chat model), verify it, store it.
    Pull(pull_cmd::PullArgs),
    /// List the models on this machine and the ones that can be pulled.
    Models(pull_cmd::ModelsArgs),
    /// Generate a completion for one prompt.
    Generate(generate::GenerateArgs),
    /// Chat interactively in the terminal, streaming the answers.
    Chat(generate::ChatArgs),
    /// Print the token ids of a text (no BOS or other special tokens added).
    Tokenize(tokenize::TokenizeArgs),
    /// Measure a model's perplexity on a text file, as llama.cpp's llama-perplexity does.
    Perplexity(perplexity::PerplexityArgs),
    /// Manage the catalogs sprout recommends from: ingest, list, show, search.
    Catalog(catalog::CatalogArgs),
    /// Score a running server on a case file (the Leafresh API).
    Eval(eval::EvalArgs),
    /// Check this machine for sprout: CPU features and kernels, threads, memory, data dir,
    /// models (sha256 against the registry) and catalogs, with the command fixing each problem.
    Doctor(doctor::DoctorArgs),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Engine speed: prefill, decode and batched decode tokens/s, like llama-bench.
    Engine(bench_engine::BenchEngineArgs),
    /// Load test an OpenAI-compatible server (sprout's or any other): TTFT, inter-token latency, percentiles.
    Serve(bench_serve::BenchServeArgs),
    /// Structured output: time per answer with jump-forward on vs off, mask cost at batch 8.
    Structured(bench_structured::BenchStructuredArgs),
}

mod pull_cmd {
    //! Arguments of `sprout pull` and `sprout models`.
    use std::path::PathBuf;

    use anyhow::{bail, Result};
    use clap::Args;
    use sprout_engine::registry;

    /// `sprout pull [NAME]`.
    #[derive(Args, Debug)]
    pub struct PullArgs {
        /// Registry model name or alias (see `sprout models`).
        #[arg(default_value = "default")]
        pub name: String,
        /// sprout's data directory.
        #[arg(long, env = "SPROUT_HOME")]
        pub home: Option<PathBuf>,
        /// No progress output.
        #[arg(long, short)]
        pub quiet: bool,
    }

    /// `sprout models`.
    #[derive(Args, Debug)]
    pub struct ModelsArgs {
        /// sprout's data directory.
        #[arg(long, env = "SPROUT_HOME")]
        pub home: Option<PathBuf>,
    }

    pub fn pull(args: PullArgs) -> Result<()> {
        let Some(entry) = registry::find(&args.name) else {
            let known: Vec<_> = registry::MODELS.iter().map(|m| m.name).collect();
            bail!(
                "unknown model {}: known models are {} (`sprout models` describes them)",
                args.name,
                known.join(", ")
            );
        };
        let path = crate::pull::pull(
            entry,
            &registry::data_dir(args.home.as_deref()),
            !args.quiet,
        )?;
        println!("{}", path.display());
        Ok(())
    }

    pub fn models(args: ModelsArgs) -> Result<()> {
        let dir = registry::data_dir(args.home.as_deref());
        let local = crate::pull::list_local(&dir);
        println!("local models in {}:", registry::models_dir(&dir).display());
        if local.is_empty() {
            println!("  (none)");
        }
        for (name, path, bytes) in &local {
            println!(
                "  {name:<40} {:>8.1} MB  {}",
                *bytes as f64 / 1e6,
                path.display()
            );
        }
        println!("available to pull:");
        for m in registry::MODELS {
            println!(
                "  {:<40} {:>8.1} MB  {}",
                m.name,
                m.total_bytes() as f64 / 1e6,
                m.summary
            );
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    // A .env file in the working directory fills in SPROUT_* variables the environment lacks.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = cli.log.as_deref().unwrap_or(default_level);
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| default_level.into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    match cli.command {
        Command::Serve(a) => serve::run(*a),
        Command::Eval(a) => eval::run(a),
        Command::Bench {
            what: BenchCommand::Serve(a),
        } => bench_serve::run(a),
        Command::Pull(a) => pull_cmd::pull(a),
        Command::Models(a) => pull_cmd::models(a),
        Command::Generate(a) => generate::generate(a),
        Command::Chat(a) => generate::chat(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Catalog(a) => catalog::run(a),
        Command::Doctor(a) => doctor::run(a),
        Command::Bench {
            what: BenchCommand::Engine(a),
        } => bench_engine::run(a),
        Command::Bench {
            what: BenchCommand::Structured(a),
        } => bench_structured::run(a),
    }
}
