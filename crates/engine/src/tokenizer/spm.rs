//! SentencePiece-style tokenization as llama.cpp does it for `tokenizer.ggml.model = "llama"`
//! (Llama 2, Mistral, Gemma): spaces become `▁`, then adjacent pieces merge greedily, highest
//! token score first, and any character left that is not a token falls back to `<0xXX>` bytes.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;

/// The visible stand-in for a space in SentencePiece vocabularies.
pub(crate) const SPACE_MARK: &str = "\u{2581}";

/// Byte-fallback ids: `<0xXX>` tokens, or the raw one-byte token when a vocabulary has no
/// `<0xXX>` form.
#[derive(Debug)]
pub(crate) struct ByteFallback {
    ids: [Option<u32>; 256],
}

impl ByteFallback {
    /// Looks up the 256 byte tokens.
    pub fn new(vocab: &Vocab) -> Self {
        let mut ids = [None; 256];
        for (b, slot) in ids.iter_mut().enumerate() {
            *slot = vocab.id(&format!("<0x{b:02X}>")).or_else(|| {
                let byte = [b as u8];
                std::str::from_utf8(&byte).ok().and_then(|s| vocab.id(s))
            });
        }
        ByteFallback { ids }
    }

    fn id(&self, b: u8, vocab: &Vocab) -> Option<u32> {
        self.ids[b as usize].or(vocab.unk)
    }
}

#[derive(Clone, Copy)]
struct Piece {
    start: usize,
    len: usize,
    prev: usize,
    next: usize,
}

/// A candidate merge of two adjacent pieces.
struct Candidate {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    /// Higher score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

/// Appends the ids of `text` (spaces already replaced by `▁`) to `out`.
pub(crate) fn encode(vocab: &Vocab, bytes: &ByteFallback, text: &str, out: &mut Vec<u32>) {
    let mut pieces: Vec<Piece> = text
        .char_indices()
        .enumerate()
        .map(|(i, (start, c))| Piece {
            start,
            len: c.len_utf8(),
            prev: i.wrapping_sub(1),
            next: i + 1,
        })
        .collect();
    let n = pieces.len();
    let mut queue = BinaryHeap::new();
    let try_pair = |queue: &mut BinaryHeap<Candidate>, pieces: &[Piece], left: usize| {
        if left >= n || pieces[left].next >= n {
            return;
        }
        let right = pieces[left].next;
        let len = pieces[left].len + pieces[right].len;
        let joined = &text[pieces[left].start..pieces[left].start + len];
        if let Some(id) = vocab.id(joined) {
            queue.push(Candidate {
                score: vocab.scores[id as usize],
                left,
                right,
                len,
            });
        }
    };
    for i in 0..n.saturating_sub(1) {
        try_pair(&mut queue, &pieces, i);
    }
    while let Some(c) = queue.pop() {
        let (l, r) = (pieces[c.left], pieces[c.right]);
        // Stale: one side already merged into something else.
        if l.len == 0 || r.len == 0 || l.len + r.len != c.len {
            continue;
        }
        pieces[c.left].len = c.len;
        pieces[c.right].len = 0;
        pieces[c.left].next = r.next;
        if r.next < n {
            pieces[r.next].prev = c.left;
        }
        try_pair(&mut queue, &pieces, l.prev);
        try_pair(&mut queue, &pieces, c.left);
    }
    let mut i = 0;
    while i < n {
        let p = pieces[i];
        let piece = &text[p.start..p.start + p.len];
        match vocab.id(piece) {
            Some(id) => out.push(id),
            None => out.extend(piece.bytes().filter_map(|b| bytes.id(b, vocab))),
        }
        i = p.next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::Value;
    use std::collections::BTreeMap;

    fn vocab(tokens: &[(&str, f32, i32)]) -> Vocab {
        let mut meta = BTreeMap::new();
        meta.insert("tokenizer.ggml.model".into(), Value::String("llama".into()));
        let mut all: Vec<(String, f32, i32)> = vec![
            ("<unk>".into(), 0.0, 2),
            ("<s>".into(), 0.0, 3),
            ("</s>".into(), 0.0, 3),
        ];
        all.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, 6)));
        all.extend(tokens.iter().map(|&(t, s, k)| (t.to_string(), s, k)));
        meta.insert(
            "tokenizer.ggml.tokens".into(),
            Value::Array(all.iter().map(|t| Value::String(t.0.clone())).collect()),
        );
        meta.insert(
            "tokenizer.ggml.scores".into(),
            Value::Array(all.iter().map(|t| Value::F32(t.1)).collect()),
        );
        meta.insert(
            "tokenizer.ggml.token_type".into(),
            Value::Array(all.iter().map(|t| Value::I32(t.2)).collect()),
        );
        Vocab::from_metadata(&meta).unwrap()
    }

    fn ids(v: &Vocab, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        encode(
            v,
            &ByteFallback::new(v),
            &text.replace(' ', SPACE_MARK),
            &mut out,
        );
        out.into_iter()
            .map(|id| v.texts[id as usize].clone())
            .collect()
    }

    #[test]
    fn highest_score_merges_first() {
        let v = vocab(&[
            ("▁", -1.0, 1),
            ("a", -1.0, 1),
            ("b", -1.0, 1),
            ("c", -1.0, 1),
            ("ab", -2.0, 1),
            ("bc", -0.5, 1),
            ("▁a", -3.0, 1),
        ]);
        // "bc" outscores "ab", so "abc" is a|bc; "▁a" then merges because nothing better remains.
        assert_eq!(ids(&v, "abc"), ["a", "bc"]);
        assert_eq!(ids(&v, " abc"), ["▁a", "bc"]);
    }

    #[test]
    fn unknown_characters_fall_back_to_bytes() {
        let v = vocab(&[("a", -1.0, 1)]);
        assert_eq!(ids(&v, "a한"), ["a", "<0xED>", "<0x95>", "<0x9C>"]);
    }
}
