//! The trust boundary of the books API: raw query strings, paths and JSON bodies in, validated
//! types out, or a [`BooksError::Invalid`] listing every problem as FastAPI (pydantic v2) would
//! — before any retrieval or model work.

use serde_json::{Map, Value};

use super::error::{BooksError, FieldError};
use crate::sessions::users::{
    GenreWeight, ReadBook, ReadingHistory, ReadingPreferences, ReadingStyle, UserId,
};
use crate::sessions::MAX_SESSION_ID_BYTES;

/// Longest answer field accepted, in characters (a sprout limit: the original had none, but
/// the prompt must stay short).
pub const MAX_ANSWER_CHARS: usize = 200;
/// Most books in one reading history.
pub const MAX_READ_BOOKS: usize = 500;
/// Most entries of a preference list (genres, keywords, avoided topics).
pub const MAX_PREFERENCE_ITEMS: usize = 50;
/// Longest free-text value in a user record, in characters.
pub const MAX_RECORD_TEXT_CHARS: usize = 1000;

/// The five answers, in the order the questions ask them.
pub const ANSWER_FIELDS: [&str; 5] = [
    "user_emotion",
    "desired_emotional_effect",
    "occupation",
    "reading_context",
    "focus_level",
];

/// How the books are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// RAG: an enriched query, candidates retrieved from the catalog (the default).
    Rag,
    /// Prompt-only: history and preferences pasted into the prompt, the whole catalog allowed.
    PromptOnly,
}

impl Method {
    /// The number clients send and receive.
    pub fn number(self) -> u8 {
        match self {
            Method::Rag => 1,
            Method::PromptOnly => 2,
        }
    }
}

/// A checked `POST /api/recommend-books` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecommendRequest {
    /// Answer 1: the mood (`불안함`), trimmed.
    pub user_emotion: String,
    /// Answer 2: what the book should make the reader feel (`위로와 안정감`).
    pub desired_emotional_effect: String,
    /// Answer 3: the occupation (`직장인`).
    pub occupation: String,
    /// Answer 4: when and where the reader reads (`잠들기 전 독서`).
    pub reading_context: String,
    /// Answer 5: how much focus the book may ask (`가볍게 읽을 수 있는 책`).
    pub focus_level: String,
    /// `userId`: whose history and preferences apply.
    pub user_id: Option<UserId>,
    /// `method`: 1 (default) or 2.
    pub method: Method,
}

impl RecommendRequest {
    /// The answers in question order.
    pub fn answers(&self) -> [&str; 5] {
        [
            &self.user_emotion,
            &self.desired_emotional_effect,
            &self.occupation,
            &self.reading_context,
            &self.focus_level,
        ]
    }

    /// Parses and checks a body; every problem is reported, in field order.
    pub fn from_json(body: &[u8]) -> Result<RecommendRequest, BooksError> {
        let object = body_object(body)?;
        let mut errors = Vec::new();
        let mut answers: Vec<String> = Vec::with_capacity(5);
        for field in ANSWER_FIELDS {
            match object.get(field) {
                None => errors.push(missing(&["body", field], &object)),
                Some(Value::String(text)) => {
                    if text.chars().count() > MAX_ANSWER_CHARS {
                        errors.push(too_long(&["body", field], text, MAX_ANSWER_CHARS));
                    } else {
                        answers.push(text.trim().to_string());
                    }
                }
                Some(other) => errors.push(not_a_string(&["body", field], other)),
            }
        }
        let user_id = match object.get("userId") {
            None | Some(Value::Null) => None,
            Some(Value::String(raw)) => match UserId::parse(raw) {
                Ok(id) => Some(id),
                Err(_) => {
                    errors.push(bad_user_id(&["body", "userId"], raw));
                    None
                }
            },
            Some(other) => {
                errors.push(not_a_string(&["body", "userId"], other));
                None
            }
        };
        let method = match object.get("method") {
            None | Some(Value::Null) => Method::Rag,
            Some(value) => match value.as_u64() {
                Some(1) => Method::Rag,
                Some(2) => Method::PromptOnly,
                _ => {
                    errors.push(
                        FieldError::new(
                            "literal_error",
                            &["body", "method"],
                            "Input should be 1 or 2",
                            value.clone(),
                        )
                        .with_ctx(serde_json::json!({"expected": "1 or 2"})),
                    );
                    Method::Rag
                }
            },
        };
        if !errors.is_empty() {
            return Err(BooksError::Invalid(errors));
        }
        let mut answers = answers.into_iter();
        let mut next = || answers.next().unwrap_or_default();
        Ok(RecommendRequest {
            user_emotion: next(),
            desired_emotional_effect: next(),
            occupation: next(),
            reading_context: next(),
            focus_level: next(),
            user_id,
            method,
        })
    }
}

