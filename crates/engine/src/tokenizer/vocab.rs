//! A GGUF vocabulary: token texts, scores and attributes read from `tokenizer.ggml.*`, the
//! special-token ids, and the text-based promotions llama.cpp applies so our ids match its ids.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use crate::gguf::Value;
use crate::{EngineError, Result};

/// A fast multiplicative hasher for lookups in tables whose keys come from the model file
/// (token texts, merge pairs): the hot path of tokenization. Tables keyed by user input keep
/// the standard randomized hasher.
#[derive(Default, Clone, Copy)]
pub(crate) struct TokenHasher(u64);

impl TokenHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for TokenHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(
                c.try_into().expect("chunks_exact yields 8 bytes"),
            ));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }
    fn write_u8(&mut self, v: u8) {
        self.add(v.into());
    }
    fn write_u32(&mut self, v: u32) {
        self.add(v.into());
    }
    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }
    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A hash map keyed by model-file data, with [`TokenHasher`].
pub(crate) type TokenMap<K, V> = HashMap<K, V, BuildHasherDefault<TokenHasher>>;

/// Token attribute bits (one token may carry several, e.g. user-defined promoted to control).
pub(crate) mod attr {
    pub const UNKNOWN: u8 = 1 << 0;
    pub const UNUSED: u8 = 1 << 1;
    pub const NORMAL: u8 = 1 << 2;
    pub const CONTROL: u8 = 1 << 3;
    pub const USER_DEFINED: u8 = 1 << 4;
    pub const BYTE: u8 = 1 << 5;
}

/// `tokenizer.ggml.token_type` values, as written by the GGUF converters.
fn attr_from_type(token_type: i64) -> u8 {
    match token_type {
        1 => attr::NORMAL,
        2 => attr::UNKNOWN,
        3 => attr::CONTROL,
        4 => attr::USER_DEFINED,
        5 => attr::UNUSED,
        6 => attr::BYTE,
        _ => 0,
    }
}

/// Texts that end a turn or a generation, whatever the model (llama.cpp's end-of-generation list).
pub(crate) const END_OF_GENERATION_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Fill-in-the-middle tokens looked up by text when the metadata does not name them; they are
/// treated as control tokens, and pad/repo/file-separator also end generation.
const FIM_TEXTS: &[(&str, bool, &[&str])] = &[
    (
        "tokenizer.ggml.fim_pre_token_id",
        false,
        &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<｜fim▁begin｜>",
            "<PRE>",
            "▁<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_suf_token_id",
        false,
        &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<｜fim▁hole｜>",
            "<SUF>",
            "▁<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_mid_token_id",
        false,
        &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<｜fim▁end｜>",
            "<MID>",
            "▁<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_pad_token_id",
        true,
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    ),
    (
        "tokenizer.ggml.fim_rep_token_id",
        true,
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
    ),
    ("tokenizer.ggml.fim_sep_token_id", true, &["<|file_sep|>"]),
];

/// Which algorithm turns text into ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VocabKind {
    /// Byte-level BPE with merges (`tokenizer.ggml.model = "gpt2"`).
    BytePairs,
    /// SentencePiece-style score-driven merging with byte fallback (`"llama"`).
    SentencePiece,
}

/// The vocabulary and special-token facts of a GGUF model.
#[derive(Debug)]
pub(crate) struct Vocab {
    pub kind: VocabKind,
    pub texts: Vec<String>,
    pub scores: Vec<f32>,
    pub attrs: Vec<u8>,
    pub token_to_id: TokenMap<String, u32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub add_bos: bool,
    pub add_space_prefix: bool,
    pub end_of_generation: Vec<u32>,
    /// Control, user-defined and unknown tokens, longest text first: the order in which
    /// they are cut out of the input before the model's algorithm runs.
    pub specials_by_length: Vec<u32>,
    /// `tokenizer.ggml.pre`, empty when absent.
    pub pre: String,
    pub merges: Vec<String>,
}

fn string_array<'a>(meta: &'a BTreeMap<String, Value>, key: &str) -> Result<Option<Vec<&'a str>>> {
    let Some(value) = meta.get(key) else {
        return Ok(None);
    };
    let items = value
        .as_array()
        .ok_or_else(|| EngineError::Tokenizer(format!("{key} is not an array")))?;
    items
        .iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| EngineError::Tokenizer(format!("{key} holds a non-string")))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn bool_key(meta: &BTreeMap<String, Value>, key: &str) -> Option<bool> {
    match meta.get(key)? {
        Value::Bool(b) => Some(*b),
        other => other.as_u64().map(|v| v != 0),
    }
}

fn id_key(meta: &BTreeMap<String, Value>, key: &str) -> Option<u64> {
    meta.get(key).and_then(Value::as_u64)
}

