//! `MediaRepo`: the real `media-repo` binary as a child process with a generated config,
//! on free ports, in its own dir — started, reloaded (SIGHUP), killed and restarted by
//! tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tempfile::TempDir;

use crate::binary::try_media_repo_bin;
use crate::http::{self, Reply};
use crate::metrics;
use crate::ports::{free_port, port_is_bindable};
use crate::process::{file_len, read_from, tail, Proc, LOG_TAIL_LINES};
use crate::wait::{wait_until, POLL_INTERVAL};

/// How long a start may take until `GET /healthz` answers 200 (migrations, first bind).
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);

/// Bound for one health probe; the server is local, so a slow answer means a problem.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Bound for `metrics()` and `get()`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How often `start` picks new ports when another process took the chosen ones first.
const START_ATTEMPTS: usize = 3;

/// How long `restart` keeps retrying its port while the old socket is still in the way.
const RESTART_WINDOW: Duration = Duration::from_secs(10);

/// The port of the embedded default config (`server.bind: 127.0.0.1:8000`).
const EMBEDDED_PORT: u16 = 8000;

/// The operators' port of the embedded default config (`metrics.bind: 127.0.0.1:9000`).
const EMBEDDED_METRICS_PORT: u16 = 9000;

/// How long `start_without_config` waits for another test of this process to release
/// ports 8000 and 9000.
const EMBEDDED_PORT_WAIT: Duration = Duration::from_secs(120);

/// How long `start_without_config` waits for another process to free ports 8000 and 9000.
const EMBEDDED_PORT_BUSY_WAIT: Duration = Duration::from_secs(10);

const CONFIG_FILE: &str = "config.yaml";
const LOG_FILE: &str = "media-repo.log";

/// How the process is launched, so `restart` repeats it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Launch {
    /// `media-repo --config DIR/config.yaml`
    WithConfig,
    /// `media-repo` with cwd = DIR: the embedded default config.
    Embedded,
}

/// A running `media-repo`. Dropping it kills the process (SIGKILL) and reaps it; when
/// the drop happens because the test panicked, the last 100 log lines go to stderr first.
pub struct MediaRepo {
    proc: Proc,
    bin: PathBuf,
    launch: Launch,
    port: u16,
    metrics_port: u16,
    dir: PathBuf,
    /// Keeps `start()`'s temp dir alive; removed after the process is dead (declared after
    /// `proc`, so dropped after it).
    _tmp: Option<TempDir>,
    /// Only for `start_without_config`: holds port 8000 for this test.
    _embedded_port: Option<EmbeddedPortGuard>,
}

impl MediaRepo {
    /// Starts `media-repo` on a free port in a new temp dir. In `config_yaml`, `{port}`,
    /// `{metrics_port}` and `{dir}` are replaced by the main port, a second free port and
    /// the temp dir. A YAML without a top-level `metrics:` key gets the operators'
    /// listener on `{metrics_port}` (the default, 9000, would clash between tests).
    /// Waits (≤ 30 s) until `GET /healthz` answers 200.
    pub fn start(config_yaml: &str) -> anyhow::Result<MediaRepo> {
        let tmp = tempfile::Builder::new()
            .prefix("mr-media-repo-")
            .tempdir()
            .context("creating temp dir for media-repo")?;
        let dir = tmp.path().to_owned();
        Self::start_with_config(try_media_repo_bin()?, dir, Some(tmp), config_yaml)
    }

