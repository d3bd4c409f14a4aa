//! What changed between the running config and a reloaded one, so each part of the
//! process is told only what concerns it, and the operator learns what needs a restart.

use std::collections::HashMap;
use std::fmt::Display;

use crate::cache::ShardConfig;
use crate::config::Config;
use crate::shard_addr::redact_url;
use crate::storage::{DatastoreConfig, DatastoreKind};

/// Changes in the Redis shard list, matched by shard name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardDiff {
    /// Shards only in the new config, in its order.
    pub added: Vec<ShardConfig>,
    /// Names of shards only in the old config, in its order.
    pub removed: Vec<String>,
    /// Shards in both whose address changed, with the new address, in the new order.
    pub changed: Vec<ShardConfig>,
}

/// The difference between two configs. `Default` is "nothing changed".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// `Some` when shards were added, removed or re-addressed.
    pub shards: Option<ShardDiff>,
    /// Redis timeouts, health checks, connections, database number or reshard drain changed.
    pub redis_settings_changed: bool,
    /// `cache.max_object_bytes`, `chunk_bytes`, `ttl_secs` or `memory.max_bytes` changed.
    pub cache_limits_changed: bool,
    /// The homeserver list (names or URLs) changed.
    pub homeservers_changed: bool,
    /// Any `uploads.*` key changed.
    pub uploads_changed: bool,
    /// Any `downloads.*` key changed (including the legacy freeze).
    pub downloads_changed: bool,
    /// Any `thumbnails.*` key changed.
    pub thumbnails_changed: bool,
    /// Any `auth.*` key changed.
    pub auth_changed: bool,
    /// `admins` changed (read per request: applies at once).
    pub admins_changed: bool,
    /// `logging.level` changed.
    pub logging_changed: bool,
    /// Changes a reload cannot apply, e.g. `server.bind (127.0.0.1:8000 -> 0.0.0.0:8000)`;
    /// the old value keeps running until a restart. Passwords are hidden.
    pub restart_required: Vec<String>,
}

impl ConfigDiff {
    /// True when the two configs are the same.
    pub fn is_empty(&self) -> bool {
        *self == ConfigDiff::default()
    }
}

/// A setting a reload cannot apply: how the operator sees it (passwords hidden), and how a
/// reloaded config keeps the running value, so that what the process reports as its
/// configuration is what it runs with. The one list of such settings.
struct RestartOnly {
    key: &'static str,
    show: fn(&Config) -> String,
    keep_running: fn(running: &Config, reloaded: &mut Config),
}

const RESTART_ONLY: &[RestartOnly] = &[
    RestartOnly {
        key: "server.bind",
        show: |c| c.server.bind.clone(),
        keep_running: |o, n| n.server.bind.clone_from(&o.server.bind),
    },
    RestartOnly {
        key: "server.trusted_proxies",
        show: |c| format!("{:?}", c.server.trusted_proxies),
        keep_running: |o, n| {
            n.server
                .trusted_proxies
                .clone_from(&o.server.trusted_proxies)
        },
    },
    RestartOnly {
        key: "server.shutdown_timeout_secs",
        show: |c| c.server.shutdown_timeout_secs.to_string(),
        keep_running: |o, n| n.server.shutdown_timeout_secs = o.server.shutdown_timeout_secs,
    },
    RestartOnly {
        key: "federation",
        show: |c| format!("{:?}", c.federation),
        keep_running: |o, n| n.federation.clone_from(&o.federation),
    },
    RestartOnly {
        key: "homeservers[].signing_key_path",
        show: |c| format!("{:?}", signing_keys(&c.homeservers)),
        // Keys are loaded at start: a homeserver keeps the key it started with, and one
        // added by the reload has none until a restart.
        keep_running: |o, n| {
            for hs in &mut n.homeservers {
                hs.signing_key_path = o
                    .homeservers
                    .iter()
                    .find(|running| running.name == hs.name)
                    .and_then(|running| running.signing_key_path.clone());
            }
        },
    },
    RestartOnly {
        key: "metrics.bind",
        show: |c| show_option(&c.metrics.bind),
        keep_running: |o, n| n.metrics.bind.clone_from(&o.metrics.bind),
    },
    RestartOnly {
        key: "database.url",
        show: |c| redact_url(&c.database.url),
        keep_running: |o, n| n.database.url.clone_from(&o.database.url),
    },
    RestartOnly {
        key: "database.max_connections",
        show: |c| c.database.max_connections.to_string(),
        keep_running: |o, n| n.database.max_connections = o.database.max_connections,
    },
    RestartOnly {
        key: "cache.backend",
        show: |c| c.cache.backend.name().to_owned(),
        keep_running: |o, n| n.cache.backend = o.cache.backend,
    },
    RestartOnly {
        key: "datastores",
        show: |c| show_datastores(&c.datastores),
        keep_running: |o, n| n.datastores.clone_from(&o.datastores),
    },
];

