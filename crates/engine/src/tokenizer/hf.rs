//! Tokenizers from a Hugging Face directory (`tokenizer.json` + `tokenizer_config.json`),
//! wrapped around the `tokenizers` crate, plus what it does not tell us directly: each token's
//! raw bytes, the BOS/EOS tokens and the chat template.

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
        let parsing = tokenizers::Tokenizer::from_bytes(&raw)
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
        Ok(HfTokenizer {
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
