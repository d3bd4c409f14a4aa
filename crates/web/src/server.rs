//! Startup: open storage, start the cache, bind the listeners, watch for SIGHUP.

use std::path::PathBuf;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use mr_cache::Cache;
use mr_config::{redact_url, CacheBackend, Config};
use mr_storage::{Database, FileDatastore};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::{info, warn};

use crate::logging::LogLevelHandle;
use crate::metrics;
use crate::routes;
use crate::state::AppState;

/// How often expired async-upload reservations, orphan temp files and expired content
/// claims are removed.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(60);

/// Runs the media repo until it is told to stop (SIGINT/SIGTERM, SIGQUIT).
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    log_level: LogLevelHandle,
) -> anyhow::Result<()> {
    // First, before anything can take time: SIGHUP's default action would kill the process.
    let hangups = signal(SignalKind::hangup()).context("registering the SIGHUP handler")?;
    metrics::init();
    crate::media::slots::init_metrics();

    config
        .prepare_datastores()
        .context("preparing datastores")?;
    let db = Database::connect(&config.database.url, config.database.max_connections)
        .await
        .with_context(|| format!("opening the database {}", redact_url(&config.database.url)))?;
    let store = config
        .datastores
        .first()
        .context("no datastore configured")?;
    let datastore = FileDatastore::new(&store.id, store.path.clone())
        .with_context(|| format!("opening the datastore {}", store.path.display()))?;
    let cache = Cache::start(&config.cache);

    announce(&config, config_path.as_deref());
    let bind = config.server.bind.clone();
    let operators_bind = config.metrics.bind.clone();
    // On SIGTERM/SIGINT each listener stops accepting and gives in-flight requests this
    // long to finish before they are cut.
    let shutdown_timeout = config.server.shutdown_timeout_secs;
    let state = web::Data::new(AppState::new(
        config,
        config_path,
        db,
        datastore,
        cache,
        log_level,
    ));

    actix_web::rt::spawn(crate::reload::watch_sighup(hangups, state.clone()));
    actix_web::rt::spawn(housekeeping(state.clone()));
    let access_state = state.clone();
    actix_web::rt::spawn(async move {
        access_state
            .access
            .flush_periodically(access_state.db.clone())
            .await
    });
    let final_flush_state = state.clone();
    // Only now: until the listeners run there is nothing to drain, and a stop signal
    // during startup keeps its default action (end the process).
    let stops = StopSignals::register()?;

    let operators_server = match &operators_bind {
        Some(addr) => {
            let state = state.clone();
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(state.clone())
                    .configure(extractor_errors)
                    .configure(routes::configure_operators)
            })
            .workers(1)
            .tcp_nodelay(true)
            .disable_signals()
            .shutdown_timeout(shutdown_timeout)
            .bind(addr)
            .with_context(|| format!("binding the operators' listener (metrics.bind) {addr}"))?
            .run();
            Some(server)
        }
        None => None,
    };
    let main_server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(extractor_errors)
            .wrap(routes::default_headers())
            // Request metrics and spans are per route (`route_metrics.rs`).
            .configure(routes::configure)
    })
    // Without it, a body that is not ready together with the headers (a cache or file
    // read) waits for the client's delayed ACK: ~40 ms per small download (measured:
    // Redis-cached 4 KiB downloads went from 361 to 10,584 req/s).
    .tcp_nodelay(true)
    .disable_signals()
    .shutdown_timeout(shutdown_timeout)
    .bind(&bind)
    .with_context(|| format!("binding the listener {bind}"))?
    .run();
    info!(
        %bind,
        operators = operators_bind.as_deref().unwrap_or("off (metrics.bind: null)"),
        shutdown_timeout_secs = shutdown_timeout,
        "media-repo listening; /metrics and /_media_repo/v1/cache are only on the operators' listener"
    );

    let mut handles = vec![main_server.handle()];
    handles.extend(operators_server.as_ref().map(|server| server.handle()));
    actix_web::rt::spawn(stops.stop_servers_on_signal(handles, shutdown_timeout));

    match operators_server {
        Some(operators_server) => {
            let (main, operators) = futures_util::future::join(main_server, operators_server).await;
            main.context("main listener")?;
            operators.context("operators' listener")?;
        }
        None => main_server.await.context("main listener")?,
    }
    // Accesses noted since the last periodic flush.
    if let Err(err) = final_flush_state
        .access
        .flush(&final_flush_state.db, crate::media::now_ms())
        .await
    {
        warn!(error = %err, "recording last access at shutdown failed");
    }
    info!("media-repo stopped");
    Ok(())
}

