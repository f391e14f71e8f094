//! A model ready to chat: weights, tokenizer and chat template loaded together from one path
//! (a GGUF file or a Hugging Face directory).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::chat_template::{ChatMessage, ChatTemplate};
use crate::model::load::load_source;
use crate::model::Model;
use crate::quant::GgmlType;
use crate::tokenizer::Tokenizer;
use crate::{EngineError, Result};

/// How to load a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Convert float weights of a safetensors model to this type (F32, F16, BF16).
    pub dtype: Option<GgmlType>,
    /// Quantize matrices on load (Q8_0 or Q4_K).
    pub quantize: Option<GgmlType>,
    /// A Jinja chat template file, or the name of a built-in template, replacing the model's.
    pub chat_template: Option<String>,
}

/// Weights, tokenizer and chat template of one model.
pub struct ModelBundle {
    /// Where the model came from.
    pub path: PathBuf,
    pub model: Model,
    pub prompt: PromptFormat,
}

/// The text side of a model: its tokenizer and chat template, cheap to clone and share with
/// request handlers while the model itself moves into the engine.
#[derive(Clone)]
pub struct PromptFormat {
    pub tokenizer: Arc<Tokenizer>,
    pub template: Arc<ChatTemplate>,
}

impl ModelBundle {
    /// Loads everything from `path`.
    pub fn open(path: &Path, opts: &LoadOptions) -> Result<Self> {
        let source = load_source(path, opts.dtype, opts.quantize)?;
        let model = Model::load(&source)?;
        let (tokenizer, model_template) = if path.is_dir() {
            let config = path.join("tokenizer_config.json");
            let config = config.exists().then_some(config);
            let tok = Tokenizer::from_file(&path.join("tokenizer.json"), config.as_deref())?;
            let tpl = tok.chat_template().map(str::to_string);
            (tok, tpl)
        } else {
            let tok = Tokenizer::from_metadata(&source.metadata)?;
            let tpl = source
                .str_opt("tokenizer.chat_template")
                .map(str::to_string);
            (tok, tpl)
        };
        if tokenizer.vocab_size() > model.config.vocab_size {
            return Err(EngineError::invalid(format!(
                "tokenizer has {} tokens but the model only {}",
                tokenizer.vocab_size(),
                model.config.vocab_size
            )));
        }
        let template = match &opts.chat_template {
            Some(spec) => ChatTemplate::from_user_spec(spec)?,
            None => match model_template {
                Some(src) => ChatTemplate::new(&src)?,
                // Gemma ships GGUFs without a template; its turn markers give it away.
                None if tokenizer.token_to_id("<start_of_turn>").is_some() => {
                    ChatTemplate::builtin("gemma").unwrap_or_else(ChatTemplate::fallback)
                }
                None => ChatTemplate::fallback(),
            },
        };
        Ok(Self {
            path: path.to_path_buf(),
            model,
            prompt: PromptFormat {
                tokenizer: Arc::new(tokenizer),
                template: Arc::new(template),
            },
        })
    }
}

impl PromptFormat {
    /// Renders a conversation with the chat template and tokenizes it (BOS added where the model
    /// wants it and the template did not write it).
    ///
    /// Special tokens are parsed only where the template wrote them: a user who types
    /// `<|im_start|>system` gets those characters as plain text, never a control token, so
    /// message text cannot forge turns or change the conversation's structure.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let tok = &self.tokenizer;
        let piece = |id: Option<u32>| {
            id.map(|i| String::from_utf8_lossy(tok.token_bytes(i)).into_owned())
                .unwrap_or_default()
        };
        let bos = piece(tok.bos_id());
        let eos = piece(tok.eos_id().or_else(|| tok.eos_ids().first().copied()));
        let forges_special = |m: &ChatMessage| {
            tok.encode(&m.content, true)
                .iter()
                .any(|&id| tok.is_special(id))
        };
        if !messages.iter().any(forges_special) {
            // The usual case: one pass over the whole text, exactly as llama.cpp tokenizes it.
            let text = self.template.render(messages, true, &bos, &eos)?;
            return Ok(self.encode_prompt(&text, true));
        }
        // Render with each message's content replaced by a marker, then tokenize the template's
        // text with special tokens and each content as plain text.
        let marked: Vec<ChatMessage> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| ChatMessage {
                role: m.role.clone(),
                content: content_marker(i),
            })
            .collect();
        let text = self.template.render(&marked, true, &bos, &eos)?;
        let mut ids = Vec::new();
        let mut rest = text.as_str();
        while let Some((at, index, len)) = next_marker(rest, messages.len()) {
            ids.extend(tok.encode(&rest[..at], true));
            ids.extend(tok.encode(&messages[index].content, false));
            rest = &rest[at + len..];
        }
        ids.extend(tok.encode(rest, true));
        if let (true, Some(bos)) = (tok.add_bos(), tok.bos_id()) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    /// Tokenizes a prompt, adding BOS where the model wants it and the text does not start with it.
    pub fn encode_prompt(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let tok = &self.tokenizer;
        let mut ids = tok.encode(text, parse_special);
        if let (true, Some(bos)) = (tok.add_bos(), tok.bos_id()) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        ids
    }
}

/// Private-use characters around a message index: text no tokenizer treats as special.
const MARKER_OPEN: char = '\u{F8F0}';
const MARKER_CLOSE: char = '\u{F8F1}';

fn content_marker(index: usize) -> String {
    format!("{MARKER_OPEN}{index}{MARKER_CLOSE}")
}

/// The first well-formed marker in `text`: byte offset, message index, byte length.
fn next_marker(text: &str, messages: usize) -> Option<(usize, usize, usize)> {
    let mut from = 0;
    while let Some(rel) = text[from..].find(MARKER_OPEN) {
        let at = from + rel;
        let body = &text[at + MARKER_OPEN.len_utf8()..];
        if let Some(end) = body.find(MARKER_CLOSE) {
            if let Ok(index) = body[..end].parse::<usize>() {
                if index < messages {
                    let len = MARKER_OPEN.len_utf8() + end + MARKER_CLOSE.len_utf8();
                    return Some((at, index, len));
                }
            }
        }
        from = at + MARKER_OPEN.len_utf8();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_in_order_and_bad_ones_skipped() {
        let text = format!(
            "a{}b\u{F8F0}x\u{F8F1}{}c",
            content_marker(1),
            content_marker(0)
        );
        let (at, i, len) = next_marker(&text, 2).unwrap();
        assert_eq!((at, i), (1, 1));
        let rest = &text[at + len..];
        let (at2, i2, _) = next_marker(rest, 2).unwrap();
        assert_eq!(i2, 0);
        assert_eq!(&rest[..at2], "b\u{F8F0}x\u{F8F1}");
        assert_eq!(
            next_marker(&content_marker(5), 2),
            None,
            "index out of range"
        );
    }
}
