//! Semantic checks on a parsed `Config`: things YAML types cannot say (unique names,
//! parseable addresses, non-zero limits). Each problem is one message naming the key.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use url::Url;

use crate::cache::CacheBackend;
use crate::config::Config;
use crate::shard_addr::{redact_url, ShardAddr};

/// Longest DNS name the Matrix spec allows in a server name.
const MAX_DNS_NAME_LEN: usize = 255;

/// Upper bound on `server.shutdown_timeout_secs`: a stop that may take longer than an
/// hour is a typo, not a drain.
const MAX_SHUTDOWN_TIMEOUT_SECS: u64 = 3600;

/// Upper bound on `cache.redis.reshard_drain_secs`: a removed shard kept connected, and a
/// second lookup on misses of moved keys, for more than a day is a typo, not a drain (keys
/// nobody read for a day are not worth the round trips).
pub const MAX_RESHARD_DRAIN_SECS: u64 = 86_400;

/// Levels accepted in `logging.level`.
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Every problem in `config`, in document order; empty when it is valid.
pub(crate) fn problems(config: &Config) -> Vec<String> {
    let mut p = Problems::default();
    check_listeners(config, &mut p);
    check_homeservers(config, &mut p);
    check_admins(config, &mut p);
    check_storage(config, &mut p);
    check_media(config, &mut p);
    check_cache(config, &mut p);
    check_federation(config, &mut p);
    if let Err(why) = check_log_filter(&config.logging.level) {
        p.add(format!("logging.level `{}` {why}", config.logging.level));
    }
    p.0
}

#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, problem: String) {
        self.0.push(problem);
    }

    /// Flags a value where 0 would disable something that cannot be disabled.
    fn nonzero(&mut self, key: &str, value: u64) {
        if value == 0 {
            self.add(format!("{key} must be greater than 0"));
        }
    }
}

fn check_listeners(config: &Config, p: &mut Problems) {
    let server = parse_socket_addr(&config.server.bind);
    if server.is_none() {
        p.add(format!(
            "server.bind `{}` is not a socket address (expected ip:port, e.g. 127.0.0.1:8000 or [::]:8000)",
            config.server.bind
        ));
    }
    for (i, entry) in config.server.trusted_proxies.iter().enumerate() {
        if let Err(why) = entry.parse::<crate::Cidr>() {
            p.add(format!("server.trusted_proxies[{i}]: {why}"));
        }
    }
    if config.server.shutdown_timeout_secs > MAX_SHUTDOWN_TIMEOUT_SECS {
        p.add(format!(
            "server.shutdown_timeout_secs ({}) is larger than {MAX_SHUTDOWN_TIMEOUT_SECS} (one hour)",
            config.server.shutdown_timeout_secs
        ));
    }
    if let Some(bind) = &config.metrics.bind {
        match parse_socket_addr(bind) {
            None => p.add(format!(
                "metrics.bind `{bind}` is not a socket address (expected ip:port, e.g. 127.0.0.1:9000)"
            )),
            Some(metrics) if server.is_some_and(|server| same_socket(server, metrics)) => p.add(format!(
                "metrics.bind `{bind}` overlaps server.bind `{}`: the operators' listener needs a port of its own (or metrics.bind: null to turn it off)",
                config.server.bind
            )),
            Some(_) => {}
        }
    }
}

