//! The book recommender's answer: the markdown the original returned, written by the model
//! under a grammar that lets it choose only among the given titles, and read back as it streams.
//!
//! The model writes, for three distinct titles,
//!
//! ```text
//! 1. **[title]**
//!    - 추천 이유: <reason>
//!    - 이 책이 도움이 될 수 있는 이유: <benefit>
//! ```
//!
//! separated by a blank line. Everything but the title choice and the two sentences is fixed
//! text (jump-forward copies it, and the title's rest once its prefix is unique). The author is
//! never generated: [`BookStream`] inserts ` - author` from the catalog after each title, so the
//! text a client sees is the original's `1. **[title]** - author` format.
//!
//! Titles are grouped into *choices*: with few candidates each choice is one title (the model
//! ranks freely among them); with many (prompt-only, the whole catalog) the titles are dealt
//! round-robin into [`MAX_CHOICES`] groups and the three books come from three distinct groups,
//! which keeps the grammar small (choices + choices·(choices−1)/2 rules) while making the three
//! books distinct by construction.

use std::collections::HashMap;
use std::fmt::Write;

use crate::answer::lark_literal;

/// Books per answer.
pub const BOOKS: usize = 3;
/// Most choices (title groups) one grammar enumerates.
pub const MAX_CHOICES: usize = 8;
/// Fewest Korean characters of a reason or benefit before its closing "니다.".
pub const SENTENCE_MIN_CHARS: usize = 8;
/// Most characters of a reason or benefit before its closing "니다.".
pub const SENTENCE_MAX_CHARS: usize = 40;

/// Fixed text before a reason.
pub const REASON_LABEL: &str = "   - 추천 이유: ";
/// Fixed text before a benefit.
pub const BENEFIT_LABEL: &str = "   - 이 책이 도움이 될 수 있는 이유: ";

/// Why an answer grammar cannot be built or an answer not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookAnswerError {
    /// Fewer than three distinct usable titles.
    #[error("an answer needs at least 3 distinct titles, got {0}")]
    TooFewTitles(usize),
    /// The generated text is not an answer of this shape.
    #[error("the answer is not in the expected format: {0}")]
    Malformed(String),
}

/// One recommended book as read from the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnsweredBook {
    /// The catalog title, exactly.
    pub title: String,
    /// From the catalog.
    pub author: String,
    /// 추천 이유.
    pub reason: String,
    /// 이 책이 도움이 될 수 있는 이유.
    pub benefit: String,
}

/// Whether a title can be written inside `**[…]**` on one line and read back unambiguously.
pub fn usable_title(title: &str) -> bool {
    !title.trim().is_empty() && !title.contains(['[', ']', '*', '\n', '\r'])
}

/// The distinct usable titles, in the order given.
fn distinct_titles(titles: &[String]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for title in titles {
        if usable_title(title) && !out.contains(&title.as_str()) {
            out.push(title);
        }
    }
    out
}

/// The Lark grammar of an answer recommending 3 distinct books among `titles`.
///
/// A reason or benefit is one sentence of Hangul, digits, spaces and `,!?` (no Latin letters,
/// no quotes or brackets, no `.` before the end), [`SENTENCE_MIN_CHARS`] to
/// [`SENTENCE_MAX_CHARS`] characters, ending in "니다." — the lexeme ends there, so the model
/// cannot ramble on. Titles that [`usable_title`] refuses are left out.
///
/// Up to [`MAX_CHOICES`] titles each is its own choice; more are dealt round-robin into
/// [`MAX_CHOICES`] groups, one book per group.
pub fn book_grammar(titles: &[String]) -> Result<String, BookAnswerError> {
    let titles = distinct_titles(titles);
    if titles.len() < BOOKS {
        return Err(BookAnswerError::TooFewTitles(titles.len()));
    }
    let choices = titles.len().min(MAX_CHOICES);
    let mut groups: Vec<Vec<&str>> = vec![Vec::new(); choices];
    for (position, title) in titles.iter().enumerate() {
        groups[position % choices].push(title);
    }
    let mut g = String::new();
    let _ = writeln!(g, "start: {} first", lark_literal("1. **["));
    // One terminal per choice: the lexer, not the parser, walks a group's titles.
    for (i, group) in groups.iter().enumerate() {
        let literals: Vec<String> = group.iter().map(|t| lark_literal(t)).collect();
        let _ = writeln!(g, "C{i}: {}", literals.join(" | "));
    }
    let sentence = format!(
        "/[가-힣0-9][가-힣0-9 ,!?]{{{},{}}}니다\\./",
        SENTENCE_MIN_CHARS.saturating_sub(1),
        SENTENCE_MAX_CHARS.saturating_sub(1)
    );
    let _ = writeln!(g, "SENTENCE: {sentence}");
    let _ = writeln!(
        g,
        "body: {} SENTENCE {} SENTENCE",
        lark_literal(&format!("]**\n{REASON_LABEL}")),
        lark_literal(&format!("\n{BENEFIT_LABEL}"))
    );
    let second = lark_literal("\n\n2. **[");
    let third = lark_literal("\n\n3. **[");
    let firsts: Vec<String> = (0..choices)
        .map(|i| format!("C{i} body {second} after{i}"))
        .collect();
    let _ = writeln!(g, "first: {}", firsts.join(" | "));
    for i in 0..choices {
        let seconds: Vec<String> = (0..choices)
            .filter(|&j| j != i)
            .map(|j| format!("C{j} body {third} last{}_{}", i.min(j), i.max(j)))
            .collect();
        let _ = writeln!(g, "after{i}: {}", seconds.join(" | "));
    }
    for a in 0..choices {
        for b in a + 1..choices {
            let thirds: Vec<String> = (0..choices)
                .filter(|&k| k != a && k != b)
                .map(|k| format!("C{k} body"))
                .collect();
            let _ = writeln!(g, "last{a}_{b}: {}", thirds.join(" | "));
        }
    }
    Ok(g)
}

