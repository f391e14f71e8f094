//! The catalogs the server recommends from: the built-in `eco`, the ones ingested into the data
//! directory and the configured files, each behind a [`Retriever`] whose indexes persist in the
//! data directory (rebuilt only when a catalog's content changes), and the `/v1/catalogs` API.

pub mod error;
pub mod layout;
pub mod query;
pub mod routes;

use std::collections::BTreeMap;
use std::fmt;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sprout_recommend::{
    Catalog, CatalogError, DenseIndex, Embedder, LexicalIndex, RetrieveError, Retriever,
};

use crate::config::CatalogSource;

/// Why the catalogs could not be loaded, or an ingested one written.
///
/// Each message already holds its cause's, so the causes are not chained as `source` (an
/// `{:#}` print would repeat them).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A name that cannot name a catalog (see [`layout::check_name`]).
    #[error("catalog name {name:?} {reason}")]
    BadName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two catalogs under one name.
    #[error("catalog {name:?} is defined twice: {first} and {second}")]
    Duplicate {
        /// The name.
        name: String,
        /// Where the first came from.
        first: CatalogOrigin,
        /// Where the second came from.
        second: CatalogOrigin,
    },
    /// A catalog file that does not load.
    #[error("catalog {name:?}: {error}")]
    Load {
        /// The catalog.
        name: String,
        /// Why.
        error: CatalogError,
    },
    /// An index that could neither be opened nor built.
    #[error("catalog {name:?}: cannot index it: {error}")]
    Index {
        /// The catalog.
        name: String,
        /// Why.
        error: RetrieveError,
    },
    /// A file operation in the data directory failed.
    #[error("{action} {path}: {error}")]
    Io {
        /// What was being done, e.g. "cannot write".
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
}

impl StoreError {
    fn io(action: &'static str, path: &Path, error: std::io::Error) -> StoreError {
        StoreError::Io {
            action,
            path: path.to_path_buf(),
            error,
        }
    }
}

/// Where a served catalog came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogOrigin {
    /// [`Catalog::eco`], compiled into sprout.
    BuiltIn,
    /// `sprout catalog ingest`: its `items.jsonl` in the data directory.
    Ingested(PathBuf),
    /// A file named by the configuration (`[[catalogs]]` or `--catalog`).
    Configured(PathBuf),
}

impl fmt::Display for CatalogOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CatalogOrigin::BuiltIn => write!(f, "built in"),
            CatalogOrigin::Ingested(path) => write!(f, "ingested ({})", path.display()),
            CatalogOrigin::Configured(path) => write!(f, "configured ({})", path.display()),
        }
    }
}

/// One catalog as served.
pub struct ServedCatalog {
    /// The catalog with its indexes.
    pub retriever: Arc<Retriever>,
    /// Whether this process built its lexical index (false: reused the one on disk).
    pub index_built: bool,
    /// Where it came from.
    pub origin: CatalogOrigin,
}

/// Every catalog the server serves, by name; built once at startup, read-only afterwards.
pub struct CatalogStore {
    catalogs: BTreeMap<String, ServedCatalog>,
}

impl CatalogStore {
    /// Loads the built-in catalog, the ones ingested under `data_dir`, then `configured`, and
    /// opens (or builds) each one's indexes under `<data_dir>/catalogs/<name>/index`.
    ///
    /// `embedder` is the hook for dense retrieval: with one, every catalog also gets a dense
    /// index and searches fuse both rankings; without, search is BM25 alone.
    pub fn build(
        data_dir: &Path,
        configured: &[CatalogSource],
        embedder: Option<Arc<dyn Embedder>>,
    ) -> Result<CatalogStore, StoreError> {
        let started = Instant::now();
        let mut sources: Vec<(String, CatalogOrigin)> =
            vec![(layout::BUILT_IN.to_string(), CatalogOrigin::BuiltIn)];
        for name in layout::ingested_names(data_dir)? {
            let path = layout::items_path(data_dir, &name);
            sources.push((name, CatalogOrigin::Ingested(path)));
        }
        for source in configured {
            layout::check_name(&source.name)?;
            sources.push((
                source.name.clone(),
                CatalogOrigin::Configured(source.path.clone()),
            ));
        }
        let mut catalogs: BTreeMap<String, ServedCatalog> = BTreeMap::new();
        for (name, origin) in sources {
            if let Some(first) = catalogs.get(&name) {
                return Err(StoreError::Duplicate {
                    name,
                    first: first.origin.clone(),
                    second: origin,
                });
            }
            let catalog = match &origin {
                CatalogOrigin::BuiltIn => Catalog::eco(),
                CatalogOrigin::Ingested(path) | CatalogOrigin::Configured(path) => {
                    layout::read_catalog(&name, path).map_err(|error| StoreError::Load {
                        name: name.clone(),
                        error,
                    })?
                }
            };
            let index_started = Instant::now();
            let (retriever, index_built) = open_retriever(
                &layout::index_dir(data_dir, &name),
                catalog,
                embedder.clone(),
            )
            .map_err(|error| StoreError::Index {
                name: name.clone(),
                error,
            })?;
            tracing::info!(
                catalog = %name,
                items = retriever.catalog().len(),
                origin = %origin,
                index = if index_built { "built" } else { "reused" },
                ms = index_started.elapsed().as_millis() as u64,
                "catalog loaded"
            );
            catalogs.insert(
                name,
                ServedCatalog {
                    retriever: Arc::new(retriever),
                    index_built,
                    origin,
                },
            );
        }
        let store = CatalogStore { catalogs };
        tracing::info!(
            catalogs = store.catalogs.len(),
            index_builds = store.index_builds(),
            ms = started.elapsed().as_millis() as u64,
            "catalogs ready"
        );
        Ok(store)
    }