/// True when binding both would clash: same port, and the same IP or a wildcard on
/// either side (`0.0.0.0:9000` takes `127.0.0.1:9000` too).
fn same_socket(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn parse_socket_addr(text: &str) -> Option<SocketAddr> {
    text.trim().parse().ok()
}

/// `admins`: full Matrix user ids (`@localpart:server`) of configured homeservers, so a
/// typo is reported instead of silently granting nobody (or someone else) admin rights.
fn check_admins(config: &Config, p: &mut Problems) {
    for (i, admin) in config.admins.iter().enumerate() {
        let key = format!("admins[{i}] `{admin}`");
        let Some((localpart, server)) = admin
            .strip_prefix('@')
            .and_then(|rest| rest.split_once(':'))
        else {
            p.add(format!(
                "{key} is not a Matrix user id (expected @localpart:server, e.g. @admin:example.org)"
            ));
            continue;
        };
        if localpart.is_empty()
            || !localpart
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-/+".contains(&b))
        {
            p.add(format!(
                "{key}: the localpart may only hold a-z, 0-9 and ._=-/+"
            ));
        }
        if !config
            .homeservers
            .iter()
            .any(|hs| hs.name.eq_ignore_ascii_case(server))
        {
            p.add(format!(
                "{key} is not a user of a configured homeserver (homeservers[].name)"
            ));
        }
    }
}

fn check_homeservers(config: &Config, p: &mut Problems) {
    if config.homeservers.is_empty() {
        p.add("no homeserver configured (`homeservers` needs at least one entry)".to_owned());
    }
    let mut seen = HashSet::new();
    for (i, hs) in config.homeservers.iter().enumerate() {
        let key = format!("homeservers[{i}]");
        if let Err(why) = check_server_name(&hs.name) {
            p.add(format!(
                "{key}.name `{}` is not a valid Matrix server name: {why}",
                hs.name
            ));
        }
        if !seen.insert(hs.name.to_ascii_lowercase()) {
            p.add(format!(
                "{key}.name: duplicate homeserver name `{}`",
                hs.name
            ));
        }
        if let Some(path) = &hs.signing_key_path {
            if let Err(why) = mr_federation::SigningKey::from_file(path) {
                p.add(format!("{key}.signing_key_path {}: {why}", path.display()));
            }
        }
        match Url::parse(&hs.client_api_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
            Ok(_) => p.add(format!(
                "{key}.client_api_url `{}` must be an http:// or https:// URL",
                redact_url(&hs.client_api_url)
            )),
            Err(e) => p.add(format!(
                "{key}.client_api_url `{}` is not a valid URL ({e}), expected e.g. http://127.0.0.1:8008",
                redact_url(&hs.client_api_url)
            )),
        }
    }
}

/// The spec's grammar: `hostname [ ":" port ]`, hostname being an IPv4 literal, an
/// `[IPv6]` literal or a DNS name of letters, digits, `-` and `.`.
fn check_server_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".to_owned());
    }
    let (host, port) = if let Some(rest) = name.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err("`[` without a closing `]`".to_owned());
        };
        v6.parse::<Ipv6Addr>()
            .map_err(|_| format!("`{v6}` is not an IPv6 address"))?;
        match after {
            "" => return Ok(()),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Err(format!("unexpected `{after}` after the IPv6 address")),
            },
        }
    } else {
        if name.matches(':').count() > 1 {
            return Err("too many `:` (IPv6 goes in brackets, e.g. [::1]:8448)".to_owned());
        }
        match name.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(name), None),
        }
    };
    if let Some(host) = host {
        check_host(host)?;
    }
    if let Some(port) = port {
        let valid = (1..=5).contains(&port.len())
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p > 0);
        if !valid {
            return Err(format!("`{port}` is not a port number (1-65535)"));
        }
    }
    Ok(())
}

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the host part is empty".to_owned());
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return host
            .parse::<Ipv4Addr>()
            .map(|_| ())
            .map_err(|_| format!("`{host}` is not an IPv4 address"));
    }
    if host.len() > MAX_DNS_NAME_LEN {
        return Err(format!(
            "the host is longer than {MAX_DNS_NAME_LEN} characters"
        ));
    }
    match host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
    {
        Some(bad) => Err(format!(
            "`{bad}` is not allowed in a host name (letters, digits, `-` and `.` only, IPv6 goes in brackets)"
        )),
        None => Ok(()),
    }
}

