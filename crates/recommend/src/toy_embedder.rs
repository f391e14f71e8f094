//! A deterministic stand-in embedder for tests: hashed character trigrams, no model needed.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::dense::Embedder;

/// Counts hashed character trigrams (bigrams for two-character texts) into `dim` buckets.
pub(crate) struct TrigramEmbedder {
    pub(crate) dim: usize,
    pub(crate) id: String,
    /// Documents embedded so far, to tell a load from a rebuild.
    pub(crate) documents_embedded: AtomicUsize,
}

impl TrigramEmbedder {
    pub(crate) fn new(dim: usize) -> TrigramEmbedder {
        TrigramEmbedder {
            dim,
            id: format!("toy-trigram-{dim}"),
            documents_embedded: AtomicUsize::new(0),
        }
    }

    fn embed(&self, text: &str) -> Vec<f32> {
        let chars: Vec<char> = text
            .to_lowercase()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let mut vector = vec![0.0; self.dim];
        let width = chars.len().clamp(1, 3);
        for gram in chars.windows(width) {
            // FNV-1a over the code points.
            let hash = gram.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &c| {
                (hash ^ c as u64).wrapping_mul(0x0000_0100_0000_01b3)
            });
            vector[(hash % self.dim as u64) as usize] += 1.0;
        }
        vector
    }
}

impl Embedder for TrigramEmbedder {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String> {
        self.documents_embedded
            .fetch_add(texts.len(), Ordering::SeqCst);
        Ok(texts.iter().map(|text| self.embed(text)).collect())
    }

    fn embed_query(&self, text: &str) -> Result<Vec<f32>, String> {
        Ok(self.embed(text))
    }
}
