//! Tests of mr-config through its public API: defaults, parse and validation errors (with
//! the words an operator reads), the Go-style redis block, address handling, diffing,
//! loading from disk, and the sample config file in the repository root.

use std::path::PathBuf;

use mr_config::{
    diff, CacheBackend, Config, ConfigError, DatastoreKind, ShardConfig, ShardDiff, ThumbnailMethod,
};

const SAMPLE: &str = include_str!("../../../config.sample.yaml");

fn parse(yaml: &str) -> Config {
    Config::from_yaml_str(yaml, "test.yaml").unwrap_or_else(|e| panic!("{yaml:?}: {e}"))
}

/// The `Invalid` message for a document that parses but must not validate.
fn invalid(yaml: &str) -> String {
    match Config::from_yaml_str(yaml, "test.yaml") {
        Err(ConfigError::Invalid(msg)) => {
            assert!(msg.starts_with("test.yaml: "), "origin missing: {msg}");
            msg
        }
        other => panic!("expected Invalid for {yaml:?}, got {other:?}"),
    }
}

/// `(path_in_doc, message)` of a document that must not parse.
fn parse_error(yaml: &str) -> (String, String) {
    match Config::from_yaml_str(yaml, "test.yaml") {
        Err(ConfigError::Parse {
            origin,
            path_in_doc,
            message,
        }) => {
            assert_eq!(origin, "test.yaml");
            (path_in_doc, message)
        }
        other => panic!("expected Parse for {yaml:?}, got {other:?}"),
    }
}

fn shard(name: &str, addr: &str) -> ShardConfig {
    ShardConfig {
        name: name.to_owned(),
        addr: addr.to_owned(),
    }
}

fn redis_yaml(shards: &[(&str, &str)]) -> String {
    let mut yaml = "cache:\n  backend: redis\n  redis:\n    shards:\n".to_owned();
    for (name, addr) in shards {
        yaml.push_str(&format!("      - {{name: \"{name}\", addr: \"{addr}\"}}\n"));
    }
    yaml
}

// ---------------------------------------------------------------- defaults

#[test]
fn defaults_match_the_agreed_values() {
    let c = Config::embedded_default();
    assert_eq!(c, Config::default());
    assert_eq!(c.server.bind, "127.0.0.1:8000");
    assert_eq!(c.server.shutdown_timeout_secs, 30);
    assert_eq!(c.metrics.bind.as_deref(), Some("127.0.0.1:9000"));
    assert_eq!(c.homeservers.len(), 1);
    assert_eq!(c.homeservers[0].name, "localhost:8008");
    assert_eq!(c.homeservers[0].client_api_url, "http://127.0.0.1:8008");
    assert_eq!(c.database.url, "sqlite://./data/media-repo.db");
    assert_eq!(c.database.max_connections, 10);
    assert_eq!(c.datastores.len(), 1);
    assert_eq!(c.datastores[0].id, "default");
    assert_eq!(c.datastores[0].kind, DatastoreKind::File);
    assert_eq!(c.datastores[0].path, PathBuf::from("./data/media"));
    assert_eq!(c.uploads.max_bytes, 104_857_600);
    assert_eq!(c.uploads.max_pending_per_user, 10);
    assert_eq!(c.uploads.pending_expiry_secs, 86_400);
    assert!(c.uploads.warm_cache);
    assert_eq!(c.downloads.max_bytes, 104_857_600);
    assert_eq!(c.downloads.default_timeout_ms, 20_000);
    assert_eq!(c.downloads.max_timeout_ms, 60_000);
    assert!(c.downloads.legacy_freeze.enabled);
    assert_eq!(c.downloads.legacy_freeze.after_ms, None);
    assert!(c.thumbnails.enabled);
    assert_eq!(c.thumbnails.max_source_bytes, 20 * 1024 * 1024);
    assert_eq!(c.thumbnails.max_pixels, 32_000_000);
    let sizes: Vec<_> = c
        .thumbnails
        .sizes
        .iter()
        .map(|s| (s.width, s.height, s.method))
        .collect();
    assert_eq!(
        sizes,
        [
            (32, 32, ThumbnailMethod::Crop),
            (96, 96, ThumbnailMethod::Crop),
            (320, 240, ThumbnailMethod::Scale),
            (640, 480, ThumbnailMethod::Scale),
            (800, 600, ThumbnailMethod::Scale),
        ]
    );
    assert_eq!(c.auth.whoami_cache_secs, 60);
    assert_eq!(c.auth.homeserver_timeout_ms, 5_000);
    assert_eq!(c.cache.backend, CacheBackend::Memory);
    assert_eq!(c.cache.max_object_bytes, 67_108_864);
    assert_eq!(c.cache.chunk_bytes, 1_048_576);
    assert_eq!(c.cache.ttl_secs, None);
    assert_eq!(c.cache.memory.max_bytes, 268_435_456);
    let r = &c.cache.redis;
    assert!(r.shards.is_empty());
    assert_eq!(r.database_number, 0);
    assert_eq!(r.connect_timeout_ms, 250);
    assert_eq!(r.response_timeout_ms, 500);
    assert_eq!(r.health_interval_ms, 250);
    assert_eq!(r.down_after_failures, 2);
    assert_eq!(r.connections_per_shard, 2);
    assert_eq!(r.reshard_drain_secs, 3600);
    assert_eq!(c.logging.level, "info");
    c.validate().unwrap();
}

#[test]
fn empty_and_comment_only_documents_are_all_defaults() {
    for doc in ["", "\n\n", "# nothing here\n   # still nothing\n", "---\n"] {
        assert_eq!(parse(doc), Config::default(), "{doc:?}");
    }
}

#[test]
fn partial_sections_keep_defaults_for_missing_keys() {
    let c = parse("cache:\n  redis:\n    connect_timeout_ms: 100\nuploads: {max_bytes: 5}\n");
    assert_eq!(c.cache.redis.connect_timeout_ms, 100);
    assert_eq!(c.cache.redis.response_timeout_ms, 500);
    assert_eq!(c.cache.backend, CacheBackend::Memory);
    assert_eq!(c.uploads.max_bytes, 5);
    assert_eq!(c.uploads.max_pending_per_user, 10);
    assert_eq!(c.homeservers, Config::default().homeservers);
}