/// What the stream reports as the answer is generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BookPiece {
    /// Markdown to show, author lines included; the deltas concatenate to the final result.
    Delta(String),
    /// Book `index` (0-based) has been chosen.
    Book {
        /// 0..3.
        index: usize,
        /// The catalog title.
        title: String,
        /// The catalog author.
        author: String,
    },
}

/// Reads the model's text as it is generated: passes it through as markdown (a title as its
/// characters come), inserting ` - author` after each title, and reports each chosen book. It relies on the grammar's
/// shape (titles between `**[` and `]**`, which [`usable_title`] keeps out of titles).
#[derive(Debug, Clone)]
pub struct BookStream {
    authors: HashMap<String, String>,
    /// The model's text so far.
    raw: String,
    /// The markdown emitted so far.
    shown: String,
    /// A title being read (None outside a title).
    title: Option<TitleRead>,
    /// The last three characters outside a title, to see a title start across pushes.
    before_title: String,
    books: usize,
}

/// A title being read: its text so far, and the part of its closing `]**` seen.
#[derive(Debug, Clone, Default)]
struct TitleRead {
    text: String,
    closing: String,
}

impl BookStream {
    /// A reader for an answer whose titles have these authors (title → author).
    pub fn new(authors: HashMap<String, String>) -> Self {
        Self {
            authors,
            raw: String::new(),
            shown: String::new(),
            title: None,
            before_title: String::new(),
            books: 0,
        }
    }

    /// Feeds generated text; returns what it completes.
    pub fn push(&mut self, text: &str) -> Vec<BookPiece> {
        self.raw.push_str(text);
        let mut out = Vec::new();
        let mut delta = String::new();
        for c in text.chars() {
            let Some(title) = &mut self.title else {
                delta.push(c);
                self.before_title.push(c);
                if self.before_title.chars().count() > 3 {
                    self.before_title.remove(0);
                }
                if self.before_title == "**[" {
                    self.before_title.clear();
                    self.title = Some(TitleRead::default());
                }
                continue;
            };
            // A usable title holds no `]` or `*`: one of them starts the closing `]**`, which
            // is held back until it is complete, so that the author goes right after it.
            if c == ']' || c == '*' {
                title.closing.push(c);
            } else {
                delta.push(c);
                title.text.push(c);
            }
            if title.closing == "]**" {
                let title = std::mem::take(&mut title.text);
                let author = self.authors.get(&title).cloned().unwrap_or_default();
                let _ = write!(delta, "]** - {author}");
                self.shown.push_str(&delta);
                out.push(BookPiece::Delta(std::mem::take(&mut delta)));
                out.push(BookPiece::Book {
                    index: self.books,
                    title,
                    author,
                });
                self.books += 1;
                self.title = None;
            }
        }
        if !delta.is_empty() {
            self.shown.push_str(&delta);
            out.push(BookPiece::Delta(delta));
        }
        out
    }

    /// The markdown emitted so far (the final `result` once the answer is complete).
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The complete answer read back: three distinct books among `allowed` titles, with their
    /// reasons and benefits.
    pub fn finish(&self, allowed: &[String]) -> Result<Vec<AnsweredBook>, BookAnswerError> {
        let books = parse_books(&self.raw, &self.authors)?;
        for (i, book) in books.iter().enumerate() {
            if !allowed.contains(&book.title) {
                return Err(BookAnswerError::Malformed(format!(
                    "{:?} is not a candidate",
                    book.title
                )));
            }
            if books[..i].iter().any(|b| b.title == book.title) {
                return Err(BookAnswerError::Malformed(format!(
                    "{:?} twice",
                    book.title
                )));
            }
        }
        Ok(books)
    }
}