/// The `index` of `GET /api/questions` (absent: 0); a non-integer or negative one is refused.
/// An integer too large for u64 still asks past the last question.
pub fn question_index(raw_query: Option<&str>) -> Result<u64, BooksError> {
    let raw = form_urlencoded::parse(raw_query.unwrap_or("").as_bytes())
        .filter(|(key, _)| key == "index")
        .map(|(_, value)| value.into_owned())
        .last();
    let Some(raw) = raw else {
        return Ok(0);
    };
    let text = raw.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let loc = ["query", "index"];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BooksError::Invalid(vec![FieldError::new(
            "int_parsing",
            &loc,
            "Input should be a valid integer, unable to parse string as an integer",
            Value::String(raw.clone()),
        )]));
    }
    if negative && digits.bytes().any(|b| b != b'0') {
        return Err(BooksError::Invalid(vec![FieldError::new(
            "greater_than_equal",
            &loc,
            "Input should be greater than or equal to 0",
            Value::String(raw.clone()),
        )
        .with_ctx(serde_json::json!({"ge": 0}))]));
    }
    Ok(digits.parse::<u64>().unwrap_or(u64::MAX))
}

/// The `{user_id}` of a users path.
pub fn user_id(raw: &str) -> Result<UserId, BooksError> {
    UserId::parse(raw)
        .map_err(|_| BooksError::Invalid(vec![bad_user_id(&["path", "user_id"], raw)]))
}

/// A `PUT /api/users/{id}/history` body: `{"read_books":[{title, author?, rating?, review?,
/// read_date?, genre?}]}`; unknown fields are ignored, as FastAPI does.
pub fn history(body: &[u8]) -> Result<ReadingHistory, BooksError> {
    let object = body_object(body)?;
    let mut errors = Vec::new();
    let mut read_books = Vec::new();
    match object.get("read_books") {
        None => errors.push(missing(&["body", "read_books"], &object)),
        Some(Value::Array(items)) if items.len() > MAX_READ_BOOKS => {
            errors.push(
                FieldError::new(
                    "too_long",
                    &["body", "read_books"],
                    format!("List should have at most {MAX_READ_BOOKS} items after validation, not {}", items.len()),
                    Value::Null,
                )
                .with_ctx(serde_json::json!({"field_type": "List", "max_length": MAX_READ_BOOKS, "actual_length": items.len()})),
            );
        }
        Some(Value::Array(items)) => {
            for (position, item) in items.iter().enumerate() {
                let at = position.to_string();
                let loc = ["body", "read_books", at.as_str()];
                let Value::Object(book) = item else {
                    errors.push(not_an_object(&loc, item));
                    continue;
                };
                let mut fields = Fields::new(&loc, book, &mut errors);
                let title = fields.required_text("title");
                let author = fields.text("author");
                let rating = fields.number("rating", 0.0, 5.0);
                let review = fields.text("review");
                let read_date = fields.text("read_date");
                let genre = fields.texts("genre");
                if let Some(title) = title {
                    read_books.push(ReadBook {
                        title,
                        author,
                        rating,
                        review,
                        read_date,
                        genre,
                    });
                }
            }
        }
        Some(other) => errors.push(not_a_list(&["body", "read_books"], other)),
    }
    if errors.is_empty() {
        Ok(ReadingHistory { read_books })
    } else {
        Err(BooksError::Invalid(errors))
    }
}

