//! Where catalogs live in the data directory, and writing an ingested one there.
//!
//! ```text
//! <data_dir>/catalogs/<name>/items.jsonl   canonical items, one JSON object a line (ingested)
//! <data_dir>/catalogs/<name>/source.json   the file it was ingested from (ingested)
//! <data_dir>/catalogs/<name>/index/lexical BM25 index, keyed by the catalog's content hash
//! <data_dir>/catalogs/<name>/index/dense   vectors, once an embedder is configured
//! ```
//! Built-in and configured catalogs keep only their `index/` here; a directory counts as an
//! ingested catalog exactly when it holds `items.jsonl`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sprout_recommend::catalog::MAX_CATALOG_BYTES;
use sprout_recommend::{Catalog, CatalogError, CatalogFormat};

use super::StoreError;

/// The name of the built-in catalog ([`Catalog::eco`]), served without ingesting.
pub const BUILT_IN: &str = "eco";

/// Longest catalog name.
pub const MAX_NAME_CHARS: usize = 64;

const ITEMS_FILE: &str = "items.jsonl";
const SOURCE_FILE: &str = "source.json";

/// The directory holding every catalog's files.
pub fn catalogs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("catalogs")
}

/// The directory of one catalog.
pub fn catalog_dir(data_dir: &Path, name: &str) -> PathBuf {
    catalogs_dir(data_dir).join(name)
}

/// The canonical items of an ingested catalog.
pub fn items_path(data_dir: &Path, name: &str) -> PathBuf {
    catalog_dir(data_dir, name).join(ITEMS_FILE)
}

/// The directory of a catalog's indexes (`lexical/`, `dense/`).
pub fn index_dir(data_dir: &Path, name: &str) -> PathBuf {
    catalog_dir(data_dir, name).join("index")
}

/// Checks a catalog name: 1 to 64 of `a-z`, `0-9`, `-`, `_`, starting with a letter or digit.
///
/// Names become directory names and URL path segments; lowercase only, so that two names
/// never share a directory on a case-insensitive file system.
pub fn check_name(name: &str) -> Result<(), StoreError> {
    let reason = if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        Some("must be 1 to 64 characters long")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        Some("may only hold a-z, 0-9, '-' and '_'")
    } else if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        Some("must start with a letter or digit")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(StoreError::BadName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Reads a catalog file (format by extension) and names it `name`.
///
/// `Catalog::from_path` names a catalog after its file stem; a served catalog is named by its
/// configuration, so this mirrors it with the name given (same size limit, same errors).
pub fn read_catalog(name: &str, path: &Path) -> Result<Catalog, CatalogError> {
    let format =
        CatalogFormat::from_extension(path).ok_or_else(|| CatalogError::UnknownExtension {
            path: path.to_path_buf(),
        })?;
    let io_error = |source| CatalogError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::metadata(path).map_err(io_error)?.len();
    if bytes > MAX_CATALOG_BYTES {
        return Err(CatalogError::TooLarge {
            path: path.to_path_buf(),
            bytes,
            max: MAX_CATALOG_BYTES,
        });
    }
    let text = std::fs::read_to_string(path).map_err(io_error)?;
    Catalog::parse(name, &text, format)
}

/// Names of the ingested catalogs (directories holding `items.jsonl`), sorted; directories
/// whose name is not a valid catalog name are skipped with a warning.
pub fn ingested_names(data_dir: &Path) -> Result<Vec<String>, StoreError> {
    let dir = catalogs_dir(data_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(StoreError::io("cannot list", &dir, source)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| StoreError::io("cannot list", &dir, source))?;
        if !entry.path().join(ITEMS_FILE).is_file() {
            continue;
        }
        match entry.file_name().into_string() {
            Ok(name) if check_name(&name).is_ok() => names.push(name),
            _ => {
                tracing::warn!(dir = %entry.path().display(), "skipping a catalog directory whose name is not a catalog name")
            }
        }
    }
    names.sort();
    Ok(names)
}

/// What `source.json` records about an ingested catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestRecord {
    /// The file the items were read from, as given to `sprout catalog ingest`.
    pub source: PathBuf,
    /// When, in seconds since the Unix epoch.
    pub ingested_unix_s: u64,
}

