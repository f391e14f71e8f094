//! What ends a generation: finish reasons, token limits, and stop strings found in streamed
//! text. The decode loop itself is the scheduler's (one loop for the server and the CLI).

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
