//! A grounded answer's shape, held by the grammar: one sentence chosen from a few written for
//! the request, then exactly three distinct picks among the retrieved candidates' titles —
//! the model chooses, it does not compose, so every recommended item exists and the sentence
//! is always well-formed Korean. Descriptions come from the catalog, not from the model.
//!
//! The output is compact JSON, `{"recommend":"…","picks":["title","title","title"]}`; the
//! grammar (Lark, for llguidance) enumerates distinct ordered picks with shared rules: for N
//! candidates, N + N(N−1)/2 rules instead of N(N−1)(N−2) alternatives. [`AnswerStream`] turns
//! the JSON text as it is generated into clean pieces (sentence text, each completed pick).

use std::fmt::Write;

/// Why an answer grammar cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnswerError {
    /// Fewer than three distinct titles to choose from.
    #[error("an answer needs at least 3 distinct candidate titles, got {0}")]
    TooFewCandidates(usize),
    /// No sentence to choose.
    #[error("an answer needs at least one sentence to choose")]
    NoSentence,
    /// The generated text is not an answer of this shape.
    #[error("the answer is not the expected JSON: {0}")]
    Malformed(String),
}

/// Picks per answer.
pub const PICKS: usize = 3;

/// A Lark string literal matching `json` exactly (quotes, backslashes and newlines escaped).
pub fn lark_literal(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + 8);
    out.push('"');
    for c in json.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `s` as compact JSON string text (with its quotes).
fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// What the model writes after its picks, in the experiment that lets it describe them
/// (`"notes"`): one bounded Korean sentence per pick, Hangul, digits, spaces and commas,
/// ending in "니다.".
const NOTE_TERMINAL: &str = r#"NOTE: /"[가-힣][가-힣0-9 ,]{6,48}니다\."/"#;

/// The Lark grammar of an answer choosing one of `sentences` and 3 distinct `titles`.
pub fn answer_grammar(sentences: &[String], titles: &[String]) -> Result<String, AnswerError> {
    grammar(sentences, titles, false)
}

/// [`answer_grammar`] followed by `"notes"`: a generated description per pick (see
/// `NOTE_TERMINAL`), for comparing generated descriptions with the catalog's.
pub fn answer_grammar_with_notes(
    sentences: &[String],
    titles: &[String],
) -> Result<String, AnswerError> {
    grammar(sentences, titles, true)
}

fn grammar(sentences: &[String], titles: &[String], notes: bool) -> Result<String, AnswerError> {
    let mut distinct: Vec<&String> = Vec::new();
    for t in titles {
        if !distinct.contains(&t) {
            distinct.push(t);
        }
    }
    if distinct.len() < PICKS {
        return Err(AnswerError::TooFewCandidates(distinct.len()));
    }
    if sentences.is_empty() {
        return Err(AnswerError::NoSentence);
    }
    let n = distinct.len();
    let mut g = String::new();
    let tail = if notes {
        format!(
            "{} NOTE {comma} NOTE {comma} NOTE {}",
            lark_literal("],\"notes\":["),
            lark_literal("]}"),
            comma = lark_literal(",")
        )
    } else {
        lark_literal("]}")
    };
    let _ = writeln!(
        g,
        "start: {} sentence {} first {tail}",
        lark_literal("{\"recommend\":"),
        lark_literal(",\"picks\":["),
    );
    if notes {
        let _ = writeln!(g, "{NOTE_TERMINAL}");
    }
    let options: Vec<String> = sentences
        .iter()
        .map(|s| lark_literal(&json_string(s)))
        .collect();
    let _ = writeln!(g, "sentence: {}", options.join(" | "));
    for (i, t) in distinct.iter().enumerate() {
        let _ = writeln!(g, "t{i}: {}", lark_literal(&json_string(t)));
    }
    let comma = lark_literal(",");
    let firsts: Vec<String> = (0..n).map(|i| format!("t{i} {comma} after{i}")).collect();
    let _ = writeln!(g, "first: {}", firsts.join(" | "));
    for i in 0..n {
        let seconds: Vec<String> = (0..n)
            .filter(|&j| j != i)
            .map(|j| {
                let (a, b) = (i.min(j), i.max(j));
                format!("t{j} {comma} last{a}_{b}")
            })
            .collect();
        let _ = writeln!(g, "after{i}: {}", seconds.join(" | "));
    }
    for a in 0..n {
        for b in a + 1..n {
            let thirds: Vec<String> = (0..n)
                .filter(|&k| k != a && k != b)
                .map(|k| format!("t{k}"))
                .collect();
            let _ = writeln!(g, "last{a}_{b}: {}", thirds.join(" | "));
        }
    }
    Ok(g)
}

