//! Text ↔ token ids for every model sprout loads: GGUF vocabularies (byte-level BPE and
//! SentencePiece-style, id-for-id with llama.cpp) and Hugging Face `tokenizer.json` files.

mod bpe;
mod hf;
mod special;
mod spm;
mod stream;
mod vocab;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub use stream::StreamDecoder;

use crate::gguf::Value;
use crate::Result;
use special::{Fragment, SpecialMatcher};
use vocab::{attr, Vocab, VocabKind};

/// The raw bytes of every token, in one buffer.
#[derive(Debug)]
pub(crate) struct PieceTable {
    bytes: Vec<u8>,
    /// `offsets[id]..offsets[id + 1]` is token `id`'s slice of `bytes`.
    offsets: Vec<usize>,
    /// SentencePiece models add a space before the text; decoding drops it from the first piece.
    strip_leading_space: bool,
}

impl PieceTable {
    fn new<'a>(pieces: impl IntoIterator<Item = &'a [u8]>, strip_leading_space: bool) -> Self {
        let mut table = PieceTable {
            bytes: Vec::new(),
            offsets: vec![0],
            strip_leading_space,
        };
        for p in pieces {
            table.bytes.extend_from_slice(p);
            table.offsets.push(table.bytes.len());
        }
        table
    }

    /// Token `id`'s bytes; empty for an id outside the vocabulary.
    pub(crate) fn get(&self, id: u32) -> &[u8] {
        let i = id as usize;
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.bytes[a..b],
            _ => &[],
        }
    }

    /// Token `id`'s bytes as the first piece of a text (leading space dropped where due).
    pub(crate) fn get_first(&self, id: u32) -> &[u8] {
        let p = self.get(id);
        if self.strip_leading_space {
            p.strip_prefix(b" ").unwrap_or(p)
        } else {
            p
        }
    }
}

enum Algorithm {
    BytePairs(Box<bpe::BytePairEncoder>),
    SentencePiece(Box<spm::ByteFallback>),
}

struct GgufBackend {
    vocab: Vocab,
    algorithm: Algorithm,
    specials: SpecialMatcher,
}

enum Backend {
    Gguf(Box<GgufBackend>),
    HuggingFace(Box<hf::HfTokenizer>),
}

/// A model's tokenizer. Cheap to share across threads (`Send + Sync`).
pub struct Tokenizer {
    backend: Backend,
    pieces: Arc<PieceTable>,
    special: Vec<bool>,
    bos: Option<u32>,
    add_bos: bool,
    eos: Option<u32>,
    eos_ids: Vec<u32>,
    single_affixes: Option<(Vec<u32>, Vec<u32>)>,
    chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .finish()
    }
}

