//! One request's generation on top of the engine: prompt prefill in chunks, the decode loop,
//! stop strings, EOS and token limits, and clean streamed text.

use crate::engine::{Engine, SeqId, StepInput};
use crate::sampler::{Sampler, SamplingParams};
use crate::tokenizer::{StreamDecoder, Tokenizer};
use crate::{EngineError, Result};

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The caller asked to stop.
    Cancelled,
}

impl FinishReason {
    /// The OpenAI name of the reason.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// Limits and stop conditions of one generation.
#[derive(Debug, Clone, Default)]
pub struct StopConditions {
    pub max_tokens: usize,
    pub stop_strings: Vec<String>,
    pub ignore_eos: bool,
}

/// Finds stop strings in streamed text, holding back any tail that could still become one, so
/// the caller never emits text that a later token turns into a stop.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Adds new text; returns the text safe to emit and whether a stop string was found (the
    /// stop string and everything after it are dropped).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        self.pending.push_str(text);
        let first_stop = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = first_stop {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        // Hold back the longest suffix that is a proper prefix of some stop string.
        let mut hold = 0;
        for s in &self.stops {
            for (i, _) in s.char_indices().skip(1) {
                if i > hold && self.pending.ends_with(&s[..i]) {
                    hold = i;
                }
            }
        }
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (out, false)
    }

    /// Text still held back, released when generation ends for another reason.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// The outcome of [`generate`].
#[derive(Debug, Clone)]
pub struct Generated {
    pub text: String,
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub finish_reason: FinishReason,
}

/// Prompt tokens fed to one step at most, so long prompts do not build huge activations.
pub const PREFILL_CHUNK_TOKENS: usize = 512;

/// Generates for one prompt on its own sequence, calling `on_text` with each clean piece of
/// text as it becomes final; `on_text` returns false to cancel.
pub fn generate(
    engine: &mut Engine,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    params: &SamplingParams,
    stop: &StopConditions,
    mut on_text: impl FnMut(&str) -> bool,
) -> Result<Generated> {
    params.validate()?;
    if prompt.is_empty() {
        return Err(EngineError::InvalidRequest(
            "the prompt has no tokens".into(),
        ));
    }
    let ctx = engine.model().config.context_tokens;
    if prompt.len() + stop.max_tokens > ctx {
        return Err(EngineError::InvalidRequest(format!(
            "prompt ({} tokens) + max_tokens ({}) exceeds the context of {ctx} tokens",
            prompt.len(),
            stop.max_tokens
        )));
    }
    let seq = engine.add_sequence();
    let result = run(engine, seq, tokenizer, prompt, params, stop, &mut on_text);
    engine.remove_sequence(seq);
    result
}

fn run(
    engine: &mut Engine,
    seq: SeqId,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    params: &SamplingParams,
    stop: &StopConditions,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Generated> {
    let mut logits = Vec::new();
    let chunks: Vec<&[u32]> = prompt.chunks(PREFILL_CHUNK_TOKENS).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let mut out = engine.step(&[StepInput {
            seq,
            tokens: chunk,
            want_logits: last,
        }])?;
        if last {
            logits = out.pop().expect("one input wanted logits");
        }
    }
    let mut sampler = Sampler::new(params.clone());
    let mut decoder = StreamDecoder::new(tokenizer);
    let mut matcher = StopMatcher::new(&stop.stop_strings);
    let mut text = String::new();
    let mut tokens = Vec::new();
    let mut emit = |piece: &str, text: &mut String| -> bool {
        text.push_str(piece);
        piece.is_empty() || on_text(piece)
    };
    let finish_reason = loop {
        if tokens.len() >= stop.max_tokens {
            break FinishReason::Length;
        }
        let tok = sampler.sample(&mut logits, None).ok_or_else(|| {
            EngineError::InvalidRequest("the model produced no valid logits (NaN)".into())
        })?;
        if !stop.ignore_eos && tokenizer.eos_ids().contains(&tok) {
            break FinishReason::Stop;
        }
        sampler.accept(tok);
        tokens.push(tok);
        let (piece, stopped) = matcher.push(&decoder.push(tok));
        if !emit(&piece, &mut text) {
            break FinishReason::Cancelled;
        }
        if stopped {
            break FinishReason::Stop;
        }
        if tokens.len() >= stop.max_tokens {
            break FinishReason::Length;
        }
        logits = engine
            .step(&[StepInput {
                seq,
                tokens: &[tok],
                want_logits: true,
            }])?
            .pop()
            .expect("one input wanted logits");
    };
    if finish_reason != FinishReason::Cancelled {
        // Release what the decoder and the stop matcher still hold (incomplete UTF-8 becomes
        // U+FFFD, a held stop-string prefix that never completed is ordinary text).
        let (piece, hit) = matcher.push(&decoder.finish());
        let rest = if hit { String::new() } else { matcher.finish() };
        emit(&(piece + &rest), &mut text);
    }
    Ok(Generated {
        text,
        tokens,
        prompt_tokens: prompt.len(),
        finish_reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for p in pieces {
            let (o, stopped) = m.push(p);
            out += &o;
            if stopped {
                return (out, true);
            }
        }
        out += &m.finish();
        (out, false)
    }

    #[test]
    fn stop_spanning_pieces_is_cut() {
        assert_eq!(
            feed(&["END"], &["hello E", "N", "D more"]),
            ("hello ".into(), true)
        );
    }

    #[test]
    fn near_miss_is_released() {
        assert_eq!(
            feed(&["END"], &["hello E", "NX"]),
            ("hello ENX".into(), false)
        );
        assert_eq!(feed(&["END"], &["tail E"]), ("tail E".into(), false));
    }

    #[test]
    fn multibyte_and_empty_stops() {
        assert_eq!(
            feed(&["", "끝"], &["안녕 ", "끝이야"]),
            ("안녕 ".into(), true)
        );
        assert_eq!(feed(&[], &["a", "b"]), ("ab".into(), false));
    }

    #[test]
    fn earliest_of_many_stops_wins() {
        assert_eq!(feed(&["zz", "b", "abc"], &["xxabc"]), ("xx".into(), true));
        assert_eq!(
            feed(&["zz", "c", "abc"], &["xxab", "c"]),
            ("xx".into(), true)
        );
    }

    #[test]
    fn held_text_is_not_emitted_early() {
        let mut m = StopMatcher::new(&["</s>".to_string()]);
        assert_eq!(m.push("hi <"), ("hi ".to_string(), false));
        assert_eq!(m.push("/"), (String::new(), false));
        assert_eq!(m.push("x"), ("</x".to_string(), false));
    }
}
