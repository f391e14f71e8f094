//! `sprout eval leafresh CASES.jsonl --url URL`: scores a running Leafresh server on a case file
//! (validity, groundedness, category hit, off-topic hit, latency) and prints a table.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use sprout_server::eval;

/// `sprout eval ...`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(subcommand)]
    what: EvalCommand,
}

#[derive(Subcommand, Debug)]
enum EvalCommand {
    /// The Leafresh chatbot API.
    Leafresh(LeafreshEvalArgs),
}

/// `sprout eval leafresh CASES.jsonl [--url U] [--json]`.
#[derive(Args, Debug)]
struct LeafreshEvalArgs {
    /// JSON lines: {"message", "lang", "category": CODE|null} or {"location","workType","category"}.
    cases: PathBuf,
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    url: String,
    /// Bearer key for /v1 (the catalog lookup).
    #[arg(long, env = "SPROUT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print one JSON object per case and the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let EvalCommand::Leafresh(a) = args.what;
    let text = std::fs::read_to_string(&a.cases)
        .with_context(|| format!("reading {}", a.cases.display()))?;
    let cases = eval::parse_cases(&text).with_context(|| format!("{}", a.cases.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let results = rt
        .block_on(eval::run(&a.url, a.api_key.as_deref(), &cases))
        .with_context(|| format!("is sprout serving on {}?", a.url))?;
    let s = eval::summarize(&results, &cases);
    if a.json {
        for r in &results {
            println!(
                "{}",
                serde_json::json!({"request": r.request, "lang": r.lang, "status": r.status,
                    "valid": r.valid, "grounded": r.grounded, "off_topic_answer": r.off_topic_answer,
                    "category_hit": r.category_hit, "expected_category": r.expected_category,
                    "latency_s": r.latency_s, "problem": r.problem, "answer": r.answer})
            );
        }
        println!(
            "{}",
            serde_json::json!({"summary": {"cases": s.cases, "valid": s.valid, "grounded": s.grounded,
                "category_hits": s.category_hits, "on_topic_cases": s.on_topic_cases,
                "off_topic_caught": s.off_topic_caught, "off_topic_cases": s.off_topic_cases,
                "false_off_topic": s.false_off_topic, "latency_p50_s": s.latency_p50_s,
                "latency_p90_s": s.latency_p90_s}})
        );
        return Ok(());
    }
    println!(
        "{:<4} {:<5} {:>6} {:>5} {:>8} {:>8} {:>8}  message",
        "lang", "valid", "ground", "cat", "offtopic", "latency", "status"
    );
    for r in &results {
        let hit = match r.category_hit {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        let msg = r.request["message"]
            .as_str()
            .map_or_else(|| r.request.to_string(), str::to_string);
        println!(
            "{:<4} {:<5} {:>6} {:>5} {:>8} {:>7.2}s {:>8}  {}{}",
            r.lang,
            r.valid,
            r.grounded,
            hit,
            r.off_topic_answer,
            r.latency_s,
            r.status,
            msg,
            r.problem
                .as_ref()
                .map_or(String::new(), |p| format!("  [{p}]"))
        );
    }
    let pct = |a: usize, b: usize| {
        if b == 0 {
            0.0
        } else {
            100.0 * a as f64 / b as f64
        }
    };
    println!(
        "\n{} cases: valid {:.1} %, grounded {:.1} %, category precision {}/{} = {:.1} %, off-topic caught {}/{}, \
         on-topic answered off-topic {}, latency p50 {:.2} s p90 {:.2} s",
        s.cases,
        pct(s.valid, s.cases),
        pct(s.grounded, s.cases),
        s.category_hits,
        s.on_topic_cases,
        pct(s.category_hits, s.on_topic_cases),
        s.off_topic_caught,
        s.off_topic_cases,
        s.false_off_topic,
        s.latency_p50_s,
        s.latency_p90_s
    );
    Ok(())
}
