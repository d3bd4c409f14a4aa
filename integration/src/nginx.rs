//! nginx in front of a homeserver and media-repo, as a real deployment has it: media paths to
//! media-repo, everything else to the homeserver. Also serves static files (a benchmark ceiling).
//!
//! `Nginx::start` is plain HTTP on a free port. `Nginx::tls` builds the federation-facing
//! variant: TLS with a test-CA certificate on a given port (a homeserver's public federation
//! port), media paths to media-repo, federation and key paths to the homeserver's internal
//! federation listener, the rest to its client listener.
//!
//! Every instance writes an access log (method, URI, status, upstream address), so a test can
//! count which requests reached it and where they went.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::free_port;
use crate::test_ca::ServerCert;
use crate::watched::Watched;

/// How long nginx may take to listen; it starts in milliseconds, so this means it failed.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Paths media-repo serves: the legacy and authenticated client media APIs, federation
/// media, the Synapse admin media endpoints (`/_synapse/admin/v1/media/...`, a user's
/// media, `purge_media_cache`; the rest of `/_synapse/admin` stays with the homeserver) and
/// its own admin API. The regex is nginx's location syntax.
const MEDIA_LOCATION: &str = "~ ^/(_matrix/(media|client/v1/media|federation/v1/media)/\
     |_synapse/admin/v1/(media/|users?/[^/]+/media(/|$)|purge_media_cache)|_media_repo/v1/admin/)";

const ACCESS_LOG: &str = "access.log";
const ERROR_LOG: &str = "error.log";
/// nginx's stdout and stderr: config errors land here before the error log is open.
const STDERR_LOG: &str = "stderr.log";
const PID_FILE: &str = "watched.pid";

/// A running nginx, killed on drop (and by its watchdog if the test process dies first).
pub struct Nginx {
    process: Watched,
    port: u16,
    scheme: &'static str,
    /// Declared after `process`, so the dir goes only after nginx is dead.
    dir: tempfile::TempDir,
}

/// Options for a TLS-terminating nginx; `start` launches it. Each upstream is a base URL
/// (`http://127.0.0.1:port`, no path). Without a media upstream, media paths go where their
/// prefix goes (federation media to the federation upstream, the rest to the client one);
/// without a federation upstream, federation and key paths go to the client upstream; without
/// a client upstream, what is left answers 404.
pub struct TlsNginxBuilder<'a> {
    cert: &'a ServerCert,
    port: Option<u16>,
    media: Option<String>,
    federation: Option<String>,
    client: Option<String>,
    limit_rate: Option<u64>,
}

impl<'a> TlsNginxBuilder<'a> {
    /// Listen on this port (e.g. a `FederatingSynapse`'s `federation_port()` when it runs
    /// `behind_proxy`); a free port if not set.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// `/_matrix/media/`, `/_matrix/client/v1/media/`, `/_matrix/federation/v1/media/`.
    pub fn media_upstream(mut self, base_url: &str) -> Self {
        self.media = Some(base_url.trim_end_matches('/').to_owned());
        self
    }

    /// `/_matrix/federation/` and `/_matrix/key/` (a homeserver's federation listener).
    pub fn federation_upstream(mut self, base_url: &str) -> Self {
        self.federation = Some(base_url.trim_end_matches('/').to_owned());
        self
    }

    /// Sends every response at most this many bytes per second (nginx `limit_rate`), so a
    /// test can act in the middle of a transfer.
    pub fn limit_rate(mut self, bytes_per_sec: u64) -> Self {
        self.limit_rate = Some(bytes_per_sec);
        self
    }

    /// Everything else, `/_matrix/client/` included (a homeserver's client listener).
    pub fn client_upstream(mut self, base_url: &str) -> Self {
        self.client = Some(base_url.trim_end_matches('/').to_owned());
        self
    }

    pub fn start(self) -> anyhow::Result<Nginx> {
        let dir = tempfile::Builder::new().prefix("mr-nginx-tls-").tempdir()?;
        std::fs::copy(self.cert.chain_path(), dir.path().join("tls.crt"))
            .context("copying the TLS certificate")?;
        std::fs::copy(self.cert.key_path(), dir.path().join("tls.key"))
            .context("copying the TLS key")?;
        let port = self.port.unwrap_or_else(free_port);
        let d = dir.path().display();
        // nginx applies limit_rate only to buffered proxying (the server block turns
        // buffering off for every other test).
        let buffering = if self.limit_rate.is_some() {
            "proxy_buffering on; "
        } else {
            ""
        };
        let mut locations = String::new();
        if let Some(media) = &self.media {
            locations += &format!(
                "        location {MEDIA_LOCATION} {{ {buffering}proxy_pass {media}; }}\n"
            );
        }
        if let Some(federation) = &self.federation {
            locations += &format!(
                "        location /_matrix/federation/ {{ {buffering}proxy_pass {federation}; }}\n        \
                 location /_matrix/key/ {{ proxy_pass {federation}; }}\n"
            );
        }
        locations += &match &self.client {
            Some(client) => format!("        location / {{ {buffering}proxy_pass {client}; }}"),
            None => "        location / { return 404; }".to_owned(),
        };
        let server = format!(
            r#"listen 127.0.0.1:{port} ssl;
        ssl_certificate {d}/tls.crt;
        ssl_certificate_key {d}/tls.key;
        ssl_protocols TLSv1.2 TLSv1.3;
{limit}{locations}"#,
            limit = self
                .limit_rate
                .map(|rate| format!("        limit_rate {rate};\n"))
                .unwrap_or_default(),
        );
        Nginx::spawn(dir, port, "https", &server)
    }
}