/// The record of an ingested catalog, if it has a readable one.
pub fn ingest_record(data_dir: &Path, name: &str) -> Option<IngestRecord> {
    let text = std::fs::read_to_string(catalog_dir(data_dir, name).join(SOURCE_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Items written between two calls of the progress callback of [`save_ingested`].
pub const PROGRESS_EVERY_ITEMS: usize = 10_000;

/// Writes `catalog` as the ingested catalog `name`: its items as canonical JSONL (replacing
/// any previous ones atomically: readers see the old file or the new one, never a mix) and the
/// source record. `progress` is called with the items written so far every
/// [`PROGRESS_EVERY_ITEMS`]. Returns the items path.
pub fn save_ingested(
    data_dir: &Path,
    name: &str,
    catalog: &Catalog,
    source: &Path,
    mut progress: impl FnMut(usize),
) -> Result<PathBuf, StoreError> {
    check_name(name)?;
    let dir = catalog_dir(data_dir, name);
    std::fs::create_dir_all(&dir).map_err(|e| StoreError::io("cannot create", &dir, e))?;
    let path = dir.join(ITEMS_FILE);
    write_atomically(&path, |out| {
        for (written, item) in catalog.items().iter().enumerate() {
            serde_json::to_writer(&mut *out, &item.to_json())?;
            out.write_all(b"\n")?;
            if (written + 1) % PROGRESS_EVERY_ITEMS == 0 {
                progress(written + 1);
            }
        }
        Ok(())
    })?;
    let record = IngestRecord {
        source: source.to_path_buf(),
        ingested_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    write_atomically(&dir.join(SOURCE_FILE), |out| {
        serde_json::to_writer_pretty(&mut *out, &record)?;
        Ok(())
    })?;
    Ok(path)
}

/// Writes `path` through a sibling `.partial` file renamed over it once complete and synced.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<(), StoreError> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let result = (|| {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&partial)?);
        write(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&partial, path)
    })();
    result.map_err(|source| {
        let _ = std::fs::remove_file(&partial);
        StoreError::io("cannot write", path, source)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercase_path_safe_words() {
        for good in ["eco", "books-2024", "a", "0_x", &"n".repeat(64)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for (bad, reason) in [
            ("", "1 to 64"),
            (&"n".repeat(65) as &str, "1 to 64"),
            ("Books", "a-z"),
            ("../etc", "a-z"),
            ("a b", "a-z"),
            ("카탈로그", "a-z"),
            ("-x", "start"),
            ("_x", "start"),
        ] {
            let error = check_name(bad).unwrap_err().to_string();
            assert!(error.contains(reason), "{bad}: {error}");
        }
    }

    #[test]
    fn saved_items_read_back_as_the_same_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let eco = Catalog::eco();
        let mut calls = Vec::new();
        let path = save_ingested(dir.path(), "copy", &eco, Path::new("in.jsonl"), |n| {
            calls.push(n)
        })
        .unwrap();
        assert!(calls.is_empty(), "fewer than 10k items: no progress calls");
        assert_eq!(path, items_path(dir.path(), "copy"));
        let back = read_catalog("copy", &path).unwrap();
        assert_eq!(back.content_hash(), eco.content_hash());
        assert_eq!(back.name(), "copy");
        assert_eq!(ingested_names(dir.path()).unwrap(), vec!["copy"]);
        let record = ingest_record(dir.path(), "copy").unwrap();
        assert_eq!(record.source, PathBuf::from("in.jsonl"));
        let leftovers: Vec<_> = std::fs::read_dir(catalog_dir(dir.path(), "copy"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".partial"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn only_directories_with_items_are_ingested_catalogs() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ingested_names(dir.path()).unwrap().is_empty());
        std::fs::create_dir_all(index_dir(dir.path(), "eco")).unwrap();
        std::fs::create_dir_all(catalog_dir(dir.path(), "Bad Name")).unwrap();
        std::fs::write(items_path(dir.path(), "Bad Name"), "").unwrap();
        std::fs::create_dir_all(catalog_dir(dir.path(), "b")).unwrap();
        std::fs::write(items_path(dir.path(), "b"), "").unwrap();
        assert_eq!(ingested_names(dir.path()).unwrap(), vec!["b"]);
    }
}