    /// Like `start`, but in `dir` (created if missing, kept after drop): for tests that
    /// stop a server and start another on the same data.
    pub fn start_in(dir: &Path, config_yaml: &str) -> anyhow::Result<MediaRepo> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Self::start_with_config(try_media_repo_bin()?, dir.to_owned(), None, config_yaml)
    }

    /// Runs `media-repo` with no `--config` and cwd = `dir`, i.e. on the embedded default
    /// config, whose ports are fixed at 8000 (public) and 9000 (operators). Tests of this
    /// process that use it take turns; if something else holds 127.0.0.1:8000 or :9000 for
    /// more than 10 s, fails saying so.
    pub fn start_without_config(dir: &Path) -> anyhow::Result<MediaRepo> {
        Self::start_embedded(try_media_repo_bin()?, dir)
    }

    fn start_embedded(bin: PathBuf, dir: &Path) -> anyhow::Result<MediaRepo> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let guard = EmbeddedPortGuard::acquire()?;
        // Another test process (a colleague's run) may hold it for a moment.
        let mut busy = None;
        let _ = wait_until(
            "ports 8000 and 9000 to be free",
            EMBEDDED_PORT_BUSY_WAIT,
            || {
                busy = [EMBEDDED_PORT, EMBEDDED_METRICS_PORT]
                    .into_iter()
                    .find_map(|port| port_is_bindable(port).err().map(|e| (port, e)));
                busy.is_none()
            },
        );
        if let Some((port, e)) = busy {
            bail!(
                "127.0.0.1:{port} is busy ({e}): the embedded default config binds this fixed port, \
                 so stop whatever listens there before running this test"
            );
        }
        let proc =
            spawn_healthy(&bin, dir, Launch::Embedded, EMBEDDED_PORT).map_err(|f| f.error)?;
        Ok(MediaRepo {
            proc,
            bin,
            launch: Launch::Embedded,
            port: EMBEDDED_PORT,
            metrics_port: EMBEDDED_METRICS_PORT,
            dir: dir.to_owned(),
            _tmp: None,
            _embedded_port: Some(guard),
        })
    }

    fn start_with_config(
        bin: PathBuf,
        dir: PathBuf,
        tmp: Option<TempDir>,
        config_yaml: &str,
    ) -> anyhow::Result<MediaRepo> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (port, metrics_port) = (free_port(), free_port());
            write_config_file(&dir, &substitute(config_yaml, port, metrics_port, &dir))?;
            match spawn_healthy(&bin, &dir, Launch::WithConfig, port) {
                Ok(proc) => {
                    return Ok(MediaRepo {
                        proc,
                        bin,
                        launch: Launch::WithConfig,
                        port,
                        metrics_port,
                        dir,
                        _tmp: tmp,
                        _embedded_port: None,
                    })
                }
                // Someone took a port between free_port() and our bind: try others.
                Err(f) if f.addr_in_use && attempt < START_ATTEMPTS => continue,
                Err(f) => return Err(f.error),
            }
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The operators' port: the one substituted for `{metrics_port}` (9000 for
    /// `start_without_config`).
    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    /// `http://127.0.0.1:METRICS_PORT`: the operators' listener.
    pub fn operators_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.metrics_port)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the file datastore in `DIR/media` (as the tests configure it) keeps `bytes`:
    /// content-addressed by SHA-256, `media/ab/cd/abcd…`.
    pub fn content_file(&self, bytes: &[u8]) -> PathBuf {
        use sha2::{Digest, Sha256};
        let sha = hex::encode(Sha256::digest(bytes));
        self.dir
            .join("media")
            .join(&sha[..2])
            .join(&sha[2..4])
            .join(&sha)
    }

    /// `DIR/config.yaml`
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// An operator command (e.g. `["purge", "orphans"]`) of the same binary on this repo's
    /// `config.yaml`, run in its dir: what an operator runs beside the server.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.current_dir(&self.dir)
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .env("RUST_BACKTRACE", "1");
        cmd
    }

    pub fn is_alive(&self) -> bool {
        self.proc.is_alive()
    }

    /// Rewrites `DIR/config.yaml` (atomically, so a reload never reads half a file) with
    /// the same placeholder rules and the same ports. Send `sighup()` to apply it.
    pub fn write_config(&self, config_yaml: &str) -> anyhow::Result<()> {
        write_config_file(
            &self.dir,
            &substitute(config_yaml, self.port, self.metrics_port, &self.dir),
        )
    }

    /// SIGHUP: reload the config.
    pub fn sighup(&self) {
        self.proc.signal(libc::SIGHUP);
    }

    /// SIGTERM: stop, letting in-flight requests finish for `server.shutdown_timeout_secs`.
    pub fn sigterm(&self) {
        self.proc.signal(libc::SIGTERM);
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        self.proc.kill_and_wait();
    }

    /// Kills the process if it still runs, then starts it again the same way, on the same
    /// port and dir (current `config.yaml`), and waits for `/healthz`.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.proc.kill_and_wait();
        let deadline = Instant::now() + RESTART_WINDOW;
        loop {
            match spawn_healthy(&self.bin, &self.dir, self.launch, self.port) {
                Ok(proc) => {
                    self.proc = proc;
                    return Ok(());
                }
                Err(f) if f.addr_in_use && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Err(f) => {
                    return Err(f
                        .error
                        .context(format!("restarting media-repo on port {}", self.port)))
                }
            }
        }
    }

    /// Everything the process (and its earlier incarnations in this dir) logged.
    pub fn logs(&self) -> String {
        read_from(&self.dir.join(LOG_FILE), 0)
    }

    /// `GET path` (e.g. `/healthz`) on the main listener; any status is Ok.
    pub fn get(&self, path: &str) -> anyhow::Result<Reply> {
        http::get(&format!("{}{path}", self.base_url()), REQUEST_TIMEOUT)
    }

    /// `GET path` (e.g. `/_media_repo/v1/cache`) on the operators' listener; any status is
    /// Ok.
    pub fn get_operators(&self, path: &str) -> anyhow::Result<Reply> {
        http::get(&format!("{}{path}", self.operators_url()), REQUEST_TIMEOUT)
    }

    /// The cache status (`GET /_media_repo/v1/cache` on the operators' listener) as JSON
    /// text; a non-200 status is an error.
    pub fn cache_status(&self) -> anyhow::Result<String> {
        let reply = self.get_operators("/_media_repo/v1/cache")?;
        if reply.status != 200 {
            bail!(
                "GET /_media_repo/v1/cache answered {}: {}",
                reply.status,
                reply.text()
            );
        }
        Ok(reply.text())
    }

    /// The text of `GET /metrics` on the operators' listener; a non-200 status is an error.
    pub fn metrics(&self) -> anyhow::Result<String> {
        let reply = self.get_operators("/metrics")?;
        if reply.status != 200 {
            bail!("GET /metrics answered {}: {}", reply.status, reply.text());
        }
        Ok(reply.text())
    }

    /// One sample from `/metrics`: `name` or `name{label="v",...}` with the full label
    /// set (any order). `None` if absent or /metrics cannot be fetched.
    pub fn metric_value(&self, name_with_labels: &str) -> Option<f64> {
        metrics::find_value(&self.metrics().ok()?, name_with_labels)
    }

    /// Sum of the samples named like the query whose labels include the query's.
    pub fn metric_sum(&self, name_with_labels: &str) -> Option<f64> {
        metrics::sum_values(&self.metrics().ok()?, name_with_labels)
    }

    /// Polls `cond` until true or `timeout`; the error names `what` and this server.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        cond: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        wait_until(what, timeout, cond).with_context(|| format!("media-repo on port {}", self.port))
    }
}

