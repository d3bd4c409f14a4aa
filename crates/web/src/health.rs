//! Liveness and cache status for operators.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

/// `GET /healthz`: the process is up and serving requests.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// `GET /_media_repo/v1/cache`: the cache backend and, for Redis, each shard and whether it is up.
pub async fn cache_status(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.cache.status().await)
}
