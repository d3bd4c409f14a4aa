//! `RedisServer`: a throw-away `redis-server` child for fault-injection tests
//! (kill -9, SIGSTOP/SIGCONT, restart on the same port).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tempfile::TempDir;

use crate::ports::free_port;
use crate::process::{file_len, read_from, run_with_timeout, tail, Proc, LOG_TAIL_LINES};
use crate::wait::POLL_INTERVAL;

/// How long a fresh server may take to answer PING (it usually takes ~10 ms).
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one readiness PING may wait for its reply.
const READY_PING_TIMEOUT: Duration = Duration::from_millis(250);

/// How often `start` tries a new port when another process grabbed the chosen one
/// between `free_port` and the server's bind.
const START_ATTEMPTS: usize = 5;

/// How long `restart` keeps retrying the same port (the old socket may linger briefly).
const RESTART_WINDOW: Duration = Duration::from_secs(5);

/// Upper bound for one `redis-cli` call; a paused server would otherwise hang the test.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);

const LOG_FILE: &str = "redis.log";

/// A `redis-server` on 127.0.0.1 and a free port, without persistence, in its own temp
/// dir. Dropping it sends SIGCONT then SIGKILL and reaps the process.
pub struct RedisServer {
    port: u16,
    proc: Proc,
    /// Extra `redis-server` arguments, kept for `restart`.
    args: Vec<String>,
    /// The `--requirepass` among `args`: readiness checks and `cli` authenticate with it.
    password: Option<String>,
    /// Holds redis' working dir and log; removed after the process is dead (field order:
    /// `proc` is declared, hence dropped, first).
    dir: TempDir,
}

impl RedisServer {
    /// Starts a server and waits until it answers PING.
    pub fn start() -> anyhow::Result<RedisServer> {
        RedisServer::start_with_args(&[])
    }

    /// Starts a server with extra arguments after ours (e.g. `--requirepass secret` or
    /// `--maxmemory 2mb --maxmemory-policy noeviction`), and waits until it answers. With
    /// `--requirepass`, the readiness check and [`RedisServer::cli`] authenticate.
    pub fn start_with_args(args: &[&str]) -> anyhow::Result<RedisServer> {
        let args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
        let password = args
            .iter()
            .position(|a| a == "--requirepass")
            .and_then(|at| args.get(at + 1))
            .cloned();
        let dir = tempfile::Builder::new()
            .prefix("mr-redis-")
            .tempdir()
            .context("creating temp dir for redis-server")?;
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            match spawn_ready(port, dir.path(), &args, password.as_deref()) {
                Ok(proc) => {
                    return Ok(RedisServer {
                        port,
                        proc,
                        args,
                        password,
                        dir,
                    })
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
            .with_context(|| format!("redis-server did not start after {START_ATTEMPTS} attempts"))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis://:PASSWORD@127.0.0.1:PORT`: a URL that authenticates with `password`.
    pub fn url_with_password(&self, password: &str) -> String {
        format!("redis://:{password}@127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`, the Go media repo's bare address form.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The server's working dir (holds `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL and reap: the port refuses connections afterwards.
    pub fn kill9(&mut self) {
        self.proc.kill_and_wait();
    }

    /// SIGSTOP: the kernel still accepts connections, but nothing is ever answered —
    /// what a hung shard looks like to a client.
    pub fn pause(&self) {
        self.proc.signal(libc::SIGSTOP);
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        self.proc.signal(libc::SIGCONT);
    }

    /// Kills the current process (if any) and starts a new, empty one on the same port,
    /// retrying briefly while the port is not yet bindable.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.proc.kill_and_wait();
        let deadline = Instant::now() + RESTART_WINDOW;
        loop {
            match spawn_ready(
                self.port,
                self.dir.path(),
                &self.args,
                self.password.as_deref(),
            ) {
                Ok(proc) => {
                    self.proc = proc;
                    return Ok(());
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("restarting redis-server on port {}", self.port)));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// True while the process runs (also while paused).
    pub fn is_alive(&self) -> bool {
        self.proc.is_alive()
    }

    /// A raw `PING` with the given timeout for connect, write and reply.
    pub fn ping(&self, timeout: Duration) -> anyhow::Result<()> {
        redis_ping(self.port, timeout)
    }

    /// Runs `redis-cli -h 127.0.0.1 -p PORT args...` and returns its stdout, trimmed.
    /// Fails if redis-cli exits non-zero, takes longer than 10 s, or the reply is a Redis
    /// error (redis-cli prints those on stdout and exits 0, so a mistyped command in a
    /// test would otherwise pass silently).
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(password) = &self.password {
            cmd.args(["--no-auth-warning", "-a", password]);
        }
        cmd.args(args);
        let context = || format!("redis-cli -p {} {}", self.port, args.join(" "));
        let out = run_with_timeout(cmd, CLI_TIMEOUT).with_context(context)?;
        if is_error_reply(&out) {
            return Err(anyhow::anyhow!("Redis answered an error: {out}")).with_context(context);
        }
        Ok(out)
    }

    /// Number of keys in database 0.
    pub fn dbsize(&self) -> anyhow::Result<u64> {
        let out = self.cli(&["DBSIZE"])?;
        out.parse()
            .with_context(|| format!("DBSIZE answered {out:?}"))
    }

    /// Everything redis-server wrote to its log so far (all restarts included).
    pub fn logs(&self) -> String {
        read_from(&self.log_path(), 0)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(LOG_FILE)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.proc.kill_and_wait();
    }
}

/// Sends `PING` to 127.0.0.1:`port` and expects `+PONG`, all within `timeout` per step.
pub fn redis_ping(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream
        .write_all(b"PING\r\n")
        .with_context(|| format!("writing PING to {addr}"))?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 64];
    while !reply.ends_with(b"\r\n") {
        let n = stream
            .read(&mut buf)
            .with_context(|| format!("reading PING reply from {addr}"))?;
        if n == 0 {
            bail!("{addr} closed the connection before answering PING");
        }
        reply.extend_from_slice(&buf[..n]);
    }
    if reply != b"+PONG\r\n" {
        bail!(
            "{addr} answered PING with {:?}",
            String::from_utf8_lossy(&reply)
        );
    }
    Ok(())
}

/// The `process_id` that the server on 127.0.0.1:`port` reports in `INFO server`, after
/// `AUTH password` when one is given.
fn server_pid(port: u16, timeout: Duration, password: Option<&str>) -> anyhow::Result<u32> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    if let Some(password) = password {
        // RESP array form, so any password bytes pass unchanged.
        let auth = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n", password.len());
        stream.write_all(auth.as_bytes())?;
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") {
            if stream.read(&mut byte)? == 0 {
                bail!("{addr} closed the connection before answering AUTH");
            }
            reply.push(byte[0]);
        }
        if reply != b"+OK\r\n" {
            bail!(
                "{addr} answered AUTH with {:?}",
                String::from_utf8_lossy(&reply)
            );
        }
    }
    stream.write_all(b"INFO server\r\n")?;
    // The reply is one bulk string: `$<len>\r\n<len bytes>\r\n`.
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            bail!("{addr} closed the connection before answering INFO");
        }
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        let Some((header, body)) = text.split_once("\r\n") else {
            continue;
        };
        let len: usize = header
            .strip_prefix('$')
            .and_then(|l| l.parse().ok())
            .with_context(|| format!("{addr} answered INFO with {header:?}"))?;
        if body.len() < len {
            continue;
        }
        return body
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
            .with_context(|| format!("{addr}'s INFO server has no process_id"));
    }
}

