//! A child process the harness owns: signals, liveness and kill-and-reap.
//!
//! The `Child` stays in our hands until it is reaped, so its pid cannot be recycled by
//! the OS while we may still signal it: every signal goes through a live, unreaped child.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// How many log lines an error message or a panic report quotes.
pub(crate) const LOG_TAIL_LINES: usize = 100;

pub(crate) struct Proc {
    /// A `Mutex` so `&self` methods (pause, sighup, is_alive) can `try_wait`, which
    /// needs `&mut Child`. `None` once the process has been killed and reaped.
    child: Mutex<Option<Child>>,
    pid: u32,
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout + stderr appended to `log`.
    pub(crate) fn spawn(mut cmd: Command, log: &Path) -> anyhow::Result<Proc> {
        let out = open_append(log)?;
        let err = out
            .try_clone()
            .with_context(|| format!("cloning handle of {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // A program a test has just written (a stand-in script) can be "busy" for a moment
        // when another test thread forked while the file was still open for writing: the
        // child holds that descriptor until it execs. Retry briefly instead of failing.
        const BUSY_RETRIES: usize = 20;
        let mut attempt = 0;
        let child = loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < BUSY_RETRIES => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other,
            }
        }
        .with_context(|| format!("spawning {:?}", cmd.get_program()))?;
        Ok(Proc {
            pid: child.id(),
            child: Mutex::new(Some(child)),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `sig` if the process is still running (never to a reaped pid).
    pub(crate) fn signal(&self, sig: libc::c_int) {
        let mut guard = self.child.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(child) = guard.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                // SAFETY: kill(2) has no memory-safety preconditions; the pid belongs to
                // our unreaped child, so it cannot name an unrelated process.
                unsafe { libc::kill(child.id() as libc::pid_t, sig) };
            }
        }
    }

    /// `Some(how it ended)` once the process has exited or was killed, `None` while it runs.
    pub(crate) fn exited(&self) -> Option<String> {
        let mut guard = self.child.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_mut() {
            None => Some("killed by the harness".to_owned()),
            Some(child) => match child.try_wait() {
                Ok(None) => None,
                Ok(Some(status)) => Some(status.to_string()),
                Err(e) => Some(format!("state unknown: {e}")),
            },
        }
    }

    pub(crate) fn is_alive(&self) -> bool {
        let mut guard = self.child.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_mut() {
            None => false,
            Some(child) => matches!(child.try_wait(), Ok(None)),
        }
    }

    /// SIGCONT (a stopped process must not linger), SIGKILL, then reap. Idempotent.
    pub(crate) fn kill_and_wait(&self) {
        let mut guard = self.child.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mut child) = guard.take() {
            if matches!(child.try_wait(), Ok(None)) {
                // SAFETY: as in `signal`: our own unreaped child.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGCONT) };
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_and_wait();
    }
}

pub(crate) fn open_append(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening log file {}", path.display()))
}

/// The file's text from byte `from` on (lossy UTF-8); empty if it cannot be read.
pub(crate) fn read_from(path: &Path, from: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

pub(crate) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// True if a process with this pid exists (including a zombie). For tests that check a
/// dropped handle really ended its process.
pub fn pid_exists(pid: u32) -> bool {
    // SAFETY: signal 0 only checks existence and permission.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Runs `cmd`, kills it after `timeout`, returns trimmed stdout or an error with stderr.
pub(crate) fn run_with_timeout(mut cmd: Command, timeout: Duration) -> anyhow::Result<String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning {:?}", cmd.get_program()))?;
    // Drain the pipes on threads: a chatty child would otherwise block on a full pipe
    // while we wait for it to exit.
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = stdout
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    let err = stderr
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    if !status.success() {
        bail!("exited with {status}: {}{}", err.trim(), out.trim());
    }
    Ok(out.trim().to_owned())
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
