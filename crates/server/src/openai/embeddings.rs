//! `POST /v1/embeddings`, OpenAI-compatible: `input` a string or a list of strings (or token
//! arrays), `encoding_format` float or base64 (little-endian f32), `dimensions` by Matryoshka
//! truncation (768, 512, 256 or 128 for EmbeddingGemma) then re-normalization. sprout's
//! extension `task` (`query`, `document`, `similarity`, `raw`; default `query`) picks the
//! model's task prompt. Embedding runs on blocking threads, never on the reactor.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use sprout_engine::embedding::Task;

use super::error::ApiError;
use crate::state::AppState;

/// Inputs accepted per request.
pub const MAX_INPUTS: usize = 256;
/// Matryoshka widths EmbeddingGemma was trained to truncate to.
const MATRYOSHKA_DIMS: [usize; 4] = [768, 512, 256, 128];

/// The raw body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmbeddingRequest {
    input: Option<Value>,
    model: Option<String>,
    encoding_format: Option<String>,
    dimensions: Option<i64>,
    user: Option<String>,
    task: Option<String>,
}

/// A checked embeddings request.
#[derive(Debug, Clone, PartialEq)]
struct ValidEmbeddingRequest {
    texts: Vec<String>,
    model: String,
    base64: bool,
    dimensions: Option<usize>,
    task: Task,
}

fn invalid(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid {
        param,
        message: message.into(),
    }
}

fn validate(
    raw: RawEmbeddingRequest,
    model_id: &str,
    dim: usize,
) -> Result<ValidEmbeddingRequest, ApiError> {
    let _ = raw.user;
    let model = raw
        .model
        .ok_or_else(|| invalid("model", "model is required"))?;
    let texts = match raw.input {
        None => return Err(invalid("input", "input is required")),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => {
            if items.is_empty() {
                return Err(invalid("input", "input must not be an empty list"));
            }
            if items.len() > MAX_INPUTS {
                return Err(invalid(
                    "input",
                    format!(
                        "at most {MAX_INPUTS} inputs per request, got {}",
                        items.len()
                    ),
                ));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(invalid(
                        "input",
                        format!("input[{i}] must be a string (token arrays are not supported)"),
                    )),
                })
                .collect::<Result<_, _>>()?
        }
        Some(_) => {
            return Err(invalid(
                "input",
                "input must be a string or a list of strings",
            ))
        }
    };
    if let Some(i) = texts.iter().position(|t| t.is_empty()) {
        return Err(invalid("input", format!("input[{i}] is empty")));
    }
    let base64 = match raw.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(invalid(
                "encoding_format",
                format!("encoding_format must be float or base64, got {other:?}"),
            ))
        }
    };
    let dimensions = match raw.dimensions {
        None => None,
        Some(d) if d > 0 && (d as usize) <= dim && MATRYOSHKA_DIMS.contains(&(d as usize)) => {
            Some(d as usize)
        }
        Some(d) => {
            let allowed: Vec<String> = MATRYOSHKA_DIMS
                .iter()
                .filter(|&&m| m <= dim)
                .map(|m| m.to_string())
                .collect();
            return Err(invalid(
                "dimensions",
                format!(
                    "dimensions must be one of {} for {model_id}, got {d}",
                    allowed.join(", ")
                ),
            ));
        }
    };
    let task = match raw.task.as_deref() {
        None | Some("query") => Task::Query,
        Some("document") => Task::Document,
        Some("similarity") => Task::Similarity,
        Some("raw") => Task::Raw,
        Some(other) => {
            return Err(invalid(
                "task",
                format!("task must be query, document, similarity or raw, got {other:?}"),
            ))
        }
    };
    Ok(ValidEmbeddingRequest {
        texts,
        model,
        base64,
        dimensions,
        task,
    })
}

/// Cuts `v` to its first `d` components and makes it unit length again.
fn truncate(mut v: Vec<f32>, d: usize) -> Vec<f32> {
    v.truncate(d);
    let n = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x = (*x as f64 / n) as f32);
    }
    v
}

/// `POST /v1/embeddings`.
pub async fn embeddings(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(st, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn handle(st: AppState, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let serving = st.embedder.clone().ok_or_else(|| {
        ApiError::RouteNotFound(
            "/v1/embeddings (no embedding model is loaded: start sprout serve without --no-embedder)"
                .into(),
        )
    })?;
    let embedder = serving.model.clone();
    let bytes = body.map_err(|r| match r.status().as_u16() {
        413 => ApiError::BodyTooLarge {
            limit_bytes: st.config.body_limit_bytes,
        },
        _ => ApiError::InvalidJson(r.body_text()),
    })?;
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    let raw: RawEmbeddingRequest =
        serde_path_to_error::deserialize(de).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let id = sprout_recommend::Embedder::id(embedder.as_ref());
    let valid = validate(raw, &id, sprout_recommend::Embedder::dim(embedder.as_ref()))?;
    if !serving.names.contains(&valid.model) {
        return Err(ApiError::ModelNotFound(valid.model));
    }
    let permit = st.admission.try_acquire().ok_or(ApiError::Overloaded {
        limit: st.admission.limit(),
        retry_after_s: 1,
    })?;
    let (texts, task) = (valid.texts.clone(), valid.task);
    let e = embedder.clone();
    let (vectors, tokens) = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let tokens: usize = refs.iter().map(|t| e.token_count(t, task)).sum();
        e.embed(&refs, task).map(|v| (v, tokens))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("embedding task: {e}")))?
    .map_err(ApiError::Internal)?;
    drop(permit);
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let v = match valid.dimensions {
                Some(d) => truncate(v, d),
                None => v,
            };
            let embedding = if valid.base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": valid.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(body: &str) -> RawEmbeddingRequest {
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn validation_names_each_bad_field() {
        let ok = validate(raw(r#"{"model":"m","input":["a","b"],"dimensions":256,"encoding_format":"base64","task":"document"}"#), "e", 768).unwrap();
        assert_eq!(ok.texts, vec!["a", "b"]);
        assert_eq!(
            (ok.dimensions, ok.base64, ok.task),
            (Some(256), true, Task::Document)
        );
        for (body, param) in [
            (r#"{"model":"m"}"#, "input"),
            (r#"{"input":"a"}"#, "model"),
            (r#"{"model":"m","input":[]}"#, "input"),
            (r#"{"model":"m","input":[1,2]}"#, "input"),
            (r#"{"model":"m","input":[""]}"#, "input"),
            (
                r#"{"model":"m","input":"a","dimensions":300}"#,
                "dimensions",
            ),
            (
                r#"{"model":"m","input":"a","dimensions":1024}"#,
                "dimensions",
            ),
            (
                r#"{"model":"m","input":"a","encoding_format":"hex"}"#,
                "encoding_format",
            ),
            (r#"{"model":"m","input":"a","task":"chat"}"#, "task"),
        ] {
            match validate(raw(body), "e", 768) {
                Err(ApiError::Invalid { param: p, .. }) => assert_eq!(p, param, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn truncation_renormalizes() {
        let v = truncate(vec![3.0, 4.0, 12.0], 2);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }
}
