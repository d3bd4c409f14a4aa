//! The shard actor's lifecycle: it owns the connections to one Redis server, creates them
//! (again) as needed, PINGs the server every health interval, keeps the shared health flag
//! and the shard's usage gauges current, and admits commands: a command is handed a
//! connection here only while the shard is up (and, for a write, while writes are not
//! paused). What each command sends is in [`crate::handlers`]; how every exchange runs, and
//! its one timeout, in [`crate::command`].

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::command::{ok, Command, Kind};
use crate::error::{Result, ShardError};
use crate::format::Marker;
use crate::health::{HealthTracker, ShardHealth};
use crate::io_threads::{run_on, IoThreadGone, IoThreads};
use crate::metrics;
use crate::pool::{self, Conn, Load, Pool, Slot};
use crate::reader::{refuse_unless_up, ShardReaders};
use crate::settings::ShardSettings;
use crate::{info, probe};

/// Messages that may wait in the mailbox. Handlers only start a future, so the mailbox drains
/// fast; the bound keeps a burst from queueing without limit (senders wait instead).
pub const MAILBOX_CAPACITY: usize = 1024;
/// How often memory and key count are read while the shard is up.
pub const STATS_INTERVAL: Duration = Duration::from_secs(5);
/// Failed PINGs in a row on one connection after which it is dropped and created anew,
/// whatever the manager's own reconnect logic thinks of the error.
const RECREATE_AFTER_FAILED_PINGS: u32 = 4;

/// One Redis shard. Start it on its own arbiter (`ShardActor::start_in_arbiter`); see the
/// crate docs. Nothing restarts it in place: an actor that panicked is gone, and the ring's
/// watchdog starts a new one.
pub struct ShardActor {
    settings: ShardSettings,
    tracker: Arc<HealthTracker>,
    /// `Err` holds why the URL was rejected: the actor then stays down and says so.
    client: std::result::Result<redis::Client, String>,
    pool: Pool,
    /// The threads the connections live on; dropping the actor stops them.
    io: IoThreads,
    /// Source of slot generations, so answers about a replaced manager are ignored.
    generation: u64,
}

impl ShardActor {
    /// An actor for `settings` that reports into `health` (shared with the ring), without
    /// per-thread readers.
    pub fn new(settings: ShardSettings, health: Arc<ShardHealth>) -> Self {
        ShardActor::with_readers(&ShardReaders::new(settings, health))
    }

    /// The actor of the shard `readers` describes: its per-thread readers share its health
    /// tracker, so their timeouts count against the shard like its own.
    pub fn with_readers(readers: &Arc<ShardReaders>) -> Self {
        let settings = readers.settings.clone();
        let tracker = readers.tracker.clone();
        let client = redis::Client::open(settings.url.as_str()).map_err(|err| err.to_string());
        let pool = Pool::new(settings.connections);
        let io = IoThreads::new(settings.connections.saturating_sub(1));
        ShardActor {
            settings,
            tracker,
            client,
            pool,
            io,
            generation: 0,
        }
    }