#[test]
fn empty_sections_are_their_defaults() {
    let c = parse(
        "server: {}\nmetrics: {}\ndatabase: {}\nuploads: {}\ndownloads: {legacy_freeze: {}}\nthumbnails: {}\nauth: {}\ncache: {memory: {}, redis: {}}\nlogging: {}\n",
    );
    assert_eq!(c, Config::default());
}

#[test]
fn a_document_that_is_not_a_mapping_is_a_parse_error() {
    let (path, msg) = parse_error("hello\n");
    assert_eq!(path, ".");
    assert!(msg.contains("must be a mapping of settings"), "{msg}");
    assert!(msg.contains("not a string"), "{msg}");
}

#[test]
fn a_full_redis_config_parses() {
    let c = parse(
        "cache:\n  backend: redis\n  ttl_secs: 3600\n  redis:\n    database_number: 2\n    shards:\n      - name: a\n        addr: redis://10.0.0.1:6379\n      - name: b\n        addr: 10.0.0.2:6380\n",
    );
    assert_eq!(c.cache.backend, CacheBackend::Redis);
    assert_eq!(c.cache.ttl_secs, Some(3600));
    assert_eq!(
        c.cache.redis.shards,
        [
            shard("a", "redis://10.0.0.1:6379"),
            shard("b", "10.0.0.2:6380")
        ]
    );
    assert_eq!(c.cache.redis.database_number, 2);
}

// ---------------------------------------------------------------- parse errors

#[test]
fn unknown_key_names_the_key_its_parent_and_the_expected_keys() {
    let (path, msg) = parse_error("cache:\n  redis:\n    shardz: []\n");
    assert_eq!(path, "cache.redis");
    assert!(msg.contains("`shardz`"), "{msg}");
    assert!(msg.contains("cache.redis"), "{msg}");
    assert!(msg.contains("expected one of"), "{msg}");
    assert!(msg.contains("expected one of shards"), "{msg}");
    assert!(msg.contains("line 3, column 5"), "{msg}");

    let err = Config::from_yaml_str("cache:\n  redis:\n    shardz: []\n", "/etc/mr.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("/etc/mr.yaml: cache.redis: unknown field `shardz`"),
        "{err}"
    );
}

#[test]
fn unknown_key_at_top_level_and_in_list_items() {
    let (path, msg) = parse_error("bogus: 1\n");
    assert_eq!(path, ".");
    assert!(msg.contains("top level"), "{msg}");
    assert!(msg.contains("`bogus`"), "{msg}");
    assert!(msg.contains("cache, "), "{msg}");

    let (path, msg) = parse_error(
        "cache:\n  redis:\n    shards:\n      - name: a\n        addr: h:1\n        password: x\n",
    );
    assert_eq!(path, "cache.redis.shards[0]");
    assert!(msg.contains("`password`"), "{msg}");
    assert!(msg.contains("expected one of name, addr"), "{msg}");
    assert!(msg.contains("line 6"), "{msg}");

    let (path, msg) = parse_error("redis:\n  enabled: true\n  database_number: 1\n");
    assert_eq!(path, "redis");
    assert!(msg.contains("`database_number`"), "{msg}");
    assert!(msg.contains("databaseNumber"), "{msg}");
}

#[test]
fn wrong_types_and_values_name_their_key() {
    let (path, msg) = parse_error("uploads:\n  max_bytes: -1\n");
    assert_eq!(path, "uploads.max_bytes");
    assert!(msg.contains("invalid u64"), "{msg}");
    assert!(msg.contains("line 2, column 14"), "{msg}");

    let (path, msg) = parse_error("cache: {backend: rediz}\n");
    assert_eq!(path, "cache.backend");
    assert!(msg.contains("`rediz`"), "{msg}");
    assert!(msg.contains("none, memory, redis"), "{msg}");

    let (path, msg) = parse_error("homeservers:\n  - name: example.org\n");
    assert_eq!(path, "homeservers[0]");
    assert!(msg.contains("missing field `client_api_url`"), "{msg}");

    let (path, msg) = parse_error("datastores:\n  - {id: a, kind: s4, path: /x}\n");
    assert_eq!(path, "datastores[0].kind");
    assert!(msg.contains("`s4`"), "{msg}");
}

#[test]
fn broken_yaml_is_a_parse_error_with_a_line() {
    let (_, msg) = parse_error("server: [1\n");
    assert!(msg.contains("unclosed bracket"), "{msg}");
    assert!(msg.contains("line 1, column 9"), "{msg}");
    let (_, msg) = parse_error("server:\n  bind: \"127.0.0.1:8000\"\n bad indent: 1\n");
    assert!(msg.contains("line 3"), "{msg}");
}

// ---------------------------------------------------------------- validation

#[test]
fn no_homeserver() {
    let msg = invalid("homeservers: []\n");
    assert!(msg.contains("no homeserver configured"), "{msg}");
}

#[test]
fn duplicate_homeserver_names() {
    let msg = invalid(
        "homeservers:\n  - {name: example.org, client_api_url: 'http://a'}\n  - {name: Example.org, client_api_url: 'http://b'}\n",
    );
    assert!(
        msg.contains("homeservers[1].name: duplicate homeserver name `Example.org`"),
        "{msg}"
    );
}

