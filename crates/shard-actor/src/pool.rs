//! The shard's multiplexed connections: slots that are empty, connecting or ready, handed
//! out round-robin. Slot 0 lives on the actor's own thread and carries the small commands
//! (no extra thread hop); the other slots live on the actor's connection threads
//! ([`crate::io_threads`]) and carry large values, so their copying runs beside the actor
//! and a 1 MiB transfer does not stall small gets. Each manager is only ever used on the
//! thread it was created on, where its I/O task runs.

use std::future::Future;
use std::time::Duration;

use actix::ArbiterHandle;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::io_threads::{run_on, IoThreadGone};

use crate::settings::ShardSettings;

/// Reconnect attempts the manager makes on its own after a connection drops. One retry
/// absorbs a blip; longer outages are the health check's business, which re-triggers a
/// reconnect on every PING.
const CONNECT_RETRIES: usize = 1;
/// First backoff before a reconnect retry.
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
/// Ceiling on the backoff between reconnect attempts (redis-rs has none by default).
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(200);

/// Values at least this large are written over a connection on a connection thread: their
/// copies then run beside the actor's thread, and the actor-local connection stays free for
/// small commands. Smaller commands stay on the actor's thread: hopping every command to a
/// connection thread and back made 4 KiB gets ~13 % slower in cache-bench.
pub const LARGE_VALUE_BYTES: usize = 256 * 1024;

/// What a command is about to carry, which decides the connection it prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Load {
    /// Reads, deletes, small writes: the actor-local connection.
    Small,
    /// A write of at least [`LARGE_VALUE_BYTES`]: a connection on a connection thread.
    Large,
}

impl Load {
    pub(crate) fn of_value(len: usize) -> Load {
        if len >= LARGE_VALUE_BYTES {
            Load::Large
        } else {
            Load::Small
        }
    }
}

/// Whether slot `idx` lives on the actor's own thread. Slot 0 does, so a single-connection
/// shard starts no thread of its own.
pub(crate) fn is_local(idx: usize) -> bool {
    idx == 0
}

/// A manager and the connection thread it was created on (where its I/O task runs);
/// `io` is `None` for the actor-local connection.
#[derive(Clone)]
pub(crate) struct Conn {
    manager: ConnectionManager,
    io: Option<ArbiterHandle>,
}

impl Conn {
    pub(crate) fn new(manager: ConnectionManager, io: Option<ArbiterHandle>) -> Conn {
        Conn { manager, io }
    }

    /// Runs `work` with the manager on the manager's own thread, so encoding, copying and
    /// parsing happen there, and any reconnect the manager starts lands there too.
    pub(crate) async fn run<T, F, Fut>(self, work: F) -> Result<T, IoThreadGone>
    where
        T: Send + 'static,
        F: FnOnce(ConnectionManager) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let Conn { manager, io } = self;
        match io {
            None => Ok(work(manager).await),
            Some(io) => run_on(&io, async move { work(manager).await }).await,
        }
    }
}

/// One connection slot.
pub(crate) enum Slot {
    /// No manager: the next health tick creates one.
    Empty,
    /// A manager is being created by a spawned future.
    Connecting,
    /// A working manager. `generation` tells late PING answers about a replaced manager apart.
    Ready {
        conn: Conn,
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
    pub(crate) fn pick(&mut self) -> Option<(usize, Conn, u64)> {
        self.pick_where(|_, _| true)
    }

    /// A connection for a command carrying `load`: one of its own kind (actor-local for small
    /// commands, on a connection thread for large values) whose last PING worked, else any
    /// connection whose last PING worked (after an outage one connection may be back while
    /// another still holds a dead socket), else any ready connection.
    pub(crate) fn pick_for_command(&mut self, load: Load) -> Option<Conn> {
        let wanted = |idx| is_local(idx) == (load == Load::Small);
        self.pick_where(|idx, failed_pings| failed_pings == 0 && wanted(idx))
            .or_else(|| self.pick_where(|_, failed_pings| failed_pings == 0))
            .or_else(|| self.pick())
            .map(|(_, conn, _)| conn)
    }

    fn pick_where(&mut self, accept: impl Fn(usize, u32) -> bool) -> Option<(usize, Conn, u64)> {
        let len = self.slots.len();
        for step in 0..len {
            let idx = (self.next + step) % len;
            if let Slot::Ready {
                conn,
                generation,
                failed_pings,
            } = &self.slots[idx]
            {
                if accept(idx, *failed_pings) {
                    self.next = (idx + 1) % len;
                    return Some((idx, conn.clone(), *generation));
                }
            }
        }
        None
    }
}

/// Manager settings. The connection timeout bounds each connect attempt with its handshake,
/// the manager's own reconnects included (redis-rs' default takes seconds to give up on a
/// blackholed server). No response timeout: commands are bounded once, by the command path
/// (`crate::command`), and a second timer per command here would only race it.
pub(crate) fn manager_config(settings: &ShardSettings) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(None)
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