/// Spawns redis-server on `port` and waits until it answers as itself; on failure the process is killed
/// and the error quotes what the server logged during this attempt.
fn spawn_ready(
    port: u16,
    dir: &Path,
    args: &[String],
    password: Option<&str>,
) -> anyhow::Result<Proc> {
    let log = dir.join(LOG_FILE);
    let log_start = file_len(&log);
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .arg("--dir")
    .arg(dir)
    .args(["--daemonize", "no", "--logfile", ""])
    .args(args)
    .current_dir(dir);
    let proc = Proc::spawn(cmd, &log)
        .context("is redis-server installed? (apt-get install redis-server)")?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(how) = proc.exited() {
            let logged = tail(&read_from(&log, log_start), LOG_TAIL_LINES);
            bail!("redis-server on port {port} exited during startup ({how}); its log:\n{logged}");
        }
        // Ask for the pid, not just PING: while our server fails to bind, another test
        // process's server on the same port would answer PING just as well.
        match server_pid(port, READY_PING_TIMEOUT, password) {
            Ok(pid) if pid == proc.pid() => return Ok(proc),
            Ok(pid) => {
                proc.kill_and_wait();
                bail!("port {port} is taken by another redis-server (pid {pid})");
            }
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            proc.kill_and_wait();
            let logged = tail(&read_from(&log, log_start), LOG_TAIL_LINES);
            bail!("redis-server on port {port} did not answer PING within {READY_TIMEOUT:?}; its log:\n{logged}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Error prefixes Redis 7 uses; redis-cli prints an error reply as `PREFIX message`.
const ERROR_PREFIXES: &[&str] = &[
    "ERR",
    "WRONGTYPE",
    "NOSCRIPT",
    "NOAUTH",
    "NOPERM",
    "BUSY",
    "BUSYKEY",
    "LOADING",
    "READONLY",
    "OOM",
    "EXECABORT",
    "MISCONF",
    "NOREPLICAS",
    "MASTERDOWN",
    "CROSSSLOT",
    "MOVED",
    "ASK",
];

/// True if redis-cli's raw output is one error reply (not a value that merely contains
/// such a word on a later line of a multi-line reply).
fn is_error_reply(out: &str) -> bool {
    !out.contains('\n')
        && out
            .split_once(' ')
            .is_some_and(|(word, _)| ERROR_PREFIXES.contains(&word))
}
