//! Redis shard addresses: the accepted spellings, their normalised connection URL, and a
//! password-free form for logs and status pages.
//!
//! Accepted: `redis://[user:pass@]host[:port][/db]`, `rediss://...` (TLS), and the Go
//! media repo's bare `host:port` (also `[ipv6]:port`, and `:port` meaning this machine).

use std::net::Ipv6Addr;

use url::Url;

/// Port Redis listens on when a URL names none.
const DEFAULT_REDIS_PORT: u16 = 6379;

/// What replaces a password in displayed addresses.
const REDACTED: &str = "***";

/// A shard address that passed parsing.
#[derive(Debug)]
pub(crate) enum ShardAddr {
    /// A `redis://` or `rediss://` URL, kept as written (user, password, query and all).
    Url(Url),
    /// Go-style `host:port`; `host` carries brackets for IPv6.
    Bare { host: String, port: u16 },
}

impl ShardAddr {
    /// Parses an address, or says in a sentence fragment what is wrong with it.
    pub(crate) fn parse(addr: &str) -> Result<ShardAddr, String> {
        let addr = addr.trim();
        if addr.is_empty() {
            return Err("is empty".to_owned());
        }
        if addr.contains("://") {
            parse_url(addr)
        } else {
            parse_bare(addr)
        }
    }

    /// The URL handed to the Redis client: always `redis(s)://...` with a database path.
    /// A database already in a URL wins over `database_number`.
    pub(crate) fn connection_url(&self, database_number: i64) -> String {
        match self {
            ShardAddr::Url(url) => {
                let mut url = url.clone();
                if matches!(url.path(), "" | "/") {
                    url.set_path(&format!("/{database_number}"));
                }
                url.to_string()
            }
            ShardAddr::Bare { host, port } => format!("redis://{host}:{port}/{database_number}"),
        }
    }
}

fn parse_url(addr: &str) -> Result<ShardAddr, String> {
    let url = Url::parse(addr).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err(format!(
            "has scheme `{}://` (expected redis://, rediss:// or a bare host:port)",
            url.scheme()
        ));
    }
    if !matches!(url.host_str(), Some(host) if !host.is_empty()) {
        return Err("has no host".to_owned());
    }
    match url.path() {
        "" | "/" => {}
        path => {
            let db = &path[1..];
            if db.parse::<u32>().is_err() {
                return Err(format!(
                    "has path `{path}` (the only path allowed is a database number such as /0)"
                ));
            }
        }
    }
    Ok(ShardAddr::Url(url))
}

fn parse_bare(addr: &str) -> Result<ShardAddr, String> {
    const EXPECTED: &str = "(expected host:port, redis://host:port or rediss://host:port)";
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("has no port {EXPECTED}"));
    };
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("has an invalid port `{port}` {EXPECTED}")),
    };
    let host = if host.is_empty() {
        // Go dials the local system for ":port"; so do we.
        "127.0.0.1".to_owned()
    } else if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner
            .parse::<Ipv6Addr>()
            .map_err(|_| format!("has an invalid IPv6 address `{inner}`"))?;
        host.to_owned()
    } else if host.contains(':') {
        return Err(format!(
            "is ambiguous (write IPv6 addresses in brackets, e.g. [::1]:{DEFAULT_REDIS_PORT})"
        ));
    } else if host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    {
        host.to_owned()
    } else {
        return Err(format!("has an invalid host `{host}` {EXPECTED}"));
    };
    Ok(ShardAddr::Bare { host, port })
}

/// `addr` with any password replaced by `***`, for logs, status pages and config diffs.
/// Works on any URL (Redis, Postgres...) and leaves password-free text unchanged.
pub fn redact_url(addr: &str) -> String {
    if let Ok(mut url) = Url::parse(addr) {
        if url.password().is_some() && url.set_password(Some(REDACTED)).is_ok() {
            return url.to_string();
        }
        if url.password().is_none() {
            return addr.to_owned();
        }
    }
    // Unparseable but possibly secret-bearing: hide the whole userinfo part.
    match (addr.find("://"), addr.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}{REDACTED}{}", &addr[..scheme_end + 3], &addr[at..])
        }
        _ => addr.to_owned(),
    }
}
