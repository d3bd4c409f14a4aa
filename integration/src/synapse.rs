//! A real Synapse homeserver (from PyPI, in a venv cached under the target directory) for the
//! tests that need one: whoami for auth, users to log in, and matrix-nio as a real client.
//!
//! One Synapse per test binary, started on first use. It runs under a watchdog (`Watched`)
//! that kills it and removes its dir when the test process is gone, because a process kept in a
//! static is never dropped.
//!
//! `FederatingSynapse` (in `synapse/federating.rs`) is the other kind: one per test, owned and
//! killed on drop, with an IP-literal server name and a TLS federation listener, for tests in
//! which homeservers (and media-repo) talk over federation.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::free_port;
use crate::watched::Watched;

mod federating;
pub use federating::{FederatingSynapse, FederatingSynapseBuilder, FederationListener};

/// Pinned so every run tests against the same homeserver and client.
pub const SYNAPSE_PACKAGE: &str = "matrix-synapse==1.163.2";
pub const NIO_PACKAGE: &str = "matrix-nio==0.26.0";
/// Shared secret for `register_new_matrix_user`.
pub(crate) const REGISTRATION_SECRET: &str = "media-repo-tests-registration-secret";
/// Password of every test user.
pub const USER_PASSWORD: &str = "correct horse battery staple";
/// Synapse takes a few seconds to start on a loaded 2-core machine.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The target directory of this build (`…/target`).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
}