    /// One health round: create missing connections, PING one ready connection.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(why) => {
                self.tracker.failure(&format_args!("unusable url: {why}"));
                return;
            }
        };
        for idx in 0..self.pool.slots.len() {
            if matches!(self.pool.slots[idx], Slot::Empty) {
                self.pool.slots[idx] = Slot::Connecting;
                self.connect(ctx, idx, client.clone());
            }
        }
        if let Some((idx, conn, generation)) = self.pool.pick() {
            self.ping(ctx, idx, conn, generation);
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>, idx: usize, client: redis::Client) {
        let config = pool::manager_config(&self.settings);
        let bound = pool::connect_bound(&self.settings);
        let io = if pool::is_local(idx) {
            None
        } else {
            match self.io.for_slot(idx - 1) {
                Ok(io) => Some(io),
                Err(err) => {
                    self.pool.slots[idx] = Slot::Empty;
                    self.tracker
                        .failure(&format_args!("no thread for a connection: {err}"));
                    return;
                }
            }
        };
        // Created on the thread it belongs to, so the manager's I/O task runs there.
        let create = async move {
            match tokio::time::timeout(
                bound,
                redis::aio::ConnectionManager::new_with_config(client, config),
            )
            .await
            {
                Ok(Ok(manager)) => Ok(manager),
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err(format!("connect took longer than {bound:?}")),
            }
        };
        let fut = async move {
            let created = match &io {
                None => Ok(create.await),
                Some(io) => run_on(io, create).await,
            };
            match created {
                Ok(Ok(manager)) => Ok(Conn::new(manager, io)),
                Ok(Err(why)) => Err(why),
                Err(IoThreadGone) => Err("connection thread stopped".to_owned()),
            }
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| match res {
            Ok(conn) => {
                act.generation += 1;
                let generation = act.generation;
                tracing::debug!(shard = %act.settings.name, slot = idx, "redis connection established");
                act.pool.slots[idx] = Slot::Ready {
                    conn: conn.clone(),
                    generation,
                    failed_pings: 0,
                };
                // Ping right away so a fresh shard is routable without waiting for the next tick.
                act.ping(ctx, idx, conn, generation);
            }
            Err(why) => {
                act.pool.slots[idx] = Slot::Empty;
                act.tracker.failure(&format_args!("connect: {why}"));
            }
        }));
    }

    /// One health probe on slot `idx` ([`probe`]); its answer decides the shard's health,
    /// and enough failures in a row on one slot have the slot's connection created anew.
    fn ping(&mut self, ctx: &mut Context<Self>, idx: usize, conn: Conn, generation: u64) {
        let shard = self.settings.name.clone();
        let probe = self.command_on(conn, "ping", Kind::Probe).run(
            move |manager| probe::ping_and_check_marker(shard, manager),
            ok,
        );
        ctx.spawn(probe.into_actor(self).map(move |res, act, ctx| {
            let failed_pings = match &mut act.pool.slots[idx] {
                Slot::Ready {
                    generation: g,
                    failed_pings,
                    ..
                } if *g == generation => Some(failed_pings),
                _ => None,
            };
            match res {
                Ok(marker) => {
                    if let Some(failed_pings) = failed_pings {
                        *failed_pings = 0;
                    }
                    match marker {
                        Marker::Other(found) => act.tracker.format_mismatch(&found),
                        Marker::Ours | Marker::Missing => {
                            if act.tracker.ping_ok() {
                                act.refresh_stats(ctx);
                            }
                        }
                    }
                }
                // The command path has told the health tracker already.
                Err(_) => {
                    if let Some(failed_pings) = failed_pings {
                        *failed_pings += 1;
                        if *failed_pings >= RECREATE_AFTER_FAILED_PINGS {
                            tracing::debug!(shard = %act.settings.name, slot = idx, "recreating redis connection");
                            act.pool.slots[idx] = Slot::Empty;
                        }
                    }
                }
            }
        }));
    }

    /// Reads memory and key count into the gauges (only while up: a down shard keeps its
    /// last figures rather than reporting zero), as an `info` command like any other.
    fn refresh_stats(&mut self, ctx: &mut Context<Self>) {
        if !self.tracker.is_up() {
            return;
        }
        let Some(conn) = self.pool.pick_for_command(Load::Small) else {
            return;
        };
        let read = info::read_usage(self.command_on(conn, "info", Kind::Read));
        let shard = self.settings.name.clone();
        ctx.spawn(
            async move {
                if let Err(err) = read.await {
                    tracing::debug!(%shard, %err, "reading shard stats failed");
                }
            }
            .into_actor(self),
        );
    }

    /// The shard's name from the config.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn name(&self) -> &str {
        &self.settings.name
    }

    /// A command of kind `kind` on `conn`, reporting as `op`.
    fn command_on(&self, conn: Conn, op: &'static str, kind: Kind) -> Command {
        Command::new(
            conn,
            op,
            kind,
            self.settings.response_timeout,
            self.tracker.clone(),
        )
    }

    /// Admits one read or delete carrying `load`: refused at once (no network) while the
    /// shard is not up or has no connection.
    pub(crate) fn command(&mut self, op: &'static str, load: Load) -> Result<Command> {
        self.admit(op, load, Kind::Read)
    }

    /// Admits one write carrying `load`: as [`Self::command`], and also refused at once while
    /// writes are paused (a shard that answered OOM would refuse it anyway), except for the
    /// one probe after each pause.
    pub(crate) fn write_command(&mut self, op: &'static str, load: Load) -> Result<Command> {
        let command = self.admit(op, load, Kind::Write)?;
        if !self.tracker.claim_write() {
            metrics::observe(&self.settings.name, op, "paused", Duration::ZERO);
            return Err(ShardError::WritesPaused(self.settings.name.clone()));
        }
        Ok(command)
    }

    fn admit(&mut self, op: &'static str, load: Load, kind: Kind) -> Result<Command> {
        refuse_unless_up(&self.tracker, op)?;
        let Some(conn) = self.pool.pick_for_command(load) else {
            metrics::observe(&self.settings.name, op, "error", Duration::ZERO);
            return Err(ShardError::NotConnected(self.settings.name.clone()));
        };
        Ok(self.command_on(conn, op, kind))
    }
}

impl Actor for ShardActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        if let Err(why) = &self.client {
            tracing::error!(shard = %self.settings.name, %why, "redis shard url rejected; shard stays down");
        }
        tracing::debug!(shard = %self.settings.name, "shard actor started");
        self.tick(ctx);
        ctx.run_interval(self.settings.health_interval, |act, ctx| act.tick(ctx));
        ctx.run_interval(STATS_INTERVAL, |act, ctx| act.refresh_stats(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        tracing::debug!(shard = %self.settings.name, "shard actor stopped");
    }
}
