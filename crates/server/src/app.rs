//! The axum application: routes, shared state, the catalogs (loaded before the listener
//! serves), model loading in the background (so `/health` answers at once and `/ready` tells
//! when the model is up), and graceful shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use sprout_engine::grammar::GrammarCompiler;
use sprout_engine::scheduler::{Health, Scheduler, SchedulerConfig, SchedulerHandle};
use tokio::sync::{oneshot, watch};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::admission::Admission;
use crate::catalogs::{self, CatalogStore};
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::openai::error::ApiError;
use crate::openai::routes;
use crate::state::{AppState, EmbedderServing, LoadedModel, Serving};

/// The router over `state`.
pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(routes::chat_completions))
        .route("/v1/completions", post(routes::completions))
        .route("/v1/models", get(routes::models))
        .route(
            "/v1/embeddings",
            post(crate::openai::embeddings::embeddings),
        )
        .route("/v1/catalogs", get(catalogs::routes::list))
        .route("/v1/catalogs/{name}/items", get(catalogs::routes::items))
        .route("/v1/catalogs/{name}/search", get(catalogs::routes::search))
        .layer(DefaultBodyLimit::max(state.config.body_limit_bytes))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_api_key,
        ));
    // The Leafresh contract's paths, as its Spring back end calls them (no API key: it never
    // sent one; put sprout behind that back end or a proxy).
    let leafresh = Router::new()
        .route(
            "/ai/chatbot/recommendation/base-info",
            post(crate::leafresh::routes::post_base_info)
                .get(crate::leafresh::routes::get_base_info),
        )
        .route(
            "/ai/chatbot/recommendation/free-text",
            post(crate::leafresh::routes::post_free_text)
                .get(crate::leafresh::routes::get_free_text),
        )
        .layer(DefaultBodyLimit::max(state.config.body_limit_bytes));
    // The book recommender's paths, as its FastAPI original served them (no API key either).
    let books = Router::new()
        .route("/api/questions", get(crate::books::routes::questions))
        .route(
            "/api/recommend-books",
            post(crate::books::routes::recommend_books),
        )
        .route(
            "/api/users/{user_id}/history",
            axum::routing::put(crate::books::routes::put_history)
                .get(crate::books::routes::get_history),
        )
        .route(
            "/api/users/{user_id}/preferences",
            axum::routing::put(crate::books::routes::put_preferences)
                .get(crate::books::routes::get_preferences),
        )
        .layer(DefaultBodyLimit::max(state.config.body_limit_bytes));
    let mut app = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        // The chat page: public, like /health (it asks for the key when /v1 wants one).
        .merge(crate::web::router())
        .merge(leafresh)
        .merge(books)
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .merge(v1)
        .fallback(
            |req: Request| async move { ApiError::RouteNotFound(req.uri().path().to_string()) },
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ));
    if let Some(cors) = cors_layer(&state.config.cors_allow_origins) {
        app = app.layer(cors);
    }
    app.with_state(state)
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(Any);
    if origins.iter().any(|o| o == "*") {
        return Some(layer.allow_origin(Any));
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(layer.allow_origin(AllowOrigin::list(list)))
}

