//! `FederatingSynapse`: a Synapse that federates over TLS on loopback, following the verified
//! recipe in the shared FEDERATION.md. Its server name is the IP literal
//! `127.0.0.1:<federation port>`, so other homeservers (and later media-repo) skip
//! `.well-known` and SRV and connect straight to that port over TLS.
//!
//! Two layouts:
//! * `FederationListener::Tls`: Synapse terminates TLS itself on the federation port with a
//!   certificate from the test CA (resources `federation`, `keys`).
//! * `FederationListener::BehindProxy`: Synapse serves `federation` and `keys` over plain HTTP
//!   on an internal port and leaves the public federation port unbound, so a test can put a
//!   TLS-terminating nginx there (`Nginx::tls`) in front of both Synapse and media-repo.
//!
//! Each instance is owned by its test: its own temp dir, free ports, signing key and SQLite
//! database (so no federation backoff survives from an earlier run). Synapse runs under a
//! watchdog (`Watched`, the shared Synapse's mechanism) that kills it when the test process is
//! gone; dropping the handle kills it at once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tempfile::TempDir;

use super::{password_login, python_venv, register_user, Role, REGISTRATION_SECRET, START_TIMEOUT};
use crate::http;
use crate::ports::free_port;
use crate::process::{read_from, tail, LOG_TAIL_LINES};
use crate::test_ca::TestCa;
use crate::wait::wait_until;
use crate::watched::Watched;

/// Bound for one `/health` probe while Synapse starts; it is local, so a slow answer means
/// it is still busy starting.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Synapse's own log (INFO, unbuffered, so a request is counted as soon as it is answered).
const LOG_FILE: &str = "homeserver.log";
/// stdout and stderr of Synapse (start-up failures land here).
const OUT_FILE: &str = "synapse.out";
/// The watchdog writes Synapse's pid here (Synapse writes `pid_file` only when daemonized).
const PID_FILE: &str = "synapse.pid";
const SIGNING_KEY_FILE: &str = "signing.key";

/// Where Synapse's federation API (`federation` and `keys` resources) listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FederationListener {
    /// TLS on the public federation port, with a certificate issued by the test CA.
    Tls,
    /// Plain HTTP on an internal port; the public federation port is left for a TLS proxy.
    BehindProxy,
}

/// Options for `FederatingSynapse`; `start` launches it. Defaults: TLS listener on a free
/// port, media repo on (the remote side of a federation test).
pub struct FederatingSynapseBuilder<'a> {
    ca: &'a TestCa,
    federation_port: Option<u16>,
    listener: FederationListener,
    enable_media_repo: bool,
    max_upload_size: Option<u64>,
}

/// A running Synapse with an IP-literal server name. Dropping it kills Synapse (and its
/// watchdog) and removes its dir; when the drop happens because the test panicked, the last
/// lines of its log go to stderr first.
pub struct FederatingSynapse {
    /// `127.0.0.1:<federation port>`: the server name in user ids, mxc URIs and signatures.
    pub server_name: String,
    federation_port: u16,
    client_port: u16,
    internal_federation_port: Option<u16>,
    key_id: String,
    venv: PathBuf,
    process: Watched,
    /// Declared after `process`, so the dir goes only after Synapse is dead.
    dir: TempDir,
}

impl<'a> FederatingSynapseBuilder<'a> {
    /// The public federation port (the one in the server name); a free port if not set.
    /// With `behind_proxy` this is where the test's nginx must listen.
    pub fn federation_port(mut self, port: u16) -> Self {
        self.federation_port = Some(port);
        self
    }

    /// Serve federation over plain HTTP on an internal port and leave the public federation
    /// port unbound (see `FederationListener::BehindProxy`).
    pub fn behind_proxy(mut self) -> Self {
        self.listener = FederationListener::BehindProxy;
        self
    }

    /// `enable_media_repo` in homeserver.yaml: on for a remote homeserver that serves its own
    /// media, off for one whose media paths media-repo serves.
    pub fn enable_media_repo(mut self, on: bool) -> Self {
        self.enable_media_repo = on;
        self
    }

    /// `max_upload_size` in homeserver.yaml, in bytes; Synapse's default (50M) if not set.
    /// Synapse also refuses remote media larger than this, so it bounds both sides of a
    /// federated fetch.
    pub fn max_upload_size(mut self, bytes: u64) -> Self {
        self.max_upload_size = Some(bytes);
        self
    }