/// `reloaded` with the running values of every setting only a restart can change (see
/// [`ConfigDiff::restart_required`]).
pub fn keep_restart_only_settings(running: &Config, mut reloaded: Config) -> Config {
    for setting in RESTART_ONLY {
        (setting.keep_running)(running, &mut reloaded);
    }
    reloaded
}

/// Compares a running config with a reloaded one.
pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    let (oc, nc) = (&old.cache, &new.cache);
    let (or, nr) = (&oc.redis, &nc.redis);
    let restart_required = RESTART_ONLY
        .iter()
        .filter_map(|setting| {
            let (was, now) = ((setting.show)(old), (setting.show)(new));
            (was != now).then(|| format!("{} ({was} -> {now})", setting.key))
        })
        .collect();

    ConfigDiff {
        shards: shard_diff(&or.shards, &nr.shards),
        redis_settings_changed: or.database_number != nr.database_number
            || or.connect_timeout_ms != nr.connect_timeout_ms
            || or.response_timeout_ms != nr.response_timeout_ms
            || or.health_interval_ms != nr.health_interval_ms
            || or.down_after_failures != nr.down_after_failures
            || or.connections_per_shard != nr.connections_per_shard
            || or.reshard_drain_secs != nr.reshard_drain_secs,
        cache_limits_changed: oc.max_object_bytes != nc.max_object_bytes
            || oc.chunk_bytes != nc.chunk_bytes
            || oc.ttl_secs != nc.ttl_secs
            || oc.memory != nc.memory,
        homeservers_changed: old.homeservers != new.homeservers,
        uploads_changed: old.uploads != new.uploads,
        downloads_changed: old.downloads != new.downloads,
        thumbnails_changed: old.thumbnails != new.thumbnails,
        auth_changed: old.auth != new.auth,
        admins_changed: old.admins != new.admins,
        logging_changed: old.logging != new.logging,
        restart_required,
    }
}

impl ShardDiff {
    /// What changed from the shard list `old` to `new`, matched by name (empty when
    /// nothing did): the one comparison of shard lists, used by reloads and by the ring.
    pub fn between(old: &[ShardConfig], new: &[ShardConfig]) -> ShardDiff {
        shard_diff(old, new).unwrap_or_default()
    }

    /// True when names were added or removed (not only addresses changed).
    pub fn names_changed(&self) -> bool {
        !self.added.is_empty() || !self.removed.is_empty()
    }
}

fn shard_diff(old: &[ShardConfig], new: &[ShardConfig]) -> Option<ShardDiff> {
    let old_by_name: HashMap<&str, &ShardConfig> =
        old.iter().map(|s| (s.name.as_str(), s)).collect();
    let new_names: HashMap<&str, ()> = new.iter().map(|s| (s.name.as_str(), ())).collect();
    let mut diff = ShardDiff::default();
    for shard in new {
        match old_by_name.get(shard.name.as_str()) {
            None => diff.added.push(shard.clone()),
            Some(previous) if previous.addr != shard.addr => diff.changed.push(shard.clone()),
            Some(_) => {}
        }
    }
    diff.removed = old
        .iter()
        .filter(|s| !new_names.contains_key(s.name.as_str()))
        .map(|s| s.name.clone())
        .collect();
    (diff != ShardDiff::default()).then_some(diff)
}

/// `None` is shown as `off`: the only optional key shown here is `metrics.bind`, whose
/// `null` turns the operators' listener off.
/// Each homeserver's signing key file, for the restart check.
fn signing_keys(homeservers: &[crate::HomeserverConfig]) -> Vec<(String, Option<String>)> {
    homeservers
        .iter()
        .map(|hs| {
            let path = hs
                .signing_key_path
                .as_ref()
                .map(|p| p.display().to_string());
            (hs.name.clone(), path)
        })
        .collect()
}

fn show_option<T: Display>(value: &Option<T>) -> String {
    value
        .as_ref()
        .map_or_else(|| "off".to_owned(), ToString::to_string)
}

fn show_datastores(stores: &[DatastoreConfig]) -> String {
    let items: Vec<String> = stores
        .iter()
        .map(|s| {
            let kind = match s.kind {
                DatastoreKind::File => "file",
            };
            format!("{}={kind}:{}", s.id, s.path.display())
        })
        .collect();
    format!("[{}]", items.join(", "))
}
