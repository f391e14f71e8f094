//! BM25 retrieval over a catalog with tantivy, persisted in a directory and rebuilt only when
//! the catalog or the tokenizer changes.
//!
//! Layout of the directory given to [`LexicalIndex::open_or_build`]: `manifest.json` (catalog
//! content hash, tokenizer version, tantivy index format) and `tantivy/` (the index). The manifest
//! is written last, so an interrupted build is rebuilt on the next open.

mod tokenizer;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, STORED, STRING,
};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Index, IndexReader, ReloadPolicy, TantivyDocument, Term};

use crate::catalog::{Catalog, TagFilter};

pub use tokenizer::{
    analyzer, is_cjk, terms, MultiScriptTokenStream, MultiScriptTokenizer, TOKENIZER_NAME,
    TOKENIZER_VERSION,
};

/// Memory the index writer may use while building (tantivy's minimum is 15 MB per thread).
const WRITER_MEMORY_BYTES: usize = 50_000_000;

const MANIFEST_FILE: &str = "manifest.json";
const INDEX_DIR: &str = "tantivy";

/// Why the lexical index could not be built, opened or searched.
#[derive(Debug, thiserror::Error)]
pub enum LexicalError {
    /// A file or directory operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "cannot create".
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// tantivy failed.
    #[error("tantivy: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    /// A document's item number is missing or past the catalog (the index is corrupt).
    #[error("index document has no valid item number (catalog has {items} items)")]
    BadItemNumber {
        /// Items in the catalog the index was opened for.
        items: usize,
    },
}

/// What a persisted index was built from; a mismatch means rebuild.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    catalog_hash: String,
    tokenizer: String,
    index_format: u32,
}

impl Manifest {
    fn for_catalog(catalog: &Catalog) -> Manifest {
        Manifest {
            catalog_hash: catalog.content_hash().to_string(),
            tokenizer: TOKENIZER_VERSION.to_string(),
            index_format: tantivy::INDEX_FORMAT_VERSION,
        }
    }
}

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    item: Field,
    text: Field,
    tags: Field,
}

impl Fields {
    fn schema() -> (Schema, Fields) {
        let mut builder = Schema::builder();
        let text_options = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TOKENIZER_NAME)
                .set_index_option(IndexRecordOption::WithFreqs),
        );
        let fields = Fields {
            id: builder.add_text_field("id", STRING | STORED),
            item: builder.add_u64_field("item", FAST | STORED),
            text: builder.add_text_field("text", text_options),
            tags: builder.add_text_field("tags", STRING),
        };
        (builder.build(), fields)
    }

    fn of(schema: &Schema) -> Option<Fields> {
        Some(Fields {
            id: schema.get_field("id").ok()?,
            item: schema.get_field("item").ok()?,
            text: schema.get_field("text").ok()?,
            tags: schema.get_field("tags").ok()?,
        })
    }
}

/// The term a tag filter looks up: `key=value`, one per value of a list.
fn tag_term(key: &str, value: &str) -> String {
    format!("{key}={value}")
}

/// A BM25 index over one catalog's items.
pub struct LexicalIndex {
    reader: IndexReader,
    fields: Fields,
    analyzer: TextAnalyzer,
    items: usize,
    built: bool,
}

/// Items indexed between two calls of the progress callback of
/// [`LexicalIndex::open_or_build_with_progress`].
pub const PROGRESS_EVERY_ITEMS: usize = 1000;

impl LexicalIndex {
    /// Builds an index of `catalog` in memory (nothing persisted).
    pub fn build_in_memory(catalog: &Catalog) -> Result<LexicalIndex, LexicalError> {
        let (schema, fields) = Fields::schema();
        let index = Index::create_in_ram(schema);
        LexicalIndex::fill(index, fields, catalog, &mut |_| {})
    }

    /// Opens the index persisted in `dir` if it was built from this catalog and tokenizer,
    /// otherwise (re)builds it there; [`LexicalIndex::built`] tells which happened.
    pub fn open_or_build(dir: &Path, catalog: &Catalog) -> Result<LexicalIndex, LexicalError> {
        LexicalIndex::open_or_build_with_progress(dir, catalog, &mut |_| {})
    }

    /// [`LexicalIndex::open_or_build`], calling `progress` with the items indexed so far while
    /// it builds (every [`PROGRESS_EVERY_ITEMS`] and at the end); not called when it opens.
    pub fn open_or_build_with_progress(
        dir: &Path,
        catalog: &Catalog,
        progress: &mut dyn FnMut(usize),
    ) -> Result<LexicalIndex, LexicalError> {
        let expected = Manifest::for_catalog(catalog);
        let manifest_path = dir.join(MANIFEST_FILE);
        let index_dir = dir.join(INDEX_DIR);
        if read_manifest(&manifest_path).as_ref() == Some(&expected) {
            match LexicalIndex::open(&index_dir, catalog) {
                Ok(Some(index)) => return Ok(index),
                Ok(None) => {
                    tracing::warn!(dir = %index_dir.display(), "lexical index does not match its manifest; rebuilding")
                }
                Err(error) => {
                    tracing::warn!(dir = %index_dir.display(), %error, "lexical index unreadable; rebuilding")
                }
            }
        }
        tracing::info!(catalog = catalog.name(), items = catalog.len(), dir = %dir.display(), "building lexical index");
        remove_if_present(&manifest_path)?;
        if index_dir.exists() {
            std::fs::remove_dir_all(&index_dir).map_err(|source| LexicalError::Io {
                action: "cannot remove stale index",
                path: index_dir.clone(),
                source,
            })?;
        }
        std::fs::create_dir_all(&index_dir).map_err(|source| LexicalError::Io {
            action: "cannot create",
            path: index_dir.clone(),
            source,
        })?;
        let (schema, fields) = Fields::schema();
        let index = Index::create_in_dir(&index_dir, schema)?;
        let lexical = LexicalIndex::fill(index, fields, catalog, progress)?;
        write_manifest(&manifest_path, &expected)?;
        Ok(lexical)
    }

