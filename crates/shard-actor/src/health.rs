//! The up/down flag of a shard, shared between its actor (which flips it) and the ring
//! (which reads it on every route without a mailbox round trip).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use crate::metrics;

/// Whether a shard currently answers. Starts down: a shard is trusted only after its first PING.
#[derive(Debug, Default)]
pub struct ShardHealth {
    up: AtomicBool,
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

    /// Sets the flag; returns the previous value.
    pub(crate) fn set(&self, up: bool) -> bool {
        self.up.swap(up, Ordering::AcqRel)
    }
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
            tracing::info!(shard = %self.name, "redis shard is up");
        }
        !was_up
    }

    /// A command that worked proves the connection, but only a PING may flip a shard up.
    pub(crate) fn command_ok(&self) {
        self.failures.store(0, Ordering::Release);
    }

    /// A failed PING or a command that timed out / lost its connection.
    pub(crate) fn failure(&self, why: &dyn std::fmt::Display) {
        let failures = self
            .failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if failures >= self.down_after {
            metrics::set_up(&self.name, false);
            if self.health.set(false) {
                tracing::warn!(shard = %self.name, failures, %why, "redis shard is down");
            }
        } else {
            tracing::debug!(shard = %self.name, failures, %why, "redis shard failure");
        }
    }
}