fn nginx_bin() -> PathBuf {
    for candidate in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    PathBuf::from("nginx")
}

impl Nginx {
    /// Proxies `/_matrix/media/`, `/_matrix/client/v1/media/` and
    /// `/_matrix/federation/v1/media/` to `media_repo`, everything else to `homeserver`
    /// (both `http://host:port`). `static_root`, when given, is served under `/static/`.
    pub fn start(
        media_repo: &str,
        homeserver: &str,
        static_root: Option<&Path>,
    ) -> anyhow::Result<Nginx> {
        let dir = tempfile::Builder::new().prefix("mr-nginx-").tempdir()?;
        let port = free_port();
        let static_block = static_root
            .map(|root| {
                format!(
                    "location /static/ {{ alias {}/; sendfile on; }}",
                    root.display()
                )
            })
            .unwrap_or_default();
        let server = format!(
            r#"listen 127.0.0.1:{port};
        location {MEDIA_LOCATION} {{ proxy_pass {media_repo}; }}
        {static_block}
        location / {{ proxy_pass {homeserver}; }}"#
        );
        Nginx::spawn(dir, port, "http", &server)
    }

    /// A TLS-terminating nginx with `cert` (see `TlsNginxBuilder`).
    pub fn tls(cert: &ServerCert) -> TlsNginxBuilder<'_> {
        TlsNginxBuilder {
            cert,
            port: None,
            media: None,
            federation: None,
            client: None,
            limit_rate: None,
        }
    }

    /// Writes nginx.conf around `server` (the listen line and locations) and starts nginx,
    /// waiting until it accepts connections on `port`.
    fn spawn(
        dir: tempfile::TempDir,
        port: u16,
        scheme: &'static str,
        server: &str,
    ) -> anyhow::Result<Nginx> {
        let d = dir.path().display();
        let conf = format!(
            r#"user root;
# One process, so that killing the child leaves no worker behind.
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/{ERROR_LOG} warn;
events {{ worker_connections 1024; }}
http {{
    log_format routed '$request_method $request_uri $status $upstream_addr';
    access_log {d}/{ACCESS_LOG} routed;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    types {{ }}
    default_type application/octet-stream;
    server {{
        client_max_body_size 0;
        proxy_http_version 1.1;
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_request_buffering off;
        proxy_buffering off;
        {server}
    }}
}}
"#
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let d = dir.path();
        let path_str = |p: &'_ Path| -> anyhow::Result<String> {
            Ok(p.to_str().context("non-UTF-8 temp dir")?.to_owned())
        };
        let (conf_arg, prefix_arg) = (path_str(&conf_path)?, path_str(d)?);
        let process = Watched::spawn(
            &nginx_bin(),
            &["-c", &conf_arg, "-p", &prefix_arg, "-g", "daemon off;"],
            d,
            &d.join(STDERR_LOG),
            &d.join(PID_FILE),
            Some(d),
        )
        .context("starting nginx (apt-get install nginx-light)")?;
        let nginx = Nginx {
            process,
            port,
            scheme,
            dir,
        };
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(nginx);
            }
            if let Some(how) = nginx.process.exited() {
                let log = [STDERR_LOG, ERROR_LOG]
                    .map(|f| std::fs::read_to_string(nginx.dir.path().join(f)).unwrap_or_default())
                    .concat();
                bail!("nginx exited ({how}): {log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("nginx did not listen on {port} within {START_TIMEOUT:?}")
    }

    /// `http://127.0.0.1:port`, or `https://…` for a TLS nginx.
    pub fn base_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The pid of the watchdog shell that kills nginx if the test process dies.
    pub fn watchdog_pid(&self) -> u32 {
        self.process.watchdog_pid()
    }

    /// The access log so far: one line per answered request,
    /// `METHOD URI STATUS UPSTREAM_ADDR` (`-` when nginx answered itself).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(ACCESS_LOG)).unwrap_or_default()
    }

    /// How many answered requests have `path_substring` in their URI. nginx logs a request
    /// when it is done, so a test expecting a count to rise polls (`wait_until`).
    pub fn count_requests(&self, path_substring: &str) -> usize {
        self.access_log()
            .lines()
            .filter(|l| {
                l.split(' ')
                    .nth(1)
                    .is_some_and(|uri| uri.contains(path_substring))
            })
            .count()
    }
}
