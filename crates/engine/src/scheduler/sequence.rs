//! One request inside the scheduler: its tokens (prompt, then generated), how many of them the
//! KV cache holds, and the per-sequence sampling, stop and text state.

use std::time::Instant;

use super::{
    Event, EventSink, GenerationError, GenerationRequest, TextStream, TokenConstraint, Usage,
};
use crate::engine::SeqId;
use crate::generation::{FinishReason, StopConditions, StopMatcher};
use crate::sampler::Sampler;

/// What became of a sequence after its logits were handled.
#[derive(Debug, PartialEq)]
pub(crate) enum Progress {
    /// Still generating.
    Running,
    /// Finished normally (the final event is not sent yet).
    Finished(FinishReason),
    /// The client is gone.
    Cancelled,
    /// Generation failed.
    Failed(GenerationError),
}

/// A request being served.
pub(crate) struct Sequence {
    /// The engine's sequence while admitted.
    pub seq: Option<SeqId>,
    /// Prompt tokens followed by generated (sampled or forced) tokens.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    /// Tokens stored in the KV cache; `tokens[computed..]` go into the next steps.
    pub computed: usize,
    /// Prompt tokens taken from the prefix cache.
    pub cached_tokens: usize,
    /// Prompt full blocks were offered to the prefix cache.
    pub prompt_cached: bool,
    /// KV blocks this sequence may hold at most (prompt + max_tokens).
    pub max_blocks: usize,
    pub deadline: Option<(Instant, u64)>,
    sampler: Sampler,
    constraint: Option<Box<dyn TokenConstraint>>,
    stop: StopConditions,
    text: Box<dyn TextStream>,
    matcher: StopMatcher,
    sink: Box<dyn EventSink>,
    generated: usize,
}

impl Sequence {
    /// A waiting sequence for `req`.
    pub fn new(
        req: GenerationRequest,
        text: Box<dyn TextStream>,
        block_tokens: usize,
        now: Instant,
    ) -> Self {
        let prompt_len = req.prompt.len();
        let max_blocks = (prompt_len + req.stop.max_tokens).div_ceil(block_tokens.max(1));
        let deadline = req.timeout.map(|t| (now + t, t.as_millis() as u64));
        let mut tokens = req.prompt;
        tokens.reserve(req.stop.max_tokens.min(1 << 16));
        Self {
            seq: None,
            tokens,
            prompt_len,
            computed: 0,
            cached_tokens: 0,
            prompt_cached: false,
            max_blocks,
            deadline,
            sampler: Sampler::new(req.sampling),
            constraint: req.constraint,
            matcher: StopMatcher::new(&req.stop.stop_strings),
            stop: req.stop,
            text,
            sink: req.events,
            generated: 0,
        }
    }

    /// Whether the client went away.
    pub fn is_closed(&self) -> bool {
        self.sink.is_closed()
    }

    /// Whether the prompt is fully in the KV cache.
    pub fn prefilled(&self) -> bool {
        self.computed >= self.prompt_len
    }

    /// Usage so far.
    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_len,
            completion_tokens: self.generated,
            cached_tokens: self.cached_tokens,
        }
    }

    /// Samples from the logits after the last token and appends the result (and any tokens the
    /// constraint forces after it), streaming clean text to the client.
    pub fn advance(&mut self, logits: &mut [f32], eos_ids: &[u32]) -> Progress {
        if crate::sampler::has_nan(logits) {
            return Progress::Failed(GenerationError::InvalidLogits);
        }
        let mask = self.constraint.as_mut().and_then(|c| c.allowed());
        let Some(tok) = self.sampler.sample(logits, mask) else {
            return Progress::Failed(match self.constraint {
                Some(_) => GenerationError::Constraint("no token is allowed here".into()),
                None => GenerationError::InvalidLogits,
            });
        };
        if !self.stop.ignore_eos && eos_ids.contains(&tok) {
            return Progress::Finished(FinishReason::Stop);
        }
        let forced = match self.constraint.as_mut().map(|c| c.accept(tok)) {
            None => Vec::new(),
            Some(Ok(forced)) => forced,
            Some(Err(msg)) => return Progress::Failed(GenerationError::Constraint(msg)),
        };
        for t in std::iter::once(tok).chain(forced) {
            match self.append(t) {
                Progress::Running => {}
                other => return other,
            }
        }
        Progress::Running
    }

    fn append(&mut self, tok: u32) -> Progress {
        self.sampler.accept(tok);
        self.tokens.push(tok);
        self.generated += 1;
        let (piece, stopped) = self.matcher.push(&self.text.push(tok));
        if !piece.is_empty() && !self.sink.send(Event::Text(piece)) {
            return Progress::Cancelled;
        }
        if stopped {
            Progress::Finished(FinishReason::Stop)
        } else if self.generated >= self.stop.max_tokens {
            Progress::Finished(FinishReason::Length)
        } else {
            Progress::Running
        }
    }

    /// Sends what the decoder and stop matcher still hold, then the final event.
    pub fn finish(&mut self, reason: FinishReason) {
        let (piece, hit) = self.matcher.push(&self.text.finish());
        let rest = if hit {
            String::new()
        } else {
            self.matcher.finish()
        };
        let tail = piece + &rest;
        if !tail.is_empty() && !self.sink.send(Event::Text(tail)) {
            return;
        }
        let usage = self.usage();
        self.sink.send(Event::Finished { reason, usage });
    }

    /// Sends an error as the final event.
    pub fn fail(&mut self, error: GenerationError) {
        self.sink.send(Event::Failed(error));
    }
}