/// The parsed answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Answer {
    /// The chosen sentence.
    pub recommend: String,
    /// The chosen titles, in order.
    pub picks: Vec<String>,
    /// The generated description of each pick (only with [`answer_grammar_with_notes`]).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Parses a complete answer and checks its shape: 3 distinct picks among `titles`.
pub fn parse_answer(text: &str, titles: &[String]) -> Result<Answer, AnswerError> {
    let a: Answer =
        serde_json::from_str(text).map_err(|e| AnswerError::Malformed(e.to_string()))?;
    if a.picks.len() != PICKS {
        return Err(AnswerError::Malformed(format!("{} picks", a.picks.len())));
    }
    for (i, p) in a.picks.iter().enumerate() {
        if !titles.contains(p) {
            return Err(AnswerError::Malformed(format!(
                "pick {p:?} is not a candidate"
            )));
        }
        if a.picks[..i].contains(p) {
            return Err(AnswerError::Malformed(format!("pick {p:?} twice")));
        }
    }
    Ok(a)
}

/// A clean piece of an answer being generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerPiece {
    /// Text of the recommend sentence (decoded, no quotes or escapes).
    Sentence(String),
    /// The sentence is complete.
    SentenceDone,
    /// Pick number `n` (0-based) is complete: its title.
    Pick(usize, String),
}

/// Where the incremental reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Outside any string value we report.
    Outside,
    /// Inside the recommend string.
    Sentence,
    /// Inside pick `n`'s string.
    Pick(usize),
}

/// Reads the answer's JSON text as it streams and yields clean pieces. It relies on the
/// grammar's fixed shape (key order, compact JSON) and decodes JSON string escapes.
#[derive(Debug, Clone)]
pub struct AnswerStream {
    place: Place,
    /// Text before the current position not yet classified (a key, punctuation).
    outside: String,
    /// The pick being read.
    current: String,
    picks: usize,
    /// The picks' list has ended (what follows, e.g. notes, is not a pick).
    picks_closed: bool,
    /// An escape sequence in progress (`\` and what follows).
    escape: String,
}

impl Default for AnswerStream {
    fn default() -> Self {
        Self::new()
    }
}

impl AnswerStream {
    /// A reader at the start of an answer.
    pub fn new() -> Self {
        Self {
            place: Place::Outside,
            outside: String::new(),
            current: String::new(),
            picks: 0,
            picks_closed: false,
            escape: String::new(),
        }
    }

    /// Feeds generated text; returns the pieces it completes.
    pub fn push(&mut self, text: &str) -> Vec<AnswerPiece> {
        let mut out = Vec::new();
        let mut sentence = String::new();
        for c in text.chars() {
            match self.place {
                Place::Outside => {
                    self.outside.push(c);
                    if c == ']' && self.outside.contains("\"picks\":[") {
                        self.picks_closed = true;
                    }
                    if c == '"' && !self.picks_closed {
                        if self.outside.ends_with("{\"recommend\":\"") {
                            self.place = Place::Sentence;
                            self.outside.clear();
                        } else if (self.outside.ends_with("[\"") || self.outside.ends_with(",\""))
                            && self.outside.contains("\"picks\":[")
                        {
                            self.place = Place::Pick(self.picks);
                            self.outside = "\"picks\":[".into();
                        }
                    }
                }
                Place::Sentence | Place::Pick(_) => {
                    let decoded = match self.read_string_char(c) {
                        StringChar::End => {
                            match self.place {
                                Place::Sentence => {
                                    if !sentence.is_empty() {
                                        out.push(AnswerPiece::Sentence(std::mem::take(
                                            &mut sentence,
                                        )));
                                    }
                                    out.push(AnswerPiece::SentenceDone);
                                }
                                Place::Pick(n) => {
                                    out.push(AnswerPiece::Pick(
                                        n,
                                        std::mem::take(&mut self.current),
                                    ));
                                    self.picks += 1;
                                }
                                Place::Outside => {}
                            }
                            self.place = Place::Outside;
                            None
                        }
                        StringChar::Pending => None,
                        StringChar::Char(ch) => Some(ch),
                    };
                    if let Some(ch) = decoded {
                        match self.place {
                            Place::Sentence => sentence.push(ch),
                            Place::Pick(_) => self.current.push(ch),
                            Place::Outside => {}
                        }
                    }
                }
            }
        }
        if !sentence.is_empty() {
            out.push(AnswerPiece::Sentence(sentence));
        }
        out
    }

