//! Hybrid retrieval over one catalog: BM25 alone, or BM25 and dense vectors fused by RRF.

use std::path::Path;
use std::sync::Arc;

use crate::catalog::{Catalog, TagFilter};
use crate::dense::{DenseError, DenseIndex, Embedder};
use crate::fusion::{rrf, RRF_K};
use crate::lexical::{LexicalError, LexicalIndex};

/// Candidates taken from each ranking before fusion, at least; more when `k` is larger.
pub const FUSION_DEPTH: usize = 50;

/// Why a retriever could not be assembled or could not search.
#[derive(Debug, thiserror::Error)]
pub enum RetrieveError {
    /// The lexical index failed.
    #[error(transparent)]
    Lexical(#[from] LexicalError),
    /// The dense index failed.
    #[error(transparent)]
    Dense(#[from] DenseError),
    /// The embedder could not embed the query.
    #[error("embedder {embedder} failed on the query: {message}")]
    QueryEmbedding {
        /// The embedder's id.
        embedder: String,
        /// Its message.
        message: String,
    },
    /// An index that was built for another catalog or embedder.
    #[error("{index} index has {got} {what}, expected {expected}")]
    Mismatch {
        /// Which index.
        index: &'static str,
        /// What was counted (items, dimensions).
        what: &'static str,
        /// The value the catalog or embedder requires.
        expected: usize,
        /// The index's value.
        got: usize,
    },
}

/// One retrieved item: its catalog index, its score and where each ranking placed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Index into [`Catalog::items`].
    pub index: usize,
    /// The RRF score when fused, the BM25 score otherwise.
    pub score: f32,
    /// 1-based rank in the BM25 candidates, if it was among them.
    pub bm25_rank: Option<usize>,
    /// 1-based rank in the dense candidates, if dense retrieval ran and it was among them.
    pub dense_rank: Option<usize>,
}

struct DenseSide {
    index: DenseIndex,
    embedder: Arc<dyn Embedder>,
}

/// A catalog with its lexical index and, optionally, a dense index and the embedder behind it.
pub struct Retriever {
    catalog: Catalog,
    lexical: LexicalIndex,
    dense: Option<DenseSide>,
}

impl Retriever {
    /// A BM25-only retriever; `lexical` must index `catalog`.
    pub fn new(catalog: Catalog, lexical: LexicalIndex) -> Result<Retriever, RetrieveError> {
        if lexical.len() != catalog.len() {
            return Err(RetrieveError::Mismatch {
                index: "lexical",
                what: "items",
                expected: catalog.len(),
                got: lexical.len(),
            });
        }
        Ok(Retriever {
            catalog,
            lexical,
            dense: None,
        })
    }

    /// Adds dense retrieval: `index` (an [`crate::ExactIndex`], an [`crate::dense::AnnIndex`]
    /// or either as a [`DenseIndex`]) must hold one vector per item, of `embedder`'s dimension.
    pub fn with_dense(
        mut self,
        index: impl Into<DenseIndex>,
        embedder: Arc<dyn Embedder>,
    ) -> Result<Retriever, RetrieveError> {
        let index = index.into();
        let checks = [
            ("items", self.catalog.len(), index.len()),
            ("dimensions", embedder.dim(), index.dim()),
        ];
        for (what, expected, got) in checks {
            if expected != got {
                return Err(RetrieveError::Mismatch {
                    index: "dense",
                    what,
                    expected,
                    got,
                });
            }
        }
        self.dense = Some(DenseSide { index, embedder });
        Ok(self)
    }

