//! The state of a shard that others read without a mailbox trip, shared between its actor
//! (which changes it) and the ring (which reads it on every route): the up/down flag and why
//! the shard is unusable.
//!
//! Logging lives here too, because it follows the state: one WARN the first time a shard is
//! found unusable (a shard starts down, so this includes never coming up), one INFO when it
//! is up again. While the state does not change, nothing but debug lines.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::metrics;

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
}

/// The parts that change together; behind a std lock because it is only held to update or
/// copy a few fields, never across an await.
#[derive(Debug)]
struct Detail {
    reported: Reported,
    /// Why the shard is down; `None` while it is up.
    down_reason: Option<String>,
}

/// Whether a shard currently answers. Starts down: a shard is trusted only after its first
/// PING.
#[derive(Debug)]
pub struct ShardHealth {
    up: AtomicBool,
    detail: Mutex<Detail>,
}

impl Default for ShardHealth {
    fn default() -> ShardHealth {
        ShardHealth {
            up: AtomicBool::new(false),
            detail: Mutex::new(Detail {
                reported: Reported::Nothing,
                down_reason: None,
            }),
        }
    }
}

impl ShardHealth {
    /// A new flag, down until the shard actor's first good PING.
    pub fn new() -> ShardHealth {
        ShardHealth::default()
    }

    /// True when the last health verdict was "answers".
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Why the shard is down (the last error seen while down); `None` while it is up.
    pub fn last_error(&self) -> Option<String> {
        self.detail().down_reason.clone()
    }

    /// Sets the flag; returns the previous value.
    pub(crate) fn set(&self, up: bool) -> bool {
        self.up.swap(up, Ordering::AcqRel)
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
/// and flips [`ShardHealth`]. Shared with command futures, which run outside the actor.
#[derive(Debug)]
pub(crate) struct HealthTracker {
    name: String,
    health: Arc<ShardHealth>,
    failures: AtomicU32,
    down_after: u32,
}

impl HealthTracker {
    pub(crate) fn new(name: String, health: Arc<ShardHealth>, down_after: u32) -> HealthTracker {
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

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// A good PING: one is enough to trust the shard again. Returns true if it was down.
    pub(crate) fn ping_ok(&self) -> bool {
        self.failures.store(0, Ordering::Release);
        metrics::set_up(&self.name, true);
        let was_up = self.health.set(true);
        if !was_up {
            let mut detail = self.health.detail();
            detail.reported = Reported::Up;
            detail.down_reason = None;
            tracing::info!(shard = %self.name, "redis shard is up");
        }
        !was_up
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
        if failures >= self.down_after {
            metrics::set_up(&self.name, false);
            self.health.set(false);
        } else if self.health.is_up() {
            tracing::debug!(shard = %self.name, failures, %why, "redis shard failure");
            return;
        }
        // Down: either just marked so, or never up yet (a shard starts down, and one that
        // cannot authenticate never comes up: that must be said too, once).
        let why = reason(why);
        let mut detail = self.health.detail();
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
}