/// Ready once the model serves; the catalogs are loaded before the listener answers at all.
async fn ready(State(st): State<AppState>) -> Response {
    let unavailable = |body| (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    match st.serving.get().map(|s| s.scheduler.health()) {
        Some(Health::Serving) => Json(json!({"status": "ready"})).into_response(),
        Some(Health::Down { reason }) => unavailable(json!({"status": "down", "reason": reason})),
        None => unavailable(json!({"status": "loading"})),
    }
}

async fn metrics(State(st): State<AppState>) -> Response {
    let sched = st.serving.get().map(|s| s.scheduler.stats());
    let mut body = st.metrics.render(sched, st.admission.in_flight());
    st.catalogs.write_metrics(&mut body);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response()
}

async fn count_requests(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_string();
    let resp = next.run(req).await;
    st.metrics.request(&route, resp.status().as_u16());
    resp
}

/// A server listening in this process.
pub struct RunningServer {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    loaded: Option<oneshot::Receiver<Result<(), String>>>,
    /// Told once the engine thread has stopped for good, with the reason.
    engine_down: watch::Receiver<Option<String>>,
    state: AppState,
}

impl RunningServer {
    /// Waits for the model to load; its error if loading failed.
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        match self.loaded.take() {
            Some(rx) => rx
                .await
                .context("model loader vanished")?
                .map_err(anyhow::Error::msg),
            None => Ok(()),
        }
    }

    /// Resolves when the engine thread has stopped after a fault it could not recover from,
    /// with the reason; never resolves while it serves.
    pub async fn engine_down(&mut self) -> String {
        match self.engine_down.wait_for(Option::is_some).await {
            Ok(r) => r.clone().unwrap_or_default(),
            Err(_) => std::future::pending().await,
        }
    }

    /// Scheduler handle once the model is loaded (for tests and metrics).
    pub fn scheduler(&self) -> Option<SchedulerHandle> {
        self.state.serving.get().map(|s| s.scheduler.clone())
    }

    /// Stops accepting connections, lets in-flight requests finish (up to the grace period),
    /// then stops the scheduler.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let grace = Duration::from_millis(self.state.config.shutdown_grace_ms);
        let result = tokio::time::timeout(grace, self.task).await;
        if let Some(s) = self.state.serving.get() {
            s.scheduler.close();
        }
        match result {
            Ok(joined) => Ok(joined.context("server task")??),
            Err(_) => {
                tracing::warn!("in-flight requests still running after the shutdown grace period");
                Ok(())
            }
        }
    }
}

/// Loads the sentence embedder of `dir` (Q8_0: within cosine 0.9997 of F32 on the reference
/// set, and faster), named by its directory and `embed`.
fn load_embedder(dir: &std::path::Path) -> anyhow::Result<Arc<EmbedderServing>> {
    let t = std::time::Instant::now();
    let opts = sprout_engine::embedding::EmbedOptions {
        quantize: Some(sprout_engine::quant::GgmlType::Q8_0),
        threads: None,
    };
    let model = sprout_engine::embedding::EmbeddingModel::open(dir, &opts)
        .with_context(|| format!("loading the embedder {}", dir.display()))?;
    let mut names = vec!["embedding".to_string()];
    if let Some(n) = dir.file_name().and_then(|n| n.to_str()) {
        names.insert(0, n.to_string());
        if let Some(short) = n.strip_suffix("-300m") {
            names.push(short.to_string());
        }
    }
    tracing::info!(embedder = %model.id(), seconds = t.elapsed().as_secs_f64(), "embedder loaded");
    Ok(Arc::new(EmbedderServing {
        names,
        model: Arc::new(sprout_recommend::EngineEmbedder::new(model)),
    }))
}

