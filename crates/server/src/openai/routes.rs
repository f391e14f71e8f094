//! Handlers of `/v1/chat/completions`, `/v1/completions` and `/v1/models`: validate, hand the
//! job to the generation pipeline, then stream its events as SSE chunks or collect them.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use sprout_engine::generation::FinishReason;
use sprout_engine::scheduler::Usage;

use super::error::ApiError;
use super::validate::{parse_body, validate, Endpoint, ValidRequest};
use crate::metrics::{Latency, Metrics};
use crate::pipeline::{self, GenerationHandle, Output};
use crate::state::AppState;

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(st, body, Endpoint::Chat)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/completions`.
pub async fn completions(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    generate(st, body, Endpoint::Completion)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/models`.
pub async fn models(State(st): State<AppState>) -> Response {
    let Some(serving) = st.serving.get() else {
        return ApiError::NotReady.into_response();
    };
    let data: Vec<Value> = serving
        .models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": serving.created, "owned_by": "sprout"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// Identity of one response.
struct Meta {
    id: String,
    created: u64,
    model: String,
    endpoint: Endpoint,
    include_usage: bool,
    started: Instant,
    grammar_param: &'static str,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn response_id(endpoint: Endpoint) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let prefix = if endpoint == Endpoint::Chat {
        "chatcmpl"
    } else {
        "cmpl"
    };
    format!("{prefix}-{t:x}{n:04x}")
}

async fn generate(
    st: AppState,
    body: Result<Bytes, BytesRejection>,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let serving = st.serving.get().cloned().ok_or(ApiError::NotReady)?;
    let bytes = body.map_err(|r| match r.status().as_u16() {
        413 => ApiError::BodyTooLarge {
            limit_bytes: st.config.body_limit_bytes,
        },
        _ => ApiError::InvalidJson(r.body_text()),
    })?;
    let valid = validate(parse_body(&bytes)?, endpoint, &serving.models)?;
    let grammar_param = grammar_param(&valid);
    let handle = pipeline::submit(&st, valid.job())
        .await
        .map_err(|e| ApiError::from_pipeline(e, grammar_param))?;
    let meta = Meta {
        id: response_id(endpoint),
        created: unix_now(),
        model: valid.model.clone(),
        endpoint,
        include_usage: valid.include_usage,
        started,
        grammar_param,
    };
    tracing::debug!(id = %meta.id, request = handle.id, "request admitted");
    if valid.stream {
        Ok(stream(st.clone(), meta, handle))
    } else {
        collect(&st.metrics, meta, handle).await
    }
}

/// The request field a grammar error is reported against.
fn grammar_param(valid: &ValidRequest) -> &'static str {
    match valid.grammar {
        Some(
            sprout_engine::grammar::GrammarSpec::Regex(_)
            | sprout_engine::grammar::GrammarSpec::Lark(_),
        ) => "grammar",
        _ => "response_format",
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "completion_tokens_details": {"forced_tokens": u.forced_tokens},
    })
}

/// Records TTFT / inter-token latency as text arrives.
struct Timing {
    started: Instant,
    last: Option<Instant>,
}

impl Timing {
    fn text(&mut self, metrics: &Metrics) {
        let now = Instant::now();
        match self.last {
            None => metrics.latency(
                Latency::TimeToFirstToken,
                (now - self.started).as_secs_f64(),
            ),
            Some(prev) => metrics.latency(Latency::InterToken, (now - prev).as_secs_f64()),
        }
        self.last = Some(now);
    }
}

