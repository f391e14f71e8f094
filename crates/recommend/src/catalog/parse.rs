//! Readers for the three catalog formats, each turning a source into located, checked items.

use std::collections::{BTreeMap, HashSet};

use serde_json::{Map, Value};

use super::{CatalogError, Item, Location, TagValue, Translation};

/// Items with the place each was read from.
pub(super) type Located = Vec<(Location, Item)>;

/// One JSON object per non-blank line.
pub(super) fn jsonl(text: &str) -> Result<Located, CatalogError> {
    let mut items = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = Location::Line(index + 1);
        let value: Value = serde_json::from_str(line).map_err(|error| CatalogError::Json {
            at,
            message: error.to_string(),
        })?;
        items.push((at, item_from_value(value, at)?));
    }
    Ok(items)
}

/// A JSON array of items, or an object holding one under `items`.
pub(super) fn json(text: &str) -> Result<Located, CatalogError> {
    let value: Value = serde_json::from_str(text).map_err(|error| CatalogError::Json {
        at: Location::Line(error.line()),
        message: error.to_string(),
    })?;
    let values = match value {
        Value::Array(values) => values,
        Value::Object(mut object) => match object.remove("items") {
            Some(Value::Array(values)) => values,
            _ => return Err(CatalogError::Shape),
        },
        _ => return Err(CatalogError::Shape),
    };
    values
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            let at = Location::Item(index);
            Ok((at, item_from_value(value, at)?))
        })
        .collect()
}

/// What a CSV header names.
enum Column {
    Scalar(&'static str),
    Tag(String),
    TranslationTitle(String),
    TranslationDescription(String),
    Extra(String),
}

fn column_for(header: &str) -> Result<Column, CatalogError> {
    let invalid = |reason| CatalogError::InvalidColumn {
        column: header.to_string(),
        reason,
    };
    if let Some(key) = header.strip_prefix("tags.") {
        if key.is_empty() {
            return Err(invalid("has an empty tag key"));
        }
        return Ok(Column::Tag(key.to_string()));
    }
    if let Some(rest) = header.strip_prefix("translations.") {
        return match rest.rsplit_once('.') {
            Some((lang, "title")) if !lang.is_empty() => {
                Ok(Column::TranslationTitle(lang.to_string()))
            }
            Some((lang, "description")) if !lang.is_empty() => {
                Ok(Column::TranslationDescription(lang.to_string()))
            }
            _ => Err(invalid(
                "must be translations.<lang>.title or translations.<lang>.description",
            )),
        };
    }
    Ok(match header {
        "id" => Column::Scalar("id"),
        "title" => Column::Scalar("title"),
        "description" => Column::Scalar("description"),
        "lang" => Column::Scalar("lang"),
        other => Column::Extra(other.to_string()),
    })
}

/// A header row naming the columns, then one item per record; see `Catalog::parse`.
pub(super) fn csv(text: &str) -> Result<Located, CatalogError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let csv_error = |error: csv::Error| CatalogError::Csv {
        line: error
            .position()
            .map_or(1, |position| position.line() as usize),
        message: error.to_string(),
    };
    let headers = reader.headers().map_err(csv_error)?.clone();
    let mut seen = HashSet::new();
    let mut columns = Vec::with_capacity(headers.len());
    for header in headers.iter() {
        let header = header.trim();
        if !seen.insert(header.to_string()) {
            return Err(CatalogError::InvalidColumn {
                column: header.to_string(),
                reason: "appears twice",
            });
        }
        columns.push(column_for(header)?);
    }
    // Book-shaped rows (an `author` or `isbn` column) may go without ids (see `book`).
    let required: &[&'static str] = if seen.contains("author") || seen.contains("isbn") {
        &["title"]
    } else {
        &["id", "title"]
    };
    for &required in required {
        if !seen.contains(required) {
            return Err(CatalogError::MissingColumn { column: required });
        }
    }

    let mut items = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        let line = record
            .position()
            .map_or(0, |position| position.line() as usize);
        let at = Location::Line(line);
        let mut object = Map::new();
        let mut tags = Map::new();
        let mut translations: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for (column, cell) in columns.iter().zip(record.iter()) {
            let cell = cell.trim();
            if cell.is_empty() {
                continue;
            }
            let text = Value::String(cell.to_string());
            match column {
                Column::Scalar(name) => {
                    object.insert((*name).to_string(), text);
                }
                Column::Tag(key) => {
                    let value = if cell.contains('|') {
                        Value::Array(
                            cell.split('|')
                                .map(str::trim)
                                .filter(|part| !part.is_empty())
                                .map(|part| Value::String(part.to_string()))
                                .collect(),
                        )
                    } else {
                        text
                    };
                    tags.insert(key.clone(), value);
                }
                Column::TranslationTitle(lang) => {
                    translations
                        .entry(lang.clone())
                        .or_default()
                        .insert("title".into(), text);
                }
                Column::TranslationDescription(lang) => {
                    translations
                        .entry(lang.clone())
                        .or_default()
                        .insert("description".into(), text);
                }
                Column::Extra(name) => {
                    object.insert(name.clone(), text);
                }
            }
        }
        if !tags.is_empty() {
            object.insert("tags".into(), Value::Object(tags));
        }
        if !translations.is_empty() {
            let translations = translations
                .into_iter()
                .map(|(lang, fields)| (lang, Value::Object(fields)))
                .collect();
            object.insert("translations".into(), Value::Object(translations));
        }
        items.push((at, item_from_object(object, at)?));
    }
    Ok(items)
}

