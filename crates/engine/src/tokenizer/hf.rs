//! Tokenizers from a Hugging Face directory (`tokenizer.json` + `tokenizer_config.json`),
//! wrapped around the `tokenizers` crate, plus what it does not tell us directly: each token's
//! raw bytes, the BOS/EOS tokens, the special tokens put around one input and the chat template.

use std::path::Path;

use serde_json::Value as Json;

use super::bpe::char_to_byte;
use super::spm::SPACE_MARK;
use crate::{EngineError, Result};

/// A loaded Hugging Face tokenizer and the facts read around it.
pub(crate) struct HfTokenizer {
    /// Matches special tokens in the input.
    pub parsing: tokenizers::Tokenizer,
    /// Treats special tokens in the input as plain text.
    pub literal: tokenizers::Tokenizer,
    pub texts: Vec<String>,
    pub pieces: Vec<Vec<u8>>,
    pub special: Vec<bool>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    /// The special tokens the post-processor puts before and after one input.
    pub single_affixes: Option<(Vec<u32>, Vec<u32>)>,
    pub strip_leading_space: bool,
    pub chat_template: Option<String>,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Whether a decoder (or any decoder in a sequence) has the given `type`.
fn has_component(node: &Json, ty: &str) -> bool {
    match node {
        Json::Object(map) => {
            map.get("type").and_then(Json::as_str) == Some(ty)
                || map
                    .get("decoders")
                    .and_then(Json::as_array)
                    .is_some_and(|d| d.iter().any(|x| has_component(x, ty)))
        }
        _ => false,
    }
}

/// Whether decoding drops the space that encoding put in front of the text.
fn strips_leading_space(decoder: &Json) -> bool {
    let Json::Object(map) = decoder else {
        return false;
    };
    match map.get("type").and_then(Json::as_str) {
        Some("Strip") => map.get("start").and_then(Json::as_u64).unwrap_or(0) > 0,
        Some("Metaspace") => {
            map.get("add_prefix_space")
                .and_then(Json::as_bool)
                .unwrap_or(false)
                || matches!(
                    map.get("prepend_scheme").and_then(Json::as_str),
                    Some("always" | "first")
                )
        }
        Some("Sequence") => map
            .get("decoders")
            .and_then(Json::as_array)
            .is_some_and(|d| d.iter().any(strips_leading_space)),
        _ => false,
    }
}

/// A token given in tokenizer_config.json either as a string or as `{"content": ...}`.
fn config_token(config: &Json, key: &str) -> Option<String> {
    match config.get(key)? {
        Json::String(s) => Some(s.clone()),
        Json::Object(m) => m.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

/// The chat template in tokenizer_config.json: a string, or a list of named templates of
/// which "default" is the one for chat.
fn config_template(config: &Json) -> Option<String> {
    match config.get("chat_template")? {
        Json::String(s) => Some(s.clone()),
        Json::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
            .or_else(|| list.first())
            .and_then(|t| t.get("template"))
            .and_then(Json::as_str)
            .map(str::to_string),
        _ => None,
    }
}

/// The ids a post-processor puts before and after a single input: TemplateProcessing's
/// `single` template (`[CLS] $A [SEP]`, `<bos> $A <eos>`), Bert/RobertaProcessing's cls and
/// sep, the first of those in a Sequence. None when it adds no special tokens or names one
/// the vocabulary lacks.
fn single_affixes(
    node: &Json,
    token_id: &dyn Fn(&str) -> Option<u32>,
) -> Option<(Vec<u32>, Vec<u32>)> {
    let pair_id = |key: &str| -> Option<u32> {
        let pair = node.get(key)?.as_array()?;
        let id = pair.get(1)?.as_u64()?;
        u32::try_from(id).ok()
    };
    let affixes = match node.get("type")?.as_str()? {
        "TemplateProcessing" => {
            let specials = node.get("special_tokens");
            let (mut before, mut after) = (Vec::new(), Vec::new());
            let mut seen_sequence = false;
            for piece in node.get("single")?.as_array()? {
                if piece.get("Sequence").is_some() {
                    seen_sequence = true;
                    continue;
                }
                let name = piece.get("SpecialToken")?.get("id")?.as_str()?;
                let ids: Vec<u32> = match specials.and_then(|s| s.get(name)) {
                    Some(t) => t
                        .get("ids")?
                        .as_array()?
                        .iter()
                        .map(|v| v.as_u64().and_then(|v| u32::try_from(v).ok()))
                        .collect::<Option<_>>()?,
                    None => vec![token_id(name)?],
                };
                if seen_sequence {
                    &mut after
                } else {
                    &mut before
                }
                .extend(ids);
            }
            (before, after)
        }
        "BertProcessing" | "RobertaProcessing" => (vec![pair_id("cls")?], vec![pair_id("sep")?]),
        "Sequence" => {
            return node
                .get("processors")?
                .as_array()?
                .iter()
                .find_map(|p| single_affixes(p, token_id));
        }
        _ => return None,
    };
    (!affixes.0.is_empty() || !affixes.1.is_empty()).then_some(affixes)
}

/// Turns a `<0xXX>` byte-fallback token into its byte.
fn fallback_byte(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2)
        .then(|| u8::from_str_radix(hex, 16).ok())
        .flatten()
}

impl HfTokenizer {
    /// Loads `tokenizer.json` and, when given, `tokenizer_config.json`.
    pub fn load(tokenizer_json: &Path, config_json: Option<&Path>) -> Result<Self> {
        let raw = read(tokenizer_json)?;
        let json: Json = serde_json::from_slice(&raw)
            .map_err(|e| EngineError::Tokenizer(format!("{}: {e}", tokenizer_json.display())))?;
        let mut parsing = tokenizers::Tokenizer::from_bytes(&raw)
            .map_err(|e| EngineError::Tokenizer(format!("{}: {e}", tokenizer_json.display())))?;
        // Some files (all-MiniLM-L6-v2's) pad and truncate every encoding to 128 tokens: the
        // callers decide lengths, and ids are never padding.
        parsing.with_padding(None);
        parsing
            .with_truncation(None)
            .map_err(|e| EngineError::Tokenizer(format!("{}: {e}", tokenizer_json.display())))?;
        let mut literal = parsing.clone();
        literal.set_encode_special_tokens(true);
        let config: Json = match config_json {
            Some(p) => serde_json::from_slice(&read(p)?)
                .map_err(|e| EngineError::Tokenizer(format!("{}: {e}", p.display())))?,
            None => Json::Null,
        };

        let decoder = json.get("decoder").cloned().unwrap_or(Json::Null);
        let byte_level = has_component(&decoder, "ByteLevel")
            || json
                .get("pre_tokenizer")
                .is_some_and(|p| has_component(p, "ByteLevel"));
        let n = parsing.get_vocab_size(true);
        let added = parsing.get_added_tokens_decoder();
        let mut texts = Vec::with_capacity(n);
        let mut pieces = Vec::with_capacity(n);
        let mut special = vec![false; n];
        for id in 0..n as u32 {
            let text = parsing.id_to_token(id).unwrap_or_default();
            let piece = if let Some(tok) = added.get(&id) {
                special[id as usize] = tok.special;
                tok.content.as_bytes().to_vec()
            } else if byte_level {
                let mut out = Vec::with_capacity(text.len());
                for c in text.chars() {
                    match char_to_byte(c) {
                        Some(b) => out.push(b),
                        None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
                out
            } else if let Some(b) = fallback_byte(&text) {
                vec![b]
            } else {
                text.replace(SPACE_MARK, " ").into_bytes()
            };
            texts.push(text);
            pieces.push(piece);
        }

        let lookup = |key: &str| config_token(&config, key).and_then(|t| parsing.token_to_id(&t));
        let bos = lookup("bos_token");
        let eos = lookup("eos_token");
        let add_bos = config
            .get("add_bos_token")
            .and_then(Json::as_bool)
            .unwrap_or(false)
            && bos.is_some();
        let single_affixes = json
            .get("post_processor")
            .and_then(|p| single_affixes(p, &|t| parsing.token_to_id(t)));
        Ok(HfTokenizer {
            single_affixes,
            strip_leading_space: strips_leading_space(&decoder),
            chat_template: config_template(&config),
            parsing,
            literal,
            texts,
            pieces,
            special,
            bos,
            eos,
            add_bos,
        })
    }

    /// Ids of `text`, with or without matching special tokens in it; never adds BOS/EOS.
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let tok = if parse_special {
            &self.parsing
        } else {
            &self.literal
        };
        match tok.encode(text, false) {
            Ok(enc) => enc.get_ids().to_vec(),
            Err(e) => {
                // The crate only fails on internal errors (e.g. a broken regex); an empty
                // encoding is surfaced to the caller as an empty prompt rather than a panic.
                tracing::warn!("tokenizer encode failed: {e}");
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_config_tokens_and_templates() {
        let cfg: Json = serde_json::json!({
            "bos_token": {"content": "<s>"}, "eos_token": "</s>",
            "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]
        });
        assert_eq!(config_token(&cfg, "bos_token").as_deref(), Some("<s>"));
        assert_eq!(config_token(&cfg, "eos_token").as_deref(), Some("</s>"));
        assert_eq!(config_template(&cfg).as_deref(), Some("D"));
        assert_eq!(fallback_byte("<0x0A>"), Some(b'\n'));
        assert_eq!(fallback_byte("<0x0A"), None);
    }

    #[test]
    fn reads_the_special_tokens_around_one_input() {
        let vocab = |t: &str| {
            ["[CLS]", "[SEP]"]
                .iter()
                .position(|v| *v == t)
                .map(|i| i as u32 + 101)
        };
        let bert: Json = serde_json::json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [101]}, "[SEP]": {"id": "[SEP]", "ids": [102]}}});
        assert_eq!(single_affixes(&bert, &vocab), Some((vec![101], vec![102])));
        let old: Json = serde_json::json!({"type": "BertProcessing", "sep": ["[SEP]", 102], "cls": ["[CLS]", 101]});
        assert_eq!(single_affixes(&old, &vocab), Some((vec![101], vec![102])));
        let seq: Json = serde_json::json!({"type": "Sequence", "processors": [
            {"type": "ByteLevel"},
            {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "[CLS]"}}, {"Sequence": {"id": "A"}}]}]});
        assert_eq!(single_affixes(&seq, &vocab), Some((vec![101], vec![])));
        assert_eq!(
            single_affixes(&serde_json::json!({"type": "ByteLevel"}), &vocab),
            None
        );
        let unknown: Json = serde_json::json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>"}}, {"Sequence": {"id": "A"}}]});
        assert_eq!(single_affixes(&unknown, &vocab), None);
    }

    #[test]
    fn detects_leading_space_strip() {
        let llama: Json = serde_json::json!({"type": "Sequence", "decoders": [
            {"type": "Replace"}, {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]});
        assert!(strips_leading_space(&llama));
        assert!(has_component(&llama, "ByteFallback"));
        assert!(!strips_leading_space(
            &serde_json::json!({"type": "ByteLevel"})
        ));
    }
}
