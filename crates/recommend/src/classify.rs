//! Semantic category and topic detection: a message's embedding is compared with every catalog
//! item's (k nearest neighbours vote for their category, weighted by similarity), and a
//! message whose nearest item is far from everything is off-topic. Works the same for Korean,
//! English and Chinese, since the embedder is multilingual; keyword rules can sit in front.

use std::collections::BTreeMap;

use crate::catalog::Catalog;
use crate::dense::DenseIndex;

/// Neighbours that vote.
pub const NEIGHBOURS: usize = 7;

/// Below this cosine to the nearest eco item a message is off-topic (EmbeddingGemma, query
/// prompt): on the 73-message set (tests/fixtures/leafresh_messages.jsonl) the on-topic minimum
/// was 0.393 and the off-topic maximum 0.369.
pub const ECO_OFF_TOPIC_SIMILARITY: f32 = 0.38;

/// What the neighbours say about a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The winning category (the `tag` value of the voters), if any item was found.
    pub category: Option<String>,
    /// The winner's share of the vote, 0..=1.
    pub confidence: f32,
    /// Cosine similarity of the nearest item: low means the message is about none of them.
    pub nearest: f32,
}

impl Verdict {
    /// Whether the message is about the catalog's subject at all.
    pub fn on_topic(&self, min_similarity: f32) -> bool {
        self.nearest >= min_similarity
    }
}

/// Votes among the `NEIGHBOURS` items nearest to `query` (a unit vector) for their `tag`.
pub fn classify(index: &DenseIndex, catalog: &Catalog, query: &[f32], tag: &str) -> Verdict {
    let hits = index.search(query, NEIGHBOURS, None).unwrap_or_default();
    let nearest = hits.first().map_or(-1.0, |h| h.1);
    let mut votes: BTreeMap<String, f32> = BTreeMap::new();
    let mut total = 0.0;
    for (i, sim) in &hits {
        let Some(item) = catalog.get(*i) else {
            continue;
        };
        let Some(value) = item.tags.get(tag).and_then(|v| v.values().first().cloned()) else {
            continue;
        };
        // Sharper than linear: the nearest items count most.
        let w = (sim.max(0.0)).powi(4);
        *votes.entry(value).or_default() += w;
        total += w;
    }
    let best = votes
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
    Verdict {
        confidence: best.as_ref().map_or(0.0, |b| b.1 / total.max(1e-9)),
        category: best.map(|b| b.0),
        nearest,
    }
}