/// The bytes llama.cpp renders for a GGUF token (its `token_to_piece` with specials shown).
fn gguf_piece(vocab: &Vocab, id: usize) -> Vec<u8> {
    let text = &vocab.texts[id];
    let a = vocab.attrs[id];
    if a & (attr::CONTROL | attr::UNKNOWN | attr::USER_DEFINED) != 0 {
        return text.as_bytes().to_vec();
    }
    if a & attr::NORMAL != 0 {
        return match vocab.kind {
            VocabKind::SentencePiece => text.replace(spm::SPACE_MARK, " ").into_bytes(),
            VocabKind::BytePairs => {
                let mut out = Vec::with_capacity(text.len());
                for c in text.chars() {
                    match bpe::char_to_byte(c) {
                        Some(b) => out.push(b),
                        None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
                out
            }
        };
    }
    if a & attr::BYTE != 0 {
        if let Some(b) = text.get(3..5).and_then(|h| u8::from_str_radix(h, 16).ok()) {
            return vec![b];
        }
    }
    Vec::new()
}

impl Tokenizer {
    /// Builds the tokenizer of a GGUF model from its `tokenizer.ggml.*` metadata.
    pub fn from_metadata(meta: &BTreeMap<String, Value>) -> Result<Self> {
        let vocab = Vocab::from_metadata(meta)?;
        let algorithm = match vocab.kind {
            VocabKind::BytePairs => {
                Algorithm::BytePairs(Box::new(bpe::BytePairEncoder::new(&vocab)?))
            }
            VocabKind::SentencePiece => {
                Algorithm::SentencePiece(Box::new(spm::ByteFallback::new(&vocab)))
            }
        };
        let specials = SpecialMatcher::new(vocab.specials_by_length.iter().map(|&id| {
            let always = vocab.attrs[id as usize] & (attr::CONTROL | attr::UNKNOWN) == 0;
            (id, vocab.texts[id as usize].as_str(), always)
        }));
        let pieces: Vec<Vec<u8>> = (0..vocab.texts.len())
            .map(|id| gguf_piece(&vocab, id))
            .collect();
        let pieces = PieceTable::new(pieces.iter().map(Vec::as_slice), vocab.add_space_prefix);
        let special = vocab.attrs.iter().map(|a| a & attr::CONTROL != 0).collect();
        let chat_template = meta
            .get("tokenizer.chat_template")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(Tokenizer {
            pieces: Arc::new(pieces),
            special,
            bos: vocab.bos,
            add_bos: vocab.add_bos,
            eos: vocab.eos,
            eos_ids: vocab.end_of_generation.clone(),
            single_affixes: None,
            chat_template,
            backend: Backend::Gguf(Box::new(GgufBackend {
                vocab,
                algorithm,
                specials,
            })),
        })
    }

    /// Loads a Hugging Face tokenizer; BOS/EOS, `add_bos_token` and the chat template come
    /// from `tokenizer_config.json` when given.
    pub fn from_file(tokenizer_json: &Path, tokenizer_config_json: Option<&Path>) -> Result<Self> {
        let hf = hf::HfTokenizer::load(tokenizer_json, tokenizer_config_json)?;
        let pieces = PieceTable::new(hf.pieces.iter().map(Vec::as_slice), hf.strip_leading_space);
        let mut eos_ids: Vec<u32> = vocab::END_OF_GENERATION_TEXTS
            .iter()
            .filter_map(|t| hf.parsing.token_to_id(t))
            .collect();
        eos_ids.extend(hf.eos);
        eos_ids.sort_unstable();
        eos_ids.dedup();
        Ok(Tokenizer {
            pieces: Arc::new(pieces),
            special: hf.special.clone(),
            bos: hf.bos,
            add_bos: hf.add_bos,
            eos: hf.eos,
            eos_ids,
            single_affixes: hf.single_affixes.clone(),
            chat_template: hf.chat_template.clone(),
            backend: Backend::HuggingFace(Box::new(hf)),
        })
    }

    /// Token ids of `text`. Never adds BOS/EOS. With `parse_special`, control tokens written
    /// in the text (`<|im_start|>`) become their ids; without, they are tokenized as text.
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        self.encode_with(text, parse_special, true)
    }

    /// Token ids of `text` as it continues a text already begun: no control tokens, and no
    /// SentencePiece space prefix (what a grammar's forced text is tokenized as).
    pub fn encode_continuation(&self, text: &str) -> Vec<u32> {
        self.encode_with(text, false, false)
    }

    fn encode_with(&self, text: &str, parse_special: bool, at_start: bool) -> Vec<u32> {
        match &self.backend {
            Backend::HuggingFace(hf) => hf.encode(text, parse_special),
            Backend::Gguf(g) => {
                let GgufBackend {
                    vocab,
                    algorithm,
                    specials,
                } = &**g;
                let mut out = Vec::with_capacity(text.len() / 3 + 1);
                let mut after_special = at_start;
                for fragment in specials.split(text, parse_special) {
                    match fragment {
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                        Fragment::Text(t) => {
                            match algorithm {
                                Algorithm::BytePairs(bpe) => bpe.encode(vocab, t, &mut out),
                                Algorithm::SentencePiece(bytes) => {
                                    let mut s = String::with_capacity(t.len() + 4);
                                    if vocab.add_space_prefix && after_special {
                                        s.push(' ');
                                    }
                                    s.push_str(t);
                                    spm::encode(
                                        vocab,
                                        bytes,
                                        &s.replace(' ', spm::SPACE_MARK),
                                        &mut out,
                                    );
                                }
                            }
                            after_special = false;
                        }
                    }
                }
                out
            }
        }
    }

    /// The text of `ids`, special tokens included; invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            bytes.extend_from_slice(if i == 0 {
                self.pieces.get_first(id)
            } else {
                self.pieces.get(id)
            });
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The text of `ids` without control tokens (BOS, end-of-turn markers, ...).
    pub fn decode_skipping_special(&self, ids: &[u32]) -> String {
        let kept: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| !self.is_special(id))
            .collect();
        self.decode(&kept)
    }

    /// The raw bytes one token stands for (a byte-fallback token is one byte; may be partial UTF-8).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.pieces.get(id)
    }

    /// The token's text as written in the vocabulary (`Ġthe`, `▁the`, `<0x0A>`).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        match &self.backend {
            Backend::Gguf(g) => g.vocab.texts.get(id as usize).map(String::as_str),
            Backend::HuggingFace(hf) => hf.texts.get(id as usize).map(String::as_str),
        }
    }

    /// Number of token ids (the logits width).
    pub fn vocab_size(&self) -> usize {
        self.special.len()
    }

    /// The beginning-of-sequence token, if the model has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// Whether prompts should start with [`Tokenizer::bos_id`].
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// The model's own end-of-sequence token (what templates call `eos_token`), if any.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// The special tokens `tokenizer.json`'s post-processor puts before and after one input
    /// (`[CLS]` … `[SEP]` for BERT, `<bos>` … `<eos>` for EmbeddingGemma); None for GGUF
    /// vocabularies and tokenizers whose post-processor adds none.
    pub fn single_input_affixes(&self) -> Option<(&[u32], &[u32])> {
        self.single_affixes
            .as_ref()
            .map(|(a, b)| (a.as_slice(), b.as_slice()))
    }

    /// Every id that ends a generation: EOS plus end-of-turn tokens (`<|im_end|>`, `<end_of_turn>`, ...).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// The id of an exact vocabulary text (`"<|im_end|>"`).
    pub fn token_to_id(&self, s: &str) -> Option<u32> {
        match &self.backend {
            Backend::Gguf(g) => g.vocab.id(s),
            Backend::HuggingFace(hf) => hf.parsing.token_to_id(s),
        }
    }

    /// Whether `id` is a control token (never part of the visible answer).
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// The chat template shipped with the model (GGUF `tokenizer.chat_template` or
    /// tokenizer_config.json `chat_template`), if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    pub(crate) fn piece_table(&self) -> Arc<PieceTable> {
        Arc::clone(&self.pieces)
    }
}

#[cfg(test)]
mod tests;
