//! The raw Leafresh request bodies exactly as clients send them, before any checking. The same
//! shapes are filled from a GET query string (see [`super::query`]).

use serde::de::IgnoredAny;
use serde::Deserialize;

use super::query::QueryFields;

/// `POST /ai/chatbot/recommendation/base-info` (and the GET query of the same path). Every
/// field is optional here so that absence and blankness get the contract's "필수" message, not
/// a type error; unknown fields are refused.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBaseInfo {
    #[serde(rename = "sessionId", default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(rename = "workType", default)]
    pub work_type: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    /// sprout's extension: `ko` (default), `en` or `zh`.
    #[serde(default)]
    pub lang: Option<String>,
}

/// `POST /ai/chatbot/recommendation/free-text` (and its GET query). Older clients still send
/// `location` and `workType`: accepted with any type and ignored.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFreeText {
    #[serde(rename = "sessionId", default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub location: Option<IgnoredAny>,
    #[serde(rename = "workType", default)]
    pub work_type: Option<IgnoredAny>,
    /// sprout's extension: `ko` (default), `en` or `zh`.
    #[serde(default)]
    pub lang: Option<String>,
}

impl From<QueryFields> for RawBaseInfo {
    fn from(q: QueryFields) -> Self {
        RawBaseInfo {
            session_id: q.session_id,
            location: q.location,
            work_type: q.work_type,
            category: q.category,
            lang: q.lang,
        }
    }
}

impl From<QueryFields> for RawFreeText {
    fn from(q: QueryFields) -> Self {
        RawFreeText {
            session_id: q.session_id,
            message: q.message,
            location: None,
            work_type: None,
            lang: q.lang,
        }
    }
}
