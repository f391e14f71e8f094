//! Every failure of an OpenAI-flavoured request, with its HTTP status and the OpenAI error
//! object `{"error":{"message","type","param","code"}}` built in one place.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sprout_engine::scheduler::GenerationError;

use crate::pipeline::PipelineError;

/// An error answered to an OpenAI client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),
    #[error("{message}")]
    Invalid {
        param: &'static str,
        message: String,
    },
    #[error("{param} is not supported yet: {message}")]
    Unsupported {
        param: &'static str,
        message: String,
    },
    #[error("the model `{0}` does not exist")]
    ModelNotFound(String),
    #[error("no route for {0}")]
    RouteNotFound(String),
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("request body exceeds the limit of {limit_bytes} bytes")]
    BodyTooLarge { limit_bytes: usize },
    #[error("the chat template could not render these messages: {0}")]
    Template(String),
    #[error("server is at capacity ({limit} requests in flight); retry after {retry_after_s} s")]
    Overloaded { limit: usize, retry_after_s: u64 },
    #[error("the model is still loading")]
    NotReady,
    #[error("{0}")]
    Generation(GenerationError),
    #[error("{message}")]
    Grammar {
        param: &'static str,
        message: String,
    },
    #[error("the constrained output failed its final check: {0}")]
    InvalidOutput(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// HTTP status of the error.
    pub fn status(&self) -> StatusCode {
        use GenerationError as G;
        match self {
            ApiError::InvalidJson(_) | ApiError::Invalid { .. } | ApiError::Unsupported { .. } => {
                StatusCode::BAD_REQUEST
            }
            ApiError::ModelNotFound(_) | ApiError::RouteNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Template(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Generation(g) => match g {
                G::ContextExceeded { .. }
                | G::NeverFits { .. }
                | G::EmptyPrompt
                | G::ZeroMaxTokens
                | G::Incomplete { .. } => StatusCode::BAD_REQUEST,
                G::Timeout { .. } => StatusCode::REQUEST_TIMEOUT,
                G::ShuttingDown | G::EngineDown => StatusCode::SERVICE_UNAVAILABLE,
                G::InvalidLogits
                | G::ConstraintDeadEnd { .. }
                | G::StepFailed { .. }
                | G::StepPanicked { .. }
                | G::Cancelled => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Grammar { .. } => StatusCode::BAD_REQUEST,
            ApiError::InvalidOutput(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The OpenAI error object.
    pub fn body(&self) -> serde_json::Value {
        use GenerationError as G;
        let (kind, param, code) = match self {
            ApiError::InvalidJson(_) => ("invalid_request_error", None, None),
            ApiError::Invalid { param, .. } => ("invalid_request_error", Some(*param), None),
            ApiError::Unsupported { param, .. } => {
                ("invalid_request_error", Some(*param), Some("unsupported"))
            }
            ApiError::ModelNotFound(_) => (
                "invalid_request_error",
                Some("model"),
                Some("model_not_found"),
            ),
            ApiError::RouteNotFound(_) => ("invalid_request_error", None, Some("not_found")),
            ApiError::Unauthorized => ("invalid_request_error", None, Some("invalid_api_key")),
            ApiError::BodyTooLarge { .. } => {
                ("invalid_request_error", None, Some("request_too_large"))
            }
            ApiError::Template(_) => (
                "invalid_request_error",
                Some("messages"),
                Some("template_error"),
            ),
            ApiError::Overloaded { .. } => ("rate_limit_error", None, Some("rate_limit_exceeded")),
            ApiError::NotReady => ("server_error", None, Some("model_loading")),
            ApiError::Generation(g) => match g {
                G::ContextExceeded { .. } | G::NeverFits { .. } => (
                    "invalid_request_error",
                    Some("messages"),
                    Some("context_length_exceeded"),
                ),
                G::EmptyPrompt => ("invalid_request_error", Some("prompt"), None),
                G::ZeroMaxTokens => ("invalid_request_error", Some("max_tokens"), None),
                G::Incomplete { .. } => (
                    "invalid_request_error",
                    Some("max_tokens"),
                    Some("incomplete_output"),
                ),
                G::Timeout { .. } => ("timeout_error", None, Some("timeout")),
                G::ShuttingDown => ("server_error", None, Some("shutting_down")),
                G::EngineDown => ("server_error", None, Some("engine_down")),
                G::ConstraintDeadEnd { .. } => ("server_error", None, Some("grammar_error")),
                G::InvalidLogits | G::StepFailed { .. } | G::StepPanicked { .. } | G::Cancelled => {
                    ("server_error", None, Some("generation_failed"))
                }
            },
            ApiError::Grammar { param, .. } => (
                "invalid_request_error",
                Some(*param),
                Some("invalid_grammar"),
            ),
            ApiError::InvalidOutput(_) => ("server_error", None, Some("invalid_output")),
            ApiError::Internal(_) => ("server_error", None, None),
        };
        let mut body = json!({"error": {"message": self.to_string(), "type": kind, "param": param, "code": code}});
        if let ApiError::Generation(G::Incomplete { .. }) = self {
            // What a client checks first: the answer ran out of tokens and is not returned.
            body["error"]["finish_reason"] = "length".into();
        }
        body
    }

    /// The error of a pipeline failure, `grammar_param` naming the field the grammar came from.
    pub fn from_pipeline(e: PipelineError, grammar_param: &'static str) -> Self {
        match e {
            PipelineError::NotReady => ApiError::NotReady,
            PipelineError::Overloaded {
                limit,
                retry_after_s,
            } => ApiError::Overloaded {
                limit,
                retry_after_s,
            },
            PipelineError::Template(t) => ApiError::Template(t),
            PipelineError::EmptyPrompt => ApiError::Generation(GenerationError::EmptyPrompt),
            PipelineError::Grammar(g) => ApiError::Grammar {
                param: grammar_param,
                message: g.to_string(),
            },
            PipelineError::Generation(g) => ApiError::Generation(g),
            PipelineError::InvalidOutput(m) => ApiError::InvalidOutput(m),
            PipelineError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<GenerationError> for ApiError {
    fn from(e: GenerationError) -> Self {
        ApiError::Generation(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), axum::Json(self.body())).into_response();
        if let ApiError::Overloaded { retry_after_s, .. } = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
        }
        resp
    }
}
