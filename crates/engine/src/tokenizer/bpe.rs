//! Byte-level BPE (GPT-2 family: Qwen2, Llama 3): split text into words with the model's
//! pre-tokenizer regex, map each byte to a printable character, then apply the ranked merges.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;

use fancy_regex::Regex;

use super::vocab::{TokenMap, Vocab};
use crate::{EngineError, Result};

/// Qwen2's split: contractions, letter runs with one leading non-letter, single digits,
/// punctuation runs, newlines, spaces.
const QWEN2_SPLIT: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's split: as Qwen2's but digits in groups of up to three.
const LLAMA3_SPLIT: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-2's split.
const GPT2_SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// The words cached per tokenizer before the cache is emptied (bounds memory on odd input).
const WORD_CACHE_ENTRIES: usize = 1 << 16;
/// Longer words are not cached: they are rare and would bloat the cache.
const WORD_CACHE_MAX_BYTES: usize = 64;

/// GPT-2's reversible byte → character map: printable bytes map to themselves, the rest to
/// code points from U+0100 upwards.
pub(crate) fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let cp = if printable {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        *slot = char::from_u32(cp).expect("byte map code points are below U+0200 and valid");
    }
    table
}

/// The inverse of [`byte_to_char_table`]: the byte behind a mapped character.
pub(crate) fn char_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    match cp {
        33..=126 | 161..=172 | 174..=255 => Some(cp as u8),
        256..=323 => {
            // The 68 unprintable bytes in ascending order.
            let mut k = cp - 256;
            for b in 0u32..=255 {
                let printable =
                    (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
                if !printable {
                    if k == 0 {
                        return Some(b as u8);
                    }
                    k -= 1;
                }
            }
            None
        }
        _ => None,
    }
}

/// Symbol ids for merging: vocabulary ids, plus ids above the vocabulary for merge results
/// that are not tokens themselves.
const NO_SYMBOL: u32 = u32::MAX;

/// A compiled byte-level BPE.
#[derive(Debug)]
pub(crate) struct BytePairEncoder {
    splits: Vec<Regex>,
    /// (left symbol, right symbol) → (rank, merged symbol).
    merges: TokenMap<(u32, u32), (u32, u32)>,
    /// Merge-result strings that are not vocabulary tokens.
    extra_symbols: TokenMap<String, u32>,
    ignore_merges: bool,
    byte_chars: [char; 256],
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    end: usize,
    id: u32,
    prev: usize,
    next: usize,
}