impl Vocab {
    /// Reads the `tokenizer.ggml.*` keys.
    pub fn from_metadata(meta: &BTreeMap<String, Value>) -> Result<Self> {
        let model = meta
            .get("tokenizer.ggml.model")
            .and_then(Value::as_str)
            .ok_or_else(|| EngineError::Tokenizer("tokenizer.ggml.model missing".into()))?;
        let kind = match model {
            "gpt2" => VocabKind::BytePairs,
            "llama" => VocabKind::SentencePiece,
            other => {
                return Err(EngineError::Unsupported(format!(
                    "tokenizer model {other:?}"
                )))
            }
        };
        let pre = meta
            .get("tokenizer.ggml.pre")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let tokens = string_array(meta, "tokenizer.ggml.tokens")?
            .ok_or_else(|| EngineError::Tokenizer("tokenizer.ggml.tokens missing".into()))?;
        let n = tokens.len();
        if n == 0 || n > u32::MAX as usize / 2 {
            return Err(EngineError::Tokenizer(format!("vocabulary of {n} tokens")));
        }
        let scores: Vec<f32> = match meta.get("tokenizer.ggml.scores").and_then(Value::as_array) {
            Some(v) if v.len() >= n => v[..n].iter().map(|s| s.as_f32().unwrap_or(0.0)).collect(),
            Some(v) => {
                return Err(EngineError::Tokenizer(format!(
                    "{} scores for {n} tokens",
                    v.len()
                )))
            }
            None => vec![0.0; n],
        };
        let mut attrs: Vec<u8> = match meta
            .get("tokenizer.ggml.token_type")
            .and_then(Value::as_array)
        {
            Some(v) if v.len() >= n => v[..n]
                .iter()
                .map(|t| match *t {
                    Value::I32(x) => attr_from_type(x.into()),
                    ref other => attr_from_type(other.as_u64().map_or(0, |x| x as i64)),
                })
                .collect(),
            Some(v) => {
                return Err(EngineError::Tokenizer(format!(
                    "{} token types for {n} tokens",
                    v.len()
                )))
            }
            None => vec![attr::NORMAL; n],
        };
        let mut texts = Vec::with_capacity(n);
        let mut token_to_id = TokenMap::with_capacity_and_hasher(n, Default::default());
        for (i, t) in tokens.iter().enumerate() {
            // llama.cpp renames empty tokens so that every text is a distinct key.
            let text = if t.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                (*t).to_string()
            };
            token_to_id.entry(text.clone()).or_insert(i as u32);
            texts.push(text);
        }
        let merges: Vec<String> = string_array(meta, "tokenizer.ggml.merges")?
            .map(|m| m.into_iter().map(str::to_string).collect())
            .unwrap_or_default();
        if kind == VocabKind::BytePairs && merges.is_empty() {
            return Err(EngineError::Tokenizer(
                "byte-level BPE vocabulary without merges".into(),
            ));
        }

        let in_range = |id: Option<u64>| id.filter(|&i| (i as usize) < n).map(|i| i as u32);
        let (default_bos, default_eos, default_unk) = match kind {
            VocabKind::SentencePiece => (Some(1), Some(2), Some(0)),
            VocabKind::BytePairs => (Some(11), Some(11), None),
        };
        let bos = in_range(id_key(meta, "tokenizer.ggml.bos_token_id").or(default_bos));
        let eos = in_range(id_key(meta, "tokenizer.ggml.eos_token_id").or(default_eos));
        let unk = in_range(id_key(meta, "tokenizer.ggml.unknown_token_id").or(default_unk));
        let llama3_pre = matches!(
            pre.as_str(),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3"
        );
        let default_add_bos = kind == VocabKind::SentencePiece || llama3_pre;
        let add_bos = bool_key(meta, "tokenizer.ggml.add_bos_token").unwrap_or(default_add_bos)
            && bos.is_some();
        let add_space_prefix = kind == VocabKind::SentencePiece
            && bool_key(meta, "tokenizer.ggml.add_space_prefix").unwrap_or(true);

        // Text-based promotions (llama.cpp does the same because converters often lose the
        // token types): end-of-turn and fill-in-the-middle tokens become control tokens.
        let mut end_of_generation = Vec::new();
        for (key, ends, names) in FIM_TEXTS {
            let found = match in_range(id_key(meta, key)) {
                Some(id) => vec![id],
                None => names
                    .iter()
                    .filter_map(|t| token_to_id.get(*t).copied())
                    .collect(),
            };
            for id in found {
                attrs[id as usize] |= attr::CONTROL;
                if *ends {
                    end_of_generation.push(id);
                }
            }
        }
        for text in END_OF_GENERATION_TEXTS {
            if let Some(&id) = token_to_id.get(*text) {
                attrs[id as usize] |= attr::CONTROL;
                end_of_generation.push(id);
            }
        }
        for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            if let Some(id) = in_range(id_key(meta, key)) {
                end_of_generation.push(id);
            }
        }
        end_of_generation.extend(eos);
        end_of_generation.sort_unstable();
        end_of_generation.dedup();

        let mut specials_by_length: Vec<u32> = (0..n as u32)
            .filter(|&id| {
                attrs[id as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        specials_by_length.sort_by(|&a, &b| {
            texts[b as usize]
                .len()
                .cmp(&texts[a as usize].len())
                .then(a.cmp(&b))
        });

        Ok(Vocab {
            kind,
            texts,
            scores,
            attrs,
            token_to_id,
            bos,
            eos,
            unk,
            add_bos,
            add_space_prefix,
            end_of_generation,
            specials_by_length,
            pre,
            merges,
        })
    }

    /// The id of an exact token text.
    pub fn id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }
}