/// Parses the model's text (without authors) into its books.
fn parse_books(
    raw: &str,
    authors: &HashMap<String, String>,
) -> Result<Vec<AnsweredBook>, BookAnswerError> {
    let malformed = |what: &str| BookAnswerError::Malformed(what.to_string());
    let mut books = Vec::new();
    for (index, block) in raw.split("\n\n").enumerate() {
        let mut lines = block.lines();
        let head = lines.next().ok_or_else(|| malformed("an empty item"))?;
        let title = head
            .strip_prefix(&format!("{}. **[", index + 1))
            .and_then(|rest| rest.strip_suffix("]**"))
            .ok_or_else(|| malformed("an item without its numbered title"))?;
        let reason = lines
            .next()
            .and_then(|l| l.strip_prefix(REASON_LABEL))
            .ok_or_else(|| malformed("an item without its reason"))?;
        let benefit = lines
            .next()
            .and_then(|l| l.strip_prefix(BENEFIT_LABEL))
            .ok_or_else(|| malformed("an item without its benefit"))?;
        if lines.next().is_some() {
            return Err(malformed("an item with extra lines"));
        }
        books.push(AnsweredBook {
            title: title.to_string(),
            author: authors.get(title).cloned().unwrap_or_default(),
            reason: reason.to_string(),
            benefit: benefit.to_string(),
        });
    }
    if books.len() != BOOKS {
        return Err(BookAnswerError::Malformed(format!(
            "{} books instead of {BOOKS}",
            books.len()
        )));
    }
    Ok(books)
}

/// The original's markdown for `books`: `1. **[title]** - author`, then the reason and benefit
/// lines, items separated by a blank line. [`BookStream`]'s deltas concatenate to exactly this.
pub fn render_markdown(books: &[AnsweredBook]) -> String {
    let items: Vec<String> = books
        .iter()
        .enumerate()
        .map(|(i, b)| {
            format!(
                "{}. **[{}]** - {}\n{REASON_LABEL}{}\n{BENEFIT_LABEL}{}",
                i + 1,
                b.title,
                b.author,
                b.reason,
                b.benefit
            )
        })
        .collect();
    items.join("\n\n")
}

