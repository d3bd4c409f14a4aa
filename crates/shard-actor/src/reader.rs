//! Per-thread readers: a shard's `GET`s answered on the caller's own thread.
//!
//! A `GET` sent to the [`ShardActor`] crosses threads twice (caller → the actor's arbiter →
//! caller): two wake-ups per read, which on a small blob cost more than the read itself
//! (cache-bench: a 4 KiB get at 0.55 of plain redis-rs, with the CPU per get only 20 %
//! above it). A [`ShardReader`] is an actor of the same shard started on the thread that
//! reads (an actix-web worker, say), with its own multiplexed connection created there,
//! so the message, the command and the reply all stay on that thread, as a per-worker
//! connection would. It answers `Get` only; writes, leases and deletes stay with the shard
//! actor, which also stays the one judge of the shard's health: readers share its
//! [`ShardReaders`] (settings and health tracker), refuse at once while the shard is not
//! up, and count only their timeouts against it. A reader's connection learns of a server
//! restart at its next command, and every reader would count that one dropped connection,
//! so connection errors are left to the PING, which sees each outage once.
//!
//! [`ShardReaders::local`] finds or starts this thread's reader of a shard; off an actix
//! arbiter (no event loop to run it on) there is none, and the caller sends to the shard
//! actor. A reader still connecting answers [`ShardError::NotConnected`], which tells the
//! caller to do the same. Readers of a shard that is gone (removed from the list, or its
//! [`ShardReaders`] replaced) are dropped at the next lookup on their thread and stop
//! themselves within [`ORPHAN_CHECK_INTERVAL`].

use std::cell::RefCell;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;

use crate::command::{Command, Kind};
use crate::error::{Result, ShardError};
use crate::handlers::get_exchange;
use crate::health::{HealthTracker, ShardHealth};
use crate::messages::Get;
use crate::metrics;
use crate::pool::{self, Conn};
use crate::settings::ShardSettings;

/// After a reader failed to connect, how long it sends its callers to the shard actor
/// before it tries again (connecting is bounded by the connect timeout, but a server that
/// accepts nothing should not cost every read a connect attempt).
pub const READER_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// How often a reader checks that its shard still exists, and stops if not.
pub const ORPHAN_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// What a shard's actor and its per-thread readers share: the settings they connect with
/// and the tracker that decides the shard's health. One per shard actor; the ring hands
/// it to the actor it starts and keeps it in the shard's handle.
#[derive(Debug)]
pub struct ShardReaders {
    pub(crate) settings: ShardSettings,
    pub(crate) tracker: Arc<HealthTracker>,
    /// Readers running, for the gauge (readers of a replaced `ShardReaders` no longer count).
    running: AtomicI64,
}

impl ShardReaders {
    /// The shared part of a shard with `settings` that reports into `health`.
    pub fn new(settings: ShardSettings, health: Arc<ShardHealth>) -> Arc<ShardReaders> {
        let tracker = Arc::new(HealthTracker::new(
            settings.name.clone(),
            health,
            settings.down_after_failures,
        ));
        Arc::new(ShardReaders {
            settings,
            tracker,
            running: AtomicI64::new(0),
        })
    }

    /// The shard's name from the config.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// This thread's reader of the shard, started on first use; `None` off an actix
    /// arbiter, where the caller sends to the shard actor instead.
    pub fn local(self: &Arc<Self>) -> Option<Addr<ShardReader>> {
        let arbiter = Arbiter::try_current()?;
        LOCAL_READERS.with(|readers| {
            let mut readers = readers.borrow_mut();
            // Forget readers of shards that are gone (their actors then stop: no address
            // of theirs is left) and readers that died.
            readers.retain(|(shard, addr)| shard.strong_count() > 0 && addr.connected());
            let mine = readers
                .iter()
                .find(|(shard, _)| std::ptr::eq(shard.as_ptr(), Arc::as_ptr(self)));
            if let Some((_, addr)) = mine {
                return Some(addr.clone());
            }
            // Started through the arbiter (on this same thread), not spawned from here: the
            // caller may be a task outside the arbiter's `LocalSet` (`tokio::spawn` on the
            // same runtime), where spawning an actor directly would panic.
            let reader = ShardReader::new(self);
            let addr = ShardReader::start_in_arbiter(&arbiter, move |_| reader);
            readers.push((Arc::downgrade(self), addr.clone()));
            Some(addr)
        })
    }

    /// How many readers this thread holds (of every shard): for tests.
    pub fn readers_on_this_thread() -> usize {
        LOCAL_READERS.with(|readers| readers.borrow().len())
    }
}

thread_local! {
    /// This thread's readers, by the shard they read (a handful: one per shard).
    static LOCAL_READERS: RefCell<Vec<(Weak<ShardReaders>, Addr<ShardReader>)>> =
        const { RefCell::new(Vec::new()) };
}

