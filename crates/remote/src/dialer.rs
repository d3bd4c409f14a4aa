//! The HTTPS client for everything media-repo asks other servers: discovery first, then a
//! request whose every dialled address has passed the address policy.
//!
//! Names are resolved by [`GuardedResolver`], which drops addresses the policy refuses and
//! fails when none is left, so a name that points at 10.0.0.1 or 127.0.0.1 is never dialled
//! (unless allow-listed). IP-literal URLs never reach a resolver, so they are checked here
//! before the request is built. Redirects are never followed by the client itself: a caller
//! that follows a `Location` calls [`Dialer::get_url`], which applies the same checks and
//! sends no `Authorization`. Certificates are always verified; an extra CA may be added.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use hickory_resolver::TokioAsyncResolver;
use reqwest::dns::{Name, Resolve, Resolving};
use reqwest::header::{HeaderValue, AUTHORIZATION, HOST};
use tracing::debug;

use crate::discovery::{Destination, Discovery, Lookups};
use crate::error::{Error, Result};
use crate::limited_body::{read_limited, LimitedBodyError};
use crate::server_name::{Host, ServerName};

/// Whether an address may be dialled (private, loopback, … addresses may not, unless
/// allow-listed). Supplied by the caller, so the rules live in one place.
pub type AddressPolicy = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// Largest `.well-known/matrix/server` answer read.
pub const MAX_WELL_KNOWN_BYTES: usize = 64 * 1024;
/// Redirects followed when fetching `.well-known`.
const MAX_WELL_KNOWN_REDIRECTS: usize = 5;

/// How to build a [`Dialer`].
pub struct DialerSettings {
    /// Bound on a request until its response head. A media body may take far longer (its
    /// reader bounds the time between bytes instead); a small answer read with
    /// [`Dialer::read_small`] gets this much again, `.well-known` this much in all.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// PEM file with extra CA certificates to trust beside the built-in roots.
    pub extra_ca_file: Option<PathBuf>,
    pub policy: AddressPolicy,
}

/// Resolves names through DNS and keeps only the addresses the policy allows.
struct GuardedResolver {
    dns: TokioAsyncResolver,
    policy: AddressPolicy,
    /// TLS host → the SRV target to resolve instead (discovery found it).
    srv_targets: DashMap<String, String>,
}

impl GuardedResolver {
    async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>> {
        let target = self
            .srv_targets
            .get(host)
            .map(|t| t.clone())
            .unwrap_or_else(|| host.to_owned());
        let found =
            self.dns
                .lookup_ip(target.as_str())
                .await
                .map_err(|err| Error::Unresolvable {
                    host: target.clone(),
                    reason: err.to_string(),
                })?;
        let all: Vec<IpAddr> = found.iter().collect();
        let allowed: Vec<IpAddr> = all
            .iter()
            .copied()
            .filter(|ip| (self.policy)(*ip))
            .collect();
        if allowed.is_empty() {
            return Err(Error::AddressRefused {
                host: target,
                addresses: describe(&all),
            });
        }
        Ok(allowed)
    }
}

fn describe(addresses: &[IpAddr]) -> String {
    let text: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    text.join(", ")
}

/// reqwest's resolver hook; `Arc` so the dialer, its lookups and both clients share it.
#[derive(Clone)]
struct SharedResolver(Arc<GuardedResolver>);

impl Resolve for SharedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses = resolver.lookup(&host).await?;
            let addrs: Vec<SocketAddr> = addresses
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// `.well-known` and SRV over the network, with the same address rules.
pub struct NetworkLookups {
    http: reqwest::Client,
    dns: TokioAsyncResolver,
}