#[test]
fn homeserver_names_follow_the_matrix_grammar() {
    for good in [
        "example.org",
        "localhost:8008",
        "matrix-1.example.org:8448",
        "1.2.3.4",
        "1.2.3.4:8448",
        "[::1]",
        "[2001:db8::1]:8448",
    ] {
        let yaml = format!("homeservers:\n  - {{name: '{good}', client_api_url: 'http://h'}}\n");
        parse(&yaml);
    }
    for (bad, why) in [
        ("", "empty"),
        ("exa mple.org", "not allowed in a host name"),
        ("example.org:99999", "not a port number"),
        ("example.org:", "not a port number"),
        ("example.org:0", "not a port number"),
        ("::1", "IPv6 goes in brackets"),
        ("[::1", "closing"),
        ("[nope]:80", "not an IPv6 address"),
        ("300.1.1.1", "not an IPv4 address"),
        ("user@example.org", "not allowed"),
    ] {
        let yaml = format!("homeservers:\n  - {{name: '{bad}', client_api_url: 'http://h'}}\n");
        let msg = invalid(&yaml);
        assert!(
            msg.contains("homeservers[0].name") && msg.contains("not a valid Matrix server name"),
            "{bad}: {msg}"
        );
        assert!(msg.contains(why), "{bad}: expected {why:?} in {msg}");
    }
}

#[test]
fn client_api_url_must_be_http() {
    let msg = invalid("homeservers:\n  - {name: example.org, client_api_url: 'ftp://h'}\n");
    assert!(
        msg.contains("homeservers[0].client_api_url `ftp://h` must be an http:// or https:// URL"),
        "{msg}"
    );
    let msg =
        invalid("homeservers:\n  - {name: example.org, client_api_url: 'matrix.example.org'}\n");
    assert!(msg.contains("is not a valid URL"), "{msg}");
    parse("homeservers:\n  - {name: example.org, client_api_url: 'https://matrix.example.org/'}\n");
}

#[test]
fn duplicate_and_empty_shard_names() {
    let msg = invalid(&redis_yaml(&[("a", "h:1"), ("b", "h:2"), ("a", "h:3")]));
    assert!(
        msg.contains("cache.redis.shards[2].name: duplicate shard name `a`"),
        "{msg}"
    );
    let msg = invalid(&redis_yaml(&[("  ", "h:1")]));
    assert!(msg.contains("cache.redis.shards[0].name is empty"), "{msg}");
}

#[test]
fn unparseable_shard_addresses() {
    for (addr, why) in [
        ("", "is empty"),
        ("localhost", "has no port"),
        ("localhost:port", "invalid port `port`"),
        ("localhost:70000", "invalid port"),
        ("http://h:6379", "scheme `http://`"),
        ("redis://:6379", "empty host"),
        ("redis://h:6379/abc", "path `/abc`"),
        ("::1:6379", "brackets"),
        ("[zz]:6379", "invalid IPv6"),
        ("bad host:1", "invalid host"),
    ] {
        let msg = invalid(&redis_yaml(&[("s", addr)]));
        assert!(msg.contains("cache.redis.shards[0].addr"), "{addr}: {msg}");
        assert!(msg.contains("(shard `s`)"), "{addr}: {msg}");
        assert!(msg.contains(why), "{addr}: expected {why:?} in {msg}");
    }
}

#[test]
fn unparseable_shard_address_message_hides_the_password() {
    let msg = invalid(&redis_yaml(&[("s", "redis://:hunter2@h:6379/x")]));
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(msg.contains("redis://:***@h:6379/x"), "{msg}");
}

#[test]
fn redis_backend_needs_shards() {
    let msg = invalid("cache:\n  backend: redis\n");
    assert!(
        msg.contains("cache.backend is `redis` but cache.redis.shards is empty"),
        "{msg}"
    );
    // Shards listed while another backend is chosen are fine (kept for later).
    parse("cache:\n  backend: none\n  redis:\n    shards: [{name: a, addr: 'h:1'}]\n");
}

