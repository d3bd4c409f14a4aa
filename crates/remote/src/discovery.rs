//! Server discovery: from a server name to where its federation API answers, as the
//! server-server spec's "Resolving server names" says.
//!
//! 1. IP literal: that address, the given port or 8448.
//! 2. Name with a port: that name and port.
//! 3. `https://<name>/.well-known/matrix/server` → `m.server` (delegated name), then for the
//!    delegated name: IP literal, explicit port, SRV `_matrix-fed._tcp`, SRV `_matrix._tcp`,
//!    port 8448.
//! 4. No usable `.well-known`: SRV `_matrix-fed._tcp.<name>`, then `_matrix._tcp.<name>`,
//!    then `<name>:8448`.
//!
//! The certificate must match the name we connect "as" (the delegated name, or the server
//! name; an SRV target is only where to dial), and the `Host` header carries it.
//! `.well-known` answers are cached for [`WELL_KNOWN_TTL`], failures for
//! [`WELL_KNOWN_ERROR_TTL`]. The lookups themselves are behind [`Lookups`], so the procedure
//! is tested without a network.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::server_name::{Host, ServerName};

/// The federation port when nothing says otherwise.
pub const DEFAULT_FEDERATION_PORT: u16 = 8448;
/// How long a `.well-known` delegation is remembered.
pub const WELL_KNOWN_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a missing or broken `.well-known` is remembered.
pub const WELL_KNOWN_ERROR_TTL: Duration = Duration::from_secs(60 * 60);
/// Server names whose `.well-known` answer is remembered at once.
const MAX_CACHED_DELEGATIONS: u64 = 10_000;

/// Where to send a federation request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The name the server's certificate must be valid for, and the host part of the URL.
    pub tls_host: Host,
    /// The port to connect to.
    pub port: u16,
    /// The `Host` header.
    pub host_header: String,
    /// When an SRV record named the machine: the name to resolve for addresses instead of
    /// `tls_host` (the certificate is still checked against `tls_host`).
    pub connect_name: Option<String>,
}

/// The network lookups discovery needs.
pub trait Lookups: Send + Sync + 'static {
    /// The `m.server` value of `https://<host>/.well-known/matrix/server`, or `None` when
    /// there is no usable one (any error, a non-200 answer, bad JSON, a bad value).
    fn well_known(&self, host: &str) -> impl Future<Output = Option<String>> + Send;
    /// SRV targets of `name` (e.g. `_matrix-fed._tcp.example.org`) as (target host, port),
    /// best first; empty when there are none.
    fn srv(&self, name: &str) -> impl Future<Output = Vec<(String, u16)>> + Send;
}

/// Discovery with its `.well-known` cache.
pub struct Discovery<L> {
    lookups: Arc<L>,
    /// host → (delegated server name or none, until when the answer holds).
    delegations: moka::future::Cache<String, (Option<String>, Instant)>,
}

impl<L: Lookups> Discovery<L> {
    pub fn new(lookups: L) -> Discovery<L> {
        Discovery {
            lookups: Arc::new(lookups),
            delegations: moka::future::Cache::builder()
                .max_capacity(MAX_CACHED_DELEGATIONS)
                .time_to_live(WELL_KNOWN_TTL)
                .build(),
        }
    }

    /// Where `server_name`'s federation API answers.
    pub async fn resolve(&self, server_name: &str) -> Result<Destination> {
        let name = ServerName::parse(server_name)?;
        let host = match (&name.host, name.port) {
            (Host::Ip(_), port) => {
                return Ok(Destination {
                    tls_host: name.host.clone(),
                    port: port.unwrap_or(DEFAULT_FEDERATION_PORT),
                    host_header: name.to_string(),
                    connect_name: None,
                })
            }
            (Host::Name(_), Some(port)) => {
                return Ok(Destination {
                    tls_host: name.host.clone(),
                    port,
                    host_header: name.to_string(),
                    connect_name: None,
                })
            }
            (Host::Name(host), None) => host.clone(),
        };
        if let Some(delegated) = self.delegation(&host).await {
            if let Ok(delegated) = ServerName::parse(&delegated) {
                return Ok(self.resolve_delegated(delegated).await);
            }
        }
        Ok(self.by_srv_or_default(&host).await)
    }

    /// Step 3 for the delegated name.
    async fn resolve_delegated(&self, delegated: ServerName) -> Destination {
        match (&delegated.host, delegated.port) {
            (Host::Name(host), None) => self.by_srv_or_default(host).await,
            (_, port) => Destination {
                tls_host: delegated.host.clone(),
                port: port.unwrap_or(DEFAULT_FEDERATION_PORT),
                host_header: delegated.to_string(),
                connect_name: None,
            },
        }
    }

