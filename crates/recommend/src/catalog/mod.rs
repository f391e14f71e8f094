//! Catalogs: the items sprout recommends from, loaded from JSONL, JSON or CSV and fingerprinted.
//!
//! Every item is checked when it is read: an item without an `id` or `title` is refused with an
//! error naming its line (or index), never dropped, so a catalog that loads is a catalog whose
//! every row is usable. The content hash (sha256 of the canonical JSON of the items) keys the
//! indexes built from a catalog, so they are rebuilt exactly when the items change.

mod book;
mod item;
mod parse;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest, Sha256};

pub use book::split_title;
pub use item::{Item, TagFilter, TagFilterError, TagValue, Translation};

/// Largest catalog file read from disk, checked before the file is read.
pub const MAX_CATALOG_BYTES: u64 = 256 * 1024 * 1024;

/// Where in a catalog source an item came from, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// 1-based line number in a JSONL or CSV source (or of a JSON syntax error).
    Line(usize),
    /// 0-based index of the item in a JSON array (or in the item list given to `from_items`).
    Item(usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(line) => write!(f, "line {line}"),
            Location::Item(index) => write!(f, "items[{index}]"),
        }
    }
}

/// Why a catalog could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file could not be read.
    #[error("cannot read catalog {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CATALOG_BYTES`].
    #[error("catalog {path} is {bytes} bytes, more than the {max} allowed")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The file extension names no known format.
    #[error("cannot tell the format of {path}: expected a .jsonl, .ndjson, .json or .csv file")]
    UnknownExtension {
        /// The file.
        path: PathBuf,
    },
    /// A format name other than jsonl, json or csv.
    #[error("unknown catalog format {0:?}: expected jsonl, json or csv")]
    UnknownFormat(String),
    /// The text is not valid JSON.
    #[error("{at}: invalid JSON: {message}")]
    Json {
        /// Where.
        at: Location,
        /// serde_json's message.
        message: String,
    },
    /// A JSON document that is neither an array of items nor an object with an `items` array.
    #[error("a JSON catalog must be an array of items or an object with an \"items\" array")]
    Shape,
    /// An item that is not a JSON object.
    #[error("{at}: an item must be a JSON object")]
    NotAnObject {
        /// Where.
        at: Location,
    },
    /// A required field (`id`, `title`, a translation's `title`) is absent or empty.
    #[error("{at}: item has no `{field}` (or it is empty)")]
    MissingField {
        /// Where.
        at: Location,
        /// The field, e.g. `title` or `translations.en.title`.
        field: String,
    },
    /// A field with the wrong type or an unknown key where keys are fixed.
    #[error("{at}: field `{field}` {reason}")]
    InvalidField {
        /// Where.
        at: Location,
        /// The field, e.g. `tags.category`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two items with the same id.
    #[error("duplicate id {id:?} at {first} and {second}")]
    DuplicateId {
        /// The id.
        id: String,
        /// Where it first appeared.
        first: Location,
        /// Where it appeared again.
        second: Location,
    },
    /// A CSV header without a column that every item needs.
    #[error("line 1: CSV header has no `{column}` column")]
    MissingColumn {
        /// The column.
        column: &'static str,
    },
    /// A CSV header naming a column it cannot map (empty tag key, unknown translation part, twice).
    #[error("line 1: CSV column {column:?} {reason}")]
    InvalidColumn {
        /// The column header.
        column: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The CSV text is malformed (e.g. a row with a different number of fields).
    #[error("line {line}: invalid CSV: {message}")]
    Csv {
        /// 1-based line where the bad record starts.
        line: usize,
        /// The csv crate's message.
        message: String,
    },
}

/// The text format of a catalog source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogFormat {
    /// One JSON object per line; blank lines are skipped.
    Jsonl,
    /// A JSON array of objects, or an object with an `items` array.
    Json,
    /// A header row, then one item per row (see [`Catalog::parse`]).
    Csv,
}

impl CatalogFormat {
    /// The format a file extension stands for: `jsonl`/`ndjson`, `json` or `csv` (any case).
    pub fn from_extension(path: &Path) -> Option<CatalogFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "jsonl" | "ndjson" => Some(CatalogFormat::Jsonl),
            "json" => Some(CatalogFormat::Json),
            "csv" => Some(CatalogFormat::Csv),
            _ => None,
        }
    }
}

