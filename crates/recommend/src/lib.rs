//! sprout's recommendation retrieval: catalogs, BM25 (tantivy), dense vectors, rank fusion and
//! the evaluation that measures them.
//!
//! Data flow: a [`catalog::Catalog`] is loaded and checked; [`lexical::LexicalIndex`] and,
//! with an [`dense::Embedder`], [`dense::ExactIndex`] are built from it (and persisted keyed by
//! its content hash); [`retriever::Retriever`] answers a query with both, fused by
//! [`fusion::rrf`]; [`eval`] scores any ranking on a labelled query set.

#![warn(missing_docs)]

pub mod answer;
pub mod books;
pub mod catalog;
pub mod classify;
pub mod dense;
pub mod embed;
pub mod eval;
pub mod fusion;
pub mod lexical;
pub mod retriever;

#[cfg(test)]
mod toy_embedder;

pub use catalog::{Catalog, CatalogError, CatalogFormat, Item, TagFilter, TagValue, Translation};
pub use dense::{AnnIndex, DenseError, DenseIndex, Embedder, ExactIndex};
pub use embed::EngineEmbedder;
pub use eval::{evaluate, EvalQuery, EvalReport};
pub use fusion::rrf;
pub use lexical::{LexicalError, LexicalIndex};
pub use retriever::{Hit, RetrieveError, Retriever};