    fn read_string_char(&mut self, c: char) -> StringChar {
        if self.escape.is_empty() {
            return match c {
                '"' => StringChar::End,
                '\\' => {
                    self.escape.push(c);
                    StringChar::Pending
                }
                c => StringChar::Char(c),
            };
        }
        self.escape.push(c);
        let e = self.escape.clone();
        let simple = match e.as_str() {
            "\\n" => Some('\n'),
            "\\t" => Some('\t'),
            "\\r" => Some('\r'),
            "\\\"" => Some('"'),
            "\\\\" => Some('\\'),
            "\\/" => Some('/'),
            "\\b" => Some('\u{8}'),
            "\\f" => Some('\u{c}'),
            _ => None,
        };
        if let Some(ch) = simple {
            self.escape.clear();
            return StringChar::Char(ch);
        }
        if e.starts_with("\\u") && e.len() == 6 {
            self.escape.clear();
            let ch = u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32)
                .unwrap_or(char::REPLACEMENT_CHARACTER);
            return StringChar::Char(ch);
        }
        if e.len() > 6 {
            self.escape.clear();
            return StringChar::Char(char::REPLACEMENT_CHARACTER);
        }
        StringChar::Pending
    }
}

enum StringChar {
    Char(char),
    Pending,
    End,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn titles(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("챌린지 {i}")).collect()
    }

    #[test]
    fn grammar_enumerates_distinct_picks_compactly() {
        let g = answer_grammar(&["추천합니다.".to_string()], &titles(6)).unwrap();
        assert_eq!(g.lines().filter(|l| l.starts_with("after")).count(), 6);
        assert_eq!(g.lines().filter(|l| l.starts_with("last")).count(), 15);
        assert!(g.contains("t0: \"\\\"챌린지 0\\\"\""), "{g}");
        assert_eq!(
            answer_grammar(&["a".into()], &["x".into(), "x".into(), "y".into()]),
            Err(AnswerError::TooFewCandidates(2))
        );
        assert_eq!(
            answer_grammar(&[], &titles(3)),
            Err(AnswerError::NoSentence)
        );
        let with_notes =
            answer_grammar_with_notes(&["추천합니다.".to_string()], &titles(3)).expect("a grammar");
        assert!(
            with_notes.contains("NOTE: /") && with_notes.contains("notes"),
            "{with_notes}"
        );
        assert!(!g.contains("NOTE"));
    }

    #[test]
    fn notes_are_parsed_beside_the_picks() {
        let t = titles(3);
        let text = r#"{"recommend":"좋습니다.","picks":["챌린지 2","챌린지 0","챌린지 1"],"notes":["가나다라마바사입니다.","하나 둘 셋 넷입니다.","다섯 여섯 일곱입니다."]}"#;
        let a = parse_answer(text, &t).expect("an answer");
        assert_eq!(a.notes.len(), 3);
        assert_eq!(a.notes[1], "하나 둘 셋 넷입니다.");
        let mut stream = AnswerStream::new();
        let picks: Vec<AnswerPiece> = stream
            .push(text)
            .into_iter()
            .filter(|p| matches!(p, AnswerPiece::Pick(..)))
            .collect();
        assert_eq!(picks.len(), 3, "notes are not picks: {picks:?}");
    }

    #[test]
    fn parse_checks_three_distinct_candidates() {
        let t = titles(4);
        let ok = r#"{"recommend":"좋습니다.","picks":["챌린지 2","챌린지 0","챌린지 3"]}"#;
        assert_eq!(parse_answer(ok, &t).unwrap().picks[0], "챌린지 2");
        for bad in [
            r#"{"recommend":"a","picks":["챌린지 2","챌린지 2","챌린지 3"]}"#,
            r#"{"recommend":"a","picks":["챌린지 2","없는 것","챌린지 3"]}"#,
            r#"{"recommend":"a","picks":["챌린지 2","챌린지 1"]}"#,
            r#"{"recommend":"a""#,
        ] {
            assert!(parse_answer(bad, &t).is_err(), "{bad}");
        }
    }

    #[test]
    fn stream_yields_clean_pieces_across_any_split() {
        let text = r#"{"recommend":"도시에서 \"쉽게\" 시작합니다.\n","picks":["챌린지 1","챌린지 \u0030","챌린지 2"]}"#;
        let want = vec![
            "S:도시에서 \"쉽게\" 시작합니다.\n".to_string(),
            "D".into(),
            "P0:챌린지 1".into(),
            "P1:챌린지 0".into(),
            "P2:챌린지 2".into(),
        ];
        let chars: Vec<char> = text.chars().collect();
        for step in [1, 2, 3, 5, 7, 100] {
            let mut s = AnswerStream::new();
            let mut got: Vec<String> = Vec::new();
            let mut sentence = String::new();
            for chunk in chars.chunks(step) {
                for p in s.push(&chunk.iter().collect::<String>()) {
                    match p {
                        AnswerPiece::Sentence(t) => sentence.push_str(&t),
                        AnswerPiece::SentenceDone => {
                            got.push(format!("S:{sentence}"));
                            got.push("D".into());
                        }
                        AnswerPiece::Pick(n, t) => got.push(format!("P{n}:{t}")),
                    }
                }
            }
            assert_eq!(got, want, "chunks of {step}");
        }
    }
}