impl Lookups for NetworkLookups {
    async fn well_known(&self, host: &str) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct WellKnown {
            #[serde(rename = "m.server")]
            server: String,
        }
        let url = format!("https://{host}/.well-known/matrix/server");
        let response = match self.http.get(&url).send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                debug!(%host, status = %r.status(), "no .well-known delegation");
                return None;
            }
            Err(err) => {
                debug!(%host, error = %err, "no .well-known delegation");
                return None;
            }
        };
        let body = read_limited(response, MAX_WELL_KNOWN_BYTES).await.ok()?;
        let parsed: WellKnown = serde_json::from_slice(&body).ok()?;
        ServerName::parse(&parsed.server).ok()?;
        Some(parsed.server)
    }

    async fn srv(&self, name: &str) -> Vec<(String, u16)> {
        let Ok(found) = self.dns.srv_lookup(name).await else {
            return Vec::new();
        };
        let mut records: Vec<_> = found.iter().collect();
        // Lowest priority first; among equals, the heaviest first (a deterministic stand-in
        // for the weighted random choice, enough for the first attempt).
        records.sort_by_key(|r| (r.priority(), std::cmp::Reverse(r.weight())));
        records
            .into_iter()
            .map(|r| (r.target().to_utf8(), r.port()))
            .collect()
    }
}

/// The client for federation requests.
pub struct Dialer {
    /// No total timeout of its own: reqwest's would also cut a media body that streams
    /// for longer. [`Dialer::send`] bounds the wait for the response head.
    http: reqwest::Client,
    request_timeout: Duration,
    resolver: Arc<GuardedResolver>,
    discovery: Discovery<NetworkLookups>,
    policy: AddressPolicy,
}

