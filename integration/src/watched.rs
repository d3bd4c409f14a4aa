//! A child process that cannot outlive the test process: it runs under a small `sh`
//! watchdog that SIGKILLs it as soon as the test process is gone.
//!
//! `Drop` covers a failing test (unwinding runs it), but a test process killed with -9, or
//! one that ends while a handle sits in a static, runs no `Drop`; without the watchdog a
//! Synapse or nginx would then keep its port and files forever. The shared `Synapse`,
//! `FederatingSynapse` and `Nginx` run under it.
//!
//! The watchdog is our child and the process is its child, so every signal the watchdog sends
//! goes to a pid it has not reaped yet. Dropping the handle sends the watchdog SIGTERM; its
//! trap kills and reaps the process and exits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::process::Proc;
use crate::wait::wait_until;

/// How long the watchdog sleeps between two checks that the test process still exists.
/// Its sleep is interruptible (`sleep & wait`), so this bounds only how late it notices that
/// the test process died, not how long a drop takes.
const WATCH_INTERVAL: &str = "0.5";

/// How long `spawn` waits for the watchdog to report the process's pid.
const PID_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a drop waits for the watchdog to kill the process after SIGTERM before it
/// SIGKILLs the watchdog itself.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The watchdog script. Positional parameters: the test process's pid, the file to write the
/// child's pid to, a dir to remove when the test process is gone (or empty), then the
/// command. The command is passed as arguments, never spliced into the script, so no path
/// needs quoting.
const SCRIPT: &str = r#"parent=$1 pidfile=$2 rmdir=$3 interval=$4; shift 4
trap 'kill -9 $child 2>/dev/null; wait $child; exit 0' TERM
"$@" & child=$!
echo $child > "$pidfile"
while kill -0 $parent 2>/dev/null && kill -0 $child 2>/dev/null; do sleep $interval & wait $!; done
kill -9 $child 2>/dev/null
if [ -n "$rmdir" ] && ! kill -0 $parent 2>/dev/null; then rm -rf "$rmdir"; fi
"#;

/// A process under a watchdog; killed (and the watchdog reaped) on drop.
pub(crate) struct Watched {
    watchdog: Proc,
    pid: u32,
    /// The program's path, to recognise the process by its command line.
    program: String,
}

impl Watched {
    /// Starts `program args…` in `cwd` under a watchdog, stdout and stderr appended to `log`.
    /// `pid_file` receives the process's pid. If the test process dies, the watchdog kills the
    /// process and removes `remove_when_orphaned` (the process's temp dir, which no `Drop`
    /// will remove then).
    pub(crate) fn spawn(
        program: &Path,
        args: &[&str],
        cwd: &Path,
        log: &Path,
        pid_file: &Path,
        remove_when_orphaned: Option<&Path>,
    ) -> anyhow::Result<Watched> {
        Self::spawn_watching(
            std::process::id(),
            program,
            args,
            cwd,
            log,
            pid_file,
            remove_when_orphaned,
        )
    }

    /// `spawn`, watching `parent` instead of the test process (so a test can kill a parent).
    fn spawn_watching(
        parent: u32,
        program: &Path,
        args: &[&str],
        cwd: &Path,
        log: &Path,
        pid_file: &Path,
        remove_when_orphaned: Option<&Path>,
    ) -> anyhow::Result<Watched> {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", SCRIPT, "watchdog"])
            .arg(parent.to_string())
            .arg(pid_file)
            .arg(remove_when_orphaned.unwrap_or(Path::new("")))
            .arg(WATCH_INTERVAL)
            .arg(program)
            .args(args)
            .current_dir(cwd);
        let watchdog = Proc::spawn(cmd, log)
            .with_context(|| format!("starting {} under a watchdog", program.display()))?;
        let mut pid = None;
        wait_until("the watchdog to report the pid", PID_TIMEOUT, || {
            pid = std::fs::read_to_string(pid_file)
                .ok()
                .filter(|s| s.ends_with('\n'))
                .and_then(|s| s.trim().parse().ok());
            pid.is_some()
        })?;
        let Some(pid) = pid else {
            bail!("no pid in {}", pid_file.display());
        };
        // The pid is written right after the fork, before the child has exec'd the program:
        // until then its command line is the watchdog's own (and for a moment during the exec,
        // empty). Wait for the exec, so callers (and `stop`'s orphan check) recognise the
        // process by its command line.
        let watchdog_cmdline = cmdline(watchdog.pid());
        wait_until("the watched process to exec", PID_TIMEOUT, || {
            let ended = !crate::pid_exists(pid) || is_zombie(pid);
            let execd = cmdline(pid)
                .is_some_and(|c| !c.is_empty() && Some(&c) != watchdog_cmdline.as_ref());
            ended || execd
        })?;
        Ok(Watched {
            watchdog,
            pid,
            program: program.display().to_string(),
        })
    }

