//! The streaming mode's Server-Sent Events, exactly as the contract writes them, and the
//! [`TextRenderer`] that turns structured pieces into the human text the `challenge` events
//! carry.
//!
//! Every event is `event: <name>\ndata: <one JSON text>\n\n`. The JSON is UTF-8 as is (serde
//! writes non-ASCII unescaped, like Python's `ensure_ascii=False`) and always one line: JSON
//! must escape a newline inside a string, so a fragment "…니다.\n\n1. " travels as the six
//! characters `\n\n1. ` inside the JSON string and the client's `JSON.parse` gives back real
//! newlines. That is what the contract's "real newlines inside the string, never escape
//! sequences" asks for: the *decoded* fragment holds newline characters, never a backslash and
//! an `n` (the original's bug was forwarding the model's own JSON, whose `\n` then showed up
//! literally; seeds 001 and 003). Splitting a fragment over several `data:` lines instead would
//! put raw newlines inside the JSON string, which no JSON parser accepts.

use std::convert::Infallible;

use axum::http::HeaderValue;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};

use super::envelope::{Envelope, OFF_TOPIC_RECOMMEND};
use super::error::LeafreshError;
use super::recommendation::{Piece, RecommendEvent, Recommendation};

/// `message` of every `challenge` event.
pub const CHALLENGE_MESSAGE: &str = "토큰 생성";
/// `message` of the `close` event.
pub const CLOSE_MESSAGE: &str = "모든 챌린지 추천 완료";

/// The three event names of the contract, and sprout's opt-in `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A text fragment of the answer; many.
    Challenge,
    /// The structured answer; once, last.
    Close,
    /// A failure (or the off-topic answer); last.
    Error,
    /// sprout's extension, only when the URL asks for it (`usage=1`): the answer's token
    /// counts, just before `close`. Not an envelope.
    Usage,
}

impl EventKind {
    /// The `event:` field.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Challenge => "challenge",
            EventKind::Close => "close",
            EventKind::Error => "error",
            EventKind::Usage => "usage",
        }
    }
}

/// One Leafresh SSE event: its kind and its data line (a JSON envelope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafreshEvent {
    pub kind: EventKind,
    /// One JSON text, no newline.
    pub data: String,
}

impl LeafreshEvent {
    /// `event: challenge`, `{"status":200,"message":"토큰 생성","data":"<fragment>"}`.
    pub fn challenge(fragment: &str) -> Self {
        Self::new(EventKind::Challenge, 200, CHALLENGE_MESSAGE, fragment)
    }

    /// `event: close`, `{"status":200,"message":"모든 챌린지 추천 완료","data":{recommend,
    /// challenges:[{title,description,category}]}}`.
    pub fn close(recommendation: &Recommendation) -> Self {
        Self::new(
            EventKind::Close,
            200,
            CLOSE_MESSAGE,
            recommendation.close_data(),
        )
    }

    /// `event: error`, `{"status":<status>,"message":<message>,"data":null}`.
    pub fn error(error: &LeafreshError) -> Self {
        Self::new(
            EventKind::Error,
            error.status().as_u16(),
            &error.to_string(),
            (),
        )
    }

    /// The streaming off-topic answer, as the original sent it: an `error` event with status
    /// 200 whose message is the bot's sentence and whose data is null.
    pub fn off_topic() -> Self {
        Self::new(EventKind::Error, 200, OFF_TOPIC_RECOMMEND, ())
    }

    /// `event: usage`, `{"prompt_tokens","completion_tokens","cached_tokens","forced_tokens"}`.
    pub fn usage(usage: &sprout_engine::scheduler::Usage) -> Self {
        LeafreshEvent {
            kind: EventKind::Usage,
            data: crate::pipeline::usage_json(usage).to_string(),
        }
    }

    fn new(kind: EventKind, status: u16, message: &str, data: impl serde::Serialize) -> Self {
        let data = Envelope {
            status,
            message,
            data,
        }
        .to_json();
        LeafreshEvent { kind, data }
    }

    /// The event's bytes on the wire: `event: <name>\ndata: <json>\n\n`.
    pub fn encode(&self) -> String {
        format!("event: {}\ndata: {}\n\n", self.kind.name(), self.data)
    }

    /// The event for axum's [`Sse`], which writes the same bytes as [`Self::encode`].
    pub fn into_axum(self) -> Event {
        Event::default().event(self.kind.name()).data(self.data)
    }
}

