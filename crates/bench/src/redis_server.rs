//! A throwaway `redis-server` for one benchmark run: free loopback port (never 6379), no
//! persistence, killed when dropped — also when the benchmark fails half-way.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a fresh server gets to answer PING.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// The machine's own Redis: never start on, or talk to, this port.
const SYSTEM_REDIS_PORT: u16 = 6379;

/// A running `redis-server` child process.
pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers PING.
    pub fn start() -> Result<RedisServer> {
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (is it installed?)")?;
        let server = RedisServer { child, port };
        server.wait_ready()?;
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&self) -> Result<()> {
        let started = Instant::now();
        loop {
            if ping(self.port).unwrap_or(false) {
                return Ok(());
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                bail!("redis-server on port {} did not answer PING", self.port);
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on right now (the OS picks it; 6379 is refused).
fn free_port() -> Result<u16> {
    for _ in 0..16 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if port != SYSTEM_REDIS_PORT {
            return Ok(port);
        }
    }
    bail!("no free port")
}

/// One inline PING over a raw socket: readiness needs no client library.
fn ping(port: u16) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(b"PING\r\n")?;
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply)?;
    Ok(&reply == b"+PONG\r\n")
}
