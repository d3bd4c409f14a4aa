//! The state of a shard that others read without a mailbox trip, shared between its actor
//! (which changes it) and the ring and cache (which read it on every route and every write):
//! the up/down flag, whether writes are in back-off, and why the shard is unusable.
//!
//! "Up" means usable: the shard answers its health check and its key-format marker
//! ([`crate::format`]) is ours. A shard holding another version answers but is not up.
//!
//! Logging lives here too, because it follows the state: one WARN the first time a shard is
//! found unreachable (a shard starts down, so this includes never coming up), one ERROR the
//! first time it is found holding another key-format version, one INFO when it is up again,
//! and the same WARN/INFO pair for the write back-off. While the state does not change,
//! nothing but debug lines.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::format::{mismatch_text, KEY_FORMAT_VERSION};
use crate::metrics;

/// First pause of writes after a shard refused one (OOM, READONLY, ...).
pub const WRITE_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Longest pause of writes: each failed probe doubles the pause up to this.
pub const WRITE_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How long the one write let through after a pause (the probe) keeps other writes paused
/// while its answer is awaited. Longer than any sane response timeout plus mailbox wait;
/// a probe whose answer never comes (timeout, lost message) thus only delays the next one.
pub const WRITE_PROBE_WINDOW: Duration = Duration::from_secs(5);
/// Longest reason text kept for logs and status: a server that is not Redis may answer with
/// anything, and its bytes can end up in the error text.
pub const MAX_REASON_BYTES: usize = 256;

/// What the logs last said about a shard, so each change is logged exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reported {
    /// Nothing yet: a fresh shard that has neither answered nor failed.
    Nothing,
    Up,
    Down,
    /// Answers, but holds another key-format version.
    Mismatch,
}

/// The parts that change together; behind a std lock because it is only held to update or
/// copy a few fields, never across an await.
#[derive(Debug)]
struct Detail {
    reported: Reported,
    /// Why the shard is down; `None` while it is up.
    down_reason: Option<String>,
    /// `found X, expected Y` while the shard holds another key-format version.
    format_mismatch: Option<String>,
    /// Current write pause; zero when writes are not paused.
    write_delay: Duration,
    /// A write was let through after a pause and its answer is awaited.
    probing: bool,
    /// The write error that started (or last prolonged) the pause.
    write_error: Option<String>,
}

/// Whether a shard currently answers and takes writes. Starts down: a shard is trusted only
/// after its first PING.
#[derive(Debug)]
pub struct ShardHealth {
    up: AtomicBool,
    /// Milliseconds after `epoch` until which writes are skipped; 0 when they are not paused.
    /// An atomic so the cache's write path checks it without a lock.
    writes_paused_until_ms: AtomicU64,
    epoch: Instant,
    detail: Mutex<Detail>,
}

impl Default for ShardHealth {
    fn default() -> ShardHealth {
        ShardHealth {
            up: AtomicBool::new(false),
            writes_paused_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            detail: Mutex::new(Detail {
                reported: Reported::Nothing,
                down_reason: None,
                format_mismatch: None,
                write_delay: Duration::ZERO,
                probing: false,
                write_error: None,
            }),
        }
    }
}

impl ShardHealth {
    /// A new flag, down until the shard actor's first good PING.
    pub fn new() -> ShardHealth {
        ShardHealth::default()
    }

    /// True when the last health verdict was "usable": answers, and holds our key format.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// True while writes to this shard are paused after it refused one: a writer should skip
    /// the shard (not even send the message). False again once the pause expires, when the
    /// actor lets exactly one write through as a probe.
    pub fn writes_paused(&self) -> bool {
        let until = self.writes_paused_until_ms.load(Ordering::Acquire);
        until != 0 && self.now_ms() < until
    }

    /// Why the shard is down (the last error seen while down); `None` while it is up.
    pub fn last_error(&self) -> Option<String> {
        self.detail().down_reason.clone()
    }

