//! `sprout bench structured`: what grammar-constrained decoding costs and what jump-forward
//! saves, in one process on one model: end-to-end time per answer with jump-forward on and off
//! (alternated, greedy) on a Leafresh-shaped schema and on a catalog-grounded one, whether the
//! two modes answer identically, and the step time of 8 constrained sequences against 8
//! unconstrained ones.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{json, Value};
use sprout_engine::bundle::PromptFormat;
use sprout_engine::chat_template::ChatMessage;
use sprout_engine::generation::StopConditions;
use sprout_engine::grammar::{GrammarCompiler, GrammarSpec};
use sprout_engine::sampler::SamplingParams;
use sprout_engine::scheduler::{
    Event, GenerationRequest, Scheduler, SchedulerConfig, SchedulerHandle, TokenConstraint,
};

use crate::model_arg::ModelArgs;
use crate::progress::Progress;

/// The eco catalog shipped with sprout: candidate titles and descriptions for the shapes.
const ECO_CATALOG: &str = include_str!("../../../catalogs/eco.jsonl");

/// `sprout bench structured [--answers N] [--schemas FILE] [--json]`.
#[derive(Args, Debug)]
pub struct BenchStructuredArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Answers per shape and mode.
    #[arg(long, default_value_t = 6)]
    answers: usize,
    /// A file of schemas and topics ({"schemas": [{name, schema}], "topics": [..]}) to compare
    /// jump-forward on and off over, greedy.
    #[arg(long)]
    schemas: Option<std::path::PathBuf>,
    /// Topics per schema from that file.
    #[arg(long, default_value_t = 5)]
    topics: usize,
    /// Tokens per sequence in the batch-8 mask-cost test.
    #[arg(long, default_value_t = 48)]
    batch_tokens: usize,
    /// Print one JSON line.
    #[arg(long)]
    json: bool,
}

const USER_MESSAGES: [&str; 6] = [
    "환경을 위해 분리수거를 잘하고 싶어요",
    "회사에서 할 수 있는 친환경 챌린지를 추천해 주세요",
    "I want to reduce plastic at home.",
    "주말에 산책하면서 할 수 있는 활동이 있을까요?",
    "我想在办公室节约能源。",
    "일회용품을 줄이고 싶어요",
];

/// Twenty catalog items of two categories: (title, description).
fn candidates() -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for cat in ["ZERO_WASTE", "PLOGGING"] {
        let items = ECO_CATALOG
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str::<Value>)
            .collect::<Result<Vec<_>, _>>()
            .context("catalogs/eco.jsonl")?;
        out.extend(
            items
                .iter()
                .filter(|v| v["tags"]["category"] == cat)
                .take(10)
                .map(|v| {
                    (
                        v["title"].as_str().unwrap_or_default().to_string(),
                        v["description"].as_str().unwrap_or_default().to_string(),
                    )
                }),
        );
    }
    Ok(out)
}

/// The Leafresh shape: a bounded sentence, exactly 3 items whose title is one of 20 and whose
/// description is free but bounded.
fn leafresh_schema(items: &[(String, String)]) -> Value {
    let titles: Vec<&str> = items.iter().map(|i| i.0.as_str()).collect();
    json!({"type": "object", "additionalProperties": false, "required": ["recommend", "challenges"],
        "properties": {
            "recommend": {"type": "string", "minLength": 5, "maxLength": 60},
            "challenges": {"type": "array", "minItems": 3, "maxItems": 3, "items": {
                "type": "object", "additionalProperties": false, "required": ["title", "description"],
                "properties": {"title": {"enum": titles}, "description": {"type": "string", "minLength": 5, "maxLength": 50}}}}}})
}

/// The catalog-grounded shape: each item one of 20 objects whose title and description are
/// the catalog's text (jump-forward copies a description once its title is chosen).
fn grounded_schema(items: &[(String, String)]) -> Value {
    let options: Vec<Value> = items
        .iter()
        .map(|(t, d)| {
            json!({"type": "object", "additionalProperties": false, "required": ["title", "description"],
                "properties": {"title": {"const": t}, "description": {"const": d}}})
        })
        .collect();
    json!({"type": "object", "additionalProperties": false, "required": ["recommend", "challenges"],
        "properties": {
            "recommend": {"type": "string", "minLength": 5, "maxLength": 60},
            "challenges": {"type": "array", "minItems": 3, "maxItems": 3, "items": {"anyOf": options}}}})
}

struct Bench {
    prompt: PromptFormat,
    scheduler: SchedulerHandle,
    on: GrammarCompiler,
    off: GrammarCompiler,
    /// Answers and batch runs done, on stderr.
    bar: Progress,
}

/// One answer: its text, time, and token counts.
struct Run {
    text: String,
    seconds: f64,
    completion_tokens: usize,
    forced_tokens: usize,
    error: Option<String>,
}

impl Bench {
    fn prompt_for(&self, system: &str, user: &str) -> Result<Vec<u32>> {
        Ok(self.prompt.chat_prompt(&[
            ChatMessage::new("system", system),
            ChatMessage::new("user", user),
        ])?)
    }

