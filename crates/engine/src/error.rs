//! The engine's error type: every failure that can cross the engine's boundary.

use std::path::PathBuf;

/// Everything that can go wrong inside the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A model file is malformed, truncated or hostile.
    #[error("invalid model file: {0}")]
    InvalidModel(String),
    /// The model uses something this engine does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A tokenizer could not be built or failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A chat template failed to parse or render.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// A request to the engine is invalid (unknown sequence, too long, bad parameters).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The KV cache has no free blocks for this step.
    #[error("KV cache exhausted: need {needed} blocks, {free} free")]
    KvExhausted { needed: usize, free: usize },
}

/// The engine's result type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    /// Shorthand for [`EngineError::InvalidModel`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        EngineError::InvalidModel(msg.into())
    }
}