    /// Opens (or builds) the indexes under `dir`: `lexical/`, and `dense/` when given an embedder.
    pub fn open_or_build(
        dir: &Path,
        catalog: Catalog,
        embedder: Option<Arc<dyn Embedder>>,
    ) -> Result<Retriever, RetrieveError> {
        let lexical = LexicalIndex::open_or_build(&dir.join("lexical"), &catalog)?;
        let dense = match &embedder {
            Some(embedder) => {
                Some(DenseIndex::open_or_build(&dir.join("dense"), &catalog, embedder.as_ref())?.0)
            }
            None => None,
        };
        let retriever = Retriever::new(catalog, lexical)?;
        match (dense, embedder) {
            (Some(index), Some(embedder)) => retriever.with_dense(index, embedder),
            _ => Ok(retriever),
        }
    }

    /// The catalog searched.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The lexical index.
    pub fn lexical(&self) -> &LexicalIndex {
        &self.lexical
    }

    /// Whether dense retrieval takes part in [`Retriever::search`].
    pub fn has_dense(&self) -> bool {
        self.dense.is_some()
    }

    /// The `k` best items for `query` among those matching every filter, best first.
    pub fn search(
        &self,
        query: &str,
        k: usize,
        filters: &[TagFilter],
    ) -> Result<Vec<Hit>, RetrieveError> {
        let vector = self.embed_query(query)?;
        self.search_embedded(query, vector.as_deref(), k, filters)
    }

    /// The dense index and its embedder, when dense retrieval takes part.
    pub fn dense(&self) -> Option<(&DenseIndex, &Arc<dyn Embedder>)> {
        self.dense.as_ref().map(|d| (&d.index, &d.embedder))
    }

    /// The query's vector for [`Retriever::search_embedded`] (None without dense retrieval),
    /// so that a caller searching one query several times embeds it once.
    pub fn embed_query(&self, query: &str) -> Result<Option<Vec<f32>>, RetrieveError> {
        let Some(dense) = &self.dense else {
            return Ok(None);
        };
        dense
            .embedder
            .embed_query(query)
            .map(Some)
            .map_err(|message| RetrieveError::QueryEmbedding {
                embedder: dense.embedder.id(),
                message,
            })
    }

