//! Raw Leafresh bodies and query strings become a [`BaseInfoRequest`] or [`FreeTextRequest`]
//! here, or a [`LeafreshError`] with the contract's status and message; this runs before any
//! model work (the original checked category validity after the model call: a bug).
//!
//! Limits the contract is silent on, chosen by sprout:
//! - `message`: at most [`MAX_MESSAGE_CHARS`] characters after trimming (422 saying so); control
//!   characters other than newline and tab are dropped first, `\r\n` and lone `\r` become `\n`.
//! - `sessionId`: optional; blank means absent; otherwise at most [`MAX_SESSION_ID_BYTES`] of
//!   ASCII letters, digits and `-_.:` (UUIDs, numeric ids and `user:123` styles fit); else 400.

use super::constants::{Category, Location, WorkType};
use super::error::{Field, LeafreshError};
use super::query::parse_query;
use super::types::{RawBaseInfo, RawFreeText};

/// Fewest characters a trimmed message may have (the contract's 5).
pub const MIN_MESSAGE_CHARS: usize = 5;
/// Most characters a trimmed message may have: a chat turn, not a document; bounds the prompt.
pub const MAX_MESSAGE_CHARS: usize = 1000;
/// Longest sessionId accepted.
pub const MAX_SESSION_ID_BYTES: usize = 128;

/// A base-info request whose every value is one of the fixed choices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseInfoRequest {
    pub session_id: Option<String>,
    pub location: Location,
    pub work_type: WorkType,
    pub category: Category,
    /// The answer's language.
    pub lang: Lang,
}

/// A free-text request with a usable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeTextRequest {
    pub session_id: Option<String>,
    /// Trimmed, control characters removed, between the two limits in characters.
    pub message: String,
    /// The answer's language.
    pub lang: Lang,
}

/// The language an answer is written in (sprout's `lang` extension; the catalog's translations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    Ko,
    En,
    Zh,
}

impl Lang {
    /// The code used by catalog translations.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Ko => "ko",
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }
}

/// `lang`: absent or blank is Korean; otherwise ko, en or zh, else 400 naming `lang`.
fn lang(raw: Option<&str>) -> Result<Lang, LeafreshError> {
    match present(raw).map(str::to_ascii_lowercase).as_deref() {
        None | Some("ko") => Ok(Lang::Ko),
        Some("en") => Ok(Lang::En),
        Some("zh") => Ok(Lang::Zh),
        Some(_) => Err(LeafreshError::InvalidChoice(vec![Field::Lang])),
    }
}

impl BaseInfoRequest {
    /// Parses and validates a POST body.
    pub fn from_json(body: &[u8]) -> Result<Self, LeafreshError> {
        validate_base_info(parse_json(body)?)
    }

    /// Parses and validates a GET query string (without the `?`; None when the URL has none).
    pub fn from_query(query: Option<&str>) -> Result<Self, LeafreshError> {
        validate_base_info(parse_query(query.unwrap_or(""))?.into())
    }
}

impl FreeTextRequest {
    /// Parses and validates a POST body.
    pub fn from_json(body: &[u8]) -> Result<Self, LeafreshError> {
        validate_free_text(parse_json(body)?)
    }

    /// Parses and validates a GET query string (without the `?`; None when the URL has none).
    pub fn from_query(query: Option<&str>) -> Result<Self, LeafreshError> {
        validate_free_text(parse_query(query.unwrap_or(""))?.into())
    }
}

/// Parses a JSON body into one of the raw types; any failure (not JSON, not an object, a wrong
/// type, an unknown field, trailing bytes) is the contract's 422.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, LeafreshError> {
    // serde would also fill a struct from an array, positionally: only an object is a body.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(LeafreshError::Malformed {
            field: None,
            detail: "the body is not a JSON object".into(),
        });
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let parsed: T = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        LeafreshError::Malformed {
            field: (!path.is_empty() && path != ".").then_some(path),
            detail: e.into_inner().to_string(),
        }
    })?;
    de.end().map_err(|e| LeafreshError::Malformed {
        field: None,
        detail: e.to_string(),
    })?;
    Ok(parsed)
}

