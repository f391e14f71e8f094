//! `sprout bench serve`: load-tests an OpenAI-compatible server (sprout or llama-server), at one
//! concurrency or a sweep of them (`-c 1,4,16`), optionally plotting the sweep (`--plot`).

mod plot;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use sprout_server::bench::{self, BenchOptions};

use crate::progress::Progress;
use plot::SweepPoint;

/// `sprout bench serve --url U -n N -c C[,C...] [--rate R | --duration S] [--plot FILE.svg]`.
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
    /// Concurrent clients (closed loop); a comma-separated list runs one load test per level
    /// (`-n` requests each), e.g. `1,4,16`.
    #[arg(short = 'c', long, value_delimiter = ',', default_value = "8")]
    pub concurrency: Vec<usize>,
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
    /// Draw latency percentiles and throughput against concurrency into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
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

/// Runs the load test (once per concurrency level) and prints the report.
pub fn run(args: BenchServeArgs) -> Result<()> {
    if args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!("--concurrency takes positive numbers, e.g. -c 8 or -c 1,4,16");
    }
    if args.rate.is_some() && args.concurrency.len() > 1 {
        bail!("--rate runs open loop, where concurrency is not set: drop --rate to sweep -c");
    }
    let prompts = match &args.prompts {
        Some(p) => load_prompts(p)?,
        None => bench::BUILTIN_PROMPTS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let opts = BenchOptions {
        url: args.url.clone(),
        model: args.model.clone(),
        api_key: args.api_key.clone(),
        requests: args.requests,
        concurrency: args.concurrency[0],
        rate: args.rate,
        duration: args.duration.map(Duration::from_secs_f64),
        max_tokens: args.max_tokens,
        stream: !args.no_stream,
        ignore_eos: args.ignore_eos,
        prompts,
    };
    let rt = tokio_runtime()?;
    let mut reports: Vec<(usize, Value)> = Vec::new();
    for &concurrency in &args.concurrency {
        let bar = if opts.duration.is_some() {
            Progress::open_ended("requests", true)
        } else {
            Progress::count(opts.requests as u64, "requests", true)
        };
        bar.set_message(format!("concurrency {concurrency}"));
        let shown = bar.bar().clone();
        let on_done: bench::OnDone = Arc::new(move |n| shown.set_position(n as u64));
        let level = BenchOptions {
            concurrency,
            ..opts.clone()
        };
        let mut report = rt
            .block_on(bench::run(level, Some(on_done)))
            .context("building the HTTP client")?;
        bar.finish();
        warn_if_unreachable(&report, &args.url);
        report["concurrency"] = json!(concurrency);
        reports.push((concurrency, report));
    }
    if let Some(path) = &args.plot {
        plot_sweep(path, &reports, &args)?;
    }
    if let [(_, report)] = reports.as_slice() {
        if args.json {
            println!("{}", serde_json::to_string_pretty(report)?);
        } else {
            print!("{}", bench::markdown(report));
        }
        return Ok(());
    }
    if args.json {
        let sweep: Vec<&Value> = reports.iter().map(|(_, r)| r).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "sweep": sweep }))?
        );
    } else {
        print!("{}", sweep_markdown(&reports));
    }
    Ok(())
}

/// Tells the user where to look when no request reached the server at all.
fn warn_if_unreachable(report: &Value, url: &str) {
    let requests = report["requests"].as_u64().unwrap_or(0);
    let refused = report["by_status"]["connection_error"]
        .as_u64()
        .unwrap_or(0);
    if requests > 0 && refused == requests {
        eprintln!(
            "no request reached {url}: is a server running there? Start one with `sprout serve` \
             (or pass its address with --url)"
        );
    }
}

/// Writes the sweep's plot and says where.
fn plot_sweep(path: &Path, reports: &[(usize, Value)], args: &BenchServeArgs) -> Result<()> {
    let points: Vec<SweepPoint> = reports
        .iter()
        .map(|(c, r)| SweepPoint::from_report(*c, r))
        .collect();
    if points.len() == 1 {
        eprintln!(
            "one concurrency level: the plot has one point per series (sweep with -c 1,4,16)"
        );
    }
    let title = format!(
        "sprout bench serve: {} at {}, max_tokens {}, {} requests per level",
        args.model, args.url, args.max_tokens, args.requests
    );
    plot::write_svg(path, &points, &title)?;
    eprintln!("plot written to {}", path.display());
    Ok(())
}

/// One row per concurrency level: throughput and the latency percentiles.
fn sweep_markdown(reports: &[(usize, Value)]) -> String {
    let ms = |v: &Value| match v.as_f64() {
        Some(x) if x.is_finite() => format!("{:.0}", x * 1e3),
        _ => "-".to_string(),
    };
    let pcts = |h: &Value| format!("{} / {} / {}", ms(&h["p50"]), ms(&h["p90"]), ms(&h["p99"]));
    let mut out = String::from(
        "| concurrency | ok/requests | req/s | output tokens/s | TTFT p50/p90/p99 ms | \
         end-to-end p50/p90/p99 ms |\n|---|---|---|---|---|---|\n",
    );
    for (c, r) in reports {
        out += &format!(
            "| {c} | {}/{} | {:.2} | {:.1} | {} | {} |\n",
            r["succeeded"],
            r["requests"],
            r["requests_per_s"].as_f64().unwrap_or(0.0),
            r["output_tokens_per_s"].as_f64().unwrap_or(0.0),
            pcts(&r["ttft_s"]),
            pcts(&r["e2e_s"]),
        );
    }
    out
}

fn tokio_runtime() -> Result<sprout_server::bench::Runtime> {
    Ok(sprout_server::bench::runtime()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_table_has_one_row_per_level_in_order() {
        let level = |c: usize, e2e_p50: f64| {
            (
                c,
                json!({"requests": 4, "succeeded": 4, "requests_per_s": c as f64,
                    "output_tokens_per_s": 10.0 * c as f64,
                    "ttft_s": {"p50": null, "p90": null, "p99": null},
                    "e2e_s": {"p50": e2e_p50, "p90": 0.5, "p99": 0.75}}),
            )
        };
        let table = sweep_markdown(&[level(1, 0.25), level(16, 0.5)]);
        let rows: Vec<&str> = table.lines().skip(2).collect();
        assert_eq!(
            rows,
            [
                "| 1 | 4/4 | 1.00 | 10.0 | - / - / - | 250 / 500 / 750 |",
                "| 16 | 4/4 | 16.00 | 160.0 | - / - / - | 500 / 500 / 750 |",
            ]
        );
    }

    #[test]
    fn concurrency_takes_a_list() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: BenchServeArgs,
        }
        let cli = Cli::try_parse_from(["x", "-c", "1,4,16", "--plot", "s.svg"]).unwrap();
        assert_eq!(cli.args.concurrency, [1, 4, 16]);
        assert_eq!(cli.args.plot.as_deref(), Some(Path::new("s.svg")));
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.args.concurrency, [8]);
    }
}