    /// [`Retriever::search`] with the query's vector already computed ([`Retriever::embed_query`]).
    pub fn search_embedded(
        &self,
        query: &str,
        query_vector: Option<&[f32]>,
        k: usize,
        filters: &[TagFilter],
    ) -> Result<Vec<Hit>, RetrieveError> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let (Some(dense), Some(query_vector)) = (&self.dense, query_vector) else {
            let bm25 = self.lexical.search(query, k, filters)?;
            return Ok(bm25
                .into_iter()
                .enumerate()
                .map(|(position, (index, score))| Hit {
                    index,
                    score,
                    bm25_rank: Some(position + 1),
                    dense_rank: None,
                })
                .collect());
        };
        let depth = k.saturating_mul(4).max(FUSION_DEPTH);
        let bm25 = self.lexical.search(query, depth, filters)?;
        let items = self.catalog.items();
        let allowed = |index: usize| items[index].matches(filters);
        let allowed: Option<&dyn Fn(usize) -> bool> = if filters.is_empty() {
            None
        } else {
            Some(&allowed)
        };
        let vectors = dense.index.search(query_vector, depth, allowed)?;
        let rank_in = |list: &[(usize, f32)], item: usize| {
            list.iter()
                .position(|&(candidate, _)| candidate == item)
                .map(|position| position + 1)
        };
        let fused = rrf(&[bm25.clone(), vectors.clone()], RRF_K);
        Ok(fused
            .into_iter()
            .take(k)
            .map(|(index, score)| Hit {
                index,
                score,
                bm25_rank: rank_in(&bm25, index),
                dense_rank: rank_in(&vectors, index),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dense::ExactIndex;
    use crate::toy_embedder::TrigramEmbedder;

    fn eco_retriever(dense: bool) -> Retriever {
        let catalog = Catalog::eco();
        let lexical = LexicalIndex::build_in_memory(&catalog).unwrap();
        let retriever = Retriever::new(catalog, lexical).unwrap();
        if !dense {
            return retriever;
        }
        let embedder = Arc::new(TrigramEmbedder::new(512));
        let index = ExactIndex::embed_catalog(retriever.catalog(), embedder.as_ref()).unwrap();
        retriever.with_dense(index, embedder).unwrap()
    }

    #[test]
    fn bm25_alone_reports_bm25_scores_and_ranks() {
        let retriever = eco_retriever(false);
        assert!(!retriever.has_dense());
        let hits = retriever.search("텀블러 커피", 3, &[]).unwrap();
        let expected = retriever.lexical().search("텀블러 커피", 3, &[]).unwrap();
        assert_eq!(hits.len(), 3);
        for (position, (hit, (index, score))) in hits.iter().zip(expected).enumerate() {
            assert_eq!((hit.index, hit.score), (index, score));
            assert_eq!(hit.bm25_rank, Some(position + 1));
            assert_eq!(hit.dense_rank, None);
        }
    }

    #[test]
    fn hybrid_fuses_both_rankings_and_keeps_their_ranks() {
        let retriever = eco_retriever(true);
        assert!(retriever.has_dense());
        let hits = retriever.search("텀블러에 커피", 5, &[]).unwrap();
        assert_eq!(hits.len(), 5);
        let first = &hits[0];
        assert_eq!(
            retriever.catalog().items()[first.index].id,
            "eco-zero-waste-01"
        );
        assert_eq!((first.bm25_rank, first.dense_rank), (Some(1), Some(1)));
        assert!((first.score - 2.0 / 61.0).abs() < 1e-6);
        assert!(hits.windows(2).all(|pair| pair[0].score >= pair[1].score));
        assert!(hits
            .iter()
            .all(|hit| hit.bm25_rank.is_some() || hit.dense_rank.is_some()));
    }

    #[test]
    fn filters_apply_to_both_rankings() {
        let retriever = eco_retriever(true);
        let filters = [TagFilter::new("category", "VEGAN")];
        let hits = retriever
            .search("텀블러에 커피 받아 가기", 10, &filters)
            .unwrap();
        assert!(!hits.is_empty());
        for hit in &hits {
            assert!(retriever.catalog().items()[hit.index].matches(&filters));
        }
        assert!(retriever.search("커피", 0, &[]).unwrap().is_empty());
    }

    #[test]
    fn mismatched_indexes_are_refused() {
        let catalog = Catalog::eco();
        let small = Catalog::from_items("one", vec![crate::catalog::Item::new("a", "A")]).unwrap();
        let lexical = LexicalIndex::build_in_memory(&small).unwrap();
        assert!(matches!(
            Retriever::new(catalog.clone(), lexical),
            Err(RetrieveError::Mismatch {
                index: "lexical",
                ..
            })
        ));
        let retriever = Retriever::new(
            catalog.clone(),
            LexicalIndex::build_in_memory(&catalog).unwrap(),
        )
        .unwrap();
        let embedder: Arc<dyn Embedder> = Arc::new(TrigramEmbedder::new(16));
        let wrong_dim = ExactIndex::new(8, vec![vec![1.0; 8]; catalog.len()]).unwrap();
        let error = retriever.with_dense(wrong_dim, embedder).err().unwrap();
        assert_eq!(
            error.to_string(),
            "dense index has 8 dimensions, expected 16"
        );
    }

    #[test]
    fn open_or_build_persists_both_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let embedder: Arc<dyn Embedder> = Arc::new(TrigramEmbedder::new(64));
        let first =
            Retriever::open_or_build(dir.path(), Catalog::eco(), Some(embedder.clone())).unwrap();
        assert!(first.lexical().built());
        let expected = first.search("바닷가 쓰레기", 5, &[]).unwrap();
        drop(first);
        let second = Retriever::open_or_build(dir.path(), Catalog::eco(), Some(embedder)).unwrap();
        assert!(!second.lexical().built());
        assert!(second.has_dense());
        assert_eq!(second.search("바닷가 쓰레기", 5, &[]).unwrap(), expected);
    }
}