    /// Writes the config, generates a signing key, starts Synapse and waits until its client
    /// listener answers `/health` (and, with `Tls`, the federation port accepts connections).
    pub fn start(self) -> anyhow::Result<FederatingSynapse> {
        let venv = python_venv()?;
        let dir = tempfile::Builder::new()
            .prefix("mr-fed-synapse-")
            .tempdir()
            .context("creating temp dir for Synapse")?;
        let d = dir.path();
        std::fs::create_dir_all(d.join("data"))?;
        let federation_port = self.federation_port.unwrap_or_else(free_port);
        let client_port = free_port();
        let internal_federation_port =
            (self.listener == FederationListener::BehindProxy).then(free_port);
        let server_name = format!("127.0.0.1:{federation_port}");

        let key_id = generate_signing_key(&venv, &d.join(SIGNING_KEY_FILE))?;
        let (federation_listener, tls_lines) = match internal_federation_port {
            Some(internal) => (
                listener_yaml(internal, false, "[federation, keys]"),
                String::new(),
            ),
            None => {
                let cert = self.ca.issue(&["127.0.0.1"])?;
                std::fs::copy(cert.chain_path(), d.join("tls.crt"))?;
                std::fs::copy(cert.key_path(), d.join("tls.key"))?;
                let dd = d.display();
                (
                    listener_yaml(federation_port, true, "[federation, keys]"),
                    format!(
                        "tls_certificate_path: \"{dd}/tls.crt\"\ntls_private_key_path: \"{dd}/tls.key\"\n"
                    ),
                )
            }
        };
        let config = homeserver_yaml(
            d,
            &server_name,
            client_port,
            &federation_listener,
            &tls_lines,
            self.enable_media_repo,
            self.max_upload_size,
        );
        std::fs::write(d.join("homeserver.yaml"), config)?;
        std::fs::write(d.join("log.yaml"), log_config_yaml(&d.join(LOG_FILE)))?;

        let python = venv.join("bin/python");
        let config = d.join("homeserver.yaml");
        let config = config.to_str().context("non-UTF-8 temp dir")?;
        let process = Watched::spawn(
            &python,
            &["-m", "synapse.app.homeserver", "-c", config],
            d,
            &d.join(OUT_FILE),
            &d.join(PID_FILE),
            Some(d),
        )
        .context("starting Synapse")?;
        let synapse = FederatingSynapse {
            server_name,
            federation_port,
            client_port,
            internal_federation_port,
            key_id,
            venv,
            process,
            dir,
        };
        synapse.wait_started(self.listener)?;
        Ok(synapse)
    }
}

impl FederatingSynapse {
    /// Options, starting from a TLS federation listener (certificate from `ca`) on a free port
    /// and the media repo on.
    pub fn builder(ca: &TestCa) -> FederatingSynapseBuilder<'_> {
        FederatingSynapseBuilder {
            ca,
            federation_port: None,
            listener: FederationListener::Tls,
            enable_media_repo: true,
            max_upload_size: None,
        }
    }

    /// The FEDERATION.md recipe as is: TLS federation listener, media repo on.
    pub fn start(ca: &TestCa) -> anyhow::Result<FederatingSynapse> {
        Self::builder(ca).start()
    }

    /// The plain-HTTP client API (`http://127.0.0.1:<client port>`).
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The public federation base URL, `https://<server name>`: Synapse itself with `Tls`,
    /// the test's proxy with `BehindProxy`.
    pub fn federation_url(&self) -> String {
        format!("https://{}", self.server_name)
    }

    /// With `BehindProxy`, where Synapse's own federation and key API listens over plain HTTP
    /// (`http://127.0.0.1:<internal port>`): the proxy's federation upstream.
    pub fn internal_federation_url(&self) -> Option<String> {
        self.internal_federation_port
            .map(|p| format!("http://127.0.0.1:{p}"))
    }

    pub fn federation_port(&self) -> u16 {
        self.federation_port
    }

    /// Synapse's signing key file (`ed25519 <version> <base64 seed>`): whoever signs
    /// federation requests as this homeserver (media-repo in front of it) reads this.
    pub fn signing_key_path(&self) -> PathBuf {
        self.dir.path().join(SIGNING_KEY_FILE)
    }

    /// The signing key's id, `ed25519:<version>` (the version differs per generated key).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The Synapse (Python) process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The pid of the watchdog shell that kills Synapse if the test process dies.
    pub fn watchdog_pid(&self) -> u32 {
        self.process.watchdog_pid()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Registers `localpart` (if new) and logs in: returns a fresh access token.
    pub fn user_token(&self, localpart: &str) -> anyhow::Result<String> {
        register_user(&self.venv, &self.client_url(), localpart, Role::User)?;
        password_login(&self.client_url(), localpart)
    }

    /// Registers `localpart` (if new) as a server admin and logs in: a fresh access token.
    pub fn admin_token(&self, localpart: &str) -> anyhow::Result<String> {
        register_user(&self.venv, &self.client_url(), localpart, Role::Admin)?;
        password_login(&self.client_url(), localpart)
    }

    /// Synapse's log (INFO level; one `Processed request` line per answered request).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(LOG_FILE)
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        read_from(&self.log_path(), 0)
    }

    /// How many requests Synapse has answered whose request line contains `path_substring`
    /// (on any listener). Synapse logs a request once its response is sent, so a test
    /// waiting for a count to rise polls (`wait_until`).
    pub fn count_requests(&self, path_substring: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("Processed request") && l.contains(path_substring))
            .count()
    }

    fn wait_started(&self, listener: FederationListener) -> anyhow::Result<()> {
        let health = format!("{}/health", self.client_url());
        let mut exited = None;
        let result = wait_until("Synapse to answer /health", START_TIMEOUT, || {
            exited = self.process.exited();
            exited.is_some() || http::get(&health, PROBE_TIMEOUT).is_ok_and(|r| r.status == 200)
        });
        let failure = match (result, exited) {
            (_, Some(how)) => Some(format!("Synapse exited ({how})")),
            (Err(e), None) => Some(format!("{e:#}")),
            (Ok(()), None) => None,
        };
        if let Some(why) = failure {
            bail!(
                "Synapse {} did not start: {why}\n{}",
                self.server_name,
                self.log_tail()
            );
        }
        if listener == FederationListener::Tls {
            // Both listeners start together; this only guards against a half-started server.
            let port = self.federation_port;
            if let Err(e) = wait_until("the federation port to listen", PROBE_TIMEOUT, || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            }) {
                bail!("{e:#}\n{}", self.log_tail());
            }
        }
        Ok(())
    }

    /// The last lines of Synapse's output and log, for error messages.
    fn log_tail(&self) -> String {
        let out = read_from(&self.dir.path().join(OUT_FILE), 0);
        format!(
            "--- {OUT_FILE} ---\n{}\n--- {LOG_FILE} ---\n{}",
            tail(&out, LOG_TAIL_LINES),
            tail(&self.log(), LOG_TAIL_LINES)
        )
    }
}