/// The Python venv holding Synapse and matrix-nio, created (once, under a file lock) if missing.
pub fn python_venv() -> anyhow::Result<PathBuf> {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    VENV.get_or_init(|| prepare_venv().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn venv_is_ready(venv: &Path) -> bool {
    Command::new(venv.join("bin/python"))
        .args(["-c", "import synapse, nio, aiohttp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn prepare_venv() -> anyhow::Result<PathBuf> {
    let target = target_dir();
    std::fs::create_dir_all(&target)?;
    let venv = target.join("synapse-venv");
    let lock_path = target.join("synapse-venv.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    // Several test binaries may start at once: only one installs.
    let fd = std::os::unix::io::AsRawFd::as_raw_fd(&lock);
    if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
        bail!("locking {}", lock_path.display());
    }
    if !venv_is_ready(&venv) {
        eprintln!(
            "installing {SYNAPSE_PACKAGE} and {NIO_PACKAGE} into {} (once; cached)",
            venv.display()
        );
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let status = Command::new(&python)
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .with_context(|| format!("running {python} -m venv"))?;
        if !status.success() {
            bail!("{python} -m venv failed");
        }
        let out = Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--disable-pip-version-check",
                "-q",
                SYNAPSE_PACKAGE,
                NIO_PACKAGE,
            ])
            .output()
            .context("running pip")?;
        if !out.status.success() {
            bail!(
                "pip install failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    drop(lock);
    Ok(venv)
}

/// A running Synapse with registered users.
pub struct Synapse {
    pub port: u16,
    pub server_name: String,
    pub dir: PathBuf,
    venv: PathBuf,
    /// Never dropped while the static lives; the watchdog ends Synapse with the test process.
    _process: Watched,
}

impl Synapse {
    /// The Synapse of this test binary, started on first use.
    pub fn shared() -> &'static Synapse {
        static SHARED: OnceLock<Synapse> = OnceLock::new();
        SHARED.get_or_init(|| {
            Synapse::start().unwrap_or_else(|e| panic!("starting Synapse failed: {e:#}"))
        })
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn python(&self) -> PathBuf {
        self.venv.join("bin/python")
    }

    fn start() -> anyhow::Result<Synapse> {
        let venv = python_venv()?;
        // Kept (not a TempDir) because the static holding it is never dropped; the wrapper
        // removes it when the test process ends.
        let dir = tempfile::Builder::new()
            .prefix("mr-synapse-")
            .tempdir()?
            .keep();
        std::fs::create_dir_all(dir.join("data"))?;
        let port = free_port();
        let server_name = format!("localhost:{port}");
        let out = Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "synapse.app.homeserver",
                "--server-name",
                &server_name,
                "--config-path",
            ])
            .arg(dir.join("generated.yaml"))
            .arg("--data-directory")
            .arg(dir.join("data"))
            .args(["--generate-config", "--report-stats=no"])
            .current_dir(&dir)
            .output()
            .context("generating Synapse keys")?;
        if !out.status.success() {
            bail!(
                "synapse --generate-config failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let d = dir.display();
        let config = format!(
            r#"server_name: "{server_name}"
pid_file: {d}/data/homeserver.pid
public_baseurl: "http://{server_name}/"
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: true
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args: {{database: {d}/data/homeserver.db}}
log_config: "{d}/{server_name}.log.config"
signing_key_path: "{d}/{server_name}.signing.key"
report_stats: false
registration_shared_secret: "{REGISTRATION_SECRET}"
macaroon_secret_key: "media-repo-tests-macaroon-secret-key"
form_secret: "media-repo-tests-form-secret"
enable_registration: false
trusted_key_servers: []
federation_domain_whitelist: []
enable_media_repo: false
rc_login:
  address: {{per_second: 1000, burst_count: 1000}}
  account: {{per_second: 1000, burst_count: 1000}}
  failed_attempts: {{per_second: 1000, burst_count: 1000}}
rc_message: {{per_second: 1000, burst_count: 1000}}
"#
        );
        std::fs::write(dir.join("homeserver.yaml"), config)?;
        let config_path = dir.join("homeserver.yaml");
        let process = Watched::spawn(
            &venv.join("bin/python"),
            &[
                "-m",
                "synapse.app.homeserver",
                "-c",
                config_path.to_str().context("non-UTF-8 temp dir")?,
            ],
            &dir,
            &dir.join("synapse.out"),
            &dir.join("synapse.pid"),
            Some(&dir),
        )
        .context("starting Synapse")?;
        let synapse = Synapse {
            port,
            server_name,
            dir,
            venv,
            _process: process,
        };
        synapse.wait_healthy()?;
        Ok(synapse)
    }

    fn wait_healthy(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        while started.elapsed() < START_TIMEOUT {
            if let Ok(r) = client.get(format!("{}/health", self.base_url())).send() {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let log = std::fs::read_to_string(self.dir.join("synapse.out")).unwrap_or_default()
            + &std::fs::read_to_string(self.dir.join("homeserver.log")).unwrap_or_default();
        bail!("Synapse did not become healthy in {START_TIMEOUT:?}:\n{log}")
    }

    /// Registers `localpart` (if new) and logs in: returns a fresh access token.
    pub fn user_token(&self, localpart: &str) -> anyhow::Result<String> {
        register_user(&self.venv, &self.base_url(), localpart, Role::User)?;
        self.login(localpart)
    }

    /// Registers `localpart` (if new) as a server admin and logs in: a fresh access token.
    pub fn admin_token(&self, localpart: &str) -> anyhow::Result<String> {
        register_user(&self.venv, &self.base_url(), localpart, Role::Admin)?;
        self.login(localpart)
    }

    /// Logs `localpart` in with the test password: a new access token each call.
    pub fn login(&self, localpart: &str) -> anyhow::Result<String> {
        password_login(&self.base_url(), localpart)
    }

    /// Logs a token out, so it becomes invalid.
    pub fn logout(&self, token: &str) -> anyhow::Result<()> {
        reqwest::blocking::Client::new()
            .post(format!("{}/_matrix/client/v3/logout", self.base_url()))
            .bearer_auth(token)
            .json(&serde_json::json!({}))
            .send()?
            .error_for_status()?;
        Ok(())
    }
}

/// Whether a registered user is a server admin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    User,
    Admin,
}

/// Registers `localpart` (unless it exists) on the homeserver whose client API is at
/// `base_url`, with the shared registration secret every test Synapse is configured with.
/// (A localpart registered before keeps the role it was registered with.)
pub(crate) fn register_user(
    venv: &Path,
    base_url: &str,
    localpart: &str,
    role: Role,
) -> anyhow::Result<()> {
    let admin_flag = match role {
        Role::User => "--no-admin",
        Role::Admin => "--admin",
    };
    let out = Command::new(venv.join("bin/register_new_matrix_user"))
        .args([
            "-u",
            localpart,
            "-p",
            USER_PASSWORD,
            admin_flag,
            "-k",
            REGISTRATION_SECRET,
        ])
        .arg(base_url)
        .output()
        .context("register_new_matrix_user")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !stderr.contains("User ID already taken") {
        bail!("registering {localpart} failed: {stderr}");
    }
    Ok(())
}

/// Logs `localpart` in with the test password at `base_url`: a new access token each call.
pub(crate) fn password_login(base_url: &str, localpart: &str) -> anyhow::Result<String> {
    let body = serde_json::json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": localpart},
        "password": USER_PASSWORD,
    });
    let response: serde_json::Value = reqwest::blocking::Client::new()
        .post(format!("{base_url}/_matrix/client/v3/login"))
        .json(&body)
        .send()?
        .error_for_status()?
        .json()?;
    response["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("login answer has no access_token")
}
