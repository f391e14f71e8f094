//! `sprout perplexity`: perplexity of a model on a text, computed the way llama.cpp's
//! `llama-perplexity` does so the two can be compared number for number: the text is split
//! into chunks of `--ctx` tokens, each chunk starts with BOS (replacing its first token) when
//! the model adds BOS, and only the second half of each chunk is scored.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::model_arg::ModelArgs;

/// `sprout perplexity --file F --ctx 512`.
#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The text file.
    #[arg(long, short)]
    file: PathBuf,
    /// Tokens per chunk.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Score at most this many chunks (0 = all).
    #[arg(long, default_value_t = 0)]
    chunks: usize,
    /// Print `{"perplexity": x, ...}`.
    #[arg(long)]
    json: bool,
}

/// Positions scored per forward call, bounding the logits held at once.
const SCORE_PIECE_TOKENS: usize = 64;

pub fn run(args: PerplexityArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let (prompt_format, mut engine) = args.model.load_engine()?;
    let tok = &prompt_format.tokenizer;
    let tokens = tok.encode(&text, false);
    let ctx = args.ctx;
    if ctx < 8 || ctx > engine.model().config.context_tokens {
        bail!(
            "--ctx must be between 8 and the model's context of {}",
            engine.model().config.context_tokens
        );
    }
    let mut n_chunks = tokens.len() / ctx;
    if args.chunks > 0 {
        n_chunks = n_chunks.min(args.chunks);
    }
    if n_chunks == 0 {
        bail!(
            "the text has {} tokens: fewer than one chunk of {ctx}",
            tokens.len()
        );
    }
    let bos = tok.add_bos().then(|| tok.bos_id()).flatten();
    let first = ctx / 2;
    let mut nll = 0f64;
    let mut count = 0usize;
    for c in 0..n_chunks {
        let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        let seq = engine.add_sequence();
        // Positions before `first` only fill the cache; logits of first..ctx-1 predict the next token.
        for part in chunk[..first].chunks(512) {
            engine.step(&[sprout_engine::engine::StepInput {
                seq,
                tokens: part,
                want_logits: false,
            }])?;
        }
        let mut pos = first;
        while pos < ctx - 1 {
            let end = (pos + SCORE_PIECE_TOKENS).min(ctx - 1);
            let logits = engine.step_all_logits(seq, &chunk[pos..end])?;
            for (i, row) in logits.iter().enumerate() {
                let target = chunk[pos + i + 1] as usize;
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let lse = row
                    .iter()
                    .map(|&l| (l as f64 - max).exp())
                    .sum::<f64>()
                    .ln()
                    + max;
                nll += lse - row[target] as f64;
                count += 1;
            }
            pos = end;
        }
        engine.remove_sequence(seq);
        if !args.json {
            eprintln!(
                "[{}/{n_chunks}] running perplexity {:.4}",
                c + 1,
                (nll / count as f64).exp()
            );
        }
    }
    let ppl = (nll / count as f64).exp();
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "perplexity": ppl, "chunks": n_chunks, "ctx": ctx, "scored_tokens": count })
        );
    } else {
        println!("perplexity {ppl:.4} over {n_chunks} chunks of {ctx} tokens ({count} scored)");
    }
    Ok(())
}
