//! The one generation pipeline every front end (OpenAI, Leafresh, books, the web page) calls: a
//! validated [`GenerationJob`] in — admission, prompt rendering and tokenization, grammar
//! compilation off the async threads, the token budget, submission — and a
//! [`GenerationHandle`] out, with its request id and typed events. Dropping the handle before
//! the end cancels the request by id. Failures are one neutral [`PipelineError`]; each API maps
//! it to its own error body at its edge.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sprout_engine::chat_template::ChatMessage;
use sprout_engine::generation::{FinishReason, StopConditions};
use sprout_engine::grammar::{GrammarError, GrammarSpec};
use sprout_engine::sampler::SamplingParams;
use sprout_engine::scheduler::{
    Event, EventSink, GenerationError, GenerationRequest, Limits, RequestId, SchedulerHandle, Usage,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::admission::Permit;
use crate::state::{AppState, Serving};

/// What the prompt is before tokenization.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    /// Messages rendered by the model's chat template (generation prompt appended).
    Chat(Vec<ChatMessage>),
    /// Raw text (BOS added where the model wants it).
    Text(String),
}

/// A request every field of which its front end has checked.
#[derive(Debug, Clone)]
pub struct GenerationJob {
    pub prompt: PromptInput,
    pub sampling: SamplingParams,
    /// None: the server default, clipped to the context.
    pub max_tokens: Option<usize>,
    pub stop_strings: Vec<String>,
    pub ignore_eos: bool,
    /// The output must match this grammar.
    pub grammar: Option<GrammarSpec>,
}

/// Why the pipeline could not produce an answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PipelineError {
    #[error("the model is still loading")]
    NotReady,
    #[error("server is at capacity ({limit} requests in flight); retry after {retry_after_s} s")]
    Overloaded { limit: usize, retry_after_s: u64 },
    #[error("the chat template could not render these messages: {0}")]
    Template(String),
    #[error("the prompt is empty (no tokens)")]
    EmptyPrompt,
    #[error("{0}")]
    Grammar(GrammarError),
    #[error("{0}")]
    Generation(GenerationError),
    #[error("the constrained output failed its final check: {0}")]
    InvalidOutput(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<GenerationError> for PipelineError {
    fn from(e: GenerationError) -> Self {
        PipelineError::Generation(e)
    }
}

/// Events flow to the handle through this sink; a dropped handle closes it and the scheduler
/// cancels the sequence at its next step.
struct ChannelSink(UnboundedSender<Event>);

impl EventSink for ChannelSink {
    fn send(&mut self, event: Event) -> bool {
        self.0.send(event).is_ok()
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// A submitted request: its id, sizes, and events.
pub struct GenerationHandle {
    pub id: RequestId,
    pub prompt_tokens: usize,
    pub max_tokens: usize,
    /// When the front end received the request.
    pub started: Instant,
    events: UnboundedReceiver<Event>,
    scheduler: SchedulerHandle,
    grammar: Option<GrammarSpec>,
    text: String,
    done: bool,
    _permit: Permit,
}

/// One step of an answer as a front end sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Clean text, final.
    Text(String),
    /// The end: checked, with usage and the reason.
    Done { reason: FinishReason, usage: Usage },
}

/// The response header that carries a request's token counts on APIs whose body has no usage
/// field (Leafresh, books): compact JSON, see [`usage_json`].
pub const USAGE_HEADER: &str = "x-sprout-usage";

/// A request's token counts as JSON: `{"prompt_tokens","completion_tokens","cached_tokens",
/// "forced_tokens"}`.
pub fn usage_json(usage: &Usage) -> serde_json::Value {
    serde_json::json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens,
        "forced_tokens": usage.forced_tokens,
    })
}

/// Puts `usage` in `response`'s [`USAGE_HEADER`].
pub fn set_usage_header(response: &mut axum::response::Response, usage: &Usage) {
    if let Ok(value) = axum::http::HeaderValue::from_str(&usage_json(usage).to_string()) {
        response.headers_mut().insert(USAGE_HEADER, value);
    }
}

/// A whole answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub text: String,
    pub reason: FinishReason,
    pub usage: Usage,
}

impl GenerationHandle {
    /// The next piece of the answer; after `Done` or an error, None.
    pub async fn next(&mut self) -> Option<Result<Output, PipelineError>> {
        if self.done {
            return None;
        }
        let ev = self.events.recv().await;
        match ev {
            Some(Event::Text(t)) => {
                if self.grammar.is_some() {
                    self.text.push_str(&t);
                }
                Some(Ok(Output::Text(t)))
            }
            Some(Event::Finished { reason, usage }) => {
                self.done = true;
                Some(match self.check(reason) {
                    Ok(()) => Ok(Output::Done { reason, usage }),
                    Err(e) => Err(e),
                })
            }
            Some(Event::Failed(e)) => {
                self.done = true;
                Some(Err(e.into()))
            }
            None => {
                self.done = true;
                Some(Err(match self.scheduler.health() {
                    sprout_engine::scheduler::Health::Serving => {
                        GenerationError::ShuttingDown.into()
                    }
                    sprout_engine::scheduler::Health::Down { .. } => {
                        GenerationError::EngineDown.into()
                    }
                }))
            }
        }
    }

