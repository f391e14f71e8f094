//! An offline tokenizer for mixed Korean, Chinese, Japanese and Latin text.
//!
//! Korean and Chinese are written without spaces between the morphemes a user searches for
//! (분리수거를, 减少塑料), and a dictionary-based segmenter would be a large download. Character
//! bigrams plus unigrams over Hangul/CJK runs match a query word inside any longer run, which is
//! what BM25 needs; Latin words are lowercased and stemmed (English Snowball) so "bottles"
//! matches "bottle". The index and the queries go through the same analyzer.

use tantivy::tokenizer::{Language, Stemmer, TextAnalyzer, Token, TokenStream, Tokenizer};

/// Changes whenever tokenization changes, so persisted indexes built with another one rebuild.
pub const TOKENIZER_VERSION: &str =
    "sprout-multi-2 (cjk uni+bigrams, latin lowercase, en stopwords, en snowball)";

/// The name the analyzer is registered under in a tantivy index.
pub const TOKENIZER_NAME: &str = "sprout_multi";

/// English words too common to help ranking (a Lucene-like list plus question words).
const ENGLISH_STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "do", "for", "how", "i", "if",
    "in", "into", "is", "it", "me", "my", "no", "not", "of", "on", "or", "so", "some", "such",
    "that", "the", "their", "then", "there", "these", "they", "this", "to", "want", "was", "what",
    "when", "where", "which", "will", "with", "you", "your",
];

/// Whether `c` belongs to a script written without spaces between words (Hangul, CJK, kana).
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF     // Hangul Jamo
        | 0x3040..=0x30FF   // Hiragana, Katakana
        | 0x3130..=0x318F   // Hangul Compatibility Jamo
        | 0x3400..=0x4DBF   // CJK Extension A
        | 0x4E00..=0x9FFF   // CJK Unified Ideographs
        | 0xA960..=0xA97F   // Hangul Jamo Extended-A
        | 0xAC00..=0xD7AF   // Hangul Syllables
        | 0xD7B0..=0xD7FF   // Hangul Jamo Extended-B
        | 0xF900..=0xFAFF   // CJK Compatibility Ideographs
        | 0x20000..=0x3134F // CJK Extensions B..G
    )
}

/// Splits text into lowercase Latin words and CJK unigrams + bigrams, without stemming.
#[derive(Clone, Default)]
pub struct MultiScriptTokenizer {
    tokens: Vec<Token>,
}

/// The tokens of one text, produced eagerly by [`MultiScriptTokenizer`].
pub struct MultiScriptTokenStream<'a> {
    tokens: &'a mut Vec<Token>,
    next: usize,
}

impl Tokenizer for MultiScriptTokenizer {
    type TokenStream<'a> = MultiScriptTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> MultiScriptTokenStream<'a> {
        self.tokens.clear();
        split(text, &mut self.tokens);
        MultiScriptTokenStream {
            tokens: &mut self.tokens,
            next: 0,
        }
    }
}

impl TokenStream for MultiScriptTokenStream<'_> {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Word,
    Cjk,
    Separator,
}

fn class_of(c: char) -> Class {
    if is_cjk(c) {
        Class::Cjk
    } else if c.is_alphanumeric() {
        Class::Word
    } else {
        Class::Separator
    }
}

fn push(tokens: &mut Vec<Token>, text: String, offset_from: usize, offset_to: usize) {
    let position = tokens.len();
    tokens.push(Token {
        offset_from,
        offset_to,
        position,
        text,
        position_length: 1,
    });
}

/// Appends the tokens of `text`: one per Latin word, unigrams then bigrams per CJK run.
fn split(text: &str, tokens: &mut Vec<Token>) {
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, first)) = chars.peek() {
        let class = class_of(first);
        let mut run: Vec<(usize, char)> = Vec::new();
        while let Some(&(offset, c)) = chars.peek() {
            if class_of(c) != class {
                break;
            }
            run.push((offset, c));
            chars.next();
        }
        let end = chars.peek().map_or(text.len(), |&(offset, _)| offset);
        match class {
            Class::Separator => {}
            Class::Word => {
                let word = text[start..end].to_lowercase();
                if !ENGLISH_STOPWORDS.contains(&word.as_str()) {
                    push(tokens, word, start, end);
                }
            }
            Class::Cjk => {
                let char_end = |i: usize| run.get(i + 1).map_or(end, |&(offset, _)| offset);
                for (i, &(offset, c)) in run.iter().enumerate() {
                    push(tokens, c.to_string(), offset, char_end(i));
                }
                for (i, pair) in run.windows(2).enumerate() {
                    let bigram: String = [pair[0].1, pair[1].1].iter().collect();
                    push(tokens, bigram, pair[0].0, char_end(i + 1));
                }
            }
        }
    }
}

/// The analyzer used for both indexing and queries: [`MultiScriptTokenizer`] then English stemming.
pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(MultiScriptTokenizer::default())
        .filter(Stemmer::new(Language::English))
        .build()
}

/// The analyzed terms of `text`, in order (duplicates kept).
pub fn terms(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut stream = analyzer.token_stream(text);
    let mut terms = Vec::new();
    while stream.advance() {
        terms.push(stream.token().text.clone());
    }
    terms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyze(text: &str) -> Vec<String> {
        terms(&mut analyzer(), text)
    }

    #[test]
    fn latin_words_are_lowercased_stemmed_and_stopwords_dropped() {
        assert_eq!(
            analyze("How can I save Bottles? PET-bottles, Wi-Fi 26"),
            ["save", "bottl", "pet", "bottl", "wi", "fi", "26"]
        );
    }

    #[test]
    fn hangul_runs_give_unigrams_and_bigrams() {
        assert_eq!(
            analyze("분리수거를 해요"),
            [
                "분", "리", "수", "거", "를", "분리", "리수", "수거", "거를", "해", "요", "해요"
            ]
        );
        let query = analyze("분리수거");
        let document = analyze("분리수거를");
        assert!(query.iter().all(|term| document.contains(term)));
    }

    #[test]
    fn chinese_runs_give_unigrams_and_bigrams() {
        assert_eq!(analyze("塑料"), ["塑", "料", "塑料"]);
        assert!(analyze("减少塑料").contains(&"塑料".to_string()));
    }

    #[test]
    fn mixed_scripts_split_at_script_changes_with_byte_offsets() {
        let mut tokenizer = MultiScriptTokenizer::default();
        let text = "LED전구, T恤";
        let mut stream = tokenizer.token_stream(text);
        let mut seen = Vec::new();
        while stream.advance() {
            let token = stream.token();
            seen.push((
                token.text.clone(),
                &text[token.offset_from..token.offset_to],
            ));
        }
        let expected = [
            ("led", "LED"),
            ("전", "전"),
            ("구", "구"),
            ("전구", "전구"),
            ("t", "T"),
            ("恤", "恤"),
        ];
        let expected: Vec<(String, &str)> =
            expected.iter().map(|(a, b)| (a.to_string(), *b)).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn empty_and_punctuation_only_text_has_no_tokens() {
        assert!(analyze("").is_empty());
        assert!(analyze(" ,.!? … ").is_empty());
        assert!(analyze("the to a").is_empty());
    }
}