#[test]
fn signing_keys_are_checked_when_the_config_is() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.key");
    let key = mr_federation::SigningKey::from_seed("a_bcd", [3u8; 32]).unwrap();
    std::fs::write(&good, key.to_key_file_line()).unwrap();
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "ed25519 a_bcd not-base64!").unwrap();
    let missing = dir.path().join("missing.key");
    let with_key = |path: &std::path::Path| {
        format!(
            "homeservers:\n  - name: example.org\n    client_api_url: https://matrix.example.org\n    signing_key_path: \"{}\"\n",
            path.display()
        )
    };
    let config = parse(&with_key(&good));
    assert_eq!(
        config.homeservers[0].signing_key_path.as_deref(),
        Some(good.as_path())
    );
    for path in [&bad, &missing] {
        let msg = invalid(&with_key(path));
        assert!(msg.contains("homeservers[0].signing_key_path"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
    // Without one, the default: no remote fetching for that homeserver.
    assert_eq!(parse("{}\n").homeservers[0].signing_key_path, None);
}

#[test]
fn the_federation_block_is_validated() {
    let config = parse("federation:\n  allowed_networks: [\"127.0.0.1\", \"10.0.0.0/8\"]\n");
    assert_eq!(config.federation.allowed_ranges().len(), 2);
    let msg = invalid(
        "federation:\n  allowed_networks: [\"example.org\"]\n  extra_ca_file: /nonexistent/ca.pem\n  request_timeout_ms: 0\n",
    );
    assert!(msg.contains("federation.allowed_networks[0]"), "{msg}");
    assert!(msg.contains("federation.extra_ca_file"), "{msg}");
    assert!(
        msg.contains("federation.request_timeout_ms must be greater than 0"),
        "{msg}"
    );
}

#[test]
fn trusted_proxies_are_addresses_or_ranges() {
    let config =
        parse("server:\n  trusted_proxies: [\"127.0.0.1\", \"10.0.0.0/8\", \"::1/128\"]\n");
    let ranges = config.server.trusted_proxy_ranges();
    assert_eq!(ranges.len(), 3);
    assert!(ranges[1].contains("10.9.8.7".parse().unwrap()));
    assert!(config.server.trusted_proxies.len() == 3);
    let msg = invalid("server:\n  trusted_proxies: [\"proxy.example.org\", \"10.0.0.0/40\"]\n");
    assert!(msg.contains("server.trusted_proxies[0]"), "{msg}");
    assert!(msg.contains("server.trusted_proxies[1]"), "{msg}");
    // Default: nobody's forwarded headers are believed.
    assert!(parse("{}\n").server.trusted_proxies.is_empty());
}

#[test]
fn zero_limits_are_rejected() {
    let keys = [
        ("database", "max_connections"),
        ("uploads", "max_bytes"),
        ("uploads", "max_pending_per_user"),
        ("uploads", "pending_expiry_secs"),
        ("uploads", "max_concurrent_per_user"),
        ("uploads", "max_concurrent"),
        ("uploads", "idle_timeout_secs"),
        ("downloads", "max_bytes"),
        ("downloads", "default_timeout_ms"),
        ("downloads", "max_timeout_ms"),
        ("thumbnails", "max_source_bytes"),
        ("thumbnails", "max_pixels"),
        ("auth", "homeserver_timeout_ms"),
        ("cache", "max_object_bytes"),
    ];
    for (section, key) in keys {
        let msg = invalid(&format!("{section}:\n  {key}: 0\n"));
        assert!(
            msg.contains(&format!("{section}.{key} must be greater than 0")),
            "{msg}"
        );
    }
    for key in [
        "connect_timeout_ms",
        "response_timeout_ms",
        "health_interval_ms",
        "down_after_failures",
        "connections_per_shard",
    ] {
        let msg = invalid(&format!("cache:\n  redis:\n    {key}: 0\n"));
        assert!(
            msg.contains(&format!("cache.redis.{key} must be greater than 0")),
            "{msg}"
        );
    }
    let msg = invalid("cache:\n  redis:\n    reshard_drain_secs: 86401\n");
    assert!(
        msg.contains("cache.redis.reshard_drain_secs (86401) is larger than 86400"),
        "{msg}"
    );
    let c = parse("cache:\n  redis:\n    reshard_drain_secs: 0\n");
    assert_eq!(
        c.cache.redis.reshard_drain_secs, 0,
        "0 turns the fallback off"
    );
    c.validate().unwrap();
    let msg = invalid("cache:\n  memory:\n    max_bytes: 0\n");
    assert!(
        msg.contains("cache.memory.max_bytes must be greater than 0"),
        "{msg}"
    );
    let msg = invalid("cache:\n  ttl_secs: 0\n");
    assert!(
        msg.contains("cache.ttl_secs must be greater than 0"),
        "{msg}"
    );
    let msg = invalid("thumbnails:\n  sizes: [{width: 0, height: 10, method: crop}]\n");
    assert!(msg.contains("thumbnails.sizes[0] is 0x10"), "{msg}");
    let msg = invalid("thumbnails:\n  sizes: []\n");
    assert!(msg.contains("thumbnails.sizes is empty"), "{msg}");
    parse("thumbnails:\n  enabled: false\n  sizes: []\n");
    let msg = invalid("downloads:\n  default_timeout_ms: 90000\n");
    assert!(
        msg.contains(
            "downloads.default_timeout_ms (90000) is larger than downloads.max_timeout_ms (60000)"
        ),
        "{msg}"
    );
    let msg = invalid("cache:\n  redis:\n    database_number: -1\n");
    assert!(
        msg.contains("cache.redis.database_number (-1) must not be negative"),
        "{msg}"
    );
    // A whoami cache of 0 means "always ask": allowed.
    parse("auth:\n  whoami_cache_secs: 0\n");
}

#[test]
fn chunk_bytes_bounds() {
    let msg = invalid("cache:\n  chunk_bytes: 0\n");
    assert!(
        msg.contains("cache.chunk_bytes must be greater than 0"),
        "{msg}"
    );
    let msg = invalid("cache:\n  max_object_bytes: 1000\n  chunk_bytes: 1001\n");
    assert!(
        msg.contains("cache.chunk_bytes (1001) is larger than cache.max_object_bytes (1000)"),
        "{msg}"
    );
    parse("cache:\n  max_object_bytes: 1000\n  chunk_bytes: 1000\n");
}

#[test]
fn database_url_scheme() {
    let msg = invalid("database:\n  url: 'mysql://root:pw@h/db'\n");
    assert!(msg.contains("database.url `mysql://root:***@h/db` must start with sqlite:, postgres:// or postgresql://"), "{msg}");
    assert!(!msg.contains(":pw@"), "{msg}");
    for ok in [
        "sqlite::memory:",
        "sqlite:///tmp/x.db",
        "postgres://postgres@127.0.0.1:5432/test",
        "postgresql://u:p@h/db",
    ] {
        parse(&format!("database:\n  url: '{ok}'\n"));
    }
}

#[test]
fn bind_addresses_must_be_socket_addresses() {
    let msg = invalid("server:\n  bind: 'localhost:8000'\n");
    assert!(
        msg.contains("server.bind `localhost:8000` is not a socket address"),
        "{msg}"
    );
    let msg = invalid("metrics:\n  bind: '9000'\n");
    assert!(
        msg.contains("metrics.bind `9000` is not a socket address"),
        "{msg}"
    );
    let msg = invalid("server: {bind: '0.0.0.0:8000'}\nmetrics: {bind: '0.0.0.0:8000'}\n");
    assert!(
        msg.contains("metrics.bind `0.0.0.0:8000` overlaps server.bind"),
        "{msg}"
    );
    // A wildcard public listener on 9000 would take the default operators' port too.
    let msg = invalid("server: {bind: '0.0.0.0:9000'}\n");
    assert!(
        msg.contains("metrics.bind `127.0.0.1:9000` overlaps server.bind `0.0.0.0:9000`"),
        "{msg}"
    );
    parse("server: {bind: '127.0.0.2:9000'}\n");
    let c = parse("server: {bind: '[::]:8000'}\nmetrics: {bind: '127.0.0.1:9100'}\n");
    assert_eq!(c.metrics.bind.as_deref(), Some("127.0.0.1:9100"));
}

#[test]
fn datastores_must_exist_and_be_unique() {
    let msg = invalid("datastores: []\n");
    assert!(msg.contains("no datastore configured"), "{msg}");
    let msg = invalid(
        "datastores:\n  - {id: a, path: /x}\n  - {id: a, path: /y}\n  - {id: '', path: ''}\n",
    );
    assert!(
        msg.contains("datastores[1].id: duplicate datastore id `a`"),
        "{msg}"
    );
    assert!(msg.contains("datastores[2].id is empty"), "{msg}");
    assert!(msg.contains("datastores[2].path is empty"), "{msg}");
    let c = parse("datastores:\n  - {id: a, path: /x}\n");
    assert_eq!(c.datastores[0].kind, DatastoreKind::File);
}

#[test]
fn logging_level_forms() {
    for ok in [
        "info",
        "WARN",
        "off",
        "info,mr_cache=debug",
        "mr_web::handlers=trace, warn",
    ] {
        parse(&format!("logging: {{level: '{ok}'}}\n"));
    }
    for (bad, why) in [
        ("verbose", "`verbose`, which is not a level"),
        ("", "is empty"),
        ("info,,debug", "empty directive"),
        ("mr_cache=loud", "level `loud` is not one of"),
        ("=info", "target `` is not a module path"),
        ("my crate=info", "target `my crate`"),
    ] {
        let msg = invalid(&format!("logging: {{level: '{bad}'}}\n"));
        assert!(msg.contains("logging.level"), "{bad}: {msg}");
        assert!(msg.contains(why), "{bad}: expected {why:?} in {msg}");
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let msg = invalid("homeservers: []\ndatastores: []\ncache:\n  backend: redis\n");
    assert!(msg.contains("no homeserver"), "{msg}");
    assert!(msg.contains("no datastore"), "{msg}");
    assert!(msg.contains("cache.redis.shards is empty"), "{msg}");
    assert_eq!(msg.matches("; ").count(), 2, "{msg}");
}

#[test]
fn validate_checks_configs_built_in_code() {
    let mut c = Config::default();
    c.cache.redis.shards = vec![shard("a", "nope")];
    match c.validate() {
        Err(ConfigError::Invalid(msg)) => assert!(msg.contains("has no port"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------- the Go-style block

#[test]
fn go_style_redis_block_enables_redis() {
    let c = parse(
        "redis:\n  enabled: true\n  databaseNumber: 3\n  shards:\n    - name: server1\n      addr: ':7000'\n    - name: server2\n      addr: '10.0.0.2:7001'\n",
    );
    assert_eq!(c.cache.backend, CacheBackend::Redis);
    assert_eq!(c.cache.redis.database_number, 3);
    assert_eq!(
        c.cache.redis.shards,
        [shard("server1", ":7000"), shard("server2", "10.0.0.2:7001")]
    );
    assert_eq!(
        c.cache.redis.shards[0].connection_url(3),
        "redis://127.0.0.1:7000/3"
    );
    assert_eq!(
        c.cache.redis.shards[1].connection_url(3),
        "redis://10.0.0.2:7001/3"
    );
    // Other cache settings still come from `cache`.
    assert_eq!(c.cache.redis.response_timeout_ms, 500);
}

#[test]
fn go_style_block_works_with_cache_settings_and_explicit_redis_backend() {
    let c = parse(
        "cache:\n  backend: redis\n  redis:\n    response_timeout_ms: 900\nredis:\n  enabled: true\n  shards: [{name: a, addr: 'h:1'}]\n",
    );
    assert_eq!(c.cache.backend, CacheBackend::Redis);
    assert_eq!(c.cache.redis.response_timeout_ms, 900);
    assert_eq!(c.cache.redis.shards, [shard("a", "h:1")]);
    // Shards from cache.redis with a Go block that only sets the database number.
    let c = parse(
        "cache:\n  redis:\n    shards: [{name: a, addr: 'h:1'}]\nredis:\n  enabled: true\n  databaseNumber: 5\n",
    );
    assert_eq!(c.cache.backend, CacheBackend::Redis);
    assert_eq!(c.cache.redis.database_number, 5);
}

#[test]
fn disabled_go_style_block_is_ignored() {
    let c = parse(
        "redis:\n  enabled: false\n  databaseNumber: 4\n  shards: [{name: a, addr: ':7000'}]\n",
    );
    assert_eq!(c.cache.backend, CacheBackend::Memory);
    assert!(c.cache.redis.shards.is_empty());
    assert_eq!(c.cache.redis.database_number, 0);
}

#[test]
fn go_style_block_conflicts() {
    let msg = invalid(
        "cache:\n  redis:\n    shards: [{name: a, addr: 'h:1'}]\nredis:\n  enabled: true\n  shards: [{name: b, addr: 'h:2'}]\n",
    );
    assert!(
        msg.contains("`redis.shards`") && msg.contains("`cache.redis.shards`"),
        "{msg}"
    );
    assert!(msg.contains("keep one list"), "{msg}");
    let msg = invalid(
        "cache:\n  backend: memory\nredis:\n  enabled: true\n  shards: [{name: a, addr: 'h:1'}]\n",
    );
    assert!(
        msg.contains("`redis.enabled` is true but `cache.backend` is `memory`"),
        "{msg}"
    );
    let msg = invalid(
        "cache:\n  redis:\n    database_number: 1\nredis:\n  enabled: true\n  databaseNumber: 2\n  shards: [{name: a, addr: 'h:1'}]\n",
    );
    assert!(
        msg.contains("`redis.databaseNumber` (2) and `cache.redis.database_number` (1) disagree"),
        "{msg}"
    );
    let msg = invalid("redis:\n  enabled: true\n");
    assert!(msg.contains("cache.redis.shards is empty"), "{msg}");
    // The Go block's shards get the same checks as cache.redis.shards.
    let msg = invalid(
        "redis:\n  enabled: true\n  shards: [{name: a, addr: 'h:1'}, {name: a, addr: 'nope'}]\n",
    );
    assert!(msg.contains("duplicate shard name `a`"), "{msg}");
    assert!(msg.contains("has no port"), "{msg}");
}

// ---------------------------------------------------------------- addresses

#[test]
fn connection_url_normalisation() {
    for (addr, db, want) in [
        ("localhost:6379", 0, "redis://localhost:6379/0"),
        ("10.0.0.1:7000", 4, "redis://10.0.0.1:7000/4"),
        (":7000", 1, "redis://127.0.0.1:7000/1"),
        ("[::1]:6380", 2, "redis://[::1]:6380/2"),
        ("  h:1  ", 0, "redis://h:1/0"),
        ("redis://h:6379", 3, "redis://h:6379/3"),
        ("redis://h:6379/", 3, "redis://h:6379/3"),
        ("redis://h", 0, "redis://h/0"),
        ("redis://h:6379/7", 3, "redis://h:6379/7"),
        ("rediss://:pw@h:6380", 0, "rediss://:pw@h:6380/0"),
        (
            "rediss://user:p%40ss@h:6380/2",
            0,
            "rediss://user:p%40ss@h:6380/2",
        ),
        (
            "redis://h:6379?protocol=resp3",
            1,
            "redis://h:6379/1?protocol=resp3",
        ),
    ] {
        assert_eq!(shard("s", addr).connection_url(db), want, "{addr}");
    }
}

#[test]
fn redaction_hides_passwords_only() {
    for (addr, want) in [
        ("redis://:hunter2@h:6379/0", "redis://:***@h:6379/0"),
        ("rediss://user:hunter2@h:6380", "rediss://user:***@h:6380"),
        ("redis://user@h:6379", "redis://user@h:6379"),
        ("redis://h:6379", "redis://h:6379"),
        ("h:6379", "h:6379"),
        (":7000", ":7000"),
    ] {
        let s = shard("s", addr);
        assert_eq!(s.redacted_addr(), want, "{addr}");
        assert_eq!(s.redacted().addr, want, "{addr}");
        assert_eq!(s.redacted().name, "s");
    }
    let s = shard("s", "rediss://:hunter2@h:6380");
    assert!(!format!("{s:?}").contains("hunter2"));
    assert!(!format!("{s}").contains("hunter2"));
    let mut c = Config::default();
    c.cache.redis.shards.push(s);
    assert!(!format!("{c:?}").contains("hunter2"));
    assert_eq!(
        mr_config::redact_url("postgres://media:hunter2@db:5432/media"),
        "postgres://media:***@db:5432/media"
    );
}

// ---------------------------------------------------------------- diff

fn with_shards(shards: &[(&str, &str)]) -> Config {
    let mut c = Config::default();
    c.cache.backend = CacheBackend::Redis;
    c.cache.redis.shards = shards.iter().map(|(n, a)| shard(n, a)).collect();
    c
}

#[test]
fn identical_configs_have_an_empty_diff() {
    let d = diff(&Config::default(), &Config::default());
    assert!(d.is_empty(), "{d:?}");
    let c = with_shards(&[("a", "h:1")]);
    assert!(diff(&c, &c.clone()).is_empty());
}

#[test]
fn shard_added_removed_and_changed() {
    let old = with_shards(&[("a", "h:1"), ("b", "h:2"), ("c", "h:3")]);
    let new = with_shards(&[("c", "h:3"), ("a", "h:9"), ("d", "h:4"), ("e", "h:5")]);
    let d = diff(&old, &new);
    assert_eq!(
        d.shards,
        Some(ShardDiff {
            added: vec![shard("d", "h:4"), shard("e", "h:5")],
            removed: vec!["b".to_owned()],
            changed: vec![shard("a", "h:9")],
        })
    );
    assert!(!d.redis_settings_changed);
    assert!(d.restart_required.is_empty(), "{:?}", d.restart_required);
    assert!(!d.is_empty());

    let d = diff(
        &old,
        &with_shards(&[("a", "h:1"), ("b", "h:2"), ("c", "h:3"), ("x", "h:7")]),
    );
    assert_eq!(
        d.shards.as_ref().map(|s| &s.added[..]),
        Some(&[shard("x", "h:7")][..])
    );
    assert!(d
        .shards
        .as_ref()
        .is_some_and(|s| s.removed.is_empty() && s.changed.is_empty()));

    let d = diff(&old, &with_shards(&[("a", "h:1"), ("c", "h:3")]));
    assert_eq!(
        d.shards,
        Some(ShardDiff {
            removed: vec!["b".to_owned()],
            ..ShardDiff::default()
        })
    );

    // Reordering the list changes nothing: routing depends on names only.
    let d = diff(
        &old,
        &with_shards(&[("c", "h:3"), ("b", "h:2"), ("a", "h:1")]),
    );
    assert!(d.is_empty(), "{d:?}");
}

#[test]
fn settings_changes_are_flagged_per_part() {
    let base = with_shards(&[("a", "h:1")]);

    let mut new = base.clone();
    new.cache.redis.response_timeout_ms = 900;
    let d = diff(&base, &new);
    assert!(d.redis_settings_changed && d.shards.is_none() && !d.cache_limits_changed);
    assert!(d.restart_required.is_empty());

    let mut new = base.clone();
    new.cache.redis.database_number = 1;
    assert!(diff(&base, &new).redis_settings_changed);

    let mut new = base.clone();
    new.cache.redis.reshard_drain_secs = 60;
    assert!(diff(&base, &new).redis_settings_changed);

    for change in [
        |c: &mut Config| c.cache.max_object_bytes += 1,
        |c: &mut Config| c.cache.chunk_bytes -= 1,
        |c: &mut Config| c.cache.ttl_secs = Some(60),
        |c: &mut Config| c.cache.memory.max_bytes += 1,
    ] {
        let mut new = base.clone();
        change(&mut new);
        let d = diff(&base, &new);
        assert!(d.cache_limits_changed && !d.redis_settings_changed, "{d:?}");
    }

    let mut new = base.clone();
    new.homeservers[0].client_api_url = "http://127.0.0.1:9008".to_owned();
    new.uploads.max_bytes = 1;
    new.downloads.legacy_freeze.after_ms = Some(1);
    new.thumbnails.enabled = false;
    new.auth.whoami_cache_secs = 1;
    new.logging.level = "debug".to_owned();
    let d = diff(&base, &new);
    assert!(d.homeservers_changed && d.uploads_changed && d.downloads_changed);
    assert!(d.thumbnails_changed && d.auth_changed && d.logging_changed);
    assert!(d.shards.is_none() && !d.redis_settings_changed && !d.cache_limits_changed);
    assert!(d.restart_required.is_empty());
}

#[test]
fn restart_required_lists_old_and_new_values() {
    let old = Config::default();
    let mut new = Config::default();
    new.server.bind = "0.0.0.0:8000".to_owned();
    new.metrics.bind = Some("127.0.0.1:9100".to_owned());
    new.database.url = "postgres://media:hunter2@db/media".to_owned();
    new.database.max_connections = 20;
    new.cache.backend = CacheBackend::None;
    new.datastores[0].path = PathBuf::from("/srv/media");
    let d = diff(&old, &new);
    assert_eq!(
        d.restart_required,
        [
            "server.bind (127.0.0.1:8000 -> 0.0.0.0:8000)",
            "metrics.bind (127.0.0.1:9000 -> 127.0.0.1:9100)",
            "database.url (sqlite://./data/media-repo.db -> postgres://media:***@db/media)",
            "database.max_connections (10 -> 20)",
            "cache.backend (memory -> none)",
            "datastores ([default=file:./data/media] -> [default=file:/srv/media])",
        ]
    );
    assert!(!d.is_empty());
    assert!(!format!("{d:?}").contains("hunter2"));
}

#[test]
fn a_reload_keeps_the_running_value_of_every_restart_only_setting() {
    let old = Config::default();
    let mut new = Config::default();
    new.server.bind = "0.0.0.0:8000".to_owned();
    new.server.trusted_proxies = vec!["10.0.0.0/8".to_owned()];
    new.server.shutdown_timeout_secs = 3;
    new.federation.request_timeout_ms += 1;
    new.homeservers[0].signing_key_path = Some(PathBuf::from("/etc/signing.key"));
    new.metrics.bind = None;
    new.database.url = "postgres://db/media".to_owned();
    new.database.max_connections = 20;
    new.cache.backend = CacheBackend::None;
    new.datastores[0].path = PathBuf::from("/srv/media");
    // And one setting a reload does apply.
    new.uploads.max_bytes += 1;
    assert_eq!(diff(&old, &new).restart_required.len(), 10);

    let kept = mr_config::keep_restart_only_settings(&old, new.clone());
    let d = diff(&old, &kept);
    assert!(d.restart_required.is_empty(), "{:?}", d.restart_required);
    assert!(d.uploads_changed, "reloadable settings are taken");
    assert_eq!(kept.uploads, new.uploads);
}

#[test]
fn metrics_bind_null_turns_the_operators_listener_off() {
    // Absent key (and absent section): the default listener.
    assert_eq!(
        parse("metrics: {}\n").metrics.bind.as_deref(),
        Some("127.0.0.1:9000")
    );
    assert_eq!(
        parse("server: {bind: '127.0.0.1:8001'}\n")
            .metrics
            .bind
            .as_deref(),
        Some("127.0.0.1:9000")
    );
    // Explicit null, in both YAML spellings: no listener.
    assert_eq!(parse("metrics:\n  bind: null\n").metrics.bind, None);
    assert_eq!(parse("metrics:\n  bind: ~\n").metrics.bind, None);
    let c = parse("metrics: {bind: null}\nserver: {bind: '0.0.0.0:9000'}\n");
    assert_eq!(
        c.metrics.bind, None,
        "no listener, so no clash with server.bind"
    );
    // Turning it off or on is a restart.
    let d = diff(&Config::default(), &c);
    assert!(
        d.restart_required
            .contains(&"metrics.bind (127.0.0.1:9000 -> off)".to_owned()),
        "{:?}",
        d.restart_required
    );
}

#[test]
fn shutdown_timeout_is_bounded_and_restart_only() {
    assert_eq!(
        parse("server: {shutdown_timeout_secs: 2}\n")
            .server
            .shutdown_timeout_secs,
        2
    );
    assert_eq!(
        parse("server: {shutdown_timeout_secs: 0}\n")
            .server
            .shutdown_timeout_secs,
        0,
        "0 cuts in-flight requests at once"
    );
    let msg = invalid("server: {shutdown_timeout_secs: 3601}\n");
    assert!(
        msg.contains("server.shutdown_timeout_secs (3601) is larger than 3600"),
        "{msg}"
    );
    let mut new = Config::default();
    new.server.shutdown_timeout_secs = 5;
    assert_eq!(
        diff(&Config::default(), &new).restart_required,
        ["server.shutdown_timeout_secs (30 -> 5)"]
    );
}

// ---------------------------------------------------------------- files

#[test]
fn load_reads_and_validates_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("media-repo.yaml");
    std::fs::write(&path, "server:\n  bind: '0.0.0.0:8080'\n").unwrap();
    assert_eq!(Config::load(&path).unwrap().server.bind, "0.0.0.0:8080");

    std::fs::write(&path, "cache:\n  chunk_bytes: 0\n").unwrap();
    match Config::load(&path) {
        Err(ConfigError::Invalid(msg)) => {
            assert!(msg.starts_with(&path.display().to_string()), "{msg}");
        }
        other => panic!("{other:?}"),
    }

    std::fs::write(&path, "servre: {}\n").unwrap();
    match Config::load(&path) {
        Err(ConfigError::Parse { origin, .. }) => assert_eq!(origin, path.display().to_string()),
        other => panic!("{other:?}"),
    }

    let missing = dir.path().join("nope.yaml");
    match Config::load(&missing) {
        Err(err @ ConfigError::Io { .. }) => {
            assert!(err.to_string().contains("nope.yaml"), "{err}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn prepare_datastores_creates_directories() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::default();
    let nested = dir.path().join("a/b/media");
    c.datastores[0].path = nested.clone();
    c.prepare_datastores().unwrap();
    assert!(nested.is_dir());
    // Idempotent.
    c.prepare_datastores().unwrap();
}

#[test]
fn prepare_datastores_names_the_path_it_cannot_create() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    for bad in [file.join("media"), file.clone()] {
        let mut c = Config::default();
        c.datastores[0].path = bad.clone();
        match c.prepare_datastores() {
            Err(err @ ConfigError::Datastore { .. }) => {
                let ConfigError::Datastore { path, .. } = &err else {
                    unreachable!()
                };
                assert_eq!(path, &bad);
                assert!(
                    err.to_string().contains(&bad.display().to_string()),
                    "{err}"
                );
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------- the sample file

#[test]
fn sample_config_is_exactly_the_defaults() {
    assert_eq!(parse(SAMPLE), Config::default());
}

#[test]
fn sample_config_spells_out_every_key() {
    // Comparing trees (not just parsed values) proves no key was left out of the sample.
    let sample: serde_json::Value = serde_saphyr::from_str(SAMPLE).unwrap();
    let defaults = serde_json::to_value(Config::default()).unwrap();
    assert_eq!(sample, defaults);
}

/// The commented example between `# --- example: {name} ---` and `# --- end example ---`,
/// uncommented in place (indentation kept).
fn sample_example(name: &str) -> String {
    let start = format!("# --- example: {name} ---");
    let mut lines = SAMPLE
        .lines()
        .skip_while(|l| l.trim() != start)
        .skip(1)
        .take_while(|l| l.trim() != "# --- end example ---")
        .peekable();
    assert!(
        lines.peek().is_some(),
        "example {name:?} missing from the sample"
    );
    lines
        .map(|l| {
            let hash = l
                .find("# ")
                .unwrap_or_else(|| panic!("not a comment: {l:?}"));
            format!("{}{}\n", &l[..hash], &l[hash + 2..])
        })
        .collect()
}

#[test]
fn sample_redis_shards_example_is_valid() {
    let yaml = format!(
        "cache:\n  backend: redis\n  redis:\n{}",
        sample_example("redis shards")
    );
    let c = parse(&yaml);
    let urls: Vec<String> = c
        .cache
        .redis
        .shards
        .iter()
        .map(|s| s.connection_url(0))
        .collect();
    assert_eq!(
        urls,
        [
            "redis://10.0.0.11:6379/0",
            "rediss://:s3cret-password@redis2.example.org:6380/1",
            "redis://10.0.0.13:6379/0",
        ]
    );
    assert_eq!(
        c.cache.redis.shards[1].redacted_addr(),
        "rediss://:***@redis2.example.org:6380/1"
    );
}

#[test]
fn sample_go_style_example_is_valid() {
    let c = parse(&sample_example("Go-style redis block"));
    assert_eq!(c.cache.backend, CacheBackend::Redis);
    assert_eq!(
        c.cache.redis.shards,
        [
            shard("server1", ":7000"),
            shard("server2", "10.0.0.12:7001")
        ]
    );
}

const ONE_HOMESERVER: &str =
    "homeservers:\n  - { name: example.org, client_api_url: \"http://127.0.0.1:8008\" }\n";

#[test]
fn admins_default_to_none_and_parse_as_user_ids() {
    assert!(Config::default().admins.is_empty());
    let config = parse(&format!(
        "{ONE_HOMESERVER}admins: [\"@admin:example.org\", \"@ops.team-1:EXAMPLE.org\"]\n"
    ));
    assert_eq!(
        config.admins,
        ["@admin:example.org", "@ops.team-1:EXAMPLE.org"]
    );
}

#[test]
fn admins_must_be_user_ids_of_configured_homeservers() {
    let msg = invalid(&format!(
        "{ONE_HOMESERVER}admins: [\"admin:example.org\"]\n"
    ));
    assert!(
        msg.contains("admins[0] `admin:example.org` is not a Matrix user id"),
        "{msg}"
    );
    let msg = invalid(&format!("{ONE_HOMESERVER}admins: [\"@admin\"]\n"));
    assert!(
        msg.contains("admins[0] `@admin` is not a Matrix user id"),
        "{msg}"
    );
    let msg = invalid(&format!(
        "{ONE_HOMESERVER}admins: [\"@Admin:example.org\"]\n"
    ));
    assert!(msg.contains("the localpart may only hold"), "{msg}");
    let msg = invalid(&format!(
        "{ONE_HOMESERVER}admins: [\"@admin:example.org\", \"@admin:other.org\"]\n"
    ));
    assert!(
        msg.contains("admins[1] `@admin:other.org` is not a user of a configured homeserver"),
        "{msg}"
    );
    assert!(!msg.contains("admins[0]"), "{msg}");
    let (path, _) = parse_error(&format!("{ONE_HOMESERVER}admins: \"@admin:example.org\"\n"));
    assert_eq!(path, "admins");
}

#[test]
fn admins_change_is_a_reload_not_a_restart() {
    let old = parse(ONE_HOMESERVER);
    let new = parse(&format!(
        "{ONE_HOMESERVER}admins: [\"@admin:example.org\"]\n"
    ));
    let d = diff(&old, &new);
    assert!(d.admins_changed);
    assert!(d.restart_required.is_empty());
}

#[test]
fn backend_names_are_the_words_of_the_config_file() {
    for backend in [
        CacheBackend::None,
        CacheBackend::Memory,
        CacheBackend::Redis,
    ] {
        let shards =
            "  redis:\n    shards:\n      - name: a\n        addr: redis://127.0.0.1:6390\n";
        let yaml = format!("cache:\n  backend: {}\n{shards}", backend.name());
        assert_eq!(parse(&yaml).cache.backend, backend, "{yaml}");
    }
}
