//! The OpenAI-compatible API: raw bodies, validation, errors, and the route handlers.

pub mod embeddings;
pub mod error;
pub mod routes;
pub mod types;
pub mod validate;
