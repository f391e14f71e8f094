//! One request inside the scheduler: its tokens (prompt, then generated), how many of them the
//! KV cache holds, and the per-sequence sampling, stop and text state.

use std::time::Instant;

use super::request::{
    Event, EventSink, GenerationError, GenerationRequest, RequestId, TextStream, TokenConstraint,
    Usage,
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
    pub id: RequestId,
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
        id: RequestId,
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
            id,
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
            forced_tokens: self.constraint.as_ref().map_or(0, |c| c.forced_tokens()),
        }
    }

    /// The tokens and the constraint, borrowed apart for one step: the forward pass reads the
    /// tokens while a helper thread computes the constraint's next mask.
    pub fn split_for_step(&mut self) -> (&[u32], Option<&mut (dyn TokenConstraint + 'static)>) {
        (&self.tokens, self.constraint.as_deref_mut())
    }

    /// Whether a constraint restricts this sequence.
    pub fn is_constrained(&self) -> bool {
        self.constraint.is_some()
    }

    /// Appends what the constraint forces before anything is sampled (jump-forward from the
    /// start); Some when the request ends here.
    pub fn begin(&mut self) -> Option<Progress> {
        let forced = match self.constraint.as_mut().map(|c| c.start()) {
            None => return None,
            Some(Ok(f)) => f,
            Some(Err(detail)) => {
                return Some(Progress::Failed(GenerationError::ConstraintDeadEnd {
                    detail,
                }))
            }
        };
        let room = self.stop.max_tokens.saturating_sub(1);
        for &t in forced.iter().take(room) {
            if let Some(p) = self.append(t) {
                return Some(p);
            }
        }
        None
    }

    /// Samples from the logits after the last token and appends the result (and any tokens the
    /// constraint forces after it, after dropping those it re-tokenizes), streaming clean text
    /// to the client. Tokens dropped below `computed` must then be dropped from the KV cache
    /// too: the caller truncates when `computed > tokens.len()`.
    pub fn advance(&mut self, logits: &mut [f32], eos_ids: &[u32]) -> Progress {
        if crate::sampler::has_nan(logits) {
            return Progress::Failed(GenerationError::InvalidLogits);
        }
        let mask = self.constraint.as_ref().and_then(|c| c.mask());
        let Some(tok) = self.sampler.sample(logits, mask) else {
            return Progress::Failed(match self.constraint {
                Some(_) => GenerationError::ConstraintDeadEnd {
                    detail: "no token is allowed here".into(),
                },
                None => GenerationError::InvalidLogits,
            });
        };
        // An end-of-sequence token ends a constrained answer only where it is complete (else
        // the constraint judges the token below).
        let complete = self.constraint.as_mut().is_none_or(|c| c.is_complete());
        if !self.stop.ignore_eos && complete && eos_ids.contains(&tok) {
            return Progress::Finished(FinishReason::Stop);
        }
        let accepted = match self.constraint.as_mut().map(|c| c.accept(tok)) {
            None => Default::default(),
            Some(Ok(a)) => a,
            Some(Err(detail)) => {
                return Progress::Failed(GenerationError::ConstraintDeadEnd { detail })
            }
        };
        if let Some(p) = self.append(tok) {
            return p;
        }
        if accepted.backtrack > 0 {
            let keep = self.tokens.len().saturating_sub(accepted.backtrack);
            let keep = keep.max(self.prompt_len);
            self.generated -= self.tokens.len() - keep;
            self.tokens.truncate(keep);
            self.text.skip_bytes(accepted.backtrack_bytes);
        }
        let room = self.stop.max_tokens.saturating_sub(self.generated);
        for &t in accepted.forced.iter().take(room) {
            if let Some(p) = self.append(t) {
                return p;
            }
        }
        if accepted.done {
            return Progress::Finished(FinishReason::Stop);
        }
        if self.generated >= self.stop.max_tokens {
            let complete = self.constraint.as_mut().is_none_or(|c| c.is_complete());
            return if complete {
                Progress::Finished(FinishReason::Length)
            } else {
                Progress::Failed(GenerationError::Incomplete {
                    max_tokens: self.stop.max_tokens,
                })
            };
        }
        Progress::Running
    }

    /// Appends one token and streams its text; Some when generation ends here.
    fn append(&mut self, tok: u32) -> Option<Progress> {
        self.sampler.accept(tok);
        self.tokens.push(tok);
        self.generated += 1;
        let (piece, stopped) = self.matcher.push(&self.text.push(tok));
        if !piece.is_empty() && !self.sink.send(Event::Text(piece)) {
            return Some(Progress::Cancelled);
        }
        stopped.then_some(Progress::Finished(FinishReason::Stop))
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
