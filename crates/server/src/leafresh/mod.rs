//! The Leafresh chatbot API's contract layer (../shared/LEAFRESH_API.md): fixed vocabularies,
//! raw and validated requests, the `{"status","message","data"}` envelope and its errors, the
//! SSE events and text layout, and the original's keyword rules for topic and category.
//!
//! The recommendation itself is not here: a recommender produces a [`Recommendation`] (or a
//! stream of [`RecommendEvent`]s) from a validated request, and the routes render it.
//!
//! [`Recommendation`]: recommendation::Recommendation
//! [`RecommendEvent`]: recommendation::RecommendEvent

pub mod constants;
pub mod envelope;
pub mod error;
pub mod query;
pub mod recommendation;
pub mod routes;
pub mod service;
pub mod sse;
pub mod topic;
pub mod types;
pub mod validate;

pub use constants::{Category, Location, WorkType};
pub use error::{Field, LeafreshError};
pub use recommendation::{Challenge, Piece, RecommendEvent, Recommendation};
pub use validate::{BaseInfoRequest, FreeTextRequest};
