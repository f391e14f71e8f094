//! Incremental detokenization for streaming: text leaves as soon as its bytes form complete
//! UTF-8, so a character split across byte-fallback tokens is never sent half-written.

use std::sync::Arc;

use super::{PieceTable, Tokenizer};

/// Longest UTF-8 sequence; an incomplete tail can never be longer than this minus one.
const MAX_UTF8_LEN: usize = 4;

/// Turns generated ids into text chunks, one `push` per token.
#[derive(Debug)]
pub struct StreamDecoder {
    pieces: Arc<PieceTable>,
    pending: Vec<u8>,
    first: bool,
    /// Bytes of the next pieces that were already streamed (see [`StreamDecoder::skip_bytes`]).
    skip: usize,
}

impl StreamDecoder {
    /// A decoder for ids from `tokenizer`, at the start of a text.
    pub fn new(tokenizer: &Tokenizer) -> Self {
        StreamDecoder {
            pieces: tokenizer.piece_table(),
            pending: Vec::with_capacity(8),
            first: true,
            skip: 0,
        }
    }

    /// Adds one token; returns the text that became complete (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        let piece = if self.first {
            self.pieces.get_first(id)
        } else {
            self.pieces.get(id)
        };
        self.first = false;
        let skipped = self.skip.min(piece.len());
        self.skip -= skipped;
        self.pending.extend_from_slice(&piece[skipped..]);
        self.take_complete()
    }

    /// Drops the next `bytes` bytes of pushed pieces: they were streamed already, under tokens
    /// a constraint dropped to re-tokenize the same text differently.
    pub fn skip_bytes(&mut self, bytes: usize) {
        self.skip += bytes;
    }

    /// Ends the text: whatever is still pending, with broken sequences as U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }

    fn take_complete(&mut self) -> String {
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, tail) = rest.split_at(e.valid_up_to());
                    // `valid_up_to` guarantees this prefix is valid UTF-8.
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        // Bytes that can never start a character: replace and go on.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &tail[bad..];
                        }
                        // A character still being written: wait for the next token.
                        None => {
                            rest = tail;
                            break;
                        }
                    }
                }
            }
        }
        debug_assert!(rest.len() < MAX_UTF8_LEN);
        let keep = rest.len();
        let len = self.pending.len();
        self.pending.drain(..len - keep);
        out
    }
}