fn check_storage(config: &Config, p: &mut Problems) {
    let db = &config.database;
    let scheme_ok = ["sqlite:", "postgres:", "postgresql:"]
        .iter()
        .any(|prefix| db.url.starts_with(prefix));
    if !scheme_ok {
        p.add(format!(
            "database.url `{}` must start with sqlite:, postgres:// or postgresql://",
            redact_url(&db.url)
        ));
    }
    p.nonzero("database.max_connections", db.max_connections.into());

    if config.datastores.is_empty() {
        p.add("no datastore configured (`datastores` needs at least one entry)".to_owned());
    }
    let mut seen = HashSet::new();
    for (i, store) in config.datastores.iter().enumerate() {
        if store.id.trim().is_empty() {
            p.add(format!("datastores[{i}].id is empty"));
        } else if !seen.insert(store.id.as_str()) {
            p.add(format!(
                "datastores[{i}].id: duplicate datastore id `{}`",
                store.id
            ));
        }
        if store.path.as_os_str().is_empty() {
            p.add(format!("datastores[{i}].path is empty"));
        }
    }
}

fn check_media(config: &Config, p: &mut Problems) {
    let up = &config.uploads;
    p.nonzero("uploads.max_bytes", up.max_bytes);
    p.nonzero(
        "uploads.max_pending_per_user",
        up.max_pending_per_user.into(),
    );
    p.nonzero("uploads.pending_expiry_secs", up.pending_expiry_secs);
    p.nonzero(
        "uploads.max_concurrent_per_user",
        up.max_concurrent_per_user.into(),
    );
    p.nonzero("uploads.max_concurrent", up.max_concurrent.into());
    p.nonzero("uploads.idle_timeout_secs", up.idle_timeout_secs);

    let down = &config.downloads;
    p.nonzero("downloads.max_bytes", down.max_bytes);
    p.nonzero("downloads.default_timeout_ms", down.default_timeout_ms);
    p.nonzero("downloads.max_timeout_ms", down.max_timeout_ms);
    if down.default_timeout_ms > down.max_timeout_ms {
        p.add(format!(
            "downloads.default_timeout_ms ({}) is larger than downloads.max_timeout_ms ({})",
            down.default_timeout_ms, down.max_timeout_ms
        ));
    }

    let thumbs = &config.thumbnails;
    p.nonzero("thumbnails.max_source_bytes", thumbs.max_source_bytes);
    p.nonzero("thumbnails.max_pixels", thumbs.max_pixels);
    if thumbs.enabled && thumbs.sizes.is_empty() {
        p.add("thumbnails.sizes is empty while thumbnails are enabled".to_owned());
    }
    for (i, size) in thumbs.sizes.iter().enumerate() {
        if size.width == 0 || size.height == 0 {
            p.add(format!(
                "thumbnails.sizes[{i}] is {}x{} (width and height must be greater than 0)",
                size.width, size.height
            ));
        }
    }

    p.nonzero(
        "auth.homeserver_timeout_ms",
        config.auth.homeserver_timeout_ms,
    );
}

fn check_federation(config: &Config, p: &mut Problems) {
    let fed = &config.federation;
    for (i, entry) in fed.allowed_networks.iter().enumerate() {
        if let Err(why) = entry.parse::<crate::Cidr>() {
            p.add(format!("federation.allowed_networks[{i}]: {why}"));
        }
    }
    if let Some(path) = &fed.extra_ca_file {
        match std::fs::read_to_string(path) {
            Ok(text) if text.contains("-----BEGIN CERTIFICATE-----") => {}
            Ok(_) => p.add(format!(
                "federation.extra_ca_file {} holds no PEM certificate",
                path.display()
            )),
            Err(e) => p.add(format!(
                "federation.extra_ca_file {} cannot be read: {e}",
                path.display()
            )),
        }
    }
    p.nonzero("federation.request_timeout_ms", fed.request_timeout_ms);
    p.nonzero("federation.connect_timeout_ms", fed.connect_timeout_ms);
    p.nonzero("federation.idle_timeout_ms", fed.idle_timeout_ms);
    p.nonzero(
        "federation.max_concurrent_fetches",
        fed.max_concurrent_fetches.into(),
    );
}

