//! The emotion-based book recommender API (../shared/BOOKS_API.md): five questions, then three
//! books of the served `books` catalog with reasons, in the original's markdown, as JSON or as
//! SSE; users' reading history and preferences kept in the store.
//!
//! The request flows validate → service (reader, allowed books, retrieval, prompt, grammar) →
//! pipeline → routes (JSON body or events). FastAPI's error shapes come from [`error`].

pub mod error;
pub mod questions;
pub mod routes;
pub mod service;
pub mod validate;

pub use error::{BooksError, FieldError};
pub use service::{Books, Recommendation};
pub use validate::{Method, RecommendRequest};
