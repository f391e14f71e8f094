//! Handlers of `GET /v1/catalogs`, `/v1/catalogs/{name}/items` and `/v1/catalogs/{name}/search`:
//! parse the query into a checked request, look the catalog up, answer; searches run on the
//! blocking pool so that a large catalog never stalls the async workers.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use sprout_recommend::Retriever;

use super::error::CatalogApiError;
use super::query::{PageRequest, SearchRequest};
use super::CatalogStore;
use crate::state::AppState;

/// `GET /v1/catalogs`: `{"data": [{"name", "items", "content_hash", "index_built"}]}`.
pub async fn list(State(st): State<AppState>) -> Response {
    let data: Vec<Value> = st
        .catalogs
        .iter()
        .map(|(name, served)| {
            let catalog = served.retriever.catalog();
            json!({
                "name": name,
                "items": catalog.len(),
                "content_hash": catalog.content_hash(),
                "index_built": served.index_built,
            })
        })
        .collect();
    Json(json!({"data": data})).into_response()
}

/// `GET /v1/catalogs/{name}/items?offset=&limit=`: `{"items": [...], "total": n}`.
pub async fn items(
    State(st): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    page(&st.catalogs, name, query.as_deref()).unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/catalogs/{name}/search?q=&k=&filter=key:value`:
/// `{"results": [{"item": {...}, "score": x}]}`, best first.
pub async fn search(
    State(st): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Response {
    run_search(&st.catalogs, name, query.as_deref())
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

fn retriever(
    store: &CatalogStore,
    name: Result<Path<String>, PathRejection>,
) -> Result<Arc<Retriever>, CatalogApiError> {
    let Path(name) = name.map_err(|r| CatalogApiError::Path(r.body_text()))?;
    match store.get(&name) {
        Some(served) => Ok(served.retriever.clone()),
        None => Err(CatalogApiError::UnknownCatalog {
            name,
            known: store.names().join(", "),
        }),
    }
}

fn page(
    store: &CatalogStore,
    name: Result<Path<String>, PathRejection>,
    query: Option<&str>,
) -> Result<Response, CatalogApiError> {
    let retriever = retriever(store, name)?;
    let request = PageRequest::parse(query)?;
    let all = retriever.catalog().items();
    let items: Vec<Value> = all
        .iter()
        .skip(request.offset)
        .take(request.limit)
        .map(|item| item.to_json())
        .collect();
    Ok(Json(json!({"items": items, "total": all.len()})).into_response())
}

async fn run_search(
    store: &CatalogStore,
    name: Result<Path<String>, PathRejection>,
    query: Option<&str>,
) -> Result<Response, CatalogApiError> {
    let retriever = retriever(store, name)?;
    let request = SearchRequest::parse(query)?;
    let results = tokio::task::spawn_blocking(move || {
        let hits = retriever.search(&request.q, request.k, &request.filters)?;
        let items = retriever.catalog().items();
        Ok::<_, sprout_recommend::RetrieveError>(
            // Hit indexes are checked against the catalog by the lexical index.
            hits.iter()
                .filter_map(|hit| {
                    Some(json!({"item": items.get(hit.index)?.to_json(), "score": hit.score}))
                })
                .collect::<Vec<Value>>(),
        )
    })
    .await
    .map_err(|e| CatalogApiError::Internal(format!("search task: {e}")))?
    .map_err(|e| CatalogApiError::Search(e.to_string()))?;
    Ok(Json(json!({"results": results})).into_response())
}
