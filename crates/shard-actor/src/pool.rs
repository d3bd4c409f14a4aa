//! The shard's multiplexed connections: slots that are empty, connecting or ready, handed
//! out round-robin. Managers are created from inside the shard actor so their I/O task runs
//! on the actor's own arbiter thread.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::settings::ShardSettings;

/// Reconnect attempts the manager makes on its own after a connection drops. One retry
/// absorbs a blip; longer outages are the health check's business, which re-triggers a
/// reconnect on every PING.
const CONNECT_RETRIES: usize = 1;
/// First backoff before a reconnect retry.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
/// Ceiling on the backoff between reconnect attempts (redis-rs has none by default).
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(200);

/// One connection slot.
pub(crate) enum Slot {
    /// No manager: the next health tick creates one.
    Empty,
    /// A manager is being created by a spawned future.
    Connecting,
    /// A working manager. `generation` tells late PING answers about a replaced manager apart.
    Ready {
        conn: ConnectionManager,
        generation: u64,
        failed_pings: u32,
    },
}

/// `connections` slots plus the round-robin cursor.
pub(crate) struct Pool {
    pub(crate) slots: Vec<Slot>,
    next: usize,
}

impl Pool {
    pub(crate) fn new(connections: usize) -> Pool {
        Pool {
            slots: (0..connections.max(1)).map(|_| Slot::Empty).collect(),
            next: 0,
        }
    }

    /// The next ready connection, round-robin; `None` when none is ready. The health check
    /// uses this so it probes every connection in turn.
    pub(crate) fn pick(&mut self) -> Option<(usize, ConnectionManager, u64)> {
        self.pick_where(|_| true)
    }

    /// The next ready connection whose last PING worked, for commands: after an outage one
    /// connection may be back while another still holds a dead socket. Falls back to any ready
    /// connection when none has been confirmed yet.
    pub(crate) fn pick_for_command(&mut self) -> Option<ConnectionManager> {
        self.pick_where(|failed_pings| failed_pings == 0)
            .or_else(|| self.pick())
            .map(|(_, conn, _)| conn)
    }

    fn pick_where(
        &mut self,
        accept: impl Fn(u32) -> bool,
    ) -> Option<(usize, ConnectionManager, u64)> {
        let len = self.slots.len();
        for step in 0..len {
            let idx = (self.next + step) % len;
            if let Slot::Ready {
                conn,
                generation,
                failed_pings,
            } = &self.slots[idx]
            {
                if accept(*failed_pings) {
                    self.next = (idx + 1) % len;
                    return Some((idx, conn.clone(), *generation));
                }
            }
        }
        None
    }
}

/// Manager settings: both timeouts tuned, because redis-rs' defaults take 9–16 s to give up
/// on a refused or blackholed server.
pub(crate) fn manager_config(settings: &ShardSettings) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.response_timeout))
        .set_number_of_retries(CONNECT_RETRIES)
        .set_min_delay(RECONNECT_MIN_DELAY)
        .set_max_delay(RECONNECT_MAX_DELAY)
}

/// Upper bound on creating one manager: every connect attempt with its handshake, plus the
/// backoff between them. Enforced from outside so a wedged handshake cannot hang a slot.
pub(crate) fn connect_bound(settings: &ShardSettings) -> Duration {
    let attempts = u32::try_from(CONNECT_RETRIES + 1).unwrap_or(u32::MAX);
    (settings.connect_timeout + settings.response_timeout) * attempts + RECONNECT_MAX_DELAY
}