impl Drop for FederatingSynapse {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "Synapse {} at drop after a panic:\n{}",
                self.server_name,
                self.log_tail()
            );
        }
        // Before the dir goes (fields drop after this).
        self.process.stop();
    }
}

/// Generates a signing key with Synapse's own tool and returns its id (`ed25519:<version>`).
fn generate_signing_key(venv: &Path, path: &Path) -> anyhow::Result<String> {
    let out = Command::new(venv.join("bin/generate_signing_key"))
        .arg("-o")
        .arg(path)
        .output()
        .context("running generate_signing_key")?;
    if !out.status.success() {
        bail!(
            "generate_signing_key failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    match text.split_whitespace().collect::<Vec<_>>()[..] {
        [alg, version, _seed] => Ok(format!("{alg}:{version}")),
        _ => bail!("unexpected signing key file format in {}", path.display()),
    }
}

/// One HTTP listener on 127.0.0.1 with the given resources. `x_forwarded` so that behind a
/// proxy Synapse logs the real client address.
fn listener_yaml(port: u16, tls: bool, resources: &str) -> String {
    format!(
        "  - port: {port}\n    bind_addresses: ['127.0.0.1']\n    type: http\n    tls: {tls}\n    \
         x_forwarded: {}\n    resources:\n      - names: {resources}\n        compress: false\n",
        !tls
    )
}

fn homeserver_yaml(
    dir: &Path,
    server_name: &str,
    client_port: u16,
    federation_listener: &str,
    tls_lines: &str,
    enable_media_repo: bool,
    max_upload_size: Option<u64>,
) -> String {
    let d = dir.display();
    let client_listener = listener_yaml(client_port, false, "[client]");
    let max_upload_size = max_upload_size
        .map(|bytes| format!("max_upload_size: {bytes}\n"))
        .unwrap_or_default();
    format!(
        r#"server_name: "{server_name}"
pid_file: "{d}/data/homeserver.pid"
public_baseurl: "http://127.0.0.1:{client_port}/"
listeners:
{client_listener}{federation_listener}{tls_lines}database:
  name: sqlite3
  args: {{database: "{d}/data/homeserver.db"}}
log_config: "{d}/log.yaml"
media_store_path: "{d}/media_store"
signing_key_path: "{d}/{SIGNING_KEY_FILE}"
report_stats: false
registration_shared_secret: "{REGISTRATION_SECRET}"
macaroon_secret_key: "media-repo-tests-macaroon-secret-key"
form_secret: "media-repo-tests-form-secret"
enable_registration: false
enable_media_repo: {enable_media_repo}
{max_upload_size}# Loopback federation (FEDERATION.md): the certificates come from a test CA Synapse does not
# know; the default blacklist blocks 127.0.0.0/8 (a whitelist does not help for IP literals);
# keys come from the origin itself. No federation_domain_whitelist: an empty list means
# "federate with nobody".
federation_verify_certificates: false
ip_range_blacklist: []
trusted_key_servers: []
suppress_key_server_warning: true
# A failed request backs off a destination; keep it short so a test can retry.
federation:
  destination_min_retry_interval: 1s
  destination_retry_multiplier: 1
  destination_max_retry_interval: 2s
rc_login:
  address: {{per_second: 1000, burst_count: 1000}}
  account: {{per_second: 1000, burst_count: 1000}}
  failed_attempts: {{per_second: 1000, burst_count: 1000}}
rc_message: {{per_second: 1000, burst_count: 1000}}
"#
    )
}

/// Python logging config: INFO to one unbuffered file (Synapse's generated config buffers
/// INFO lines for up to 5 s, which would make `count_requests` lag).
fn log_config_yaml(log: &Path) -> String {
    format!(
        r#"version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: "{}"
    encoding: utf8
loggers:
  synapse.storage.SQL: {{level: WARNING}}
root: {{level: INFO, handlers: [file]}}
disable_existing_loggers: false
"#,
        log.display()
    )
}