    /// Opens a persisted index; `None` when its schema or size does not fit the catalog.
    fn open(index_dir: &Path, catalog: &Catalog) -> Result<Option<LexicalIndex>, LexicalError> {
        let index = Index::open_in_dir(index_dir)?;
        let Some(fields) = Fields::of(&index.schema()) else {
            return Ok(None);
        };
        let lexical = LexicalIndex::with_reader(&index, fields, catalog.len(), false)?;
        let docs = lexical.reader.searcher().num_docs();
        Ok((docs == catalog.len() as u64).then_some(lexical))
    }

    /// Writes one document per item into a fresh index and commits.
    fn fill(
        index: Index,
        fields: Fields,
        catalog: &Catalog,
        progress: &mut dyn FnMut(usize),
    ) -> Result<LexicalIndex, LexicalError> {
        index.tokenizers().register(TOKENIZER_NAME, analyzer());
        let mut writer =
            index.writer_with_num_threads::<TantivyDocument>(1, WRITER_MEMORY_BYTES)?;
        for (number, item) in catalog.items().iter().enumerate() {
            let mut document = TantivyDocument::default();
            document.add_text(fields.id, &item.id);
            document.add_u64(fields.item, number as u64);
            document.add_text(fields.text, item.text_for_index());
            for (key, value) in &item.tags {
                for value in value.values() {
                    document.add_text(fields.tags, tag_term(key, value));
                }
            }
            writer.add_document(document)?;
            if (number + 1) % PROGRESS_EVERY_ITEMS == 0 {
                progress(number + 1);
            }
        }
        writer.commit()?;
        progress(catalog.len());
        writer.wait_merging_threads()?;
        LexicalIndex::with_reader(&index, fields, catalog.len(), true)
    }

    fn with_reader(
        index: &Index,
        fields: Fields,
        items: usize,
        built: bool,
    ) -> Result<LexicalIndex, LexicalError> {
        index.tokenizers().register(TOKENIZER_NAME, analyzer());
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(LexicalIndex {
            reader,
            fields,
            analyzer: analyzer(),
            items,
            built,
        })
    }

    /// Whether this value built the index (true) or opened one already on disk (false).
    pub fn built(&self) -> bool {
        self.built
    }

    /// Number of indexed items.
    pub fn len(&self) -> usize {
        self.items
    }

    /// Whether no items are indexed.
    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    /// The `k` best items for `query` by BM25 among those matching every filter, best first,
    /// as (item index, score). A query with no searchable words matches nothing.
    pub fn search(
        &self,
        query: &str,
        k: usize,
        filters: &[TagFilter],
    ) -> Result<Vec<(usize, f32)>, LexicalError> {
        let unique: BTreeSet<String> = terms(&mut self.analyzer.clone(), query)
            .into_iter()
            .collect();
        if k == 0 || unique.is_empty() {
            return Ok(Vec::new());
        }
        let words: Vec<(Occur, Box<dyn Query>)> = unique
            .iter()
            .map(|term| {
                let term = Term::from_field_text(self.fields.text, term);
                let query: Box<dyn Query> =
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs));
                (Occur::Should, query)
            })
            .collect();
        let mut clauses: Vec<(Occur, Box<dyn Query>)> =
            vec![(Occur::Must, Box::new(BooleanQuery::new(words)))];
        for filter in filters {
            let term =
                Term::from_field_text(self.fields.tags, &tag_term(&filter.key, &filter.value));
            let exact = TermQuery::new(term, IndexRecordOption::Basic);
            // A filter restricts, it does not rank: score 0 keeps BM25 scores as they are.
            clauses.push((
                Occur::Must,
                Box::new(ConstScoreQuery::new(Box::new(exact), 0.0)),
            ));
        }
        let searcher = self.reader.searcher();
        let top = searcher.search(
            &BooleanQuery::new(clauses),
            &TopDocs::with_limit(k).order_by_score(),
        )?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let column = searcher
                .segment_reader(address.segment_ord)
                .fast_fields()
                .u64("item")?;
            let item = column
                .first(address.doc_id)
                .map(|number| number as usize)
                .filter(|&number| number < self.items)
                .ok_or(LexicalError::BadItemNumber { items: self.items })?;
            hits.push((item, score));
        }
        Ok(hits)
    }
}

fn read_manifest(path: &Path) -> Option<Manifest> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_manifest(path: &Path, manifest: &Manifest) -> Result<(), LexicalError> {
    let text = serde_json::to_string_pretty(manifest)
        .expect("a manifest of strings and integers always serializes");
    let partial = path.with_extension("json.partial");
    let io = |action, source| LexicalError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&partial, text).map_err(|source| io("cannot write", source))?;
    std::fs::rename(&partial, path).map_err(|source| io("cannot write", source))
}

fn remove_if_present(path: &Path) -> Result<(), LexicalError> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(LexicalError::Io {
            action: "cannot remove",
            path: path.to_path_buf(),
            source: error,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
