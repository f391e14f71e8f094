//! The [`Embedder`] of sprout's own engine: an [`EmbeddingModel`] (EmbeddingGemma by default)
//! embedding catalog documents with the document prompt and queries with the query prompt.

use std::sync::Mutex;

use sprout_engine::embedding::{EmbeddingModel, Task};

use crate::dense::Embedder;

/// An engine embedding model shared by the threads that retrieve; one batch runs at a time.
pub struct EngineEmbedder {
    model: Mutex<EmbeddingModel>,
    id: String,
    dim: usize,
}

impl EngineEmbedder {
    /// Wraps a loaded model.
    pub fn new(model: EmbeddingModel) -> Self {
        Self {
            id: model.id().to_string(),
            dim: model.dim(),
            model: Mutex::new(model),
        }
    }

    /// Embeds `texts` as `task` (for the embeddings API).
    pub fn embed(&self, texts: &[&str], task: Task) -> Result<Vec<Vec<f32>>, String> {
        let mut m = self
            .model
            .lock()
            .map_err(|_| "the embedding model is poisoned by an earlier panic".to_string())?;
        m.embed(texts, task).map_err(|e| e.to_string())
    }

    /// Token ids of `text` as `task` (for usage counts).
    pub fn token_count(&self, text: &str, task: Task) -> usize {
        self.model
            .lock()
            .map(|m| m.tokenize(text, task).len())
            .unwrap_or(0)
    }
}

impl Embedder for EngineEmbedder {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        self.embed(&refs, Task::Document)
    }

    fn embed_query(&self, text: &str) -> Result<Vec<f32>, String> {
        self.embed(&[text], Task::Query)?
            .pop()
            .ok_or_else(|| "no vector for the query".to_string())
    }
}