    fn answer(&self, prompt: Vec<u32>, spec: &GrammarSpec, jump_forward: bool) -> Result<Run> {
        let compiler = if jump_forward { &self.on } else { &self.off };
        let constraint: Box<dyn TokenConstraint> = Box::new(compiler.constraint(spec)?);
        let (tx, _rx) = std::sync::mpsc::channel();
        let req = GenerationRequest {
            prompt,
            sampling: SamplingParams::default(),
            stop: StopConditions {
                max_tokens: 1024,
                ..Default::default()
            },
            constraint: Some(constraint),
            timeout: None,
            events: Box::new(tx),
        };
        let t = Instant::now();
        let out = self.scheduler.generate_blocking(req, |_| true);
        let seconds = t.elapsed().as_secs_f64();
        self.bar.bar().inc(1);
        Ok(match out {
            Ok(g) => Run {
                text: g.text,
                seconds,
                completion_tokens: g.usage.completion_tokens,
                forced_tokens: g.usage.forced_tokens,
                error: None,
            },
            Err(e) => Run {
                text: String::new(),
                seconds,
                completion_tokens: 0,
                forced_tokens: 0,
                error: Some(e.to_string()),
            },
        })
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => 0.0,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// Times one shape, alternating on and off per answer; returns its report.
fn shape(b: &Bench, name: &str, schema: Value, answers: usize) -> Result<Value> {
    let spec = GrammarSpec::JsonSchema(schema);
    b.bar.set_message(format!("shape {name}"));
    let system = "You recommend eco-friendly challenges. Answer with JSON: one Korean sentence in \
                  recommend, and three challenges.";
    // Warm-up: compiles (and caches) both grammars and fills the prefix cache's system prompt.
    let warm = b.prompt_for(system, "warm-up")?;
    b.answer(warm.clone(), &spec, true)?;
    b.answer(warm, &spec, false)?;
    let (mut on, mut off, mut same, mut rows) = (Vec::new(), Vec::new(), 0, Vec::new());
    for i in 0..answers {
        let user = USER_MESSAGES[i % USER_MESSAGES.len()];
        let prompt = b.prompt_for(system, user)?;
        // Alternate which mode goes first, so neither always meets a warmer cache.
        let (a, z) = if i % 2 == 0 {
            let a = b.answer(prompt.clone(), &spec, true)?;
            (a, b.answer(prompt, &spec, false)?)
        } else {
            let z = b.answer(prompt.clone(), &spec, false)?;
            (b.answer(prompt, &spec, true)?, z)
        };
        same += usize::from(a.text == z.text && a.error.is_none() && z.error.is_none());
        on.push(a.seconds);
        off.push(z.seconds);
        rows.push(json!({"message": user, "on_s": a.seconds, "off_s": z.seconds,
            "completion_tokens": a.completion_tokens, "forced_tokens": a.forced_tokens,
            "identical": a.text == z.text, "on_error": a.error, "off_error": z.error, "answer": a.text}));
    }
    let (m_on, m_off) = (median(on), median(off));
    Ok(
        json!({"shape": name, "answers": answers, "median_on_s": m_on, "median_off_s": m_off,
        "speedup": m_off / m_on.max(1e-9), "identical": same, "runs": rows}),
    )
}

/// Jump-forward on vs off over a schema file: identical answers and every difference.
fn compare_file(b: &Bench, path: &std::path::Path, topics: usize) -> Result<Value> {
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let system = "You answer with one JSON object that fits the requested shape.";
    let (mut total, mut same, mut diffs) = (0, 0, Vec::new());
    let schemas = fx["schemas"].as_array().map_or(0, Vec::len);
    let cases = fx["topics"].as_array().map_or(0, |t| t.len().min(topics));
    b.bar.bar().inc_length((2 * schemas * cases) as u64);
    b.bar.set_message(format!("comparing {}", path.display()));
    for s in fx["schemas"].as_array().context("schemas")? {
        let spec = GrammarSpec::JsonSchema(s["schema"].clone());
        for topic in fx["topics"]
            .as_array()
            .context("topics")?
            .iter()
            .take(topics)
        {
            let prompt = b.prompt_for(system, topic.as_str().unwrap_or_default())?;
            let a = b.answer(prompt.clone(), &spec, true)?;
            let z = b.answer(prompt, &spec, false)?;
            total += 1;
            if a.text == z.text && a.error.is_none() {
                same += 1;
            } else {
                diffs.push(
                    json!({"schema": s["name"], "topic": topic, "on": a.text, "off": z.text,
                    "on_error": a.error, "off_error": z.error}),
                );
            }
        }
    }
    Ok(json!({"cases": total, "identical": same, "differences": diffs}))
}

/// Step time of 8 sequences decoding together, constrained (a JSON schema, masks every token,
/// no jump-forward) or not.
fn batch_step_ms(b: &Bench, constrained: bool, tokens: usize, round: usize) -> Result<f64> {
    let spec = GrammarSpec::JsonSchema(json!({"type": "object", "additionalProperties": false,
        "required": ["story"], "properties": {"story": {"type": "string", "minLength": 2000, "maxLength": 4000}}}));
    let stats = b.scheduler.stats();
    let steps0 = stats.steps.load(Relaxed);
    let mut rxs = Vec::new();
    let t = Instant::now();
    for i in 0..8 {
        let prompt = b.prompt_for(
            "Write a long story as JSON.",
            // Distinct prompts per run: no run finds another's prompt in the prefix cache.
            &format!("A story about tree number {i}, round {round}, constrained {constrained}"),
        )?;
        let (tx, rx) = std::sync::mpsc::channel();
        let constraint: Option<Box<dyn TokenConstraint>> = if constrained {
            Some(Box::new(b.off.constraint(&spec)?))
        } else {
            None
        };
        b.scheduler.submit(GenerationRequest {
            prompt,
            sampling: SamplingParams::default(),
            stop: StopConditions {
                max_tokens: tokens,
                ignore_eos: true,
                ..Default::default()
            },
            constraint,
            timeout: None,
            events: Box::new(tx),
        })?;
        rxs.push(rx);
    }
    for rx in rxs {
        while let Event::Text(_) = rx.recv_timeout(Duration::from_secs(600))? {}
    }
    let steps = (stats.steps.load(Relaxed) - steps0).max(1);
    b.bar.bar().inc(1);
    Ok(t.elapsed().as_secs_f64() * 1000.0 / steps as f64)
}

pub fn run(args: BenchStructuredArgs) -> Result<()> {
    let (prompt, engine) = args.model.load_engine()?;
    let vocab = engine.model().config.vocab_size;
    let tokenizer = Arc::clone(&prompt.tokenizer);
    let (scheduler, _join) =
        Scheduler::spawn(engine, tokenizer.clone(), SchedulerConfig::default())?;
    // Two shapes of (2 warm-up + 2 × answers) answers, then 4 batch runs; a schema file adds
    // its cases when read.
    let runs = 2 * (2 + 2 * args.answers) + 4;
    let b = Bench {
        on: GrammarCompiler::new(tokenizer.clone(), vocab, true)?,
        off: GrammarCompiler::new(tokenizer, vocab, false)?,
        prompt,
        scheduler,
        bar: Progress::count(runs as u64, "runs", true),
    };
    let items = candidates()?;
    let leafresh = shape(&b, "leafresh", leafresh_schema(&items), args.answers)?;
    let grounded = shape(
        &b,
        "catalog_grounded",
        grounded_schema(&items),
        args.answers,
    )?;
    let compared = match &args.schemas {
        Some(p) => Some(compare_file(&b, p, args.topics)?),
        None => None,
    };
    // Alternate the batch runs: free, constrained, free, constrained.
    let mut free = Vec::new();
    let mut masked = Vec::new();
    b.bar.set_message("batch of 8, masks");
    for round in 0..2 {
        free.push(batch_step_ms(&b, false, args.batch_tokens, round)?);
        masked.push(batch_step_ms(&b, true, args.batch_tokens, round)?);
    }
    let (free, masked) = (median(free), median(masked));
    b.bar.finish();
    let stats = b.scheduler.stats();
    let masks: u64 = stats.mask_us_buckets.iter().map(|c| c.load(Relaxed)).sum();
    let mask_us = stats.mask_us_sum.load(Relaxed) as f64 / masks.max(1) as f64;
    let report = json!({"leafresh": leafresh, "catalog_grounded": grounded, "jump_forward_compare": compared,
        "batch8_step_ms": {"unconstrained": free, "constrained": masked, "growth": masked / free - 1.0},
        "mask_us_mean": mask_us, "masks": masks});
    if args.json {
        println!("{report}");
        return Ok(());
    }
    for s in [&report["leafresh"], &report["catalog_grounded"]] {
        println!(
            "{:<17} time per answer: jump-forward on {:.2} s, off {:.2} s = {:.2}x; identical {}/{}",
            s["shape"].as_str().unwrap_or_default(),
            s["median_on_s"].as_f64().unwrap_or(0.0),
            s["median_off_s"].as_f64().unwrap_or(0.0),
            s["speedup"].as_f64().unwrap_or(0.0),
            s["identical"],
            s["answers"]
        );
    }
    if let Some(c) = &report["jump_forward_compare"].as_object() {
        println!(
            "schema file: identical {}/{} with jump-forward on and off",
            c["identical"], c["cases"]
        );
        for d in c["differences"].as_array().into_iter().flatten() {
            println!(
                "  {} / {}:\n    on:  {}\n    off: {}",
                d["schema"], d["topic"], d["on"], d["off"]
            );
        }
    }
    println!(
        "batch of 8: step {:.1} ms unconstrained, {:.1} ms with a JSON schema ({:+.1} %); mean mask {:.0} µs over {} masks",
        free,
        masked,
        (masked / free - 1.0) * 100.0,
        mask_us,
        masks
    );
    Ok(())
}