    /// The catalog served under `name`.
    pub fn get(&self, name: &str) -> Option<&ServedCatalog> {
        self.catalogs.get(name)
    }

    /// Every catalog, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ServedCatalog)> {
        self.catalogs.iter().map(|(name, c)| (name.as_str(), c))
    }

    /// The names served, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.catalogs.keys().map(String::as_str).collect()
    }

    /// Lexical indexes this process built (the others were reused from disk).
    pub fn index_builds(&self) -> u64 {
        self.catalogs.values().filter(|c| c.index_built).count() as u64
    }

    /// Appends the catalog metrics in the Prometheus text format.
    pub fn write_metrics(&self, out: &mut String) {
        let name = "sprout_catalog_index_builds_total";
        let _ = writeln!(
            out,
            "# HELP {name} Catalog lexical indexes built by this process (not reused from disk).\n\
             # TYPE {name} counter\n{name} {}",
            self.index_builds()
        );
        let name = "sprout_catalog_items";
        let _ = writeln!(
            out,
            "# HELP {name} Items per served catalog.\n# TYPE {name} gauge"
        );
        for (catalog, served) in &self.catalogs {
            // Catalog names are [a-z0-9_-] (layout::check_name): no label escaping needed.
            let _ = writeln!(
                out,
                "{name}{{catalog=\"{catalog}\"}} {}",
                served.retriever.catalog().len()
            );
        }
    }
}

/// Opens the indexes of `catalog` persisted in `index_dir` (`lexical/`, and `dense/` with an
/// embedder), building what is missing or stale; the flag tells whether the lexical index was
/// built. When the data directory cannot hold an index (read-only, full), the lexical index is
/// built in memory instead, with a warning, so that serving does not depend on a writable disk.
pub fn open_retriever(
    index_dir: &Path,
    catalog: Catalog,
    embedder: Option<Arc<dyn Embedder>>,
) -> Result<(Retriever, bool), RetrieveError> {
    let lexical_dir = index_dir.join("lexical");
    let lexical = match LexicalIndex::open_or_build(&lexical_dir, &catalog) {
        Ok(lexical) => lexical,
        Err(error) => {
            tracing::warn!(catalog = catalog.name(), dir = %lexical_dir.display(), %error, "cannot persist the lexical index; building it in memory");
            LexicalIndex::build_in_memory(&catalog)?
        }
    };
    let built = lexical.built();
    let retriever = Retriever::new(catalog, lexical)?;
    let Some(embedder) = embedder else {
        return Ok((retriever, built));
    };
    let (dense, _) = DenseIndex::open_or_build(
        &index_dir.join("dense"),
        retriever.catalog(),
        embedder.as_ref(),
    )?;
    Ok((retriever.with_dense(dense, embedder)?, built))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(name: &str, path: &Path) -> CatalogSource {
        CatalogSource {
            name: name.into(),
            path: path.to_path_buf(),
        }
    }

    #[test]
    fn duplicate_and_bad_names_are_refused_naming_both_sources() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("eco.jsonl");
        std::fs::write(&file, "{\"id\": \"a\", \"title\": \"A\"}\n").unwrap();
        let error = CatalogStore::build(dir.path(), &[source("eco", &file)], None)
            .err()
            .unwrap();
        assert!(
            matches!(&error, StoreError::Duplicate { name, first: CatalogOrigin::BuiltIn, .. } if name == "eco")
        );
        assert!(error.to_string().contains("eco.jsonl"), "{error}");
        let error = CatalogStore::build(dir.path(), &[source("My Books", &file)], None)
            .err()
            .unwrap();
        assert!(matches!(error, StoreError::BadName { .. }), "{error}");
    }

    #[test]
    fn a_broken_catalog_file_fails_the_build_naming_catalog_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("b.jsonl");
        std::fs::write(
            &file,
            "{\"id\": \"a\", \"title\": \"A\"}\n{\"id\": \"b\"}\n",
        )
        .unwrap();
        let error = CatalogStore::build(dir.path(), &[source("books", &file)], None)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            error,
            "catalog \"books\": line 2: item has no `title` (or it is empty)"
        );
    }

    #[test]
    fn an_unwritable_data_dir_still_serves_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        // A file where eco's directory should be: nothing can be created below it.
        std::fs::create_dir_all(layout::catalogs_dir(dir.path())).unwrap();
        std::fs::write(layout::catalog_dir(dir.path(), "eco"), "").unwrap();
        let store = CatalogStore::build(dir.path(), &[], None).unwrap();
        let eco = store.get("eco").unwrap();
        assert!(eco.index_built);
        assert_eq!(store.index_builds(), 1);
        assert!(!eco.retriever.search("텀블러", 3, &[]).unwrap().is_empty());
    }
}
