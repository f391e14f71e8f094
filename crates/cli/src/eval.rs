//! `sprout eval leafresh|books CASES.jsonl --url URL [--judge-url U --judge-model M]`: scores a
//! running server on a case file (validity, groundedness, the domain's hits, latency, tokens,
//! an LLM judge's grades) and prints a table, or JSON lines with `--json`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use sprout_server::eval::{self, books, judge, judge::Judge};

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
    /// The book recommender API, both methods, as the seed team compared them.
    Books(BooksEvalArgs),
}

/// What both evals share: the server, the key, the judge, the output.
#[derive(Args, Debug)]
struct Common {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    url: String,
    /// Bearer key for /v1 (the catalog lookup).
    #[arg(long, env = "SPROUT_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// An OpenAI-compatible server that grades every recommended item 0–5 (e.g. sprout
    /// serving the 1.5B model: `sprout serve --model qwen2.5-coder-1.5b --port 9100`).
    #[arg(long)]
    judge_url: Option<String>,
    /// The judge's model name.
    #[arg(long, default_value = "default")]
    judge_model: String,
    /// Bearer key for the judge.
    #[arg(long, env = "SPROUT_JUDGE_API_KEY", hide_env_values = true)]
    judge_api_key: Option<String>,
    /// Print one JSON object per case and the summary as JSON.
    #[arg(long)]
    json: bool,
}

impl Common {
    fn judge(&self) -> Result<Option<Judge>> {
        self.judge_url
            .as_deref()
            .map(|u| Judge::new(u, &self.judge_model, self.judge_api_key.as_deref()))
            .transpose()
    }
}

/// `sprout eval leafresh CASES.jsonl`.
#[derive(Args, Debug)]
struct LeafreshEvalArgs {
    /// JSON lines: {"message", "lang", "category": CODE|null} or {"location","workType","category"}.
    cases: PathBuf,
    #[command(flatten)]
    common: Common,
}

