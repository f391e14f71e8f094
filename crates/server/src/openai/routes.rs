//! Handlers of `/v1/chat/completions`, `/v1/completions` and `/v1/models`: validate, admit,
//! tokenize off the async threads, submit to the scheduler, then stream (SSE) or collect.

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
use sprout_engine::generation::{FinishReason, StopConditions};
use sprout_engine::scheduler::{Event, EventSink, GenerationError, GenerationRequest, Usage};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::error::ApiError;
use super::validate::{max_tokens_for, parse_body, validate, Endpoint, PromptSpec};
use crate::admission::Permit;
use crate::app::AppState;
use crate::metrics::{Latency, Metrics};

/// Events of one request flow to its handler through this sink; a dropped handler (client
/// gone) closes it and the scheduler cancels the sequence.
struct ChannelSink(UnboundedSender<Event>);

impl EventSink for ChannelSink {
    fn send(&mut self, event: Event) -> bool {
        self.0.send(event).is_ok()
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

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
    let permit = st.admission.try_acquire().ok_or(ApiError::Overloaded {
        limit: st.admission.limit(),
        retry_after_s: 1,
    })?;
    let format = serving.prompt.clone();
    let spec = valid.prompt.clone();
    // Templates and tokenizers can take milliseconds on big inputs: keep them off the reactor.
    let prompt = tokio::task::spawn_blocking(move || match spec {
        PromptSpec::Chat(messages) => format
            .chat_prompt(&messages)
            .map_err(|e| ApiError::Template(e.to_string())),
        PromptSpec::Text(text) => Ok(format.encode_prompt(&text, true)),
    })
    .await
    .map_err(|e| ApiError::Internal(format!("tokenizer task: {e}")))??;
    let limits = serving.scheduler.limits();
    let max_tokens = max_tokens_for(
        valid.max_tokens,
        prompt.len(),
        &limits,
        st.config.default_max_tokens,
    )?;
    let (tx, rx) = unbounded_channel();
    let meta = Meta {
        id: response_id(endpoint),
        created: unix_now(),
        model: valid.model.clone(),
        endpoint,
        include_usage: valid.include_usage,
        started,
    };
    tracing::debug!(id = %meta.id, prompt_tokens = prompt.len(), max_tokens, "request admitted");
    serving.scheduler.submit(GenerationRequest {
        prompt,
        sampling: valid.sampling,
        stop: StopConditions {
            max_tokens,
            stop_strings: valid.stop_strings,
            ignore_eos: valid.ignore_eos,
        },
        constraint: None,
        timeout: Some(Duration::from_millis(st.config.request_timeout_ms)),
        events: Box::new(ChannelSink(tx)),
    })?;
    if valid.stream {
        Ok(stream(st.clone(), meta, rx, permit))
    } else {
        collect(&st.metrics, meta, rx, permit).await
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
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
    mut rx: UnboundedReceiver<Event>,
    _permit: Permit,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    let mut timing = Timing {
        started: meta.started,
        last: None,
    };
    let (reason, usage) = loop {
        match rx.recv().await {
            Some(Event::Text(t)) => {
                timing.text(metrics);
                text.push_str(&t);
            }
            Some(Event::Finished { reason, usage }) => break (reason, usage),
            Some(Event::Failed(e)) => return Err(e.into()),
            None => return Err(ApiError::Generation(GenerationError::ShuttingDown)),
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
    rx: UnboundedReceiver<Event>,
    metrics: Arc<Metrics>,
    pending: VecDeque<SseEvent>,
    timing: Timing,
    done: bool,
    _permit: Permit,
}

fn data(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

fn stream(st: AppState, meta: Meta, rx: UnboundedReceiver<Event>, permit: Permit) -> Response {
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
        rx,
        metrics: st.metrics.clone(),
        pending,
        done: false,
        _permit: permit,
    };
    let events = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(ev) = s.pending.pop_front() {
                return Some((Ok::<_, Infallible>(ev), s));
            }
            if s.done {
                return None;
            }
            match s.rx.recv().await {
                Some(Event::Text(t)) => {
                    s.timing.text(&s.metrics);
                    s.pending
                        .push_back(data(&chunk(&s.meta, Some(&t), false, None)));
                }
                Some(Event::Finished { reason, usage }) => {
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
                Some(Event::Failed(e)) => {
                    s.pending.push_back(
                        SseEvent::default()
                            .event("error")
                            .data(ApiError::from(e).body().to_string()),
                    );
                    s.done = true;
                }
                None => {
                    let e = ApiError::Generation(GenerationError::ShuttingDown);
                    s.pending.push_back(
                        SseEvent::default()
                            .event("error")
                            .data(e.body().to_string()),
                    );
                    s.done = true;
                }
            }
        }
    });
    let keepalive = Duration::from_millis(st.config.sse_keepalive_ms.max(100));
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keepalive))
        .into_response()
}
