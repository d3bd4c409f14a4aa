//! Configuration reload on SIGHUP.
//!
//! A new file is parsed and validated first; if that fails the running configuration stays
//! and the reason is logged. A valid one is diffed against the running one and each part
//! that changed is told: the shard list goes to the ring actor (through the cache), auth and
//! limits take effect for the next request, the log filter is swapped in place. Parts that
//! only a restart can change keep their running values, and the log says so.

use mr_config::{diff, keep_restart_only_settings, Config, ConfigDiff};
use tokio::signal::unix::Signal;
use tracing::{error, info, warn};

use crate::metrics::{CONFIG_GENERATION, CONFIG_RELOADS};
use crate::state::AppState;

/// What one reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    Applied,
    Unchanged,
    Rejected,
    NoConfigFile,
}

/// Reloads on every SIGHUP until the process ends. The signal stream is registered by the
/// caller before the server starts, so an early SIGHUP never takes the default action (exit).
pub async fn watch_sighup(mut hangups: Signal, state: actix_web::web::Data<AppState>) {
    while hangups.recv().await.is_some() {
        let outcome = reload(&state).await;
        info!(?outcome, "SIGHUP handled");
    }
}

/// Reads the config file again and applies what changed.
pub async fn reload(state: &AppState) -> ReloadOutcome {
    let Some(path) = state.config_path.clone() else {
        warn!("SIGHUP ignored: running on the embedded default configuration; start with --config FILE to reload");
        return ReloadOutcome::NoConfigFile;
    };
    let loaded = tokio::task::spawn_blocking(move || Config::load(&path)).await;
    let new = match loaded {
        Ok(Ok(config)) => config,
        Ok(Err(err)) => {
            error!(error = %err, "config reload rejected; the running configuration stays in force");
            CONFIG_RELOADS.with_label_values(&["rejected"]).inc();
            return ReloadOutcome::Rejected;
        }
        Err(err) => {
            error!(error = %err, "config reload failed to run; the running configuration stays in force");
            CONFIG_RELOADS.with_label_values(&["rejected"]).inc();
            return ReloadOutcome::Rejected;
        }
    };
    let old = state.config();
    let changes = diff(&old, &new);
    if changes.is_empty() {
        info!("config reloaded: nothing changed");
        CONFIG_RELOADS.with_label_values(&["unchanged"]).inc();
        return ReloadOutcome::Unchanged;
    }
    let new = keep_restart_only_settings(&old, new);
    apply(state, &changes, &new);
    state.replace_config(new);
    CONFIG_RELOADS.with_label_values(&["applied"]).inc();
    CONFIG_GENERATION.inc();
    ReloadOutcome::Applied
}

/// Tells each running part about its changed settings.
fn apply(state: &AppState, changes: &ConfigDiff, new: &Config) {
    for item in &changes.restart_required {
        warn!(setting = %item, "changed in the config file, but only takes effect after a restart");
    }
    if let Some(shards) = &changes.shards {
        info!(
            added = ?shards.added.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            removed = ?shards.removed,
            changed = ?shards.changed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            "applying the new Redis shard list"
        );
    }
    if changes.shards.is_some() || changes.redis_settings_changed || changes.cache_limits_changed {
        state.cache.apply_config(&new.cache);
    }
    if changes.homeservers_changed || changes.auth_changed {
        state.auth.apply_config(new);
    }
    if changes.logging_changed {
        if let Err(err) = state.log_level.set(&new.logging.level) {
            warn!(error = %err, "could not apply the new log level");
        }
    }
    info!("config reloaded and applied");
}
