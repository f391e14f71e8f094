//! Every failure of a books request and its one rendering: FastAPI's shapes, since the original
//! was a FastAPI app — `422 {"detail":[{type, loc, msg, input, ctx?}]}` for bad input,
//! `{"detail":"…"}` otherwise — and, inside a stream, the `error` event's `{status, detail}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;

/// One entry of a FastAPI validation error's `detail` list (pydantic v2's error shape).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    /// pydantic's error type, e.g. `missing`, `string_type`, `int_parsing`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Where: `["body", "occupation"]`, `["query", "index"]`, `["path", "id"]`.
    pub loc: Vec<Value>,
    /// pydantic's message, e.g. `Field required`.
    pub msg: String,
    /// The offending value (the whole body for a missing field).
    pub input: Value,
    /// The constraint, when the error has one (e.g. `{"ge":0}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctx: Option<Value>,
}

impl FieldError {
    /// An error at `loc` (its parts as strings; list indexes as numbers).
    pub fn new(kind: &'static str, loc: &[&str], msg: impl Into<String>, input: Value) -> Self {
        let loc = loc
            .iter()
            .map(|part| match part.parse::<u64>() {
                Ok(index) => Value::from(index),
                Err(_) => Value::from(*part),
            })
            .collect();
        FieldError {
            kind,
            loc,
            msg: msg.into(),
            input,
            ctx: None,
        }
    }

    /// The same error with its constraint.
    pub fn with_ctx(mut self, ctx: Value) -> Self {
        self.ctx = Some(ctx);
        self
    }
}

/// An error answered to a books client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BooksError {
    /// The request does not parse or breaks a constraint: 422 with every problem found.
    #[error("invalid request ({} error(s))", .0.len())]
    Invalid(Vec<FieldError>),
    /// No such user record.
    #[error("no {what} stored for this user")]
    NotFound { what: &'static str },
    /// The server serves no `books` catalog.
    #[error("the books catalog is not served (start sprout with --catalog books=FILE)")]
    NoCatalog,
    /// The admission queue is full.
    #[error("the server is at capacity; retry after {retry_after_s} s")]
    Overloaded { retry_after_s: u64 },
    /// The model is still loading.
    #[error("the model is still loading; retry after {retry_after_s} s")]
    NotReady { retry_after_s: u64 },
    /// Too few books are left to recommend after removing read and avoided ones.
    #[error("fewer than 3 books are left to recommend after removing read and avoided ones")]
    NoCandidates,
    /// Generation failed or its output could not be used; `detail` is for logs.
    #[error("the recommendation could not be generated")]
    ModelFailed { detail: String },
    /// The user store failed; `detail` is for logs.
    #[error("the user store failed")]
    Store { detail: String },
}

impl BooksError {
    /// The HTTP status (repeated as `status` in an `error` event).
    pub fn status(&self) -> StatusCode {
        match self {
            BooksError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            BooksError::NotFound { .. } => StatusCode::NOT_FOUND,
            BooksError::NoCatalog | BooksError::Overloaded { .. } | BooksError::NotReady { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            BooksError::NoCandidates => StatusCode::CONFLICT,
            BooksError::ModelFailed { .. } | BooksError::Store { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// Seconds to wait before retrying (`Retry-After`), if any.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            BooksError::Overloaded { retry_after_s } | BooksError::NotReady { retry_after_s } => {
                Some(*retry_after_s)
            }
            _ => None,
        }
    }

    /// The body's `detail`: the list of field errors, or the message.
    pub fn detail(&self) -> Value {
        match self {
            BooksError::Invalid(errors) => serde_json::json!(errors),
            other => Value::String(other.to_string()),
        }
    }

    /// The `error` event's data: `{"status":<int>,"detail":"<message>"}`.
    pub fn event_data(&self) -> Value {
        let detail = match self {
            BooksError::Invalid(errors) => errors
                .iter()
                .map(|e| e.msg.clone())
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        };
        serde_json::json!({"status": self.status().as_u16(), "detail": detail})
    }
}

impl IntoResponse for BooksError {
    fn into_response(self) -> Response {
        match &self {
            BooksError::ModelFailed { detail } | BooksError::Store { detail } => {
                tracing::warn!(%detail, "books request failed");
            }
            _ => {}
        }
        let mut response = (
            self.status(),
            Json(serde_json::json!({"detail": self.detail()})),
        )
            .into_response();
        if let Some(seconds) = self.retry_after_s() {
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_bodies() {
        let invalid = BooksError::Invalid(vec![FieldError::new(
            "missing",
            &["body", "occupation"],
            "Field required",
            serde_json::json!({}),
        )]);
        assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            invalid.detail(),
            serde_json::json!([{"type":"missing","loc":["body","occupation"],"msg":"Field required","input":{}}])
        );
        let overloaded = BooksError::Overloaded { retry_after_s: 2 };
        assert_eq!(overloaded.status(), StatusCode::SERVICE_UNAVAILABLE);
        let response = overloaded.clone().into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(overloaded.event_data()["status"], serde_json::json!(503));
        let failed = BooksError::ModelFailed { detail: "x".into() };
        assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            failed.event_data(),
            serde_json::json!({"status":500,"detail":"the recommendation could not be generated"})
        );
        let index = FieldError::new("x", &["body", "read_books", "3", "title"], "m", Value::Null);
        assert_eq!(index.loc[2], serde_json::json!(3));
    }
}