/// SIGTERM/SIGINT (drain, then stop) and SIGQUIT (stop at once), handled here rather than
/// by each `HttpServer`: a server that gets a signal itself stops the whole actix System as
/// soon as its own workers are done, so the idle operators' listener would end the public
/// listener's drain at once.
struct StopSignals {
    term: Signal,
    int: Signal,
    quit: Signal,
}

impl StopSignals {
    fn register() -> anyhow::Result<StopSignals> {
        let register = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("registering the {name} handler"))
        };
        Ok(StopSignals {
            term: register(SignalKind::terminate(), "SIGTERM")?,
            int: register(SignalKind::interrupt(), "SIGINT")?,
            quit: register(SignalKind::quit(), "SIGQUIT")?,
        })
    }

    /// Waits for a stop signal, then stops every listener together: each refuses new
    /// connections and gives in-flight requests up to `shutdown_timeout_secs`.
    async fn stop_servers_on_signal(
        mut self,
        servers: Vec<ServerHandle>,
        shutdown_timeout_secs: u64,
    ) {
        let (name, graceful) = tokio::select! {
            _ = self.term.recv() => ("SIGTERM", true),
            _ = self.int.recv() => ("SIGINT", true),
            _ = self.quit.recv() => ("SIGQUIT", false),
        };
        if graceful {
            info!(
                signal = name,
                shutdown_timeout_secs,
                "stopping: in-flight requests may finish until the drain timeout"
            );
        } else {
            info!(signal = name, "stopping now");
        }
        futures_util::future::join_all(servers.iter().map(|server| server.stop(graceful))).await;
    }
}

/// Matrix JSON for what actix's extractors refuse (see `error.rs`).
fn extractor_errors(cfg: &mut web::ServiceConfig) {
    cfg.app_data(crate::error::query_config())
        .app_data(crate::error::path_config())
        .app_data(crate::error::json_config());
}

/// One line telling an operator where data goes and how to use Redis.
fn announce(config: &Config, config_path: Option<&std::path::Path>) {
    let datastore = config
        .datastores
        .first()
        .map(|d| d.path.display().to_string())
        .unwrap_or_default();
    let cache = match config.cache.backend {
        CacheBackend::None => "no cache".to_owned(),
        CacheBackend::Memory => format!(
            "in-memory cache of {} MiB",
            config.cache.memory.max_bytes >> 20
        ),
        CacheBackend::Redis => format!(
            "Redis cache over {} shard(s)",
            config.cache.redis.shards.len()
        ),
    };
    match config_path {
        Some(path) => info!(
            config = %path.display(),
            database = %redact_url(&config.database.url),
            %datastore,
            %cache,
            "media-repo starting; send SIGHUP to reload the config file"
        ),
        None => info!(
            "media-repo starting on the embedded default: metadata in {}, media files in {datastore}, {cache}. \
             To use Redis shards, write a config file (see config.sample.yaml: cache.backend: redis and \
             cache.redis.shards) and run `media-repo --config FILE`",
            redact_url(&config.database.url)
        ),
    }
}

/// Removes what expired: async-upload reservations nobody filled, temp files no running
/// upload owns (left by a crash of another process sharing the datastore), and content
/// claims of processes that crashed mid-upload.
async fn housekeeping(state: web::Data<AppState>) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_INTERVAL);
    loop {
        tick.tick().await;
        let datastore = state.datastore.clone();
        match tokio::task::spawn_blocking(move || datastore.remove_orphan_temp_files()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => info!(removed = n, "orphan temp files removed from the datastore"),
            Ok(Err(err)) => warn!(error = %err, "removing orphan temp files failed"),
            Err(err) => warn!(error = %err, "the temp file sweep did not run"),
        }
        let claims_before =
            crate::media::now_ms() - mr_storage::content::CLAIM_LIFETIME.as_millis() as i64;
        match state.db.delete_claims_made_before(claims_before).await {
            Ok(0) => {}
            Ok(n) => info!(removed = n, "expired content claims removed"),
            Err(err) => warn!(error = %err, "removing expired content claims failed"),
        }
        match state
            .db
            .delete_expired_pending(crate::media::now_ms())
            .await
        {
            Ok(0) => {}
            Ok(n) => info!(removed = n, "expired async-upload reservations removed"),
            Err(err) => warn!(error = %err, "removing expired async-upload reservations failed"),
        }
    }
}