/// A value that is absent or only whitespace counts as missing.
fn present(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// Checks a base-info request: first every missing field (one error naming all of them), then
/// every value outside the fixed lists, then the sessionId.
pub fn validate_base_info(raw: RawBaseInfo) -> Result<BaseInfoRequest, LeafreshError> {
    let location = present(raw.location.as_deref());
    let work_type = present(raw.work_type.as_deref());
    let category = present(raw.category.as_deref());
    let missing: Vec<Field> = [
        (Field::Location, location.is_none()),
        (Field::WorkType, work_type.is_none()),
        (Field::Category, category.is_none()),
    ]
    .into_iter()
    .filter_map(|(f, absent)| absent.then_some(f))
    .collect();
    if !missing.is_empty() {
        return Err(LeafreshError::Missing(missing));
    }
    let location = location.and_then(Location::parse);
    let work_type = work_type.and_then(WorkType::parse);
    let category = category.and_then(Category::parse);
    let (Some(location), Some(work_type), Some(category)) = (location, work_type, category) else {
        let invalid = [
            (Field::Location, location.is_none()),
            (Field::WorkType, work_type.is_none()),
            (Field::Category, category.is_none()),
        ]
        .into_iter()
        .filter_map(|(f, bad)| bad.then_some(f))
        .collect();
        return Err(LeafreshError::InvalidChoice(invalid));
    };
    Ok(BaseInfoRequest {
        session_id: session_id(raw.session_id.as_deref())?,
        location,
        work_type,
        category,
        lang: lang(raw.lang.as_deref())?,
    })
}

/// Checks a free-text request: message present (400), long enough (422), not too long (422),
/// then the sessionId. `location`/`workType` were already dropped by the raw type.
pub fn validate_free_text(raw: RawFreeText) -> Result<FreeTextRequest, LeafreshError> {
    let Some(message) = present(raw.message.as_deref()) else {
        return Err(LeafreshError::Missing(vec![Field::Message]));
    };
    // Bound the work on huge input before cleaning it: a character is at most 4 bytes.
    if message.len() > 4 * MAX_MESSAGE_CHARS + 4096 {
        return Err(LeafreshError::MessageTooLong {
            chars: message.chars().count(),
            max_chars: MAX_MESSAGE_CHARS,
        });
    }
    let cleaned = clean_message(message);
    let message = cleaned.trim();
    let chars = message.chars().count();
    if chars == 0 {
        // Only control characters: nothing was said.
        return Err(LeafreshError::Missing(vec![Field::Message]));
    }
    if chars < MIN_MESSAGE_CHARS {
        return Err(LeafreshError::MessageTooShort { chars });
    }
    if chars > MAX_MESSAGE_CHARS {
        return Err(LeafreshError::MessageTooLong {
            chars,
            max_chars: MAX_MESSAGE_CHARS,
        });
    }
    Ok(FreeTextRequest {
        session_id: session_id(raw.session_id.as_deref())?,
        message: message.to_string(),
        lang: lang(raw.lang.as_deref())?,
    })
}

/// Newlines normalized to `\n`; other control characters (NUL, escape, …) dropped: they carry
/// nothing a user meant and only confuse the prompt.
fn clean_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() != Some(&'\n') {
                    out.push('\n');
                }
            }
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn session_id(raw: Option<&str>) -> Result<Option<String>, LeafreshError> {
    let Some(id) = present(raw) else {
        return Ok(None);
    };
    let ok = id.len() <= MAX_SESSION_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    if !ok {
        return Err(LeafreshError::InvalidSessionId {
            max_bytes: MAX_SESSION_ID_BYTES,
        });
    }
    Ok(Some(id.to_string()))
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