impl FromStr for CatalogFormat {
    type Err = CatalogError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "jsonl" | "ndjson" => Ok(CatalogFormat::Jsonl),
            "json" => Ok(CatalogFormat::Json),
            "csv" => Ok(CatalogFormat::Csv),
            _ => Err(CatalogError::UnknownFormat(s.to_string())),
        }
    }
}

/// A named, checked list of items with unique ids and a content hash.
#[derive(Debug, Clone)]
pub struct Catalog {
    name: String,
    items: Vec<Item>,
    content_hash: String,
    by_id: HashMap<String, usize>,
}

const ECO_JSONL: &str = include_str!("../../../../catalogs/eco.jsonl");

impl Catalog {
    /// Builds a catalog from items, refusing duplicate ids (located by their index in `items`).
    pub fn from_items(name: impl Into<String>, items: Vec<Item>) -> Result<Catalog, CatalogError> {
        let locations = (0..items.len()).map(Location::Item).collect::<Vec<_>>();
        Catalog::from_located(name.into(), items, &locations)
    }

    /// Builds a catalog, naming duplicates by the locations the items were read from.
    fn from_located(
        name: String,
        items: Vec<Item>,
        locations: &[Location],
    ) -> Result<Catalog, CatalogError> {
        let mut by_id = HashMap::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            if let Some(first) = by_id.insert(item.id.clone(), index) {
                return Err(CatalogError::DuplicateId {
                    id: item.id.clone(),
                    first: locations[first],
                    second: locations[index],
                });
            }
        }
        let content_hash = content_hash(&items);
        Ok(Catalog {
            name,
            items,
            content_hash,
            by_id,
        })
    }

    /// Parses catalog text in the given format; `name` names the catalog.
    ///
    /// CSV columns: `id`, `title` (required), `description`, `lang`, `tags.<key>` (a cell
    /// `a|b|c` is a list, a cell without `|` a single value), `translations.<lang>.title` and
    /// `translations.<lang>.description`; any other column is kept in [`Item::extra`]. Empty
    /// cells are absent values.
    pub fn parse(name: &str, text: &str, format: CatalogFormat) -> Result<Catalog, CatalogError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let located = match format {
            CatalogFormat::Jsonl => parse::jsonl(text)?,
            CatalogFormat::Json => parse::json(text)?,
            CatalogFormat::Csv => parse::csv(text)?,
        };
        let (locations, items): (Vec<_>, Vec<_>) = located.into_iter().unzip();
        Catalog::from_located(name.to_string(), items, &locations)
    }

    /// Reads a catalog file, choosing the format by extension; the file stem names the catalog.
    pub fn from_path(path: &Path) -> Result<Catalog, CatalogError> {
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
        let name = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .unwrap_or("catalog");
        Catalog::parse(name, &text, format)
    }

    /// The built-in eco catalog: 107 eco challenges in Korean with English and Chinese translations.
    pub fn eco() -> Catalog {
        Catalog::parse("eco", ECO_JSONL, CatalogFormat::Jsonl)
            .expect("the built-in eco catalog is valid (checked by catalog::tests::eco_loads)")
    }

    /// The catalog's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The items, in source order; an item's position here is its index everywhere else.
    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// The item at `index`, if any.
    pub fn get(&self, index: usize) -> Option<&Item> {
        self.items.get(index)
    }

    /// The index of the item with this id, if any.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the catalog has no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// sha256 (lowercase hex) of the canonical JSON of the items array.
    pub fn content_hash(&self) -> &str {
        &self.content_hash
    }
}

/// sha256 hex of the items as canonical JSON (sorted keys, no whitespace, absent values omitted).
fn content_hash(items: &[Item]) -> String {
    let mut canonical = String::from("[");
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            canonical.push(',');
        }
        write_canonical(&item.to_json(), &mut canonical);
    }
    canonical.push(']');
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// Writes `value` with object keys sorted, whatever order serde_json's map keeps them in.
fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (position, key) in keys.into_iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(values) => {
            out.push('[');
            for (position, value) in values.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                write_canonical(value, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests;
