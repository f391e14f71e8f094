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
    /// Renders a conversation with the chat template and tokenizes it (special tokens parsed,
    /// BOS added where the model wants it and the template did not write it).
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let tok = &self.tokenizer;
        let piece = |id: Option<u32>| {
            id.map(|i| String::from_utf8_lossy(tok.token_bytes(i)).into_owned())
                .unwrap_or_default()
        };
        let bos = piece(tok.bos_id());
        let eos = piece(tok.eos_id().or_else(|| tok.eos_ids().first().copied()));
        let text = self.template.render(messages, true, &bos, &eos)?;
        Ok(self.encode_prompt(&text, true))
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
