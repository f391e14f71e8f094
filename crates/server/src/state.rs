//! The state every handler shares: configuration, the loaded model behind its scheduler (set
//! once loading is done), the catalogs, admission and metrics. Below every route module, so that routes,
//! auth and the app import it and not each other.

use std::sync::{Arc, OnceLock};

use sprout_engine::bundle::PromptFormat;
use sprout_engine::engine::Engine;
use sprout_engine::grammar::GrammarCompiler;
use sprout_engine::scheduler::SchedulerHandle;

use crate::admission::Admission;
use crate::catalogs::CatalogStore;
use crate::config::ServerConfig;
use crate::metrics::Metrics;

/// What the model loader hands the server.
pub struct LoadedModel {
    /// Names the model answers to in requests; the first is listed by /v1/models.
    pub names: Vec<String>,
    pub prompt: PromptFormat,
    pub engine: Engine,
}

/// A loaded model behind its scheduler.
pub struct Serving {
    pub models: Vec<String>,
    pub prompt: PromptFormat,
    pub scheduler: SchedulerHandle,
    /// Grammars compiled against this model's vocabulary.
    pub grammars: Arc<GrammarCompiler>,
    pub created: u64,
}

/// The embedding model, with the names requests call it by.
pub struct EmbedderServing {
    pub names: Vec<String>,
    pub model: Arc<sprout_recommend::EngineEmbedder>,
}

/// State shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ServerConfig>,
    pub serving: Arc<OnceLock<Arc<Serving>>>,
    /// The catalogs served; loaded before the server answers anything.
    pub catalogs: Arc<CatalogStore>,
    /// The embedder, when one is configured (loaded before the catalogs, which use it).
    pub embedder: Option<Arc<EmbedderServing>>,
    /// Conversation state (SQLite in the data dir by default).
    pub sessions: Arc<dyn crate::sessions::SessionStore>,
    /// The Leafresh recommender over the `eco` catalog.
    pub leafresh: Option<Arc<crate::leafresh::service::Leafresh>>,
    /// The book recommender over the `books` catalog, when one is served.
    pub books: Option<Arc<crate::books::Books>>,
    pub admission: Arc<Admission>,
    pub metrics: Arc<Metrics>,
}
