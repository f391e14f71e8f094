//! Cutting special tokens out of the input before the model's algorithm sees it.
//!
//! llama.cpp takes the special tokens longest first and, for each, splits every remaining text
//! fragment at all its non-overlapping occurrences. We find every occurrence of every special
//! token in one pass over a byte trie, then accept them in that same order (token rank, then
//! position), rejecting any that overlaps an accepted one: the same result without rescanning
//! the whole input once per special token.

use std::collections::BTreeMap;

use super::vocab::TokenMap;

/// A piece of input: plain text for the tokenizer, or a special token already decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

#[derive(Default, Debug)]
struct Node {
    children: TokenMap<u8, u32>,
    /// Rank (position in the longest-first order) of the special token ending here.
    rank: Option<u32>,
}

/// Special tokens in a trie, with their matching priority.
#[derive(Debug)]
pub(crate) struct SpecialMatcher {
    nodes: Vec<Node>,
    /// Token id per rank.
    ids: Vec<u32>,
    /// Byte length per rank.
    lens: Vec<usize>,
    /// Whether the token at a rank is matched even when special parsing is off
    /// (user-defined tokens are; control and unknown ones are not).
    always: Vec<bool>,
}

impl SpecialMatcher {
    /// `specials` in priority order (longest text first) with their text and whether they are
    /// matched when `parse_special` is false.
    pub fn new<'a>(specials: impl IntoIterator<Item = (u32, &'a str, bool)>) -> Self {
        let mut m = SpecialMatcher {
            nodes: vec![Node::default()],
            ids: Vec::new(),
            lens: Vec::new(),
            always: Vec::new(),
        };
        for (id, text, always) in specials {
            if text.is_empty() {
                continue;
            }
            let mut node = 0usize;
            for &b in text.as_bytes() {
                let next = m.nodes.len() as u32;
                let child = *m.nodes[node].children.entry(b).or_insert(next);
                if child == next {
                    m.nodes.push(Node::default());
                }
                node = child as usize;
            }
            // Two specials with the same text: the first (higher priority) one keeps it.
            if m.nodes[node].rank.is_none() {
                m.nodes[node].rank = Some(m.ids.len() as u32);
            }
            m.ids.push(id);
            m.lens.push(text.len());
            m.always.push(always);
        }
        m
    }

    /// Splits `text` into plain-text fragments and special tokens.
    pub fn split<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        let bytes = text.as_bytes();
        // (rank, start) of every occurrence.
        let mut hits: Vec<(u32, usize)> = Vec::new();
        for start in 0..bytes.len() {
            let mut node = &self.nodes[0];
            for &b in &bytes[start..] {
                match node.children.get(&b) {
                    Some(&child) => node = &self.nodes[child as usize],
                    None => break,
                }
                if let Some(rank) = node.rank {
                    if parse_special || self.always[rank as usize] {
                        hits.push((rank, start));
                    }
                }
            }
        }
        if hits.is_empty() {
            return if text.is_empty() {
                Vec::new()
            } else {
                vec![Fragment::Text(text)]
            };
        }
        hits.sort_unstable();
        // Accepted intervals: start -> (end, rank).
        let mut accepted: BTreeMap<usize, (usize, u32)> = BTreeMap::new();
        for (rank, start) in hits {
            let end = start + self.lens[rank as usize];
            let overlaps_before = accepted
                .range(..=start)
                .next_back()
                .is_some_and(|(_, &(e, _))| e > start);
            let overlaps_after = accepted.range(start..end).next().is_some();
            if !overlaps_before && !overlaps_after {
                accepted.insert(start, (end, rank));
            }
        }
        let mut out = Vec::with_capacity(accepted.len() * 2 + 1);
        let mut pos = 0;
        for (start, (end, rank)) in accepted {
            if start > pos {
                out.push(Fragment::Text(&text[pos..start]));
            }
            out.push(Fragment::Token(self.ids[rank as usize]));
            pos = end;
        }
        if pos < text.len() {
            out.push(Fragment::Text(&text[pos..]));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher() -> SpecialMatcher {
        // Longest first, as the vocabulary orders them.
        SpecialMatcher::new([
            (10, "<|im_start|>", false),
            (11, "<|im_end|>", false),
            (20, "\n\n", true),
            (21, "\n", true),
        ])
    }

    #[test]
    fn control_tokens_only_when_parsing_special() {
        let m = matcher();
        let text = "<|im_start|>user\nhi<|im_end|>";
        assert_eq!(
            m.split(text, true),
            vec![
                Fragment::Token(10),
                Fragment::Text("user"),
                Fragment::Token(21),
                Fragment::Text("hi"),
                Fragment::Token(11)
            ]
        );
        assert_eq!(
            m.split(text, false),
            vec![
                Fragment::Text("<|im_start|>user"),
                Fragment::Token(21),
                Fragment::Text("hi<|im_end|>")
            ]
        );
    }

    #[test]
    fn longer_tokens_win_and_runs_split_left_to_right() {
        let m = matcher();
        assert_eq!(
            m.split("a\n\n\nb", false),
            vec![
                Fragment::Text("a"),
                Fragment::Token(20),
                Fragment::Token(21),
                Fragment::Text("b")
            ]
        );
        assert_eq!(m.split("", true), vec![]);
        assert_eq!(m.split("plain", true), vec![Fragment::Text("plain")]);
    }

    #[test]
    fn a_split_never_cuts_a_multibyte_char() {
        let m = SpecialMatcher::new([(1, "é", true)]);
        assert_eq!(
            m.split("aéb", false),
            vec![Fragment::Text("a"), Fragment::Token(1), Fragment::Text("b")]
        );
    }
}