impl Drop for MediaRepo {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- last {LOG_TAIL_LINES} lines of media-repo (port {}, {}) ----\n{}\n---- end of media-repo log ----",
                self.port,
                self.dir.join(LOG_FILE).display(),
                tail(&self.logs(), LOG_TAIL_LINES)
            );
        }
        self.proc.kill_and_wait();
    }
}

/// Replaces the placeholders `{port}`, `{metrics_port}` and `{dir}`, after giving a YAML
/// without a top-level `metrics:` key the operators' listener on `{metrics_port}`.
fn substitute(yaml: &str, port: u16, metrics_port: u16, dir: &Path) -> String {
    with_operators_listener(yaml)
        .replace("{port}", &port.to_string())
        .replace("{metrics_port}", &metrics_port.to_string())
        .replace("{dir}", &dir.to_string_lossy())
}

/// `yaml`, plus `metrics: bind: 127.0.0.1:{metrics_port}` when it has no top-level
/// `metrics:` key: every media-repo a test starts has the operators' listener on a free
/// port, never on the default 9000 that parallel tests would fight over.
fn with_operators_listener(yaml: &str) -> String {
    if yaml.lines().any(|line| line.starts_with("metrics:")) {
        return yaml.to_owned();
    }
    let mut out = yaml.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("metrics:\n  bind: \"127.0.0.1:{metrics_port}\"\n");
    out
}

