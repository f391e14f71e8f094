//! `sprout bench engine`: prefill, decode and batched-decode throughput, measured like
//! llama-bench (a warm-up run, then repetitions reported as mean ± standard deviation).

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use sprout_engine::engine::{Engine, StepInput};

use crate::model_arg::ModelArgs;
use crate::progress::Progress;

/// `sprout bench engine --prompt-tokens 512 --gen-tokens 128 --batch 1,8`.
#[derive(Args, Debug)]
pub struct BenchEngineArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt length of the prefill test.
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    /// Tokens generated in the decode tests.
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    /// Sequence counts of the batched decode test.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    batch: Vec<usize>,
    /// Measured repetitions after one warm-up.
    #[arg(long, default_value_t = 3)]
    repetitions: usize,
    /// Print one JSON line.
    #[arg(long)]
    json: bool,
}

/// Mean and sample standard deviation.
fn stats(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Deterministic, varied token ids below `vocab` that avoid the lowest (often special) ids.
fn bench_tokens(n: usize, salt: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 7919 + salt * 104_729) % (vocab - 1000) + 500) as u32)
        .collect()
}

/// One warm-up run of `f`, then `reps` measured ones, each counted on `bar` under `test`.
fn measure(
    bar: &Progress,
    test: String,
    reps: usize,
    mut f: impl FnMut() -> Result<f64>,
) -> Result<(f64, f64)> {
    bar.set_message(test);
    let mut run = || {
        let r = f();
        bar.bar().inc(1);
        r
    };
    run()?; // warm-up
    let runs = (0..reps.max(1))
        .map(|_| run())
        .collect::<Result<Vec<_>>>()?;
    Ok(stats(&runs))
}

fn prefill(engine: &mut Engine, n: usize, vocab: usize) -> Result<f64> {
    let toks = bench_tokens(n, 1, vocab);
    let seq = engine.add_sequence();
    let t = Instant::now();
    let r = engine.step(&[StepInput {
        seq,
        tokens: &toks,
        want_logits: true,
    }]);
    let secs = t.elapsed().as_secs_f64();
    engine.remove_sequence(seq);
    r?;
    Ok(n as f64 / secs)
}

/// `batch` sequences with a short prompt each, then `gen` decode steps over all of them;
/// returns aggregate generated tokens per second.
fn decode(engine: &mut Engine, batch: usize, gen: usize, vocab: usize) -> Result<f64> {
    let seqs: Vec<_> = (0..batch).map(|_| engine.add_sequence()).collect();
    let result = (|| {
        for (i, &seq) in seqs.iter().enumerate() {
            engine.step(&[StepInput {
                seq,
                tokens: &bench_tokens(16, i + 2, vocab),
                want_logits: true,
            }])?;
        }
        let next: Vec<Vec<u32>> = (0..gen)
            .map(|g| bench_tokens(batch, g + 100, vocab))
            .collect();
        let t = Instant::now();
        for step_tokens in &next {
            let inputs: Vec<_> = seqs
                .iter()
                .zip(step_tokens)
                .map(|(&seq, tok)| StepInput {
                    seq,
                    tokens: std::slice::from_ref(tok),
                    want_logits: true,
                })
                .collect();
            engine.step(&inputs)?;
        }
        Ok((batch * gen) as f64 / t.elapsed().as_secs_f64())
    })();
    for s in seqs {
        engine.remove_sequence(s);
    }
    result
}

pub fn run(mut args: BenchEngineArgs) -> Result<()> {
    let max_batch = args.batch.iter().copied().max().unwrap_or(1);
    if args.batch.contains(&0) || args.prompt_tokens == 0 || args.gen_tokens == 0 {
        bail!("--batch, --prompt-tokens and --gen-tokens must be positive");
    }
    args.model
        .kv_tokens
        .get_or_insert(args.prompt_tokens.max(max_batch * (16 + args.gen_tokens)) + 64);
    let (_, mut engine) = args.model.load_engine()?;
    let vocab = engine.model().config.vocab_size;
    if vocab < 2000 {
        bail!("bench needs a real model (vocabulary of {vocab} tokens)");
    }
    let threads = engine.thread_pool().threads();
    let reps = args.repetitions;
    // Every test runs once to warm up, then `reps` times.
    let runs = (2 + args.batch.len()) * (reps.max(1) + 1);
    let bar = Progress::count(runs as u64, "runs", true);
    let (pp_name, tg_name) = (
        format!("pp{}", args.prompt_tokens),
        format!("tg{}", args.gen_tokens),
    );
    let pp = measure(&bar, pp_name, reps, || {
        prefill(&mut engine, args.prompt_tokens, vocab)
    })?;
    let tg = measure(&bar, tg_name.clone(), reps, || {
        decode(&mut engine, 1, args.gen_tokens, vocab)
    })?;
    let mut batched = BTreeMap::new();
    for &b in &args.batch {
        let test = format!("{tg_name} × {b} sequences");
        batched.insert(
            b,
            measure(&bar, test, reps, || {
                decode(&mut engine, b, args.gen_tokens, vocab)
            })?,
        );
    }
    bar.finish();
    if args.json {
        let b: serde_json::Map<_, _> = batched
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v.0)))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "prefill_tokens_per_s": pp.0,
                "decode_tokens_per_s": tg.0,
                "batch_decode_tokens_per_s": b,
                "threads": threads,
                "prompt_tokens": args.prompt_tokens,
                "gen_tokens": args.gen_tokens,
            })
        );
    } else {
        println!("| test | tokens/s |");
        println!("|---|---|");
        println!("| pp{} | {:.2} ± {:.2} |", args.prompt_tokens, pp.0, pp.1);
        println!("| tg{} | {:.2} ± {:.2} |", args.gen_tokens, tg.0, tg.1);
        for (b, (m, s)) in &batched {
            println!(
                "| tg{} × {b} sequences (aggregate) | {m:.2} ± {s:.2} |",
                args.gen_tokens
            );
        }
        println!("threads: {threads}, repetitions: {reps} after 1 warm-up");
    }
    Ok(())
}