fn check_cache(config: &Config, p: &mut Problems) {
    let cache = &config.cache;
    p.nonzero("cache.max_object_bytes", cache.max_object_bytes);
    if cache.chunk_bytes == 0 {
        p.add("cache.chunk_bytes must be greater than 0".to_owned());
    } else if cache.chunk_bytes > cache.max_object_bytes {
        p.add(format!(
            "cache.chunk_bytes ({}) is larger than cache.max_object_bytes ({})",
            cache.chunk_bytes, cache.max_object_bytes
        ));
    }
    if cache.ttl_secs == Some(0) {
        p.add("cache.ttl_secs must be greater than 0 (leave it unset for no expiry)".to_owned());
    }
    p.nonzero("cache.memory.max_bytes", cache.memory.max_bytes);

    let redis = &cache.redis;
    if cache.backend == CacheBackend::Redis && redis.shards.is_empty() {
        p.add("cache.backend is `redis` but cache.redis.shards is empty".to_owned());
    }
    if redis.database_number < 0 {
        p.add(format!(
            "cache.redis.database_number ({}) must not be negative",
            redis.database_number
        ));
    }
    p.nonzero("cache.redis.connect_timeout_ms", redis.connect_timeout_ms);
    p.nonzero("cache.redis.response_timeout_ms", redis.response_timeout_ms);
    p.nonzero("cache.redis.health_interval_ms", redis.health_interval_ms);
    p.nonzero(
        "cache.redis.down_after_failures",
        redis.down_after_failures.into(),
    );
    p.nonzero(
        "cache.redis.connections_per_shard",
        u64::try_from(redis.connections_per_shard).unwrap_or(u64::MAX),
    );
    if redis.reshard_drain_secs > MAX_RESHARD_DRAIN_SECS {
        p.add(format!(
            "cache.redis.reshard_drain_secs ({}) is larger than {MAX_RESHARD_DRAIN_SECS} (one day)",
            redis.reshard_drain_secs
        ));
    }

    let mut seen = HashSet::new();
    for (i, shard) in redis.shards.iter().enumerate() {
        let key = format!("cache.redis.shards[{i}]");
        if shard.name.trim().is_empty() {
            p.add(format!("{key}.name is empty"));
        } else if !seen.insert(shard.name.as_str()) {
            p.add(format!("{key}.name: duplicate shard name `{}`", shard.name));
        }
        if let Err(why) = ShardAddr::parse(&shard.addr) {
            p.add(format!(
                "{key}.addr `{}` (shard `{}`) {why}",
                shard.redacted_addr(),
                shard.name
            ));
        }
    }
}

/// Accepts the simple EnvFilter forms: `level` and `target=level`, comma-separated.
/// Stricter than EnvFilter on purpose: it would take a misspelt level as a target name
/// and silently log nothing.
fn check_log_filter(filter: &str) -> Result<(), String> {
    let is_level = |s: &str| LOG_LEVELS.contains(&s.trim().to_ascii_lowercase().as_str());
    if filter.trim().is_empty() {
        return Err("is empty (use e.g. `info`)".to_owned());
    }
    for directive in filter.split(',').map(str::trim) {
        if directive.is_empty() {
            return Err("has an empty directive (stray comma)".to_owned());
        }
        match directive.split_once('=') {
            None if is_level(directive) => {}
            None => {
                return Err(format!(
                    "has `{directive}`, which is not a level ({})",
                    LOG_LEVELS.join(", ")
                ))
            }
            Some((target, level)) => {
                let target_ok = !target.trim().is_empty()
                    && target
                        .trim()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-' | '.'));
                if !target_ok {
                    return Err(format!(
                        "has `{directive}`, whose target `{target}` is not a module path such as mr_cache"
                    ));
                }
                if !is_level(level) {
                    return Err(format!(
                        "has `{directive}`, whose level `{level}` is not one of {}",
                        LOG_LEVELS.join(", ")
                    ));
                }
            }
        }
    }
    Ok(())
}