/// A `text/event-stream` response with the contract's headers (`Cache-Control: no-cache`,
/// `X-Accel-Buffering: no`) and no keep-alive comments (the original sent none). Dropping the
/// response body (the client left) drops `events`, which must stop the generation.
pub fn sse_response<S>(events: S) -> Response
where
    S: Stream<Item = LeafreshEvent> + Send + 'static,
{
    let stream = events.map(|e| Ok::<_, Infallible>(e.into_axum()));
    let mut resp = Sse::new(stream).into_response();
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// Where the renderer is in the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Start,
    Recommend,
    Title(usize),
    Description(usize),
}

/// Turns the recommendation's pieces, in generation order, into the contract's text fragments:
/// the sentence, a blank line, `1. title`, a newline, the description, a blank line, `2. …`.
/// Separators are emitted with the first piece of the next part, so the fragments concatenate
/// to exactly that text, without a trailing newline. Newlines inside a piece become spaces: the
/// layout's newlines are the renderer's alone.
#[derive(Debug, Clone)]
pub struct TextRenderer {
    section: Section,
}

impl Default for TextRenderer {
    fn default() -> Self {
        Self::new()
    }
}

impl TextRenderer {
    /// A renderer at the start of an answer.
    pub fn new() -> Self {
        TextRenderer {
            section: Section::Start,
        }
    }

    /// The fragment for one piece (separator included), or None when there is nothing to send
    /// (an empty piece). A piece that goes back to an earlier part continues the current one
    /// (a producer bug, rendered without breaking the layout).
    pub fn push(&mut self, piece: &Piece) -> Option<String> {
        let (target, text) = match piece {
            Piece::Recommend(t) => (Section::Recommend, t),
            Piece::Title { index, text } => (Section::Title(*index), text),
            Piece::Description { index, text } => (Section::Description(*index), text),
        };
        let text = one_line(text);
        if text.is_empty() {
            return None;
        }
        let mut out = String::new();
        if self.advances_to(target) {
            self.separator(target, &mut out);
            self.section = target;
        }
        out.push_str(&text);
        Some(out)
    }

    /// The whole text of a finished recommendation, as the fragments of its pieces would
    /// concatenate.
    pub fn render(recommendation: &Recommendation) -> String {
        let mut r = TextRenderer::new();
        let mut out = String::new();
        let mut push = |p: Piece| out.extend(r.push(&p));
        push(Piece::Recommend(recommendation.recommend.clone()));
        for (index, c) in recommendation.challenges.iter().enumerate() {
            push(Piece::Title {
                index,
                text: c.title.clone(),
            });
            push(Piece::Description {
                index,
                text: c.description.clone(),
            });
        }
        out
    }

    /// The SSE event for one event of a streaming recommender: a `challenge` fragment, the
    /// `close` event, or the `error` event; None for a piece with nothing to show.
    pub fn event(&mut self, event: &RecommendEvent) -> Option<LeafreshEvent> {
        match event {
            RecommendEvent::Piece(p) => self.push(p).map(|f| LeafreshEvent::challenge(&f)),
            RecommendEvent::Done(r) => Some(LeafreshEvent::close(r)),
            RecommendEvent::Failed(e) => Some(LeafreshEvent::error(e)),
        }
    }

    fn advances_to(&self, target: Section) -> bool {
        fn rank(s: Section) -> (usize, usize) {
            match s {
                Section::Start => (0, 0),
                Section::Recommend => (1, 0),
                Section::Title(i) => (2 + i, 0),
                Section::Description(i) => (2 + i, 1),
            }
        }
        rank(target) > rank(self.section)
    }

    fn separator(&self, target: Section, out: &mut String) {
        let started = self.section != Section::Start;
        match target {
            Section::Start | Section::Recommend => {}
            Section::Title(i) => {
                if started {
                    out.push_str("\n\n");
                }
                out.push_str(&format!("{}. ", i + 1));
            }
            Section::Description(i) => {
                if self.section != Section::Title(i) {
                    // A description without its title: still number the item.
                    self.separator(Section::Title(i), out);
                }
                out.push('\n');
            }
        }
    }
}

/// The piece with its line breaks turned into spaces.
fn one_line(text: &str) -> String {
    if !text.contains(['\n', '\r']) {
        return text.to_string();
    }
    text.replace("\r\n", " ").replace(['\n', '\r'], " ")
}

#[cfg(test)]
#[path = "sse_tests.rs"]
mod tests;