    /// Waits for the whole answer.
    pub async fn collect(mut self) -> Result<Answer, PipelineError> {
        let mut text = String::new();
        while let Some(out) = self.next().await {
            match out? {
                Output::Text(t) => text.push_str(&t),
                Output::Done { reason, usage } => {
                    return Ok(Answer {
                        text,
                        reason,
                        usage,
                    })
                }
            }
        }
        Err(PipelineError::Internal(
            "the answer ended without a final event".into(),
        ))
    }

    /// The final check of a constrained answer: complete JSON that parses (the grammar held
    /// every token; this catches a grammar that let something through, and never returns it).
    fn check(&self, reason: FinishReason) -> Result<(), PipelineError> {
        let Some(g) = &self.grammar else {
            return Ok(());
        };
        if reason == FinishReason::Length {
            return Err(GenerationError::Incomplete {
                max_tokens: self.max_tokens,
            }
            .into());
        }
        if g.is_json() {
            let v: serde_json::Value = serde_json::from_str(&self.text)
                .map_err(|e| PipelineError::InvalidOutput(format!("not JSON: {e}")))?;
            if let GrammarSpec::JsonSchema(schema) = g {
                let validator = jsonschema::validator_for(schema)
                    .map_err(|e| PipelineError::InvalidOutput(format!("schema: {e}")))?;
                validator.validate(&v).map_err(|e| {
                    PipelineError::InvalidOutput(format!("{e} (at {})", e.instance_path()))
                })?;
            } else if !v.is_object() {
                return Err(PipelineError::InvalidOutput("not a JSON object".into()));
            }
        }
        Ok(())
    }
}

impl Drop for GenerationHandle {
    fn drop(&mut self) {
        if !self.done {
            self.scheduler.cancel(self.id);
        }
    }
}

/// Admits, prepares and submits `job`. Errors before any model work (not ready, overloaded,
/// bad template, bad grammar, no room) come back here; later ones as events of the handle.
pub async fn submit(st: &AppState, job: GenerationJob) -> Result<GenerationHandle, PipelineError> {
    let started = Instant::now();
    let serving = st.serving.get().cloned().ok_or(PipelineError::NotReady)?;
    let permit = st
        .admission
        .try_acquire()
        .ok_or(PipelineError::Overloaded {
            limit: st.admission.limit(),
            retry_after_s: 1,
        })?;
    let prepared = {
        let serving = serving.clone();
        let (prompt, grammar) = (job.prompt.clone(), job.grammar.clone());
        // Templates, tokenizers and grammar compiles can take milliseconds: not on the reactor.
        tokio::task::spawn_blocking(move || prepare(&serving, prompt, grammar.as_ref()))
            .await
            .map_err(|e| PipelineError::Internal(format!("prompt task: {e}")))??
    };
    let (prompt, constraint) = prepared;
    let limits = serving.scheduler.limits();
    let max_tokens = max_tokens_for(
        job.max_tokens,
        prompt.len(),
        &limits,
        st.config.default_max_tokens,
    )?;
    let (tx, rx) = unbounded_channel();
    let prompt_tokens = prompt.len();
    let id = serving.scheduler.submit(GenerationRequest {
        prompt,
        sampling: job.sampling,
        stop: StopConditions {
            max_tokens,
            stop_strings: job.stop_strings,
            ignore_eos: job.ignore_eos,
        },
        constraint: constraint.map(|c| Box::new(c) as _),
        timeout: Some(Duration::from_millis(st.config.request_timeout_ms)),
        events: Box::new(ChannelSink(tx)),
    })?;
    tracing::debug!(id, prompt_tokens, max_tokens, "request submitted");
    Ok(GenerationHandle {
        id,
        prompt_tokens,
        max_tokens,
        started,
        events: rx,
        scheduler: serving.scheduler.clone(),
        grammar: job.grammar,
        text: String::new(),
        done: false,
        _permit: permit,
    })
}

type Prepared = (Vec<u32>, Option<sprout_engine::grammar::GrammarConstraint>);

fn prepare(
    serving: &Arc<Serving>,
    prompt: PromptInput,
    grammar: Option<&GrammarSpec>,
) -> Result<Prepared, PipelineError> {
    let constraint = grammar
        .map(|g| serving.grammars.constraint(g))
        .transpose()
        .map_err(PipelineError::Grammar)?;
    let tokens = match prompt {
        PromptInput::Chat(messages) => serving
            .prompt
            .chat_prompt(&messages)
            .map_err(|e| PipelineError::Template(e.to_string()))?,
        PromptInput::Text(text) => serving.prompt.encode_prompt(&text, true),
    };
    Ok((tokens, constraint))
}

/// The token budget of a tokenized request: max_tokens (given or default) checked against the
/// context and the KV cache.
pub fn max_tokens_for(
    requested: Option<usize>,
    prompt_tokens: usize,
    limits: &Limits,
    default_max_tokens: usize,
) -> Result<usize, PipelineError> {
    if prompt_tokens == 0 {
        return Err(PipelineError::EmptyPrompt);
    }
    let max_tokens = match requested {
        Some(n) => n,
        None => {
            let room = limits
                .context_tokens
                .min(limits.kv_capacity_tokens)
                .saturating_sub(prompt_tokens);
            default_max_tokens.min(room).max(1)
        }
    };
    limits.check(prompt_tokens, max_tokens)?;
    Ok(max_tokens)
}
