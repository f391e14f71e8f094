//! What goes into the scheduler and what comes out of it: a validated request, the constraint
//! that may restrict and extend its tokens, and the typed events and errors it hears back.

use std::sync::mpsc;
use std::time::Duration;

use crate::generation::{FinishReason, StopConditions};
use crate::sampler::{SamplingParams, TokenMask};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// Identifies a request for its whole life (queue, running, cancel).
pub type RequestId = u64;

/// A request checked by its API layer: prompt tokenized, every parameter in range.
pub struct GenerationRequest {
    pub prompt: Vec<u32>,
    pub sampling: SamplingParams,
    pub stop: StopConditions,
    /// Limits which tokens may be sampled and may force tokens after them (grammars).
    pub constraint: Option<Box<dyn TokenConstraint>>,
    /// Ends the request with [`GenerationError::Timeout`] when it runs longer.
    pub timeout: Option<Duration>,
    /// Where the events of this request go.
    pub events: Box<dyn EventSink>,
}

/// What a constraint says after a sampled token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Generated tokens to drop from the end first (the forced text re-tokenizes across them).
    pub backtrack: usize,
    /// Bytes of text those dropped tokens carried (already streamed; not sent again).
    pub backtrack_bytes: usize,
    /// Tokens appended without sampling (jump-forward), computed in the next step.
    pub forced: Vec<u32>,
    /// The constraint allows nothing more: generation ends here.
    pub done: bool,
}

/// Restricts a sequence's tokens (a grammar) and may append forced tokens after a sampled one
/// (jump-forward), which the next step feeds all at once.
///
/// `compute_mask` runs on a helper thread while the forward pass of the same step runs (the
/// mask for the next token depends only on tokens already accepted); `mask` and `accept` run on
/// the scheduler thread after the step.
pub trait TokenConstraint: Send {
    /// Prepares the mask of tokens allowed next.
    fn compute_mask(&mut self) -> Result<(), String>;
    /// The mask prepared last; None allows all.
    fn mask(&self) -> Option<&TokenMask>;
    /// Records a sampled token; what follows it, or why the token is a dead end.
    fn accept(&mut self, token: u32) -> Result<Accepted, String>;
    /// Whether the tokens so far form a complete answer (an end-of-sequence token may end it).
    fn is_complete(&mut self) -> bool;
    /// Tokens forced before anything is sampled (appended after the prompt at admission).
    fn start(&mut self) -> Result<Vec<u32>, String> {
        Ok(Vec::new())
    }
    /// Tokens forced so far (for usage and metrics).
    fn forced_tokens(&self) -> usize {
        0
    }
    /// Time spent computing masks so far, in microseconds, and how many masks.
    fn mask_time(&self) -> (u64, u64) {
        (0, 0)
    }
}

/// Token counts of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens served from the prefix cache instead of being computed.
    pub cached_tokens: usize,
    /// Completion tokens appended by the constraint without sampling (jump-forward).
    pub forced_tokens: usize,
}

/// What a request hears from the scheduler: text deltas, then exactly one final event
/// (unless the client went away first).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Clean text that is final (stop strings already cut, UTF-8 complete).
    Text(String),
    /// Generation ended normally.
    Finished { reason: FinishReason, usage: Usage },
    /// Generation failed; other requests are unaffected.
    Failed(GenerationError),
}

/// The receiving end of a request, as the scheduler sees it.
pub trait EventSink: Send {
    /// Delivers an event; false when the receiver is gone (the request is then cancelled).
    fn send(&mut self, event: Event) -> bool;
    /// Whether the receiver is gone, checked before every step.
    fn is_closed(&self) -> bool;
}

impl EventSink for mpsc::Sender<Event> {
    fn send(&mut self, event: Event) -> bool {
        mpsc::Sender::send(self, event).is_ok()
    }
    fn is_closed(&self) -> bool {
        false
    }
}

/// Why a request failed. Each cause is its own variant; the strings only explain.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenerationError {
    #[error("the request timed out after {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    #[error(
        "the request needs {needed_tokens} tokens of KV cache (prompt + max_tokens) but the server \
         holds {capacity_tokens} in all; shorten the prompt or lower max_tokens"
    )]
    NeverFits {
        needed_tokens: usize,
        capacity_tokens: usize,
    },
    #[error("prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceeds the context of {context_tokens} tokens")]
    ContextExceeded {
        prompt_tokens: usize,
        max_tokens: usize,
        context_tokens: usize,
    },
    #[error("the prompt has no tokens")]
    EmptyPrompt,
    #[error("max_tokens must be at least 1")]
    ZeroMaxTokens,
    #[error("the model produced invalid logits (NaN)")]
    InvalidLogits,
    #[error("the grammar allows no continuation here: {detail}")]
    ConstraintDeadEnd { detail: String },
    #[error(
        "max_tokens ({max_tokens}) was reached before the constrained output was complete; \
         the partial output is not returned: raise max_tokens or bound the schema's strings and arrays"
    )]
    Incomplete { max_tokens: usize },
    #[error("the engine refused the step: {detail}")]
    StepFailed { detail: String },
    #[error("the engine step panicked: {detail}")]
    StepPanicked { detail: String },
    #[error("the request was cancelled")]
    Cancelled,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the engine stopped after a fault it could not recover from")]
    EngineDown,
}

/// Turns one sequence's token ids into text as they come.
pub trait TextStream: Send {
    /// Adds a token; returns text that became complete.
    fn push(&mut self, id: u32) -> String;
    /// The next `bytes` bytes pushed were already streamed (tokens re-tokenized after a
    /// backtrack): drop them instead of sending them twice.
    fn skip_bytes(&mut self, bytes: usize);
    /// Ends the text, returning what is still pending.
    fn finish(&mut self) -> String;
}

impl TextStream for StreamDecoder {
    fn push(&mut self, id: u32) -> String {
        StreamDecoder::push(self, id)
    }
    fn skip_bytes(&mut self, bytes: usize) {
        StreamDecoder::skip_bytes(self, bytes)
    }
    fn finish(&mut self) -> String {
        StreamDecoder::finish(self)
    }
}

/// The vocabulary facts the scheduler needs.
pub trait Detokenizer: Send + Sync {
    /// A fresh text stream for one sequence.
    fn stream(&self) -> Box<dyn TextStream>;
    /// End-of-sequence token ids.
    fn eos_ids(&self) -> &[u32];
}

impl Detokenizer for Tokenizer {
    fn stream(&self) -> Box<dyn TextStream> {
        Box::new(StreamDecoder::new(self))
    }
    fn eos_ids(&self) -> &[u32] {
        Tokenizer::eos_ids(self)
    }
}