/// The reader's one connection.
enum Connection {
    None { retry_at: Option<Instant> },
    Connecting,
    Ready(Conn),
}

/// One shard's `GET`s on one thread; see the module docs.
pub struct ShardReader {
    shard: Weak<ShardReaders>,
    settings: ShardSettings,
    tracker: Arc<HealthTracker>,
    client: std::result::Result<redis::Client, String>,
    connection: Connection,
}

impl ShardReader {
    fn new(shared: &Arc<ShardReaders>) -> ShardReader {
        let settings = shared.settings.clone();
        let client = redis::Client::open(settings.url.as_str()).map_err(|err| err.to_string());
        ShardReader {
            shard: Arc::downgrade(shared),
            settings,
            tracker: shared.tracker.clone(),
            client,
            connection: Connection::None { retry_at: None },
        }
    }

    /// Adds `change` to the shard's running readers and the gauge, unless the shard is gone
    /// (its metrics are forgotten, or belong to the `ShardReaders` that replaced it).
    fn count_running(&self, change: i64) {
        if let Some(shard) = self.shard.upgrade() {
            let running = shard.running.fetch_add(change, Ordering::AcqRel) + change;
            metrics::set_readers(&self.settings.name, running);
        }
    }

    /// Starts creating the connection unless one exists, is on its way, or the last attempt
    /// failed less than [`READER_RECONNECT_DELAY`] ago.
    fn connect(&mut self, ctx: &mut Context<Self>) {
        match self.connection {
            Connection::None { retry_at } if retry_at.is_none_or(|at| Instant::now() >= at) => {}
            _ => return,
        }
        let Ok(client) = self.client.clone() else {
            // The shard actor says why the URL is unusable; the shard never comes up.
            return;
        };
        self.connection = Connection::Connecting;
        let config = pool::manager_config(&self.settings);
        let bound = pool::connect_bound(&self.settings);
        let create = async move {
            tokio::time::timeout(
                bound,
                redis::aio::ConnectionManager::new_with_config(client, config),
            )
            .await
        };
        ctx.spawn(create.into_actor(self).map(|created, reader, _| {
            reader.connection = match created {
                Ok(Ok(manager)) => Connection::Ready(Conn::new(manager, None)),
                Ok(Err(err)) => {
                    tracing::debug!(shard = %reader.settings.name, %err, "reader could not connect");
                    Connection::None {
                        retry_at: Some(Instant::now() + READER_RECONNECT_DELAY),
                    }
                }
                Err(_) => {
                    tracing::debug!(shard = %reader.settings.name, "reader's connect timed out");
                    Connection::None {
                        retry_at: Some(Instant::now() + READER_RECONNECT_DELAY),
                    }
                }
            };
        }));
    }
}

impl Actor for ShardReader {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.count_running(1);
        ctx.set_mailbox_capacity(crate::MAILBOX_CAPACITY);
        ctx.run_interval(ORPHAN_CHECK_INTERVAL, |reader, ctx| {
            if reader.shard.strong_count() == 0 {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.count_running(-1);
    }
}

impl Handler<Get> for ShardReader {
    type Result = ResponseFuture<Result<Option<Bytes>>>;

    fn handle(&mut self, msg: Get, ctx: &mut Self::Context) -> Self::Result {
        if let Err(refused) = refuse_unless_up(&self.tracker, "get") {
            return Box::pin(async move { Err(refused) });
        }
        let Connection::Ready(conn) = &self.connection else {
            self.connect(ctx);
            let name = self.settings.name.clone();
            return Box::pin(async move { Err(ShardError::NotConnected(name)) });
        };
        let command = Command::new(
            conn.clone(),
            "get",
            Kind::LocalRead,
            self.settings.response_timeout,
            self.tracker.clone(),
        );
        let key = msg.key;
        Box::pin(command.run(move |conn| get_exchange(conn, key), get_exchange_outcome))
    }
}

/// The metric result of a `GET`'s answer.
pub(crate) fn get_exchange_outcome(value: &Option<Bytes>) -> &'static str {
    if value.is_some() {
        "hit"
    } else {
        "miss"
    }
}

/// `Err` when a command may not be sent to the shard now (not up, or holding another
/// key-format version), counted as refused; the network is not touched.
pub(crate) fn refuse_unless_up(tracker: &HealthTracker, op: &'static str) -> Result<()> {
    if tracker.is_up() {
        return Ok(());
    }
    metrics::observe(tracker.name(), op, "down", Duration::ZERO);
    let name = tracker.name().to_owned();
    Err(if tracker.format_mismatched() {
        ShardError::FormatMismatch(name)
    } else {
        ShardError::Down(name)
    })
}