impl BytePairEncoder {
    /// Builds the merge table and the pre-tokenizer for `vocab.pre`.
    pub fn new(vocab: &Vocab) -> Result<Self> {
        let (patterns, ignore_merges): (&[&str], bool) = match vocab.pre.as_str() {
            "qwen2" | "deepseek-r1-qwen" | "stablelm2" => (&[QWEN2_SPLIT], false),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "dbrx" | "smaug-bpe" => {
                (&[LLAMA3_SPLIT], true)
            }
            "gpt-2" | "gpt2" | "phi-2" | "mpt" | "olmo" | "jais" => (&[GPT2_SPLIT], false),
            "" | "default" => (
                &[
                    r"[\p{P}\$\+<=>\^~\|]+",
                    GPT2_SPLIT,
                    r"\p{N}+",
                    "[0-9][0-9][0-9]",
                ],
                false,
            ),
            other => {
                return Err(EngineError::Unsupported(format!(
                    "BPE pre-tokenizer {other:?}"
                )))
            }
        };
        let splits = patterns
            .iter()
            .map(|p| Regex::new(p).map_err(|e| EngineError::Tokenizer(format!("split regex: {e}"))))
            .collect::<Result<Vec<_>>>()?;

        let n_vocab = vocab.texts.len() as u32;
        let mut extra_symbols: TokenMap<String, u32> = TokenMap::default();
        let intern = |s: &str, extra: &mut TokenMap<String, u32>| -> u32 {
            if let Some(id) = vocab.id(s) {
                return id;
            }
            let next = n_vocab + extra.len() as u32;
            *extra.entry(s.to_string()).or_insert(next)
        };
        let mut merges = TokenMap::with_capacity_and_hasher(vocab.merges.len(), Default::default());
        for (rank, line) in vocab.merges.iter().enumerate() {
            // Split at the first space after the first byte, as the converters wrote it.
            let Some(space) = line
                .as_bytes()
                .iter()
                .skip(1)
                .position(|&b| b == b' ')
                .map(|p| p + 1)
            else {
                continue;
            };
            let (left, right) = (&line[..space], &line[space + 1..]);
            let l = intern(left, &mut extra_symbols);
            let r = intern(right, &mut extra_symbols);
            let merged = intern(&format!("{left}{right}"), &mut extra_symbols);
            merges.entry((l, r)).or_insert((rank as u32, merged));
        }
        Ok(BytePairEncoder {
            splits,
            merges,
            extra_symbols,
            ignore_merges,
            byte_chars: byte_to_char_table(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Splits `text` into words: each pattern in turn splits the pieces the previous one left,
    /// keeping both the matches and the text between them.
    fn words<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut pieces = vec![text];
        for re in &self.splits {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for piece in pieces {
                let mut pos = 0;
                for m in re.find_iter(piece) {
                    // A regex runtime error (backtrack limit) leaves the rest as one word.
                    let Ok(m) = m else { break };
                    if m.start() > pos {
                        next.push(&piece[pos..m.start()]);
                    }
                    if m.end() > m.start() {
                        next.push(m.as_str());
                    }
                    pos = m.end();
                }
                if pos < piece.len() {
                    next.push(&piece[pos..]);
                }
            }
            pieces = next;
        }
        pieces
    }

    /// Appends the ids of plain `text` (no special tokens in it) to `out`.
    pub fn encode(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
        let mut encoded = String::new();
        for word in self.words(text) {
            encoded.clear();
            encoded.extend(word.bytes().map(|b| self.byte_chars[b as usize]));
            if encoded.len() <= WORD_CACHE_MAX_BYTES {
                let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(ids) = cache.get(&encoded) {
                    out.extend_from_slice(ids);
                    continue;
                }
            }
            let start = out.len();
            self.merge_word(vocab, &encoded, out);
            if encoded.len() <= WORD_CACHE_MAX_BYTES {
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= WORD_CACHE_ENTRIES {
                    cache.clear();
                }
                cache.insert(encoded.clone(), out[start..].to_vec());
            }
        }
    }

    fn symbol_of(&self, vocab: &Vocab, s: &str) -> u32 {
        vocab
            .id(s)
            .or_else(|| self.extra_symbols.get(s).copied())
            .unwrap_or(NO_SYMBOL)
    }

    /// Applies merges to one byte-mapped word, lowest rank first (leftmost on ties).
    fn merge_word(&self, vocab: &Vocab, word: &str, out: &mut Vec<u32>) {
        if self.ignore_merges {
            if let Some(id) = vocab.id(word) {
                out.push(id);
                return;
            }
        }
        let mut symbols: Vec<Symbol> = Vec::with_capacity(word.len());
        let mut buf = [0u8; 4];
        for (start, c) in word.char_indices() {
            let i = symbols.len();
            symbols.push(Symbol {
                start,
                end: start + c.len_utf8(),
                id: self.symbol_of(vocab, c.encode_utf8(&mut buf)),
                prev: i.wrapping_sub(1),
                next: i + 1,
            });
        }
        let n = symbols.len();
        // Min-heap on (rank, left index).
        let mut heap: BinaryHeap<Reverse<(u32, usize, u32, u32)>> = BinaryHeap::new();
        let push_pair = |heap: &mut BinaryHeap<_>, symbols: &[Symbol], left: usize| {
            let right = symbols[left].next;
            if right >= n {
                return;
            }
            let (l, r) = (symbols[left].id, symbols[right].id);
            if l == NO_SYMBOL || r == NO_SYMBOL {
                return;
            }
            if let Some(&(rank, _)) = self.merges.get(&(l, r)) {
                heap.push(Reverse((rank, left, l, r)));
            }
        };
        for i in 0..n.saturating_sub(1) {
            push_pair(&mut heap, &symbols, i);
        }
        while let Some(Reverse((_, left, l, r))) = heap.pop() {
            let right = symbols[left].next;
            // Stale entry: one side has merged since it was queued.
            if symbols[left].id != l || right >= n || symbols[right].id != r {
                continue;
            }
            let merged = self.merges[&(l, r)].1;
            let after = symbols[right].next;
            symbols[left].end = symbols[right].end;
            symbols[left].id = merged;
            symbols[left].next = after;
            symbols[right].start = symbols[right].end;
            symbols[right].id = NO_SYMBOL;
            if after < n {
                symbols[after].prev = left;
            }
            if symbols[left].prev < n {
                push_pair(&mut heap, &symbols, symbols[left].prev);
            }
            push_pair(&mut heap, &symbols, left);
        }
        let mut i = 0;
        while i < n {
            let s = symbols[i];
            if s.id < vocab.texts.len() as u32 {
                out.push(s.id);
            } else {
                // Not a token: llama.cpp emits whichever single bytes are tokens.
                for b in word[s.start..s.end].bytes() {
                    if let Some(id) = b
                        .is_ascii()
                        .then(|| vocab.id(std::str::from_utf8(&[b]).unwrap_or("")))
                        .flatten()
                    {
                        out.push(id);
                    }
                }
            }
            i = s.next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_is_a_bijection() {
        let table = byte_to_char_table();
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
        assert_eq!(table[b'a' as usize], 'a');
        for b in 0..=255u8 {
            assert_eq!(char_to_byte(table[b as usize]), Some(b), "byte {b}");
        }
        assert_eq!(char_to_byte('€'), None);
    }

    #[test]
    fn qwen2_split_matches_the_reference_regex_semantics() {
        let re = Regex::new(QWEN2_SPLIT).unwrap();
        let words: Vec<&str> = re
            .find_iter("Hello world's 123  x\n\n  end  ")
            .map(|m| m.unwrap().as_str())
            .collect();
        assert_eq!(
            words,
            ["Hello", " world", "'s", " ", "1", "2", "3", " ", " x", "\n\n", " ", " end", "  "]
        );
    }
}