    /// SRV `_matrix-fed._tcp`, then the deprecated `_matrix._tcp`, then port 8448.
    async fn by_srv_or_default(&self, host: &str) -> Destination {
        for prefix in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let targets = self.lookups.srv(&format!("{prefix}.{host}")).await;
            if let Some((target, port)) = targets.into_iter().next() {
                return Destination {
                    tls_host: Host::Name(host.to_owned()),
                    port,
                    host_header: host.to_owned(),
                    connect_name: Some(target.trim_end_matches('.').to_owned()),
                };
            }
        }
        Destination {
            tls_host: Host::Name(host.to_owned()),
            port: DEFAULT_FEDERATION_PORT,
            host_header: host.to_owned(),
            connect_name: None,
        }
    }

    /// The cached or freshly fetched `.well-known` delegation of `host`.
    async fn delegation(&self, host: &str) -> Option<String> {
        if let Some((value, until)) = self.delegations.get(host).await {
            if Instant::now() < until {
                return value;
            }
        }
        let value = self.lookups.well_known(host).await;
        let ttl = if value.is_some() {
            WELL_KNOWN_TTL
        } else {
            WELL_KNOWN_ERROR_TTL
        };
        self.delegations
            .insert(host.to_owned(), (value.clone(), Instant::now() + ttl))
            .await;
        value
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Default)]
    struct FakeLookups {
        well_known: HashMap<String, String>,
        srv: HashMap<String, (String, u16)>,
        well_known_calls: AtomicUsize,
    }

    impl Lookups for FakeLookups {
        async fn well_known(&self, host: &str) -> Option<String> {
            self.well_known_calls.fetch_add(1, Ordering::SeqCst);
            self.well_known.get(host).cloned()
        }
        async fn srv(&self, name: &str) -> Vec<(String, u16)> {
            self.srv.get(name).cloned().into_iter().collect()
        }
    }

    fn dest(tls: &str, port: u16, host_header: &str, connect: Option<&str>) -> Destination {
        Destination {
            tls_host: ServerName::parse(tls).unwrap().host,
            port,
            host_header: host_header.to_owned(),
            connect_name: connect.map(str::to_owned),
        }
    }

    #[tokio::test]
    async fn every_step_of_the_spec() {
        let mut lookups = FakeLookups::default();
        lookups
            .well_known
            .insert("delegated.test".into(), "matrix.delegated.test".into());
        lookups
            .well_known
            .insert("port.test".into(), "matrix.port.test:443".into());
        lookups
            .well_known
            .insert("ip.test".into(), "127.0.0.1:9000".into());
        lookups
            .well_known
            .insert("bad.test".into(), "not a name".into());
        lookups.srv.insert(
            "_matrix-fed._tcp.matrix.delegated.test".into(),
            ("box.delegated.test.".into(), 8000),
        );
        lookups.srv.insert(
            "_matrix._tcp.old.test".into(),
            ("box.old.test".into(), 9999),
        );
        let discovery = Discovery::new(lookups);
        let cases = [
            ("127.0.0.1", dest("127.0.0.1", 8448, "127.0.0.1", None)),
            (
                "127.0.0.1:8481",
                dest("127.0.0.1", 8481, "127.0.0.1:8481", None),
            ),
            ("[::1]:8481", dest("[::1]", 8481, "[::1]:8481", None)),
            (
                "example.test:1234",
                dest("example.test", 1234, "example.test:1234", None),
            ),
            (
                "delegated.test",
                dest(
                    "matrix.delegated.test",
                    8000,
                    "matrix.delegated.test",
                    Some("box.delegated.test"),
                ),
            ),
            (
                "port.test",
                dest("matrix.port.test", 443, "matrix.port.test:443", None),
            ),
            ("ip.test", dest("127.0.0.1", 9000, "127.0.0.1:9000", None)),
            (
                "old.test",
                dest("old.test", 9999, "old.test", Some("box.old.test")),
            ),
            ("plain.test", dest("plain.test", 8448, "plain.test", None)),
            ("bad.test", dest("bad.test", 8448, "bad.test", None)),
        ];
        for (name, expected) in cases {
            assert_eq!(discovery.resolve(name).await.unwrap(), expected, "{name}");
        }
        assert!(discovery.resolve("not a name").await.is_err());
    }

    #[tokio::test]
    async fn well_known_answers_and_failures_are_cached() {
        let mut lookups = FakeLookups::default();
        lookups
            .well_known
            .insert("a.test".into(), "b.test:1".into());
        let discovery = Discovery::new(lookups);
        for _ in 0..3 {
            discovery.resolve("a.test").await.unwrap();
            discovery.resolve("none.test").await.unwrap();
        }
        assert_eq!(discovery.lookups.well_known_calls.load(Ordering::SeqCst), 2);
    }
}