impl Dialer {
    pub fn new(settings: DialerSettings) -> Result<Dialer> {
        let dns =
            TokioAsyncResolver::tokio_from_system_conf().map_err(|err| Error::Unresolvable {
                host: "(resolver configuration)".to_owned(),
                reason: err.to_string(),
            })?;
        let resolver = Arc::new(GuardedResolver {
            dns: dns.clone(),
            policy: settings.policy.clone(),
            srv_targets: DashMap::new(),
        });
        let extra_roots = match &settings.extra_ca_file {
            Some(path) => load_ca_file(path)?,
            None => Vec::new(),
        };
        let base = |redirects: reqwest::redirect::Policy, total: Option<Duration>| {
            let mut builder = reqwest::Client::builder()
                .no_proxy()
                .dns_resolver(Arc::new(SharedResolver(resolver.clone())))
                .redirect(redirects)
                .connect_timeout(settings.connect_timeout)
                .tls_built_in_root_certs(true);
            if let Some(total) = total {
                builder = builder.timeout(total);
            }
            for cert in &extra_roots {
                builder = builder.add_root_certificate(cert.clone());
            }
            builder.build().map_err(Error::Client)
        };
        let policy = settings.policy.clone();
        let well_known_redirects = reqwest::redirect::Policy::custom(move |attempt| {
            let allowed = match attempt.url().host() {
                Some(url::Host::Ipv4(ip)) => policy(IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => policy(IpAddr::V6(ip)),
                Some(url::Host::Domain(_)) => true, // checked by the resolver
                None => false,
            };
            if !allowed || attempt.previous().len() >= MAX_WELL_KNOWN_REDIRECTS {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        let lookups = NetworkLookups {
            // A `.well-known` answer is small: one bound for the whole exchange.
            http: base(well_known_redirects, Some(settings.request_timeout))?,
            dns,
        };
        Ok(Dialer {
            http: base(reqwest::redirect::Policy::none(), None)?,
            request_timeout: settings.request_timeout,
            resolver,
            discovery: Discovery::new(lookups),
            policy: settings.policy,
        })
    }

    /// Where `server_name`'s federation API is.
    pub async fn discover(&self, server_name: &str) -> Result<Destination> {
        self.discovery.resolve(server_name).await
    }

    /// `GET path_and_query` on `server_name`'s federation API, with `authorization` (the
    /// X-Matrix header the caller signed for exactly this path and query).
    pub async fn federation_get(
        &self,
        server_name: &str,
        path_and_query: &str,
        authorization: Option<&str>,
    ) -> Result<reqwest::Response> {
        let destination = self.discover(server_name).await?;
        let tls_host = destination.tls_host.to_url_host();
        match (&destination.tls_host, &destination.connect_name) {
            (Host::Ip(ip), _) => self.check_ip(*ip, &tls_host)?,
            (Host::Name(name), Some(target)) => {
                self.resolver
                    .srv_targets
                    .insert(name.clone(), target.clone());
            }
            (Host::Name(name), None) => {
                self.resolver.srv_targets.remove(name);
            }
        }
        let url = format!("https://{tls_host}:{}{path_and_query}", destination.port);
        let mut request = self.http.get(&url);
        if let Ok(host) = HeaderValue::from_str(&destination.host_header) {
            request = request.header(HOST, host);
        }
        if let Some(authorization) = authorization {
            request = request.header(AUTHORIZATION, authorization);
        }
        self.send(server_name, request).await
    }

    /// `GET url` (a redirect target): the same address rules, no `Authorization`. Only
    /// `https` URLs, except `http` to an allow-listed IP literal (test setups).
    pub async fn get_url(&self, url: &str) -> Result<reqwest::Response> {
        let parsed = url::Url::parse(url).map_err(|_| Error::InvalidUrl(url.to_owned()))?;
        let host = parsed
            .host()
            .ok_or_else(|| Error::InvalidUrl(url.to_owned()))?
            .to_owned();
        let literal = match host {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(ref _name) => None,
        };
        match (parsed.scheme(), literal) {
            ("https", Some(ip)) | ("http", Some(ip)) => self.check_ip(ip, &host.to_string())?,
            ("https", None) => {}
            _ => return Err(Error::InvalidUrl(url.to_owned())),
        }
        self.send(&host.to_string(), self.http.get(parsed)).await
    }

    /// Sends `request`, waiting at most `request_timeout` for the response head; the body
    /// is the caller's to read (and to bound).
    async fn send(
        &self,
        host: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        match tokio::time::timeout(self.request_timeout, request.send()).await {
            Ok(sent) => sent.map_err(|source| request_error(host, source)),
            Err(_) => Err(Error::Timeout {
                host: host.to_owned(),
                after: self.request_timeout,
            }),
        }
    }

    /// Reads a small answer (a key document, an error) of at most `limit` bytes, within
    /// `request_timeout`: a peer that trickles it is cut off.
    pub async fn read_small(
        &self,
        response: reqwest::Response,
        limit: usize,
    ) -> std::result::Result<bytes::Bytes, LimitedBodyError> {
        tokio::time::timeout(self.request_timeout, read_limited(response, limit))
            .await
            .unwrap_or(Err(LimitedBodyError::TimedOut {
                after: self.request_timeout,
            }))
    }

    fn check_ip(&self, ip: IpAddr, host: &str) -> Result<()> {
        if (self.policy)(ip) {
            Ok(())
        } else {
            Err(Error::AddressRefused {
                host: host.to_owned(),
                addresses: ip.to_string(),
            })
        }
    }
}

/// A refused address surfaces as itself, not as a generic request failure: reqwest wraps
/// our resolver's error.
fn request_error(host: &str, source: reqwest::Error) -> Error {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&source);
    while let Some(err) = cause {
        if let Some(Error::AddressRefused { host, addresses }) = err.downcast_ref::<Error>() {
            return Error::AddressRefused {
                host: host.clone(),
                addresses: addresses.clone(),
            };
        }
        cause = err.source();
    }
    Error::Request {
        host: host.to_owned(),
        source,
    }
}

fn load_ca_file(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>> {
    let fail = |reason: String| Error::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no certificate in the file".to_owned()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy that refuses everything: nothing may be dialled, so these tests open no
    /// connection at all.
    fn refuse_all() -> Dialer {
        Dialer::new(DialerSettings {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            extra_ca_file: None,
            policy: Arc::new(|_| false),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn refused_addresses_are_never_dialled() {
        let dialer = refuse_all();
        for name in ["127.0.0.1:8448", "[::1]:8448", "localhost:8448"] {
            match dialer
                .federation_get(name, "/_matrix/key/v2/server", None)
                .await
            {
                Err(Error::AddressRefused { .. }) => {}
                other => panic!("{name}: expected AddressRefused, got {other:?}"),
            }
        }
        for url in [
            "https://127.0.0.1:1/x",
            "http://127.0.0.1:1/x",
            "https://localhost:1/x",
        ] {
            match dialer.get_url(url).await {
                Err(Error::AddressRefused { .. }) => {}
                other => panic!("{url}: expected AddressRefused, got {other:?}"),
            }
        }
        // Plain http to a name, and other schemes, are refused outright.
        for url in ["http://localhost:1/x", "ftp://127.0.0.1/x", "not a url"] {
            assert!(
                matches!(dialer.get_url(url).await, Err(Error::InvalidUrl(_))),
                "{url}"
            );
        }
    }

    /// A dialer that may reach loopback only (plain http to an IP literal, as `get_url`
    /// allows for allow-listed addresses).
    fn loopback_only(request_timeout: Duration) -> Dialer {
        Dialer::new(DialerSettings {
            request_timeout,
            connect_timeout: Duration::from_secs(1),
            extra_ca_file: None,
            policy: Arc::new(|ip| ip.is_loopback()),
        })
        .unwrap()
    }

    /// A one-shot HTTP server on 127.0.0.1: after `head_after` it sends a response head
    /// announcing `pieces` × `piece` bytes, then one piece every `gap`. Returns its URL.
    async fn slow_server(
        head_after: Duration,
        piece: &'static [u8],
        pieces: usize,
        gap: Duration,
    ) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            tokio::time::sleep(head_after).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                piece.len() * pieces
            );
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for _ in 0..pieces {
                tokio::time::sleep(gap).await;
                if stream.write_all(piece).await.is_err() {
                    return;
                }
            }
        });
        format!("http://127.0.0.1:{port}/media")
    }

    #[tokio::test]
    async fn a_body_may_stream_for_longer_than_the_request_timeout() {
        // The head comes at once; the body takes about three request timeouts.
        let timeout = Duration::from_millis(300);
        let url = slow_server(Duration::ZERO, b"0123456789", 9, Duration::from_millis(100)).await;
        let dialer = loopback_only(timeout);
        let mut response = dialer.get_url(&url).await.unwrap();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.unwrap() {
            body.extend_from_slice(&chunk);
        }
        assert_eq!(body, b"0123456789".repeat(9));
    }

    #[tokio::test]
    async fn a_head_that_does_not_come_is_a_timeout() {
        let timeout = Duration::from_millis(200);
        let url = slow_server(Duration::from_secs(5), b"x", 1, Duration::ZERO).await;
        let err = loopback_only(timeout).get_url(&url).await.unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_small_answer_trickled_past_the_timeout_is_cut_off() {
        let timeout = Duration::from_millis(200);
        let url = slow_server(Duration::ZERO, b"{}", 10, Duration::from_millis(100)).await;
        let dialer = loopback_only(timeout);
        let response = dialer.get_url(&url).await.unwrap();
        assert!(matches!(
            dialer.read_small(response, 1024).await,
            Err(LimitedBodyError::TimedOut { .. })
        ));
        // One that arrives in time is read whole.
        let url = slow_server(Duration::ZERO, b"{}", 2, Duration::from_millis(10)).await;
        let response = dialer.get_url(&url).await.unwrap();
        assert_eq!(
            dialer.read_small(response, 1024).await.unwrap().as_ref(),
            b"{}{}"
        );
    }

    #[test]
    fn a_bad_ca_file_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("mr-remote-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ca.pem");
        std::fs::write(&file, b"not a certificate").unwrap();
        let result = Dialer::new(DialerSettings {
            request_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            extra_ca_file: Some(file),
            policy: Arc::new(|_| false),
        });
        assert!(matches!(result, Err(Error::CaFile { .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
