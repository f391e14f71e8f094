//! sprout's HTTP serving layer: the OpenAI-compatible API over the engine's continuous-batching
//! scheduler, the catalogs API, with admission control, API keys, metrics and health endpoints.
//!
//! Handlers are async (axum on tokio); the engine runs on its own OS thread and talks to them
//! only through channels ([`sprout_engine::scheduler`]).

pub mod admission;
pub mod app;
pub mod auth;
pub mod bench;
pub mod books;
pub mod catalogs;
pub mod config;
pub mod eval;
pub mod leafresh;
pub mod metrics;
pub mod openai;
pub mod pipeline;
pub mod sessions;
pub mod state;
pub mod web;

pub use app::{run_blocking, start, RunningServer};
pub use catalogs::CatalogStore;
pub use config::{CatalogSource, ServerConfig};
pub use state::LoadedModel;
