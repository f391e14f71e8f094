//! Book-shaped records (`title`, `author`, optionally `isbn`, `subtitle`, `genre`, `contents`):
//! the id they may lack and the tags that make their author, subtitle and genre searchable.
//!
//! A record is book-shaped when it has an `author` or an `isbn`. Without an `id` it is named by
//! its ISBN, else by `book-` and the first 12 hex digits of sha256(title, U+001F, author): the
//! same book gets the same id in every run and whatever its position in the file.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{CatalogError, Location, TagValue};

/// Separates a title from its subtitle in the National Library's records ("제목 : 부제").
pub const SUBTITLE_SEPARATOR: &str = " : ";

/// The main title and the subtitle of `title`, split at the first " : " (trimmed).
pub fn split_title(title: &str) -> (&str, Option<&str>) {
    match title.split_once(SUBTITLE_SEPARATOR) {
        Some((main, sub)) if !sub.trim().is_empty() => (main.trim(), Some(sub.trim())),
        _ => (title.trim(), None),
    }
}

fn invalid(at: Location, field: &str, reason: &str) -> CatalogError {
    CatalogError::InvalidField {
        at,
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

/// A string field, or an integer written in decimal (ISBNs come both ways).
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.trim().is_empty() => Some(text.trim().to_string()),
        Value::Number(number) if number.is_u64() => Some(number.to_string()),
        _ => None,
    }
}

/// The id of a book record without one: its ISBN, else a short hash of title and author.
pub(super) fn book_id(
    object: &mut Map<String, Value>,
    title: &str,
    at: Location,
) -> Result<String, CatalogError> {
    object.remove("id");
    if let Some(isbn) = object.get("isbn") {
        return text_of(isbn).ok_or_else(|| invalid(at, "isbn", "must be a string or a number"));
    }
    let author = match object.get("author") {
        Some(Value::String(author)) => author.trim(),
        _ => "",
    };
    let mut hasher = Sha256::new();
    hasher.update(title.trim().as_bytes());
    hasher.update([0x1f]);
    hasher.update(author.as_bytes());
    let digest = hex::encode(hasher.finalize());
    Ok(format!("book-{}", &digest[..12]))
}

/// Moves `author`, `subtitle` (given, or the part of the title after " : "), `genre` and
/// `contents` into tags, where the indexes see them; a tag given explicitly wins.
pub(super) fn book_tags(
    object: &mut Map<String, Value>,
    title: &str,
    tags: &mut BTreeMap<String, TagValue>,
    at: Location,
) -> Result<(), CatalogError> {
    for field in ["author", "subtitle", "contents"] {
        match object.remove(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) if text.trim().is_empty() => {}
            Some(Value::String(text)) => {
                tags.entry(field.to_string())
                    .or_insert_with(|| TagValue::One(text.trim().to_string()));
            }
            Some(_) => return Err(invalid(at, field, "must be a string")),
        }
    }
    if !tags.contains_key("subtitle") {
        if let (_, Some(subtitle)) = split_title(title) {
            tags.insert("subtitle".into(), TagValue::One(subtitle.to_string()));
        }
    }
    match object.remove("genre") {
        None | Some(Value::Null) => {}
        Some(Value::String(genre)) => {
            tags.entry("genre".into())
                .or_insert_with(|| TagValue::One(genre));
        }
        Some(Value::Array(values)) => {
            let genres = values
                .iter()
                .map(|value| value.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid(at, "genre", "must be a string or a list of strings"))?;
            tags.entry("genre".into())
                .or_insert_with(|| TagValue::List(genres));
        }
        Some(_) => {
            return Err(invalid(
                at,
                "genre",
                "must be a string or a list of strings",
            ))
        }
    }
    if let Some(isbn) = object.get("isbn") {
        let isbn =
            text_of(isbn).ok_or_else(|| invalid(at, "isbn", "must be a string or a number"))?;
        object.insert("isbn".into(), Value::String(isbn));
    }
    Ok(())
}