    /// The watched process's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn watchdog_pid(&self) -> u32 {
        self.watchdog.pid()
    }

    /// `Some(how it ended)` once the watchdog has exited, which it does when the process
    /// exits; `None` while it runs.
    pub(crate) fn exited(&self) -> Option<String> {
        self.watchdog.exited()
    }

    /// Kills the process and reaps the watchdog. Idempotent.
    pub(crate) fn stop(&self) {
        self.watchdog.signal(libc::SIGTERM);
        let _ = wait_until("the watchdog to exit", STOP_TIMEOUT, || {
            !self.watchdog.is_alive()
        });
        self.watchdog.kill_and_wait();
        // Only if the watchdog was SIGKILLed before its trap ran: the process is then an
        // orphan. Checked by command line so a recycled pid is never signalled.
        if crate::pid_exists(self.pid)
            && cmdline(self.pid).is_some_and(|c| c.contains(&self.program))
        {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `pid` has exited and waits to be reaped (state `Z` in `/proc/<pid>/stat`).
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the command name, which is in parentheses and may hold spaces.
            let (_, after_name) = stat.rsplit_once(')')?;
            after_name
                .split_whitespace()
                .next()
                .map(|state| state == "Z")
        })
        .unwrap_or(false)
}

fn cmdline(pid: u32) -> Option<String> {
    let path = PathBuf::from(format!("/proc/{pid}/cmdline"));
    std::fs::read(path)
        .ok()
        .map(|c| String::from_utf8_lossy(&c).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pid_exists;

    fn sleep_under_watchdog(parent: u32, dir: &Path) -> Watched {
        Watched::spawn_watching(
            parent,
            Path::new("/bin/sleep"),
            &["600"],
            dir,
            &dir.join("out.log"),
            &dir.join("pid"),
            Some(dir),
        )
        .unwrap()
    }

    #[test]
    fn drop_kills_the_process_and_the_watchdog_and_keeps_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        let watched = sleep_under_watchdog(std::process::id(), dir.path());
        let (pid, watchdog) = (watched.pid(), watched.watchdog_pid());
        assert!(pid_exists(pid) && cmdline(pid).unwrap().contains("sleep"));
        assert!(watched.exited().is_none());
        drop(watched);
        assert!(!pid_exists(pid), "watched {pid} survived its drop");
        assert!(
            !pid_exists(watchdog),
            "watchdog {watchdog} survived its drop"
        );
        assert!(dir.path().exists(), "the dir belongs to the handle's owner");
    }

    #[test]
    fn the_watchdog_kills_the_process_and_removes_the_dir_when_the_parent_dies() {
        let mut parent = Command::new("/bin/sleep").arg("600").spawn().unwrap();
        let dir = tempfile::tempdir().unwrap().keep();
        let watched = sleep_under_watchdog(parent.id(), &dir);
        let pid = watched.pid();
        parent.kill().unwrap();
        parent.wait().unwrap();
        wait_until("the watchdog to act", Duration::from_secs(5), || {
            watched.exited().is_some()
        })
        .unwrap();
        // The killed process is an orphan by then: it is gone once init has reaped it,
        // which may come a moment after the watchdog itself exited.
        let gone = wait_until(
            "the watched process to be reaped",
            Duration::from_secs(5),
            || !pid_exists(pid),
        );
        assert!(gone.is_ok(), "watched {pid} outlived its parent");
        assert!(!dir.exists(), "{} outlived the parent", dir.display());
    }

    #[test]
    fn exited_reports_a_process_that_ended_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let watched = Watched::spawn(
            Path::new("/bin/true"),
            &[],
            dir.path(),
            &dir.path().join("out.log"),
            &dir.path().join("pid"),
            None,
        )
        .unwrap();
        wait_until("the watchdog to notice", Duration::from_secs(5), || {
            watched.exited().is_some()
        })
        .unwrap();
    }
}