/// Binds, loads the catalogs, starts serving, and loads the model in the background.
///
/// The catalogs load before anything is answered (their indexes are usually reused from disk,
/// so this is quick), so a server that answers has every catalog; the model may still be loading.
pub async fn start(
    config: ServerConfig,
    scheduler: SchedulerConfig,
    load: Box<dyn FnOnce() -> anyhow::Result<LoadedModel> + Send>,
) -> anyhow::Result<RunningServer> {
    let addr = format!("{}:{}", config.host, config.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| {
            format!(
                "binding {addr} (another server on that port? stop it, or pick another port with \
                 --port N or SPROUT_PORT)"
            )
        })?;
    let addr = listener.local_addr()?;
    let data_dir = config
        .data_dir
        .clone()
        .unwrap_or_else(|| sprout_engine::registry::data_dir(None));
    let sources = config.catalogs.clone();
    // The embedder loads first: with it every catalog gets hybrid (BM25 + dense) search.
    let embedder = match config.embedder.clone() {
        None => None,
        Some(dir) => Some(
            tokio::task::spawn_blocking(move || load_embedder(&dir))
                .await
                .context("embedder loader")??,
        ),
    };
    let dense: Option<Arc<dyn sprout_recommend::Embedder>> = embedder
        .as_ref()
        .map(|e: &Arc<EmbedderServing>| e.model.clone() as _);
    let (catalog_dir, session_dir) = (data_dir.clone(), data_dir.clone());
    let catalogs =
        tokio::task::spawn_blocking(move || CatalogStore::build(&catalog_dir, &sources, dense))
            .await
            .context("catalog loader")?
            .context("loading catalogs")?;
    let sessions_cfg = config.sessions.clone();
    let store = Arc::new(
        tokio::task::spawn_blocking(move || {
            crate::sessions::SqliteSessionStore::open(&session_dir, &sessions_cfg)
        })
        .await
        .context("session store")?
        .context("opening the session store")?,
    );
    let sessions: Arc<dyn crate::sessions::SessionStore> = store.clone();
    let books = catalogs.get("books").map(|served| {
        Arc::new(crate::books::Books::new(
            served.retriever.clone(),
            store as Arc<dyn crate::sessions::UserStore>,
        ))
    });
    let leafresh = catalogs.get("eco").map(|eco| {
        Arc::new(crate::leafresh::service::Leafresh::new(
            eco.retriever.clone(),
            sessions.clone(),
        ))
    });
    let state = AppState {
        admission: Admission::new(config.max_concurrent + config.max_queue),
        config: Arc::new(config),
        serving: Arc::new(OnceLock::new()),
        catalogs: Arc::new(catalogs),
        embedder,
        sessions,
        leafresh,
        books,
        metrics: Arc::new(Metrics::default()),
    };
    let (loaded_tx, loaded_rx) = oneshot::channel();
    let (down_tx, down_rx) = watch::channel(None);
    let serving = state.serving.clone();
    let jump_forward = state.config.jump_forward;
    tokio::task::spawn_blocking(move || {
        let result = load().and_then(|m| {
            let tokenizer = m.prompt.tokenizer.clone();
            let vocab = m.engine.model().config.vocab_size;
            let grammars = GrammarCompiler::new(tokenizer.clone(), vocab, jump_forward)?;
            let (handle, join) = Scheduler::spawn(m.engine, tokenizer, scheduler)?;
            // The supervisor: when the engine thread ends while still wanted, the process
            // must go (a supervisor restarts it); /ready already answers 503.
            let watched = handle.health_probe();
            std::thread::Builder::new()
                .name("sprout-supervisor".into())
                .spawn(move || {
                    let _ = join.join();
                    let reason = match watched.health() {
                        Health::Down { reason } => reason,
                        Health::Serving => "the engine thread ended".to_string(),
                    };
                    let _ = down_tx.send(Some(reason));
                })?;
            let created = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let _ = serving.set(Arc::new(Serving {
                models: m.names,
                prompt: m.prompt,
                scheduler: handle,
                grammars: Arc::new(grammars),
                created,
            }));
            Ok(())
        });
        if let Err(e) = &result {
            tracing::error!(error = %e, "model failed to load");
        }
        let _ = loaded_tx.send(result.map_err(|e| format!("{e:#}")));
    });
    let (shutdown, mut shutdown_rx) = watch::channel(false);
    let app = router(state.clone());
    let task = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service())
            .with_graceful_shutdown(async move {
                let _ = shutdown_rx.wait_for(|stop| *stop).await;
            })
            .await
    });
    Ok(RunningServer {
        addr,
        shutdown,
        task,
        loaded: Some(loaded_rx),
        engine_down: down_rx,
        state,
    })
}

/// How long a server whose engine is down keeps answering (503 on /ready) before it exits.
const ENGINE_DOWN_EXIT_DELAY: Duration = Duration::from_secs(1);

/// Runs the server until Ctrl-C or SIGTERM, or until its engine is down (then with an error,
/// so the process exits non-zero), on a runtime of its own.
pub fn run_blocking(
    config: ServerConfig,
    scheduler: SchedulerConfig,
    load: Box<dyn FnOnce() -> anyhow::Result<LoadedModel> + Send>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut server = start(config, scheduler, load).await?;
        eprintln!(
            "sprout listening on http://{} (loading the model)",
            server.addr
        );
        if let Err(e) = server.wait_ready().await {
            let _ = server.shutdown().await;
            return Err(e);
        }
        eprintln!("sprout ready on http://{}", server.addr);
        tokio::select! {
            _ = shutdown_signal() => {
                eprintln!("shutting down: finishing in-flight requests");
                server.shutdown().await
            }
            reason = server.engine_down() => {
                eprintln!("the engine is down ({reason}); exiting so that a supervisor restarts sprout");
                // A moment for health checks to see /ready fail and for in-flight requests to
                // receive their errors before the listener closes.
                tokio::time::sleep(ENGINE_DOWN_EXIT_DELAY).await;
                let _ = server.shutdown().await;
                anyhow::bail!("engine down: {reason}")
            }
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