    /// `found X, expected Y` while the shard holds another key-format version and so is not
    /// used; `None` otherwise (also while it is down: its marker is then unknown).
    pub fn format_mismatch(&self) -> Option<String> {
        self.detail().format_mismatch.clone()
    }

    /// The error that paused writes, while they are paused or being probed; `None` otherwise.
    pub fn write_error(&self) -> Option<String> {
        self.detail().write_error.clone()
    }

    /// Sets the flag; returns the previous value.
    pub(crate) fn set(&self, up: bool) -> bool {
        self.up.swap(up, Ordering::AcqRel)
    }

    /// Milliseconds since `epoch`, at least 1 so that 0 can mean "not paused".
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    fn pause_writes_for(&self, pause: Duration) {
        let until = self
            .now_ms()
            .saturating_add(u64::try_from(pause.as_millis()).unwrap_or(u64::MAX));
        self.writes_paused_until_ms.store(until, Ordering::Release);
    }

    /// A poisoned lock only means another thread panicked mid-update of plain fields; the
    /// values are still usable.
    fn detail(&self) -> MutexGuard<'_, Detail> {
        self.detail
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `why` as one line of at most [`MAX_REASON_BYTES`], cut on a character boundary. One line
/// because redis-rs' parse errors span several (`Parse error at 1\nUnexpected ...`), which
/// would split a log line.
fn reason(why: &dyn Display) -> String {
    let mut text = why
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if text.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Counts consecutive failures of one shard (PINGs and connection-level command failures)
/// and flips [`ShardHealth`]; tracks refused writes. Shared with command futures, which run
/// outside the actor.
#[derive(Debug)]
pub(crate) struct HealthTracker {
    name: String,
    health: Arc<ShardHealth>,
    failures: AtomicU32,
    down_after: u32,
}

impl HealthTracker {
    pub(crate) fn new(name: String, health: Arc<ShardHealth>, down_after: u32) -> HealthTracker {
        // The health may outlive an earlier actor of this shard (a respawn keeps it).
        let detail = health.detail();
        metrics::set_write_backoff(&name, detail.write_delay > Duration::ZERO);
        metrics::set_version_mismatch(&name, detail.format_mismatch.is_some());
        drop(detail);
        HealthTracker {
            name,
            health,
            failures: AtomicU32::new(0),
            down_after: down_after.max(1),
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.health.is_up()
    }

    /// True while the shard is not used because it holds another key-format version.
    pub(crate) fn format_mismatched(&self) -> bool {
        self.health.detail().reported == Reported::Mismatch
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// A good PING, and the shard's marker is ours (or was just written): one is enough to
    /// trust the shard again. Returns true if it was not up.
    pub(crate) fn ping_ok(&self) -> bool {
        self.failures.store(0, Ordering::Release);
        metrics::set_up(&self.name, true);
        let was_up = self.health.set(true);
        if !was_up {
            let mut detail = self.health.detail();
            if detail.reported == Reported::Mismatch {
                metrics::set_version_mismatch(&self.name, false);
                tracing::info!(shard = %self.name, version = %KEY_FORMAT_VERSION, "redis shard holds our key-format version again; using it");
            } else {
                tracing::info!(shard = %self.name, "redis shard is up");
            }
            detail.reported = Reported::Up;
            detail.down_reason = None;
            detail.format_mismatch = None;
        }
        !was_up
    }

    /// A good PING, but the shard's marker names another key-format version (`found`): the
    /// shard answers, yet its keys are not ours to read and ours not its to hold, so it is
    /// not used (routing skips it like a down shard) until the marker is ours again.
    pub(crate) fn format_mismatch(&self, found: &str) {
        self.failures.store(0, Ordering::Release);
        metrics::set_up(&self.name, false);
        self.health.set(false);
        let text = reason(&mismatch_text(found));
        let mut detail = self.health.detail();
        if detail.reported == Reported::Mismatch {
            if detail.format_mismatch.as_deref() != Some(text.as_str()) {
                tracing::debug!(shard = %self.name, mismatch = %text, "redis shard holds yet another key-format version");
            }
        } else {
            tracing::error!(
                shard = %self.name,
                found = %reason(&found),
                expected = %KEY_FORMAT_VERSION,
                "redis shard holds another key-format version (a media repo of another major version uses it); not using it"
            );
            metrics::set_version_mismatch(&self.name, true);
            detail.reported = Reported::Mismatch;
        }
        detail.down_reason = None;
        detail.format_mismatch = Some(text);
    }

    /// A command that worked proves the connection, but only a PING may flip a shard up.
    pub(crate) fn command_ok(&self) {
        self.failures.store(0, Ordering::Release);
    }

    /// A failed PING or connect, or a command that timed out / lost its connection.
    pub(crate) fn failure(&self, why: &dyn Display) {
        let failures = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        let mut detail = self.health.detail();
        if failures >= self.down_after {
            metrics::set_up(&self.name, false);
            self.health.set(false);
        } else if self.health.is_up() || detail.reported == Reported::Mismatch {
            tracing::debug!(shard = %self.name, failures, %why, "redis shard failure");
            return;
        }
        // Down: either just marked so, or never up yet (a shard starts down, and one that
        // cannot authenticate never comes up: that must be said too, once). A down shard's
        // marker is unknown until it answers again.
        if detail.format_mismatch.take().is_some() {
            metrics::set_version_mismatch(&self.name, false);
        }
        let why = reason(why);
        if detail.reported == Reported::Down {
            if detail.down_reason.as_deref() != Some(why.as_str()) {
                tracing::debug!(shard = %self.name, failures, why = %why, "redis shard still down, for another reason");
            }
        } else {
            tracing::warn!(shard = %self.name, failures, why = %why, "redis shard is down");
            detail.reported = Reported::Down;
        }
        detail.down_reason = Some(why);
    }

    /// Whether a write may be sent now: not while writes are paused; once the pause has
    /// expired, exactly one caller gets `true` (the probe) and the others wait for its answer
    /// (at most [`WRITE_PROBE_WINDOW`]).
    pub(crate) fn claim_write(&self) -> bool {
        if self.health.writes_paused_until_ms.load(Ordering::Acquire) == 0 {
            return true;
        }
        let mut detail = self.health.detail();
        // Re-checked under the lock, so two writers cannot both take the probe.
        if self.health.writes_paused() {
            return false;
        }
        if detail.write_delay == Duration::ZERO {
            // Reset by a good write since the check above.
            return true;
        }
        detail.probing = true;
        self.health.pause_writes_for(WRITE_PROBE_WINDOW);
        tracing::debug!(shard = %self.name, "write pause over; one write probes the shard");
        true
    }

    /// A write the server took: ends any pause.
    pub(crate) fn write_ok(&self) {
        if self.health.writes_paused_until_ms.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut detail = self.health.detail();
        if detail.write_delay == Duration::ZERO {
            return;
        }
        detail.write_delay = Duration::ZERO;
        detail.probing = false;
        detail.write_error = None;
        self.health
            .writes_paused_until_ms
            .store(0, Ordering::Release);
        metrics::set_write_backoff(&self.name, false);
        tracing::info!(shard = %self.name, "redis shard accepts writes again");
    }

    /// The server answered a write with an error (OOM, READONLY, ...): the connection is
    /// fine, but sending it more writes only wastes them. Starts the pause, or doubles it
    /// when the probe failed. Refusals of writes sent before the pause began do not count.
    pub(crate) fn write_refused(&self, why: &dyn Display) {
        let why = reason(why);
        let mut detail = self.health.detail();
        let pause = if detail.write_delay == Duration::ZERO {
            tracing::warn!(shard = %self.name, why = %why, pause = ?WRITE_BACKOFF_INITIAL, "redis shard refuses writes; pausing cache fills to it");
            metrics::set_write_backoff(&self.name, true);
            WRITE_BACKOFF_INITIAL
        } else if detail.probing {
            let pause = (detail.write_delay * 2).min(WRITE_BACKOFF_MAX);
            tracing::debug!(shard = %self.name, why = %why, ?pause, "redis shard still refuses writes");
            pause
        } else {
            return;
        };
        detail.write_delay = pause;
        detail.probing = false;
        detail.write_error = Some(why);
        self.health.pause_writes_for(pause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> HealthTracker {
        HealthTracker::new("unit".to_owned(), Arc::new(ShardHealth::new()), 2)
    }

    #[test]
    fn reasons_are_bounded_on_a_char_boundary() {
        let long = "é".repeat(MAX_REASON_BYTES);
        let cut = reason(&long);
        assert!(cut.len() <= MAX_REASON_BYTES + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(reason(&"short"), "short");
        assert_eq!(
            reason(&"Parse error at 1\nUnexpected `84`\n"),
            "Parse error at 1 Unexpected `84`"
        );
    }

    #[test]
    fn a_shard_that_never_comes_up_has_a_reason() {
        let t = tracker();
        t.failure(&"connect: NOAUTH Authentication required.");
        assert!(!t.health.is_up());
        assert_eq!(
            t.health.last_error().as_deref(),
            Some("connect: NOAUTH Authentication required.")
        );
        t.ping_ok();
        assert_eq!(t.health.last_error(), None);
    }

    #[test]
    fn another_key_format_version_keeps_the_shard_unused_until_ours_again() {
        let t = tracker();
        t.ping_ok();
        t.format_mismatch("2");
        assert!(!t.health.is_up());
        assert!(t.format_mismatched());
        assert_eq!(
            t.health.format_mismatch().as_deref(),
            Some("found 2, expected 1")
        );
        assert_eq!(t.health.last_error(), None);
        // A blip while mismatched does not make it "down" before `down_after` failures.
        t.failure(&"ping: timeout");
        assert_eq!(t.health.detail().reported, Reported::Mismatch);
        t.format_mismatch("3");
        assert_eq!(
            t.health.format_mismatch().as_deref(),
            Some("found 3, expected 1")
        );
        t.ping_ok();
        assert!(t.health.is_up());
        assert_eq!(t.health.format_mismatch(), None);

        // Down forgets the marker: it is unknown until the shard answers again.
        t.format_mismatch("2");
        t.failure(&"ping: refused");
        t.failure(&"ping: refused");
        assert_eq!(t.health.format_mismatch(), None);
        assert_eq!(t.health.last_error().as_deref(), Some("ping: refused"));
        assert!(!t.format_mismatched());
    }

    #[test]
    fn one_probe_after_the_pause_and_doubling_on_its_failure() {
        let t = tracker();
        assert!(t.claim_write());
        t.write_refused(&"OOM command not allowed");
        assert!(t.health.writes_paused());
        assert!(!t.claim_write());
        // A refusal of a write sent before the pause does not prolong it.
        t.write_refused(&"OOM again");
        assert_eq!(t.health.detail().write_delay, WRITE_BACKOFF_INITIAL);

        // Pretend the pause expired.
        t.health.writes_paused_until_ms.store(1, Ordering::Release);
        assert!(!t.health.writes_paused());
        assert!(t.claim_write(), "the probe");
        assert!(!t.claim_write(), "only one probe");
        assert!(t.health.writes_paused());
        t.write_refused(&"OOM still");
        assert_eq!(t.health.detail().write_delay, WRITE_BACKOFF_INITIAL * 2);
        assert_eq!(t.health.write_error().as_deref(), Some("OOM still"));

        t.write_ok();
        assert!(!t.health.writes_paused());
        assert_eq!(t.health.write_error(), None);
        assert!(t.claim_write() && t.claim_write());
    }

    #[test]
    fn the_pause_is_capped() {
        let t = tracker();
        t.write_refused(&"OOM");
        for _ in 0..20 {
            t.health.writes_paused_until_ms.store(1, Ordering::Release);
            assert!(t.claim_write());
            t.write_refused(&"OOM");
        }
        assert_eq!(t.health.detail().write_delay, WRITE_BACKOFF_MAX);
    }
}
