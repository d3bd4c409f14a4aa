//! Liveness, readiness and cache status.
//!
//! `/healthz` says the process answers; `/readyz` says it can do its job: the metadata
//! database and the datastore are usable. The cache is reported but never makes it fail,
//! because no request fails when the cache does.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde_json::json;
use tracing::warn;

use crate::state::AppState;

/// Bound on each readiness check: a probe must answer in time even when the database
/// hangs (a pool without free connections would otherwise wait `ACQUIRE_TIMEOUT`).
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`: the process is up and serving requests.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 `{"status": "ready", "database": "ok", "datastore": "ok", "cache":
/// {...}}`, or 503 Matrix JSON (`M_UNKNOWN`, an `error` naming what is unusable, and the
/// same detail fields). The causes go to the log, not to the client.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (database, datastore, cache) = futures_util::future::join3(
        check_database(&state),
        check_datastore(&state),
        state.cache.status(),
    )
    .await;
    let state_of = |ok: bool| if ok { "ok" } else { "unusable" };
    let unusable: Vec<&str> = [("database", database), ("datastore", datastore)]
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(part, _)| part)
        .collect();
    if unusable.is_empty() {
        return HttpResponse::Ok().json(json!({
            "status": "ready",
            "database": "ok",
            "datastore": "ok",
            "cache": cache,
        }));
    }
    HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE).json(json!({
        "errcode": "M_UNKNOWN",
        "error": format!("Not ready: the {} is unusable", unusable.join(" and the ")),
        "status": "unready",
        "database": state_of(database),
        "datastore": state_of(datastore),
        "cache": cache,
    }))
}

async fn check_database(state: &AppState) -> bool {
    match tokio::time::timeout(READY_CHECK_TIMEOUT, state.db.ping()).await {
        Ok(Ok(())) => true,
        Ok(Err(err)) => {
            warn!(error = %err, "readiness: the database is unusable");
            false
        }
        Err(_) => {
            warn!(timeout = ?READY_CHECK_TIMEOUT, "readiness: the database did not answer in time");
            false
        }
    }
}

/// The filesystem work runs on a blocking thread, never on this actix worker.
async fn check_datastore(state: &AppState) -> bool {
    let datastore = state.datastore.clone();
    let check = tokio::task::spawn_blocking(move || datastore.check_writable());
    match tokio::time::timeout(READY_CHECK_TIMEOUT, check).await {
        Ok(Ok(Ok(()))) => true,
        Ok(Ok(Err(err))) => {
            warn!(error = %err, "readiness: the datastore is unusable");
            false
        }
        Ok(Err(err)) => {
            warn!(error = %err, "readiness: the datastore check did not run");
            false
        }
        Err(_) => {
            warn!(timeout = ?READY_CHECK_TIMEOUT, "readiness: the datastore did not answer in time");
            false
        }
    }
}

/// `GET /_media_repo/v1/cache`: the cache backend and, for Redis, each shard and whether it is up.
pub async fn cache_status(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.cache.status().await)
}