/// A title (or topic) reduced for matching: lowercase letters and digits of any script, nothing
/// else ("완벽이라는 중독 : 불안한…" and "완벽이라는중독:불안한…" are one title).
pub fn normalize(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether a catalog title is the book a reader lists as `read`: the normalized titles are
/// equal, or the main titles (before " : ") are, since reading lists often omit the subtitle.
pub fn same_book(catalog_title: &str, read: &str) -> bool {
    let main = |t: &str| normalize(crate::catalog::split_title(t).0);
    let (a, b) = (normalize(catalog_title), normalize(read));
    !a.is_empty() && (a == b || main(catalog_title) == main(read))
}

/// The first avoided topic that `text` (a title, subtitle or description) mentions, compared
/// normalized, so "긴장감" matches "긴장 감" too. Blank topics never match.
pub fn mentions_avoided<'a>(text: &str, avoid_topics: &'a [String]) -> Option<&'a str> {
    let text = normalize(text);
    avoid_topics
        .iter()
        .find(|topic| {
            let topic = normalize(topic);
            !topic.is_empty() && text.contains(&topic)
        })
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn titles(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("책 {i} : 부제")).collect()
    }

    fn authors(titles: &[String]) -> HashMap<String, String> {
        titles
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), format!("저자 {i}")))
            .collect()
    }

    const RAW: &str = "1. **[책 2 : 부제]**\n   - 추천 이유: 불안한 마음을 달래 줍니다.\n   - 이 책이 도움이 될 수 있는 이유: 잠들기 전에 읽기 좋습니다.\n\n2. **[책 0 : 부제]**\n   - 추천 이유: 따뜻한 위로를 줍니다.\n   - 이 책이 도움이 될 수 있는 이유: 짧게 읽을 수 있습니다.\n\n3. **[책 5 : 부제]**\n   - 추천 이유: 일상의 심리를 다룹니다.\n   - 이 책이 도움이 될 수 있는 이유: 마음이 편안해집니다.";

    #[test]
    fn grammar_has_one_choice_per_title_up_to_the_limit_then_groups() {
        let g = book_grammar(&titles(6)).unwrap();
        assert_eq!(g.lines().filter(|l| l.starts_with("after")).count(), 6);
        assert_eq!(g.lines().filter(|l| l.starts_with("last")).count(), 15);
        assert!(g.contains("C0: \"책 0 : 부제\"\n"), "{g}");
        assert!(g.contains("SENTENCE: /[가-힣0-9][가-힣0-9 ,!?]{7,39}니다\\./"));
        let big = book_grammar(&titles(100)).unwrap();
        assert_eq!(
            big.lines().filter(|l| l.starts_with('C')).count(),
            MAX_CHOICES
        );
        assert!(
            big.contains("C1: \"책 1 : 부제\" | \"책 9 : 부제\" | "),
            "{big}"
        );
        assert_eq!(big.lines().filter(|l| l.starts_with("last")).count(), 28);
        let with_unusable = vec!["a".into(), "a".into(), "b]".into(), "c".into()];
        assert_eq!(
            book_grammar(&with_unusable),
            Err(BookAnswerError::TooFewTitles(2))
        );
        assert_eq!(lark_literal("a\"b\\"), "\"a\\\"b\\\\\"");
    }

    #[test]
    fn stream_inserts_authors_and_reports_books_across_any_split() {
        let t = titles(6);
        let chars: Vec<char> = RAW.chars().collect();
        for step in [1, 2, 3, 5, 8, 1000] {
            let mut s = BookStream::new(authors(&t));
            let (mut deltas, mut books) = (String::new(), Vec::new());
            for chunk in chars.chunks(step) {
                for p in s.push(&chunk.iter().collect::<String>()) {
                    match p {
                        BookPiece::Delta(d) => {
                            assert!(!d.is_empty());
                            deltas.push_str(&d)
                        }
                        BookPiece::Book {
                            index,
                            title,
                            author,
                        } => books.push(format!("{index}:{title}:{author}")),
                    }
                }
            }
            assert_eq!(
                books,
                [
                    "0:책 2 : 부제:저자 2",
                    "1:책 0 : 부제:저자 0",
                    "2:책 5 : 부제:저자 5"
                ],
                "chunks of {step}"
            );
            let parsed = s.finish(&t).unwrap();
            assert_eq!(deltas, s.shown());
            assert_eq!(deltas, render_markdown(&parsed), "chunks of {step}");
            assert!(deltas.starts_with("1. **[책 2 : 부제]** - 저자 2\n   - 추천 이유: 불안한"));
            assert_eq!(parsed[1].reason, "따뜻한 위로를 줍니다.");
            assert_eq!(parsed[2].benefit, "마음이 편안해집니다.");
        }
    }

    #[test]
    fn a_title_streams_as_it_is_written() {
        let t = titles(6);
        let mut s = BookStream::new(authors(&t));
        assert_eq!(s.push("1. **["), [BookPiece::Delta("1. **[".into())]);
        assert_eq!(s.push("책 2"), [BookPiece::Delta("책 2".into())]);
        assert_eq!(s.push(" : 부제]*"), [BookPiece::Delta(" : 부제".into())]);
        assert_eq!(
            s.push("*\n"),
            [
                BookPiece::Delta("]** - 저자 2".into()),
                BookPiece::Book {
                    index: 0,
                    title: "책 2 : 부제".into(),
                    author: "저자 2".into()
                },
                BookPiece::Delta("\n".into())
            ]
        );
    }

    #[test]
    fn finish_refuses_other_shapes_and_titles() {
        let t = titles(6);
        let mut s = BookStream::new(authors(&t));
        s.push(RAW);
        assert!(s.finish(&t[..5]).is_err(), "책 5 is not allowed");
        let twice = RAW.replace("책 5", "책 2");
        let mut s = BookStream::new(authors(&t));
        s.push(&twice);
        assert!(matches!(s.finish(&t), Err(BookAnswerError::Malformed(m)) if m.contains("twice")));
        for bad in [
            RAW.split("\n\n3.").next().unwrap().to_string(),
            RAW.replace("추천 이유", "이유"),
            RAW.replace("2. **[", "4. **["),
        ] {
            let mut s = BookStream::new(authors(&t));
            s.push(&bad);
            assert!(s.finish(&t).is_err(), "{bad}");
        }
    }

    #[test]
    fn read_books_match_by_normalized_or_main_title() {
        assert!(same_book(
            "내가 누구인지 아는 것이 왜 중요한가 : 그간 외면해온 외로운 나에게 인생을 묻다",
            "내가 누구인지 아는 것이 왜 중요한가"
        ));
        assert!(same_book(
            "완벽이라는 중독 : 불안한",
            "완벽이라는중독:불안한"
        ));
        assert!(!same_book("완벽이라는 중독", "완벽한 중독"));
        assert!(!same_book("", ""));
    }

    #[test]
    fn avoided_topics_match_normalized_substrings() {
        let avoid = vec!["우울".to_string(), "긴장감".into(), " ".into()];
        assert_eq!(mentions_avoided("우울할 땐 뇌과학", &avoid), Some("우울"));
        assert_eq!(
            mentions_avoided("긴장 감 넘치는 밤", &avoid),
            Some("긴장감")
        );
        assert_eq!(mentions_avoided("행복의 기원", &avoid), None);
    }
}
