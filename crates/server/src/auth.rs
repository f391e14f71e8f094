//! API key check for /v1 routes: `Authorization: Bearer <key>`, compared in constant time.
//! The key is never logged.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::openai::error::ApiError;
use crate::state::AppState;

/// Whether `header` (the Authorization value) carries `key`.
pub fn key_matches(header: Option<&[u8]>, key: &str) -> bool {
    let Some(h) = header else { return false };
    let Some(given) = h.strip_prefix(b"Bearer ") else {
        return false;
    };
    // Lengths may differ; ct_eq is constant-time for equal lengths and false otherwise.
    bool::from(given.ct_eq(key.as_bytes()))
}

/// Middleware refusing requests without the configured key (401).
pub async fn require_api_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.config.api_key {
        let header = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
        if !key_matches(header, key) {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_key_passes() {
        assert!(key_matches(Some(b"Bearer s3cret"), "s3cret"));
        for bad in [
            &b"Bearer s3cre"[..],
            b"Bearer s3cret2",
            b"s3cret",
            b"Basic s3cret",
            b"Bearer ",
        ] {
            assert!(
                !key_matches(Some(bad), "s3cret"),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(!key_matches(None, "s3cret"));
    }
}