/// `sprout eval books CASES.jsonl`.
#[derive(Args, Debug)]
struct BooksEvalArgs {
    /// JSON lines: the five answers, "name", optional "userId" with "history" and
    /// "preferences" files and a "relevance" file (paths relative to the case file).
    cases: PathBuf,
    /// The methods to run each case under (1 = RAG, 2 = prompt-only).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    methods: Vec<u8>,
    #[command(flatten)]
    common: Common,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

pub fn run(args: EvalArgs) -> Result<()> {
    match args.what {
        EvalCommand::Leafresh(a) => leafresh(a),
        EvalCommand::Books(a) => books_eval(a),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.digits$}"))
}

fn leafresh(a: LeafreshEvalArgs) -> Result<()> {
    let cases =
        eval::parse_cases(&read(&a.cases)?).with_context(|| format!("{}", a.cases.display()))?;
    let c = &a.common;
    let judge = c.judge()?;
    let results = runtime()?
        .block_on(eval::run(
            &c.url,
            c.api_key.as_deref(),
            &cases,
            judge.as_ref(),
        ))
        .with_context(|| format!("is sprout serving on {}?", c.url))?;
    let s = eval::summarize(&results, &cases);
    if c.json {
        for r in &results {
            println!(
                "{}",
                serde_json::json!({"request": r.request, "lang": r.lang, "status": r.status,
                    "valid": r.valid, "grounded": r.grounded, "off_topic_answer": r.off_topic_answer,
                    "category_hit": r.category_hit, "expected_category": r.expected_category,
                    "latency_s": r.latency_s, "tokens": r.tokens, "judge_scores": r.judge_scores,
                    "judge_control": r.judge_control, "descriptions": r.descriptions,
                    "problem": r.problem, "answer": r.answer})
            );
        }
        println!(
            "{}",
            serde_json::json!({"summary": {"cases": s.cases, "valid": s.valid, "grounded": s.grounded,
                "category_hits": s.category_hits, "on_topic_cases": s.on_topic_cases,
                "off_topic_caught": s.off_topic_caught, "off_topic_cases": s.off_topic_cases,
                "false_off_topic": s.false_off_topic, "latency_p50_s": s.latency_p50_s,
                "latency_p90_s": s.latency_p90_s, "tokens": s.tokens, "judge_mean": s.judge_mean,
                "judge_control_mean": s.judge_control_mean, "descriptions": s.descriptions}})
        );
        return Ok(());
    }
    println!(
        "{:<4} {:<5} {:>6} {:>5} {:>8} {:>8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>5}  message",
        "lang",
        "valid",
        "ground",
        "cat",
        "offtopic",
        "latency",
        "status",
        "prompt",
        "cached",
        "compl",
        "forced",
        "judge"
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
        let tok = |f: fn(&eval::Tokens) -> u64| {
            r.tokens.as_ref().map_or("-".into(), |t| f(t).to_string())
        };
        let judge = eval::mean(r.judge_scores.iter().map(|&g| f64::from(g)));
        println!(
            "{:<4} {:<5} {:>6} {:>5} {:>8} {:>7.2}s {:>6} {:>6} {:>6} {:>6} {:>6} {:>5}  {}{}",
            r.lang,
            r.valid,
            r.grounded,
            hit,
            r.off_topic_answer,
            r.latency_s,
            r.status,
            tok(|t| t.prompt),
            tok(|t| t.cached),
            tok(|t| t.completion),
            tok(|t| t.forced),
            opt(judge, 1),
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
    if let Some(t) = s.tokens {
        println!(
            "tokens per answer ({} answers that ran the model): prompt {:.1} (cached {:.1}), completion {:.1} (forced {:.1})",
            t.answers, t.prompt, t.cached, t.completion, t.forced
        );
    }
    let d = s.descriptions;
    println!(
        "descriptions: {} of {} the catalog's, {} repeat the request",
        d.from_catalog, d.total, d.echo_request
    );
    if let Some(j) = s.judge_mean {
        judge_line(&c.judge_model, j, s.judge_control_mean);
    }
    Ok(())
}

/// The judge's mean beside its controls', and whether it can be trusted.
fn judge_line(model: &str, answers: f64, controls: Option<f64>) {
    let Some(controls) = controls else {
        println!("judge ({model}): mean {answers:.2} / 5");
        return;
    };
    let verdict = if judge::discriminates(answers, controls) {
        "the judge tells answers from controls"
    } else {
        "WARNING: the judge grades random controls about as high as the answers; its scores say little (use a stronger judge)"
    };
    println!("judge ({model}): answers {answers:.2} / 5, controls {controls:.2} / 5: {verdict}");
}

fn books_eval(a: BooksEvalArgs) -> Result<()> {
    let dir = a.cases.parent().unwrap_or(Path::new(".")).to_path_buf();
    let cases = books::load_cases(&read(&a.cases)?, &dir)
        .with_context(|| format!("{}", a.cases.display()))?;
    if let Some(m) = a.methods.iter().find(|m| !(1..=2).contains(*m)) {
        anyhow::bail!("--methods takes 1 (RAG) and 2 (prompt-only), not {m}");
    }
    let c = &a.common;
    let judge = c.judge()?;
    let rt = runtime()?;
    let results = rt
        .block_on(books::run(
            &c.url,
            c.api_key.as_deref(),
            &cases,
            &a.methods,
            judge.as_ref(),
        ))
        .with_context(|| format!("is sprout serving the books catalog on {}?", c.url))?;
    let model = rt.block_on(eval::served_model(&c.url, c.api_key.as_deref()));
    let summary = books::summarize(&results, &a.methods);
    if c.json {
        for r in &results {
            println!("{}", serde_json::to_string(r)?);
        }
        println!(
            "{}",
            serde_json::json!({"model": model, "judge_model": judge.as_ref().map(|_| &c.judge_model),
                "summary": summary})
        );
        return Ok(());
    }
    for r in &results {
        let judge = eval::mean(r.judge_scores.iter().map(|&g| f64::from(g)));
        println!(
            "{} (method {}): status {}, {:.2} s, {} of {} in the catalog, read {}, avoided {}, grade {}, NDCG@3 {}, judge {}{}",
            r.case,
            r.method,
            r.status,
            r.latency_s,
            r.existing,
            r.books.len(),
            r.already_read,
            r.avoided,
            opt(r.mean_grade, 2),
            match (r.ndcg3, r.recommendable_graded) {
                (_, Some(0)) => "- (no graded book is in the catalog and unread)".to_string(),
                (n, Some(k)) => format!("{} (of {k} recommendable graded books)", opt(n, 3)),
                _ => "-".to_string(),
            },
            opt(judge, 2),
            r.problem.as_ref().map_or(String::new(), |p| format!("  [{p}]"))
        );
        for b in &r.books {
            println!("    {b}");
        }
    }
    println!(
        "\n| model | method | candidates | mean judge score | judge on controls | prompt tokens | completion tokens | time (s) | clean cases | grade | NDCG@3 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for s in &summary {
        let name = if s.method == 1 {
            "1 (RAG)"
        } else {
            "2 (prompt-only)"
        };
        println!(
            "| {model} | {name} | {} | {} | {} | {} | {} | {:.2} | {}/{} | {} | {} |",
            opt(s.candidates, 0),
            opt(s.judge_mean, 2),
            opt(s.judge_control_mean, 2),
            opt(s.tokens.map(|t| t.prompt), 0),
            opt(s.tokens.map(|t| t.completion), 0),
            s.latency_mean_s,
            s.clean,
            s.cases,
            opt(s.mean_grade, 2),
            opt(s.ndcg3, 3),
        );
    }
    for s in &summary {
        if let Some(j) = s.judge_mean {
            print!("method {}: ", s.method);
            judge_line(&c.judge_model, j, s.judge_control_mean);
        }
    }
    Ok(())
}