/// A `PUT /api/users/{id}/preferences` body: `{"preferences":{genres:[{name, weight}],
/// reading_style:{preferred_length?, complexity_level?, tone?}, keywords:[…], avoid_topics:[…]}}`.
pub fn preferences(body: &[u8]) -> Result<ReadingPreferences, BooksError> {
    let object = body_object(body)?;
    let mut errors = Vec::new();
    let root = ["body", "preferences"];
    let prefs = match object.get("preferences") {
        None => {
            errors.push(missing(&root, &object));
            None
        }
        Some(Value::Object(prefs)) => Some(prefs),
        Some(other) => {
            errors.push(not_an_object(&root, other));
            None
        }
    };
    let mut out = ReadingPreferences::default();
    if let Some(prefs) = prefs {
        match prefs.get("genres") {
            None | Some(Value::Null) => {}
            Some(Value::Array(genres)) if genres.len() <= MAX_PREFERENCE_ITEMS => {
                for (position, genre) in genres.iter().enumerate() {
                    let at = position.to_string();
                    let loc = ["body", "preferences", "genres", at.as_str()];
                    let Value::Object(genre) = genre else {
                        errors.push(not_an_object(&loc, genre));
                        continue;
                    };
                    let mut fields = Fields::new(&loc, genre, &mut errors);
                    let name = fields.required_text("name");
                    let weight = fields.number("weight", 0.0, 1.0).unwrap_or(1.0);
                    if let Some(name) = name {
                        out.genres.push(GenreWeight { name, weight });
                    }
                }
            }
            Some(other) => errors.push(not_a_list(&["body", "preferences", "genres"], other)),
        }
        match prefs.get("reading_style") {
            None | Some(Value::Null) => {}
            Some(Value::Object(style)) => {
                let loc = ["body", "preferences", "reading_style"];
                let mut fields = Fields::new(&loc, style, &mut errors);
                out.reading_style = ReadingStyle {
                    preferred_length: fields.text("preferred_length"),
                    complexity_level: fields.text("complexity_level"),
                    tone: fields.text("tone"),
                };
            }
            Some(other) => errors.push(not_an_object(
                &["body", "preferences", "reading_style"],
                other,
            )),
        }
        let loc = ["body", "preferences"];
        let mut fields = Fields::new(&loc, prefs, &mut errors);
        out.keywords = fields.texts("keywords");
        out.avoid_topics = fields.texts("avoid_topics");
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(BooksError::Invalid(errors))
    }
}

/// The body as a JSON object, or FastAPI's error for a body that is absent, not JSON, or not an
/// object.
fn body_object(body: &[u8]) -> Result<Map<String, Value>, BooksError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BooksError::Invalid(vec![FieldError::new(
            "missing",
            &["body"],
            "Field required",
            Value::Null,
        )]));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(BooksError::Invalid(vec![FieldError::new(
            "model_attributes_type",
            &["body"],
            "Input should be a valid dictionary or object to extract fields from",
            other,
        )])),
        Err(error) => {
            let offset = byte_offset(body, error.line(), error.column());
            Err(BooksError::Invalid(vec![FieldError {
                kind: "json_invalid",
                loc: vec![Value::from("body"), Value::from(offset)],
                msg: "JSON decode error".into(),
                input: serde_json::json!({}),
                ctx: Some(serde_json::json!({"error": error.to_string()})),
            }]))
        }
    }
}

/// The 0-based byte offset of serde_json's 1-based line and column.
fn byte_offset(body: &[u8], line: usize, column: usize) -> usize {
    let line_start: usize = body
        .split(|&b| b == b'\n')
        .take(line.saturating_sub(1))
        .map(|l| l.len() + 1)
        .sum();
    (line_start + column.saturating_sub(1)).min(body.len())
}

fn missing(loc: &[&str], body: &Map<String, Value>) -> FieldError {
    FieldError::new(
        "missing",
        loc,
        "Field required",
        Value::Object(body.clone()),
    )
}

fn not_a_string(loc: &[&str], value: &Value) -> FieldError {
    FieldError::new(
        "string_type",
        loc,
        "Input should be a valid string",
        value.clone(),
    )
}

fn not_a_list(loc: &[&str], value: &Value) -> FieldError {
    FieldError::new(
        "list_type",
        loc,
        "Input should be a valid list",
        value.clone(),
    )
}

fn not_an_object(loc: &[&str], value: &Value) -> FieldError {
    FieldError::new(
        "model_type",
        loc,
        "Input should be a valid dictionary or instance of a model",
        value.clone(),
    )
}

fn too_long(loc: &[&str], text: &str, max: usize) -> FieldError {
    FieldError::new(
        "string_too_long",
        loc,
        format!("String should have at most {max} characters"),
        Value::String(text.to_string()),
    )
    .with_ctx(serde_json::json!({"max_length": max}))
}