async fn collect(
    metrics: &Metrics,
    meta: Meta,
    mut handle: GenerationHandle,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    let mut timing = Timing {
        started: meta.started,
        last: None,
    };
    let (reason, usage) = loop {
        match handle.next().await {
            Some(Ok(Output::Text(t))) => {
                timing.text(metrics);
                text.push_str(&t);
            }
            Some(Ok(Output::Done { reason, usage })) => break (reason, usage),
            Some(Err(e)) => return Err(ApiError::from_pipeline(e, meta.grammar_param)),
            None => {
                return Err(ApiError::Internal(
                    "the answer ended without a final event".into(),
                ))
            }
        }
    };
    metrics.latency(Latency::EndToEnd, meta.started.elapsed().as_secs_f64());
    let choice = match meta.endpoint {
        Endpoint::Chat => {
            json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason.as_str(), "logprobs": null})
        }
        Endpoint::Completion => {
            json!({"index": 0, "text": text, "finish_reason": reason.as_str(), "logprobs": null})
        }
    };
    let object = if meta.endpoint == Endpoint::Chat {
        "chat.completion"
    } else {
        "text_completion"
    };
    Ok(Json(json!({
        "id": meta.id, "object": object, "created": meta.created, "model": meta.model,
        "choices": [choice], "usage": usage_json(&usage),
    }))
    .into_response())
}

/// One streamed chunk carrying `text` and/or a finish reason.
fn chunk(meta: &Meta, text: Option<&str>, role: bool, reason: Option<FinishReason>) -> Value {
    let reason = reason.map(FinishReason::as_str);
    let (object, choice) = match meta.endpoint {
        Endpoint::Chat => {
            let mut delta = serde_json::Map::new();
            if role {
                delta.insert("role".into(), "assistant".into());
            }
            if let Some(t) = text {
                delta.insert("content".into(), t.into());
            }
            (
                "chat.completion.chunk",
                json!({"index": 0, "delta": delta, "finish_reason": reason, "logprobs": null}),
            )
        }
        Endpoint::Completion => (
            "text_completion",
            json!({"index": 0, "text": text.unwrap_or(""), "finish_reason": reason, "logprobs": null}),
        ),
    };
    let mut v = json!({"id": meta.id, "object": object, "created": meta.created, "model": meta.model, "choices": [choice]});
    if meta.include_usage {
        v["usage"] = Value::Null;
    }
    v
}

struct StreamState {
    meta: Meta,
    handle: GenerationHandle,
    metrics: Arc<Metrics>,
    pending: VecDeque<SseEvent>,
    timing: Timing,
    done: bool,
}

fn data(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

fn stream(st: AppState, meta: Meta, handle: GenerationHandle) -> Response {
    let mut pending = VecDeque::new();
    if meta.endpoint == Endpoint::Chat {
        pending.push_back(data(&chunk(&meta, Some(""), true, None)));
    }
    let state = StreamState {
        timing: Timing {
            started: meta.started,
            last: None,
        },
        meta,
        handle,
        metrics: st.metrics.clone(),
        pending,
        done: false,
    };
    let events = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(ev) = s.pending.pop_front() {
                return Some((Ok::<_, Infallible>(ev), s));
            }
            if s.done {
                return None;
            }
            match s.handle.next().await {
                Some(Ok(Output::Text(t))) => {
                    s.timing.text(&s.metrics);
                    s.pending
                        .push_back(data(&chunk(&s.meta, Some(&t), false, None)));
                }
                Some(Ok(Output::Done { reason, usage })) => {
                    s.metrics
                        .latency(Latency::EndToEnd, s.meta.started.elapsed().as_secs_f64());
                    let text = (s.meta.endpoint == Endpoint::Completion).then_some("");
                    s.pending
                        .push_back(data(&chunk(&s.meta, text, false, Some(reason))));
                    if s.meta.include_usage {
                        let mut u = chunk(&s.meta, None, false, None);
                        u["choices"] = json!([]);
                        u["usage"] = usage_json(&usage);
                        s.pending.push_back(data(&u));
                    }
                    s.pending.push_back(SseEvent::default().data("[DONE]"));
                    s.done = true;
                }
                Some(Err(e)) => {
                    let e = ApiError::from_pipeline(e, s.meta.grammar_param);
                    s.pending.push_back(
                        SseEvent::default()
                            .event("error")
                            .data(e.body().to_string()),
                    );
                    s.done = true;
                }
                None => s.done = true,
            }
        }
    });
    let keepalive = Duration::from_millis(st.config.sse_keepalive_ms.max(100));
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keepalive))
        .into_response()
}
