//! `sprout generate` (one prompt) and `sprout chat` (an interactive conversation), both on the
//! same continuous-batching scheduler as the server: one decode loop in the project, and a
//! conversation's next turn takes the previous turns' KV from the prefix cache.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use sprout_engine::bundle::PromptFormat;
use sprout_engine::chat_template::ChatMessage;
use sprout_engine::generation::{FinishReason, StopConditions};
use sprout_engine::grammar::{GrammarCompiler, GrammarSpec};
use sprout_engine::sampler::SamplingParams;
use sprout_engine::scheduler::{
    GenerationRequest, Scheduler, SchedulerConfig, SchedulerHandle, TokenConstraint,
};

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
    /// Print one JSON line: text, finish_reason and token counts.
    #[arg(long)]
    json: bool,
    /// The answer must match this JSON Schema (a file).
    #[arg(long, conflicts_with_all = ["regex", "lark"])]
    json_schema: Option<PathBuf>,
    /// The answer must match this regular expression.
    #[arg(long, conflicts_with = "lark")]
    regex: Option<String>,
    /// The answer must match this Lark grammar (a file).
    #[arg(long)]
    lark: Option<PathBuf>,
    /// Sample a grammar's forced text token by token instead of appending it.
    #[arg(long)]
    no_jump_forward: bool,
}

/// A model behind its own scheduler thread, for one CLI session.
struct Session {
    prompt: PromptFormat,
    scheduler: SchedulerHandle,
    context_tokens: usize,
    vocab_size: usize,
}

impl Session {
    fn start(model: &ModelArgs) -> Result<Self> {
        let (prompt, engine) = model.load_engine()?;
        let context_tokens = engine.model().config.context_tokens;
        let vocab_size = engine.model().config.vocab_size;
        let (scheduler, _join) = Scheduler::spawn(
            engine,
            prompt.tokenizer.clone(),
            SchedulerConfig {
                max_running_seqs: 1,
                ..Default::default()
            },
        )?;
        Ok(Self {
            prompt,
            scheduler,
            context_tokens,
            vocab_size,
        })
    }

    /// Generates for `tokens`, printing pieces as they come when `print` is set.
    fn run(
        &self,
        tokens: Vec<u32>,
        sampling: &SamplingArgs,
        constraint: Option<Box<dyn TokenConstraint>>,
        print: bool,
    ) -> Result<sprout_engine::scheduler::Generated> {
        let mut stop = sampling.stop();
        let room = self.context_tokens.saturating_sub(tokens.len());
        if room == 0 {
            bail!(
                "the prompt ({} tokens) fills the context of {}; shorten it (or /reset a chat)",
                tokens.len(),
                self.context_tokens
            );
        }
        stop.max_tokens = stop.max_tokens.min(room);
        let (tx, _rx) = std::sync::mpsc::channel();
        let req = GenerationRequest {
            prompt: tokens,
            sampling: sampling.params(),
            stop,
            constraint,
            timeout: None,
            events: Box::new(tx),
        };
        let mut stdout = std::io::stdout();
        let out = self.scheduler.generate_blocking(req, |piece| {
            if print {
                print!("{piece}");
                let _ = stdout.flush();
            }
            true
        })?;
        Ok(out)
    }
}

impl GenerateArgs {
    fn grammar(&self) -> Result<Option<GrammarSpec>> {
        if let Some(p) = &self.json_schema {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let v = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", p.display()))?;
            return Ok(Some(GrammarSpec::JsonSchema(v)));
        }
        if let Some(r) = &self.regex {
            return Ok(Some(GrammarSpec::Regex(r.clone())));
        }
        if let Some(p) = &self.lark {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            return Ok(Some(GrammarSpec::Lark(text)));
        }
        Ok(None)
    }
}

pub fn generate(args: GenerateArgs) -> Result<()> {
    let session = Session::start(&args.model)?;
    let prompt_format = &session.prompt;
    let prompt = if args.raw {
        prompt_format.encode_prompt(&args.prompt, false)
    } else {
        let mut messages = Vec::new();
        if let Some(s) = &args.system {
            messages.push(ChatMessage::new("system", s.clone()));
        }
        messages.push(ChatMessage::new("user", args.prompt.clone()));
        prompt_format.chat_prompt(&messages)?
    };
    let constraint = match args.grammar()? {
        None => None,
        Some(spec) => {
            let compiler = GrammarCompiler::new(
                Arc::clone(&prompt_format.tokenizer),
                session.vocab_size,
                !args.no_jump_forward,
            )?;
            Some(Box::new(compiler.constraint(&spec)?) as Box<dyn TokenConstraint>)
        }
    };
    let out = session.run(prompt, &args.sampling, constraint, !args.json)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "text": out.text,
                "finish_reason": out.reason.as_str(),
                "prompt_tokens": out.usage.prompt_tokens,
                "completion_tokens": out.usage.completion_tokens,
                "cached_tokens": out.usage.cached_tokens,
                "forced_tokens": out.usage.forced_tokens,
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
    /// After each answer, print its token counts (prompt, computed, cached) to stderr.
    #[arg(long)]
    stats: bool,
}

pub fn chat(args: ChatArgs) -> Result<()> {
    let session = Session::start(&args.model)?;
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(ChatMessage::new("system", s.clone()));
    }
    let stdin = std::io::stdin();
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
        messages.push(ChatMessage::new("user", line.to_string()));
        let prompt = session.prompt.chat_prompt(&messages)?;
        // The earlier turns' tokens are in the prefix cache: only the new ones are computed.
        let out = session.run(prompt, &args.sampling, None, true)?;
        println!();
        if out.reason == FinishReason::Length {
            eprintln!("[stopped at {} tokens]", out.usage.completion_tokens);
        }
        if args.stats {
            let u = out.usage;
            eprintln!(
                "[prompt {} tokens: {} computed, {} cached; {} generated]",
                u.prompt_tokens,
                u.prompt_tokens - u.cached_tokens,
                u.cached_tokens,
                u.completion_tokens
            );
        }
        messages.push(ChatMessage::new("assistant", out.text));
    }
    Ok(())
}
