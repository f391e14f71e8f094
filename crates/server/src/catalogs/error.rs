//! Every failure of a `/v1/catalogs` request, with its HTTP status and the OpenAI-style error
//! object `{"error":{"message","type","param","code"}}` built in one place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::query::QueryError;

/// An error answered by the catalog routes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogApiError {
    /// No catalog is served under this name.
    #[error("the catalog `{name}` does not exist (served: {known})")]
    UnknownCatalog {
        /// The name asked for.
        name: String,
        /// The names served, comma-separated.
        known: String,
    },
    /// A query string the route refuses.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The path could not be decoded.
    #[error("invalid path: {0}")]
    Path(String),
    /// The retriever failed.
    #[error("search failed: {0}")]
    Search(String),
    /// The blocking search task vanished.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CatalogApiError {
    /// HTTP status of the error.
    pub fn status(&self) -> StatusCode {
        match self {
            CatalogApiError::UnknownCatalog { .. } => StatusCode::NOT_FOUND,
            CatalogApiError::Query(_) | CatalogApiError::Path(_) => StatusCode::BAD_REQUEST,
            CatalogApiError::Search(_) | CatalogApiError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The OpenAI-style error object.
    pub fn body(&self) -> serde_json::Value {
        let (kind, param, code) = match self {
            CatalogApiError::UnknownCatalog { .. } => (
                "invalid_request_error",
                Some("name"),
                Some("catalog_not_found"),
            ),
            CatalogApiError::Query(query) => ("invalid_request_error", Some(query.param()), None),
            CatalogApiError::Path(_) => ("invalid_request_error", Some("name"), None),
            CatalogApiError::Search(_) => ("server_error", None, Some("search_failed")),
            CatalogApiError::Internal(_) => ("server_error", None, None),
        };
        json!({"error": {"message": self.to_string(), "type": kind, "param": param, "code": code}})
    }
}

impl IntoResponse for CatalogApiError {
    fn into_response(self) -> Response {
        (self.status(), axum::Json(self.body())).into_response()
    }
}