fn item_from_value(value: Value, at: Location) -> Result<Item, CatalogError> {
    match value {
        Value::Object(object) => item_from_object(object, at),
        _ => Err(CatalogError::NotAnObject { at }),
    }
}

fn invalid(at: Location, field: &str, reason: &str) -> CatalogError {
    CatalogError::InvalidField {
        at,
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

/// A required non-empty string; integer ids are accepted and written in decimal.
fn required_text(
    object: &mut Map<String, Value>,
    field: &str,
    at: Location,
    allow_number: bool,
) -> Result<String, CatalogError> {
    let missing = || CatalogError::MissingField {
        at,
        field: field.to_string(),
    };
    match object.remove(field) {
        None | Some(Value::Null) => Err(missing()),
        Some(Value::String(text)) if text.trim().is_empty() => Err(missing()),
        Some(Value::String(text)) => Ok(text),
        Some(Value::Number(number)) if allow_number && (number.is_i64() || number.is_u64()) => {
            Ok(number.to_string())
        }
        Some(_) => Err(invalid(at, field, "must be a string")),
    }
}

/// An optional string; empty strings count as absent.
fn optional_text(
    object: &mut Map<String, Value>,
    field: &str,
    at: Location,
) -> Result<Option<String>, CatalogError> {
    match object.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(invalid(at, field, "must be a string")),
    }
}

fn tags_from(
    value: Option<Value>,
    at: Location,
) -> Result<BTreeMap<String, TagValue>, CatalogError> {
    let object = match value {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(object)) => object,
        Some(_) => return Err(invalid(at, "tags", "must be an object")),
    };
    let mut tags = BTreeMap::new();
    for (key, value) in object {
        let field = format!("tags.{key}");
        let value = match value {
            Value::String(text) => TagValue::One(text),
            Value::Array(values) => TagValue::List(
                values
                    .into_iter()
                    .enumerate()
                    .map(|(position, value)| match value {
                        Value::String(text) => Ok(text),
                        _ => Err(invalid(
                            at,
                            &format!("{field}[{position}]"),
                            "must be a string",
                        )),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(invalid(at, &field, "must be a string or a list of strings")),
        };
        tags.insert(key, value);
    }
    Ok(tags)
}

fn translations_from(
    value: Option<Value>,
    at: Location,
) -> Result<BTreeMap<String, Translation>, CatalogError> {
    let object = match value {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(object)) => object,
        Some(_) => return Err(invalid(at, "translations", "must be an object")),
    };
    let mut translations = BTreeMap::new();
    for (lang, value) in object {
        let prefix = format!("translations.{lang}");
        let Value::Object(mut fields) = value else {
            return Err(invalid(at, &prefix, "must be an object"));
        };
        let title = required_text(&mut fields, "title", at, false)
            .map_err(|error| prefix_field(error, &prefix))?;
        let description = optional_text(&mut fields, "description", at)
            .map_err(|error| prefix_field(error, &prefix))?;
        if let Some(unknown) = fields.keys().next() {
            return Err(invalid(
                at,
                &format!("{prefix}.{unknown}"),
                "is not a translation field (title, description)",
            ));
        }
        translations.insert(lang, Translation { title, description });
    }
    Ok(translations)
}

/// Names a nested field in full, e.g. `title` inside `translations.en`.
fn prefix_field(error: CatalogError, prefix: &str) -> CatalogError {
    match error {
        CatalogError::MissingField { at, field } => CatalogError::MissingField {
            at,
            field: format!("{prefix}.{field}"),
        },
        CatalogError::InvalidField { at, field, reason } => CatalogError::InvalidField {
            at,
            field: format!("{prefix}.{field}"),
            reason,
        },
        other => other,
    }
}

/// Checks one item's fields; whatever is left of the object becomes `extra`.
pub(super) fn item_from_object(
    mut object: Map<String, Value>,
    at: Location,
) -> Result<Item, CatalogError> {
    let book_shaped = object.contains_key("author") || object.contains_key("isbn");
    let id = match object.get("id") {
        None | Some(Value::Null) if book_shaped => None,
        _ => Some(required_text(&mut object, "id", at, true)?),
    };
    let title = required_text(&mut object, "title", at, false)?;
    let description = optional_text(&mut object, "description", at)?;
    let lang = optional_text(&mut object, "lang", at)?;
    let mut tags = tags_from(object.remove("tags"), at)?;
    let translations = translations_from(object.remove("translations"), at)?;
    let id = match id {
        Some(id) => id,
        None => super::book::book_id(&mut object, &title, at)?,
    };
    if book_shaped {
        super::book::book_tags(&mut object, &title, &mut tags, at)?;
    }
    Ok(Item {
        id,
        title,
        description,
        tags,
        lang,
        translations,
        extra: object,
    })
}
