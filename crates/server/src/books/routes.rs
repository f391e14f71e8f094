//! The books routes: the questions, the recommendation (JSON, or SSE with `Accept:
//! text/event-stream`) and the users' records. Validation answers before any model work; a
//! disconnected SSE client drops the answer, which cancels its generation.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::{json, Value};
use sprout_recommend::books::BookPiece;

use super::error::BooksError;
use super::questions::question_body;
use super::service::{self, Answering, Books};
use super::validate::{self, RecommendRequest};
use crate::pipeline::set_usage_header;
use crate::state::AppState;

fn recommender(st: &AppState) -> Result<Arc<Books>, BooksError> {
    st.books.clone().ok_or(BooksError::NoCatalog)
}

/// `GET /api/questions?index=`.
pub async fn questions(RawQuery(q): RawQuery) -> Response {
    match validate::question_index(q.as_deref()) {
        Ok(index) => Json(question_body(index)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn wants_events(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// `POST /api/recommend-books`.
pub async fn recommend_books(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = match RecommendRequest::from_json(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let streaming = wants_events(&headers);
    let prepared = match recommender(&st) {
        Ok(books) => service::recommend(&st, &books, req).await,
        Err(e) => Err(e),
    };
    match (prepared, streaming) {
        (Err(e), false) => e.into_response(),
        (Err(e), true) => {
            let status = e.status();
            let retry = e.retry_after_s();
            let mut response = sse_response(futures_util::stream::iter([error_event(&e)]));
            *response.status_mut() = status;
            if let Some(seconds) = retry.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
                response.headers_mut().insert(header::RETRY_AFTER, seconds);
            }
            response
        }
        (Ok(answer), false) => json_answer(answer).await,
        (Ok(answer), true) => answer_events(answer),
    }
}

async fn json_answer(mut answer: Answering) -> Response {
    while let Some(pieces) = answer.next().await {
        if let Err(e) = pieces {
            return e.into_response();
        }
    }
    match answer.finish() {
        Ok(rec) => {
            let mut response = Json(rec.body()).into_response();
            set_usage_header(&mut response, &rec.usage);
            response
        }
        Err(e) => e.into_response(),
    }
}

fn event(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

fn error_event(e: &BooksError) -> Event {
    event("error", &e.event_data())
}

/// A `text/event-stream` response, unbuffered by proxies (`X-Accel-Buffering: no`).
fn sse_response<S>(events: S) -> Response
where
    S: futures_util::Stream<Item = Event> + Send + 'static,
{
    let mut response = Sse::new(events.map(Ok::<_, Infallible>)).into_response();
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// One SSE answer in progress.
struct Streaming {
    answer: Option<Answering>,
    pending: VecDeque<Event>,
}

/// `delta` events as the answer is written, a `book` event per chosen book, then `done` (or
/// one `error`), then the end.
fn answer_events(answer: Answering) -> Response {
    let state = Streaming {
        answer: Some(answer),
        pending: VecDeque::new(),
    };
    let events = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(e) = s.pending.pop_front() {
                return Some((e, s));
            }
            let answer = s.answer.as_mut()?;
            match answer.next().await {
                Some(Ok(pieces)) => {
                    for piece in pieces {
                        s.pending.push_back(match piece {
                            BookPiece::Delta(text) => event("delta", &json!({"text": text})),
                            BookPiece::Book {
                                index,
                                title,
                                author,
                            } => event(
                                "book",
                                &json!({"index": index, "title": title, "author": author}),
                            ),
                        });
                    }
                }
                Some(Err(e)) => {
                    s.answer = None;
                    s.pending.push_back(error_event(&e));
                }
                None => {
                    let answer = s.answer.take()?;
                    s.pending.push_back(match answer.finish() {
                        Ok(rec) => event("done", &rec.done_data()),
                        Err(e) => error_event(&e),
                    });
                }
            }
        }
    });
    sse_response(events)
}

/// Which record of a user a path names.
#[derive(Clone, Copy)]
enum Record {
    History,
    Preferences,
}

async fn put_record(st: AppState, raw_id: String, body: Bytes, record: Record) -> Response {
    let id = match validate::user_id(&raw_id) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let books = match recommender(&st) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let stored = match record {
        Record::History => match validate::history(&body) {
            Ok(h) => books.users().set_history(&id, h).await,
            Err(e) => return e.into_response(),
        },
        Record::Preferences => match validate::preferences(&body) {
            Ok(p) => books.users().set_preferences(&id, p).await,
            Err(e) => return e.into_response(),
        },
    };
    match stored {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => BooksError::Store {
            detail: e.to_string(),
        }
        .into_response(),
    }
}

async fn get_record(st: AppState, raw_id: String, record: Record) -> Response {
    let id = match validate::user_id(&raw_id) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let books = match recommender(&st) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let profile = match books.users().profile(&id).await {
        Ok(p) => p.unwrap_or_default(),
        Err(e) => {
            return BooksError::Store {
                detail: e.to_string(),
            }
            .into_response()
        }
    };
    let body = match record {
        Record::History => profile.history.map(serde_json::to_value),
        Record::Preferences => profile
            .preferences
            .map(|p| serde_json::to_value(json!({"preferences": p}))),
    };
    match body {
        Some(Ok(value)) => Json(value).into_response(),
        Some(Err(e)) => BooksError::Store {
            detail: e.to_string(),
        }
        .into_response(),
        None => BooksError::NotFound {
            what: match record {
                Record::History => "reading history",
                Record::Preferences => "reading preferences",
            },
        }
        .into_response(),
    }
}

/// `PUT /api/users/{user_id}/history` (the shape of user_reading_history.json) → 204.
pub async fn put_history(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    put_record(st, id, body, Record::History).await
}

/// `PUT /api/users/{user_id}/preferences` (the shape of user_reading_preferences.json) → 204.
pub async fn put_preferences(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    put_record(st, id, body, Record::Preferences).await
}

/// `GET /api/users/{user_id}/history` → the stored history, or 404.
pub async fn get_history(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    get_record(st, id, Record::History).await
}

/// `GET /api/users/{user_id}/preferences` → the stored preferences, or 404.
pub async fn get_preferences(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    get_record(st, id, Record::Preferences).await
}