fn write_config_file(dir: &Path, text: &str) -> anyhow::Result<()> {
    let path = dir.join(CONFIG_FILE);
    let tmp = dir.join(format!("{CONFIG_FILE}.tmp"));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Why a launch failed, and whether trying again (other ports, or later) may help.
struct LaunchFailure {
    error: anyhow::Error,
    addr_in_use: bool,
}

/// Spawns the binary and waits until `/healthz` on `port` answers 200. On failure the
/// process is killed and the error quotes what it logged during this attempt.
fn spawn_healthy(bin: &Path, dir: &Path, launch: Launch, port: u16) -> Result<Proc, LaunchFailure> {
    let log = dir.join(LOG_FILE);
    let log_start = file_len(&log);
    let fail = |what: String| {
        let logged = read_from(&log, log_start);
        let addr_in_use = logged.contains("in use");
        LaunchFailure {
            error: anyhow::anyhow!("{what}; its log:\n{}", tail(&logged, LOG_TAIL_LINES)),
            addr_in_use,
        }
    };

    let mut cmd = Command::new(bin);
    if launch == Launch::WithConfig {
        cmd.arg("--config").arg(dir.join(CONFIG_FILE));
    }
    // MEDIA_REPO_TEST_HOOKS: debug builds then honour test-only request hooks (a pause
    // between storing an upload and writing its row, for race tests).
    cmd.current_dir(dir)
        .env("RUST_BACKTRACE", "1")
        .env("MEDIA_REPO_TEST_HOOKS", "1");
    let proc = Proc::spawn(cmd, &log).map_err(|e| LaunchFailure {
        error: e,
        addr_in_use: false,
    })?;

    let url = format!("http://127.0.0.1:{port}/healthz");
    let deadline = Instant::now() + HEALTHY_TIMEOUT;
    loop {
        if let Some(how) = proc.exited() {
            return Err(fail(format!(
                "media-repo ({}) exited during startup ({how})",
                bin.display()
            )));
        }
        let last_probe = match http::get(&url, PROBE_TIMEOUT) {
            Ok(reply) if reply.status == 200 => return Ok(proc),
            Ok(reply) => format!("status {}", reply.status),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            proc.kill_and_wait();
            return Err(fail(format!(
                "media-repo did not answer GET {url} with 200 within {HEALTHY_TIMEOUT:?} (last probe: {last_probe})"
            )));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// In-process turn-taking for port 8000, the only port tests cannot choose.
struct EmbeddedPortGuard;

static EMBEDDED_PORT_TAKEN: AtomicBool = AtomicBool::new(false);

impl EmbeddedPortGuard {
    fn acquire() -> anyhow::Result<EmbeddedPortGuard> {
        wait_until(
            "another test of this process to release port 8000",
            EMBEDDED_PORT_WAIT,
            || {
                EMBEDDED_PORT_TAKEN
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            },
        )?;
        Ok(EmbeddedPortGuard)
    }
}

impl Drop for EmbeddedPortGuard {
    fn drop(&mut self) {
        EMBEDDED_PORT_TAKEN.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    //! The real binary is exercised by the tests in `integration/tests`; here a tiny
    //! Python stand-in (healthz, metrics, SIGHUP counter, exits on a bad config) checks
    //! the harness's own process handling: ports, placeholders, restart, kill, drop.

    use std::io::ErrorKind;
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::process::pid_exists;

    const STAND_IN: &str = r#"#!/usr/bin/env python3
import http.server, os, re, signal, sys
import threading
port, metrics_port = 8000, 9000
if sys.argv[1:2] == ["--config"]:
    text = open(sys.argv[2]).read()
    if "broken" in text:
        print("config is broken: homeservers missing", flush=True)
        sys.exit(2)
    port = int(re.search(r"server:\n  bind: \"?127\.0\.0\.1:(\d+)", text).group(1))
    metrics_port = int(re.search(r"metrics:\n  bind: \"?127\.0\.0\.1:(\d+)", text).group(1))
reloads = 0
def on_hup(*_):
    global reloads
    reloads += 1
    print("reloaded", reloads, flush=True)
signal.signal(signal.SIGHUP, on_hup)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        operators = self.server.server_address[1] == metrics_port
        if self.path == "/healthz" and not operators:
            body = b"ok"
        elif self.path == "/metrics" and operators:
            body = ('# TYPE x counter\nstandin_reloads_total %d\nstandin_req_total{b="2",a="1"} 3\n' % reloads).encode()
        else:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", port), Handler)
operators = http.server.HTTPServer(("127.0.0.1", metrics_port), Handler)
threading.Thread(target=operators.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
print("listening on", port, "in", os.getcwd(), flush=True)
server.serve_forever(poll_interval=0.05)
"#;

    fn stand_in() -> (TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("media-repo");
        std::fs::write(&bin, STAND_IN).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, bin)
    }

    const CONFIG: &str = "server:\n  bind: 127.0.0.1:{port}\nmetrics:\n  bind: 127.0.0.1:{metrics_port}\ndatabase:\n  url: sqlite://{dir}/db\n";

    fn start(bin: &Path, yaml: &str) -> anyhow::Result<MediaRepo> {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        MediaRepo::start_with_config(bin.to_owned(), dir, Some(tmp), yaml)
    }

    fn refused(port: u16) -> bool {
        TcpStream::connect(("127.0.0.1", port))
            .err()
            .map(|e| e.kind())
            == Some(ErrorKind::ConnectionRefused)
    }

    #[test]
    fn placeholders_are_replaced_everywhere() {
        let yaml = "server:\n  bind: 127.0.0.1:{port}\nmetrics:\n  bind: 127.0.0.1:{metrics_port}\ndb: {dir}/a {dir}/b\n";
        let out = substitute(yaml, 1234, 5678, Path::new("/tmp/x"));
        assert_eq!(out, "server:\n  bind: 127.0.0.1:1234\nmetrics:\n  bind: 127.0.0.1:5678\ndb: /tmp/x/a /tmp/x/b\n");
    }

    #[test]
    fn a_config_without_metrics_gets_the_operators_listener_on_its_port() {
        let out = substitute(
            "server:\n  bind: 127.0.0.1:{port}",
            1234,
            5678,
            Path::new("/x"),
        );
        assert_eq!(
            out,
            "server:\n  bind: 127.0.0.1:1234\nmetrics:\n  bind: \"127.0.0.1:5678\"\n"
        );
        // An explicit one (also `bind: null`) is left as written.
        let off = "metrics:\n  bind: null\n";
        assert_eq!(substitute(off, 1, 2, Path::new("/x")), off);
        // A nested `metrics:` key is not the top-level one.
        let nested = "cache:\n  metrics: 1\n";
        assert!(substitute(nested, 1, 2, Path::new("/x")).ends_with("bind: \"127.0.0.1:2\"\n"));
    }

    #[test]
    fn config_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        write_config_file(dir.path(), "a: 1\n").unwrap();
        write_config_file(dir.path(), "b: 2\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap(),
            "b: 2\n"
        );
        assert!(!dir.path().join("config.yaml.tmp").exists());
    }

    #[test]
    fn lifecycle_with_a_stand_in_binary() {
        let (_bin_dir, bin) = stand_in();
        let mut repo = start(&bin, CONFIG).unwrap();
        let port = repo.port();
        assert_ne!(port, repo.metrics_port());
        assert_eq!(repo.base_url(), format!("http://127.0.0.1:{port}"));
        let written = std::fs::read_to_string(repo.config_path()).unwrap();
        assert!(
            written.contains(&format!("bind: 127.0.0.1:{port}\n")),
            "{written}"
        );
        assert!(
            written.contains(&format!("sqlite://{}/db", repo.dir().display())),
            "{written}"
        );
        assert!(
            repo.logs()
                .contains(&format!("listening on {port} in {}", repo.dir().display())),
            "{}",
            repo.logs()
        );

        assert_eq!(repo.get("/healthz").unwrap().status, 200);
        assert_eq!(repo.get("/nope").unwrap().status, 404);
        // Metrics are read from the operators' port, not the main one.
        assert_eq!(repo.get("/metrics").unwrap().status, 404);
        assert_eq!(repo.get_operators("/metrics").unwrap().status, 200);
        assert_eq!(
            repo.metric_value(r#"standin_req_total{a="1",b="2"}"#),
            Some(3.0)
        );
        assert_eq!(repo.metric_value("standin_reloads_total"), Some(0.0));

        repo.write_config(&CONFIG.replace("/db", "/db2")).unwrap();
        assert!(std::fs::read_to_string(repo.config_path())
            .unwrap()
            .contains(&format!("bind: 127.0.0.1:{port}\n")));
        repo.sighup();
        repo.wait_for("one reload", Duration::from_secs(5), || {
            repo.metric_value("standin_reloads_total") == Some(1.0)
        })
        .unwrap();
        assert!(repo.logs().contains("reloaded 1"));
        let err = repo
            .wait_for("never", Duration::from_millis(50), || false)
            .unwrap_err();
        assert!(
            format!("{err:#}").contains(&format!("port {port}")),
            "{err:#}"
        );

        let old_pid = repo.pid();
        repo.kill9();
        assert!(!repo.is_alive());
        assert!(!pid_exists(old_pid));
        assert!(refused(port));
        assert_eq!(repo.metric_value("standin_reloads_total"), None);

        repo.restart().unwrap();
        assert_eq!(repo.port(), port);
        assert_ne!(repo.pid(), old_pid);
        assert_eq!(repo.metric_value("standin_reloads_total"), Some(0.0));
        // Restart also works on a running process, and the log accumulates.
        repo.restart().unwrap();
        assert_eq!(repo.logs().matches("listening on").count(), 3);

        let (pid, dir) = (repo.pid(), repo.dir().to_owned());
        drop(repo);
        assert!(!pid_exists(pid), "dropped media-repo {pid} still runs");
        assert!(refused(port));
        assert!(!dir.exists(), "start()'s temp dir is removed on drop");
    }

    #[test]
    fn restart_waits_for_its_port_to_be_released() {
        let (_bin_dir, bin) = stand_in();
        let mut repo = start(&bin, CONFIG).unwrap();
        let port = repo.port();
        repo.kill9();
        let squatter = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(800));
            drop(squatter);
        });
        repo.restart().unwrap();
        release.join().unwrap();
        assert_eq!(repo.get("/healthz").unwrap().status, 200);
        assert!(
            repo.logs().contains("in use"),
            "the first restart attempt failed to bind"
        );
    }

    #[test]
    fn a_process_that_exits_at_startup_is_reported_with_its_log() {
        let (_bin_dir, bin) = stand_in();
        let started = Instant::now();
        let err = start(&bin, "broken: true\n")
            .err()
            .expect("start must fail");
        let text = format!("{err:#}");
        assert!(text.contains("exited during startup"), "{text}");
        assert!(text.contains("homeservers missing"), "{text}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "failure detected late: {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn start_in_keeps_the_dir_and_drop_during_panic_kills() {
        let (_bin_dir, bin) = stand_in();
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("repo");
        let (tx, rx) = std::sync::mpsc::channel();
        let bin2 = bin.clone();
        let dir2 = dir.clone();
        let outcome = std::thread::spawn(move || {
            std::fs::create_dir_all(&dir2).unwrap();
            let repo = MediaRepo::start_with_config(bin2, dir2, None, CONFIG).unwrap();
            tx.send((repo.pid(), repo.port())).unwrap();
            panic!("simulated test failure");
        })
        .join();
        assert!(outcome.is_err());
        let (pid, port) = rx.recv().unwrap();
        assert!(
            !pid_exists(pid),
            "media-repo {pid} outlived the panicking test"
        );
        assert!(refused(port));
        assert!(dir.join(LOG_FILE).exists(), "start_in's dir is kept");
    }
}
