//! YAML text to `Config`: the document schema (the `Config` sections plus the Go-style
//! `redis:` block) and errors that say which key, where, and what was expected.

use serde::Deserialize;
use serde_json::Value;

use crate::auth::AuthConfig;
use crate::cache::CacheConfig;
use crate::config::Config;
use crate::error::ConfigError;
use crate::federation::FederationConfig;
use crate::go_redis::{ExplicitCacheKeys, GoRedisBlock};
use crate::homeserver::{default_homeservers, HomeserverConfig};
use crate::media::{DownloadsConfig, ThumbnailsConfig, UploadsConfig};
use crate::server::{LoggingConfig, MetricsConfig, ServerConfig};
use crate::storage::{default_datastores, DatabaseConfig, DatastoreConfig};

/// A config file as written: every `Config` section, plus the Go media repo's block.
#[derive(Debug, Deserialize)]
// Named as the operator knows it in serde's "expected struct ..." messages.
#[serde(deny_unknown_fields, rename = "Config")]
struct ConfigDocument {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    metrics: MetricsConfig,
    #[serde(default = "default_homeservers")]
    homeservers: Vec<HomeserverConfig>,
    #[serde(default)]
    admins: Vec<String>,
    #[serde(default)]
    database: DatabaseConfig,
    #[serde(default = "default_datastores")]
    datastores: Vec<DatastoreConfig>,
    #[serde(default)]
    uploads: UploadsConfig,
    #[serde(default)]
    downloads: DownloadsConfig,
    #[serde(default)]
    thumbnails: ThumbnailsConfig,
    #[serde(default)]
    auth: AuthConfig,
    #[serde(default)]
    federation: FederationConfig,
    #[serde(default)]
    cache: CacheConfig,
    #[serde(default)]
    logging: LoggingConfig,
    /// The Go media repo's `redis:` block (camelCase keys).
    #[serde(default)]
    redis: Option<GoRedisBlock>,
}

/// Parses YAML into a `Config` without validating values. An empty document (or one
/// holding only comments) yields the defaults.
pub(crate) fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    // Parsing to a tree first tells an empty document (all defaults) from a broken one,
    // finds syntax errors before schema ones, and lets the Go block see which `cache`
    // keys were written explicitly.
    let tree: Value = serde_saphyr::from_str(text).map_err(|e| yaml_error(origin, ".", &e))?;
    match &tree {
        Value::Null => return Ok(Config::default()),
        Value::Object(_) => {}
        other => {
            return Err(ConfigError::Parse {
                origin: origin.to_owned(),
                path_in_doc: ".".to_owned(),
                message: format!(
                    "the document must be a mapping of settings (`server:`, `cache:` ...), not {}",
                    kind_of(other)
                ),
            })
        }
    }
    let mut error_path = String::from(".");
    let doc: ConfigDocument = serde_saphyr::with_deserializer_from_str(text, |deserializer| {
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            error_path = e.path().to_string();
            e.into_inner()
        })
    })
    .map_err(|e| yaml_error(origin, &error_path, &e))?;

    let mut config = Config {
        server: doc.server,
        metrics: doc.metrics,
        homeservers: doc.homeservers,
        admins: doc.admins,
        database: doc.database,
        datastores: doc.datastores,
        uploads: doc.uploads,
        downloads: doc.downloads,
        thumbnails: doc.thumbnails,
        auth: doc.auth,
        federation: doc.federation,
        cache: doc.cache,
        logging: doc.logging,
    };
    if let Some(go) = doc.redis {
        let explicit = ExplicitCacheKeys {
            backend: has_key(&tree, &["cache", "backend"]),
            database_number: has_key(&tree, &["cache", "redis", "database_number"]),
        };
        go.apply(&mut config.cache, &explicit)
            .map_err(|problem| ConfigError::Invalid(format!("{origin}: {problem}")))?;
    }
    Ok(config)
}

fn has_key(tree: &Value, path: &[&str]) -> bool {
    let mut node = tree;
    for key in path {
        match node.get(*key) {
            Some(child) => node = child,
            None => return false,
        }
    }
    true
}

/// Builds the operator-facing message: where in the document, the parser's own words
/// (which name an unknown key and list the expected ones), and the line/column when known.
fn yaml_error(origin: &str, error_path: &str, err: &serde_saphyr::Error) -> ConfigError {
    let mut message = err.without_snippet().to_string();
    // The parser ends with " at line L, column C"; we give the location in our own words.
    if let Some(at) = message.rfind(" at line ") {
        if is_line_column(&message[at + " at ".len()..]) {
            message.truncate(at);
        }
    }
    // An unknown key is reported at the key's own path; the operator needs the mapping
    // it sits in (`cache.redis`).
    let unknown_key = message.starts_with("unknown field `");
    let path_in_doc = if unknown_key {
        parent_path(error_path)
    } else {
        error_path.to_owned()
    };
    if path_in_doc != "." {
        message = format!("{path_in_doc}: {message}");
    } else if unknown_key {
        message = format!("top level: {message}");
    }
    if let Some(loc) = err.location() {
        message = format!("{message} (line {}, column {})", loc.line(), loc.column());
    }
    ConfigError::Parse {
        origin: origin.to_owned(),
        path_in_doc,
        message,
    }
}

/// `line 3, column 5`, exactly.
fn is_line_column(text: &str) -> bool {
    let words: Vec<&str> = text.split(' ').collect();
    matches!(words.as_slice(), ["line", l, "column", c]
        if l.strip_suffix(',').is_some_and(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
            && !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
}

/// What a YAML value is, in words, for a document of the wrong shape.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// `cache.redis.shardz` -> `cache.redis`, `homeservers[0].x` -> `homeservers[0]`,
/// `bogus` -> `.`.
fn parent_path(path: &str) -> String {
    match path.rfind('.') {
        Some(dot) if dot > 0 => path[..dot].to_owned(),
        _ => ".".to_owned(),
    }
}
