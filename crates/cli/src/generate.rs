//! `sprout generate` (one prompt) and `sprout chat` (an interactive conversation).

use std::io::{BufRead, Write};

use anyhow::{bail, Result};
use clap::Args;
use sprout_engine::chat_template::ChatMessage;
use sprout_engine::generation::{self, FinishReason, StopConditions};
use sprout_engine::sampler::SamplingParams;

use crate::model_arg::ModelArgs;

/// Sampling flags shared by `generate` and `chat`.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Keep only the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Drop tokens below min_p × the top probability.
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// Penalize repeating generated tokens (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Random seed; the same seed gives the same output.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when this text appears (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
}

impl SamplingArgs {
    fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            ..Default::default()
        }
    }

    fn stop(&self) -> StopConditions {
        StopConditions {
            max_tokens: self.max_tokens,
            stop_strings: self.stop.clone(),
            ignore_eos: self.ignore_eos,
        }
    }
}

/// `sprout generate --prompt TEXT`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// The prompt (a user message unless --raw).
    #[arg(long, short)]
    prompt: String,
    /// Use the prompt as is, without the chat template.
    #[arg(long)]
    raw: bool,
    /// A system message (ignored with --raw).
    #[arg(long)]
    system: Option<String>,
    /// Print one JSON line: text, tokens, prompt_tokens, completion_tokens.
    #[arg(long)]
    json: bool,
}

pub fn generate(args: GenerateArgs) -> Result<()> {
    let (prompt_format, mut engine) = args.model.load_engine()?;
    let prompt = if args.raw {
        prompt_format.encode_prompt(&args.prompt, false)
    } else {
        let mut messages = Vec::new();
        if let Some(s) = &args.system {
            messages.push(ChatMessage {
                role: "system".into(),
                content: s.clone(),
            });
        }
        messages.push(ChatMessage {
            role: "user".into(),
            content: args.prompt.clone(),
        });
        prompt_format.chat_prompt(&messages)?
    };
    let stream = !args.json;
    let mut stdout = std::io::stdout();
    let out = generation::generate(
        &mut engine,
        &prompt_format.tokenizer,
        &prompt,
        &args.sampling.params(),
        &args.sampling.stop(),
        |piece| {
            if stream {
                print!("{piece}");
                let _ = stdout.flush();
            }
            true
        },
    )?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "text": out.text,
                "tokens": out.tokens,
                "prompt_tokens": out.prompt_tokens,
                "completion_tokens": out.tokens.len(),
                "finish_reason": out.finish_reason.as_str(),
            })
        );
    } else {
        println!();
    }
    Ok(())
}

/// `sprout chat`: reads a line, streams the answer, remembers the conversation.
#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// A system message starting the conversation.
    #[arg(long)]
    system: Option<String>,
}

pub fn chat(args: ChatArgs) -> Result<()> {
    let (prompt_format, mut engine) = args.model.load_engine()?;
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(ChatMessage {
            role: "system".into(),
            content: s.clone(),
        });
    }
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    eprintln!("sprout chat — empty line or Ctrl-D to quit, /reset to forget the conversation");
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        if line.is_empty() {
            break;
        }
        if line == "/reset" {
            messages.truncate(usize::from(args.system.is_some()));
            continue;
        }
        messages.push(ChatMessage {
            role: "user".into(),
            content: line.to_string(),
        });
        let prompt = prompt_format.chat_prompt(&messages)?;
        let ctx = engine.model().config.context_tokens;
        if prompt.len() >= ctx {
            bail!(
                "the conversation ({} tokens) no longer fits the context of {ctx}; use /reset",
                prompt.len()
            );
        }
        let mut stop = args.sampling.stop();
        stop.max_tokens = stop.max_tokens.min(ctx - prompt.len());
        let out = generation::generate(
            &mut engine,
            &prompt_format.tokenizer,
            &prompt,
            &args.sampling.params(),
            &stop,
            |piece| {
                print!("{piece}");
                let _ = stdout.flush();
                true
            },
        )?;
        println!();
        if out.finish_reason == FinishReason::Length {
            eprintln!("[stopped at {} tokens]", out.tokens.len());
        }
        messages.push(ChatMessage {
            role: "assistant".into(),
            content: out.text,
        });
    }
    Ok(())
}
