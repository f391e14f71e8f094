//! The four Leafresh routes: JSON (POST) and SSE (GET) for base-info and free-text. Validation
//! answers before any model work; a disconnected SSE client drops the answer, which cancels
//! its generation.

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};

use super::envelope::{off_topic_response, success_response, Endpoint};
use super::error::LeafreshError;
use super::service::{self, Answering, Leafresh, Prepared};
use super::sse::{sse_response, LeafreshEvent, TextRenderer};
use super::validate::{BaseInfoRequest, FreeTextRequest};
use crate::state::AppState;

fn recommender(st: &AppState) -> Result<Arc<Leafresh>, LeafreshError> {
    st.leafresh
        .clone()
        .ok_or(LeafreshError::NotReady { retry_after_s: 5 })
}

/// Collects a whole answer for a JSON response.
async fn collect(
    lf: &Leafresh,
    mut a: Box<Answering>,
) -> Result<super::Recommendation, LeafreshError> {
    while let Some(p) = a.next().await {
        p?;
    }
    a.finish(lf).await
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
            Ok(rec) => success_response(endpoint, &rec),
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
}

/// The events of an answer: `challenge` fragments as it is generated, then `close` (or one
/// `error`), then the end.
fn answer_events(lf: Arc<Leafresh>, answer: Box<Answering>) -> Response {
    let state = Streaming {
        lf,
        answer: Some(answer),
        renderer: TextRenderer::new(),
        pending: VecDeque::new(),
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
                    let event = match a.finish(&s.lf).await {
                        Ok(rec) => LeafreshEvent::close(&rec),
                        Err(e) => LeafreshEvent::error(&e),
                    };
                    s.pending.push_back(event);
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
        Ok(Prepared::Answer(a)) => answer_events(lf, a),
    }
}

/// `GET /ai/chatbot/recommendation/free-text?...` (SSE). Validation errors and the off-topic
/// answer are `error` events inside a 200 stream, as the contract says.
pub async fn get_free_text(State(st): State<AppState>, RawQuery(q): RawQuery) -> Response {
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
        Ok(Prepared::Answer(a)) => answer_events(lf, a),
    }
}