fn bad_user_id(loc: &[&str], raw: &str) -> FieldError {
    let pattern = format!("^[A-Za-z0-9_.:-]{{1,{MAX_SESSION_ID_BYTES}}}$");
    FieldError::new(
        "string_pattern_mismatch",
        loc,
        format!("String should match pattern '{pattern}'"),
        Value::String(raw.to_string()),
    )
    .with_ctx(serde_json::json!({"pattern": pattern}))
}

/// The fields of one object in a user record, each check adding its error to the list.
struct Fields<'a> {
    loc: &'a [&'a str],
    object: &'a Map<String, Value>,
    errors: &'a mut Vec<FieldError>,
}

impl<'a> Fields<'a> {
    fn new(
        loc: &'a [&'a str],
        object: &'a Map<String, Value>,
        errors: &'a mut Vec<FieldError>,
    ) -> Self {
        Self {
            loc,
            object,
            errors,
        }
    }

    fn at(&self, field: &'a str) -> Vec<&'a str> {
        let mut loc = self.loc.to_vec();
        loc.push(field);
        loc
    }

    fn checked_text(&mut self, loc: &[&str], value: &Value) -> Option<String> {
        match value {
            Value::String(text) if text.chars().count() > MAX_RECORD_TEXT_CHARS => {
                self.errors.push(too_long(loc, text, MAX_RECORD_TEXT_CHARS));
                None
            }
            Value::String(text) => Some(text.trim().to_string()),
            other => {
                self.errors.push(not_a_string(loc, other));
                None
            }
        }
    }

    fn required_text(&mut self, field: &'a str) -> Option<String> {
        let loc = self.at(field);
        match self.object.get(field) {
            None => {
                self.errors.push(missing(&loc, self.object));
                None
            }
            Some(value) => self.checked_text(&loc, value),
        }
    }

    fn text(&mut self, field: &'a str) -> Option<String> {
        let loc = self.at(field);
        match self.object.get(field) {
            None | Some(Value::Null) => None,
            Some(value) => self.checked_text(&loc, value).filter(|t| !t.is_empty()),
        }
    }

    fn number(&mut self, field: &'a str, min: f64, max: f64) -> Option<f64> {
        let loc = self.at(field);
        match self.object.get(field) {
            None | Some(Value::Null) => None,
            Some(value) => match value.as_f64() {
                Some(n) if n < min => {
                    self.errors.push(
                        FieldError::new(
                            "greater_than_equal",
                            &loc,
                            format!("Input should be greater than or equal to {min}"),
                            value.clone(),
                        )
                        .with_ctx(serde_json::json!({"ge": min})),
                    );
                    None
                }
                Some(n) if n > max => {
                    self.errors.push(
                        FieldError::new(
                            "less_than_equal",
                            &loc,
                            format!("Input should be less than or equal to {max}"),
                            value.clone(),
                        )
                        .with_ctx(serde_json::json!({"le": max})),
                    );
                    None
                }
                Some(n) => Some(n),
                None => {
                    self.errors.push(FieldError::new(
                        "float_type",
                        &loc,
                        "Input should be a valid number",
                        value.clone(),
                    ));
                    None
                }
            },
        }
    }

    fn texts(&mut self, field: &'a str) -> Vec<String> {
        let loc = self.at(field);
        match self.object.get(field) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(values)) if values.len() <= MAX_PREFERENCE_ITEMS => values
                .iter()
                .enumerate()
                .filter_map(|(position, value)| {
                    let at = position.to_string();
                    let mut item_loc: Vec<&str> = loc.to_vec();
                    item_loc.push(&at);
                    self.checked_text(&item_loc, value)
                })
                .filter(|t| !t.is_empty())
                .collect(),
            Some(Value::Array(values)) => {
                self.errors.push(
                    FieldError::new(
                        "too_long",
                        &loc,
                        format!(
                            "List should have at most {MAX_PREFERENCE_ITEMS} items after validation, not {}",
                            values.len()
                        ),
                        Value::Null,
                    )
                    .with_ctx(serde_json::json!({"field_type": "List", "max_length": MAX_PREFERENCE_ITEMS, "actual_length": values.len()})),
                );
                Vec::new()
            }
            Some(other) => {
                self.errors.push(not_a_list(&loc, other));
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
