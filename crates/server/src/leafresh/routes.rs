//! The four Leafresh routes: JSON (POST) and SSE (GET) for base-info and free-text. Validation
//! answers before any model work; a disconnected SSE client drops the answer, which cancels
//! its generation.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use sprout_engine::scheduler::Usage;

use super::envelope::{off_topic_response, success_response, Endpoint};
use super::error::LeafreshError;
use super::service::{self, Answering, Leafresh, Prepared};
use super::sse::{sse_response, LeafreshEvent, TextRenderer};
use super::validate::{BaseInfoRequest, FreeTextRequest};
use crate::pipeline;
use crate::state::AppState;

fn recommender(st: &AppState) -> Result<Arc<Leafresh>, LeafreshError> {
    st.leafresh
        .clone()
        .ok_or(LeafreshError::NotReady { retry_after_s: 5 })
}

/// Collects a whole answer for a JSON response, with its token counts.
async fn collect(
    lf: &Leafresh,
    mut a: Box<Answering>,
) -> Result<(super::Recommendation, Option<Usage>), LeafreshError> {
    while let Some(p) = a.next().await {
        p?;
    }
    let usage = a.usage();
    Ok((a.finish(lf).await?, usage))
}

/// Whether a streaming URL asks for sprout's `usage` event (`usage=1` or `usage=true`).
fn wants_usage(query: Option<&str>) -> bool {
    query
        .unwrap_or("")
        .split('&')
        .any(|p| p == "usage=1" || p == "usage=true")
}

async fn json_answer(
    st: AppState,
    endpoint: Endpoint,
    prepared: impl std::future::Future<Output = Result<Prepared, LeafreshError>>,
) -> Response {
    let Ok(lf) = recommender(&st) else {
        return LeafreshError::NotReady { retry_after_s: 5 }.into_response();
    };
    match prepared.await {
        Err(e) => e.into_response(),
        Ok(Prepared::OffTopic) => off_topic_response(),
        Ok(Prepared::Answer(a)) => match collect(&lf, a).await {
            Ok((rec, usage)) => {
                let mut resp = success_response(endpoint, &rec);
                if let Some(u) = &usage {
                    pipeline::set_usage_header(&mut resp, u);
                }
                resp
            }
            Err(e) => e.into_response(),
        },
    }
}

/// `POST /ai/chatbot/recommendation/base-info`.
pub async fn post_base_info(State(st): State<AppState>, body: Bytes) -> Response {
    let req = match BaseInfoRequest::from_json(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let Ok(lf) = recommender(&st) else {
        return LeafreshError::NotReady { retry_after_s: 5 }.into_response();
    };
    let st2 = st.clone();
    json_answer(st, Endpoint::BaseInfo, async move {
        service::base_info(&st2, &lf, req).await
    })
    .await
}

/// `POST /ai/chatbot/recommendation/free-text`.
pub async fn post_free_text(State(st): State<AppState>, body: Bytes) -> Response {
    let req = match FreeTextRequest::from_json(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let Ok(lf) = recommender(&st) else {
        return LeafreshError::NotReady { retry_after_s: 5 }.into_response();
    };
    let st2 = st.clone();
    json_answer(st, Endpoint::FreeText, async move {
        service::free_text(&st2, &lf, req).await
    })
    .await
}

/// One SSE answer in progress.
struct Streaming {
    lf: Arc<Leafresh>,
    answer: Option<Box<Answering>>,
    renderer: TextRenderer,
    pending: VecDeque<LeafreshEvent>,
    with_usage: bool,
}

/// The events of an answer: `challenge` fragments as it is generated, then `close` (or one
/// `error`), then the end; with `with_usage`, a `usage` event just before `close`.
fn answer_events(lf: Arc<Leafresh>, answer: Box<Answering>, with_usage: bool) -> Response {
    let state = Streaming {
        lf,
        answer: Some(answer),
        renderer: TextRenderer::new(),
        pending: VecDeque::new(),
        with_usage,
    };
    let events = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(e) = s.pending.pop_front() {
                return Some((e, s));
            }
            let a = s.answer.as_mut()?;
            match a.next().await {
                Some(Ok(pieces)) => {
                    for p in &pieces {
                        if let Some(fragment) = s.renderer.push(p) {
                            s.pending.push_back(LeafreshEvent::challenge(&fragment));
                        }
                    }
                }
                Some(Err(e)) => {
                    s.answer = None;
                    s.pending.push_back(LeafreshEvent::error(&e));
                }
                None => {
                    let a = s.answer.take()?;
                    let usage = a.usage().filter(|_| s.with_usage);
                    match a.finish(&s.lf).await {
                        Ok(rec) => {
                            s.pending.extend(usage.as_ref().map(LeafreshEvent::usage));
                            s.pending.push_back(LeafreshEvent::close(&rec));
                        }
                        Err(e) => s.pending.push_back(LeafreshEvent::error(&e)),
                    }
                }
            }
        }
    });
    sse_response(events)
}

fn one_event(e: LeafreshEvent) -> Response {
    sse_response(futures_util::stream::iter([e]))
}

/// `GET /ai/chatbot/recommendation/base-info?...` (SSE). Validation errors are plain 400 JSON.
pub async fn get_base_info(State(st): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let with_usage = wants_usage(q.as_deref());
    let req = match BaseInfoRequest::from_query(q.as_deref()) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let lf = match recommender(&st) {
        Ok(lf) => lf,
        Err(e) => return e.into_response(),
    };
    match service::base_info(&st, &lf, req).await {
        Err(e) => one_event(LeafreshEvent::error(&e)),
        Ok(Prepared::OffTopic) => one_event(LeafreshEvent::off_topic()),
        Ok(Prepared::Answer(a)) => answer_events(lf, a, with_usage),
    }
}

/// `GET /ai/chatbot/recommendation/free-text?...` (SSE). Validation errors and the off-topic
/// answer are `error` events inside a 200 stream, as the contract says.
pub async fn get_free_text(State(st): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let with_usage = wants_usage(q.as_deref());
    let req = match FreeTextRequest::from_query(q.as_deref()) {
        Ok(r) => r,
        Err(e) => return one_event(LeafreshEvent::error(&e)),
    };
    let lf = match recommender(&st) {
        Ok(lf) => lf,
        Err(e) => return one_event(LeafreshEvent::error(&e)),
    };
    match service::free_text(&st, &lf, req).await {
        Err(e) => one_event(LeafreshEvent::error(&e)),
        Ok(Prepared::OffTopic) => one_event(LeafreshEvent::off_topic()),
        Ok(Prepared::Answer(a)) => answer_events(lf, a, with_usage),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_explicit_usage_parameter_asks_for_the_usage_event() {
        assert!(wants_usage(Some("message=abc&usage=1")));
        assert!(wants_usage(Some("usage=true")));
        assert!(!wants_usage(None));
        assert!(!wants_usage(Some("message=usage%3D1")));
        assert!(!wants_usage(Some("usage=0&message=abc")));
    }

    #[test]
    fn the_usage_event_is_named_usage_and_holds_the_counts() {
        let u = Usage {
            prompt_tokens: 90,
            completion_tokens: 40,
            cached_tokens: 80,
            forced_tokens: 25,
        };
        let wire = LeafreshEvent::usage(&u).encode();
        assert_eq!(
            wire,
            "event: usage\ndata: {\"prompt_tokens\":90,\"completion_tokens\":40,\"cached_tokens\":80,\"forced_tokens\":25}\n\n"
        );
    }
}
