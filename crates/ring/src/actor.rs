//! The ring actor: owns one shard actor per configured shard, each on its own arbiter thread,
//! replaces any that died, applies new shard lists, and publishes the routing snapshot.
//!
//! When a change of the list adds or removes names, the list before it is kept for
//! `cache.redis.reshard_drain_secs` (the "drain") and published with the snapshot, and the
//! removed shards keep running meanwhile (their metrics with them: they still serve reads).
//! One generation only: a second change during a drain starts a new drain from the list
//! that was current, and shards removed by the first change are then dropped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use arc_swap::ArcSwap;
use mr_config::{RedisConfig, ShardConfig, ShardDiff};
use mr_shard_actor::{ShardActor, ShardHealth, ShardReaders, ShardSettings};

use crate::hashing;
use crate::messages::{ApplyRedisConfig, ShardStatus, Status};
use crate::snapshot::{PreviousRing, RingHandle, ShardHandle, Snapshot};

/// How often the ring's watchdog looks for shard actors whose mailbox closed. This watchdog
/// is the one supervision mechanism: a panic ends an actor for good (actix's own
/// `Supervisor` would restart only an actor that stops itself, which ours never do), and the
/// watchdog starts a fresh actor on a fresh thread, keeping the shard's health flag.
pub const RESPAWN_CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// After a shard is removed its metrics are forgotten at once and once more after this delay,
/// in case its stopping thread wrote a last figure in between.
const FORGET_METRICS_AGAIN_AFTER: Duration = Duration::from_secs(1);

/// A shard actor the ring owns, with the thread it runs on.
struct RunningShard {
    config: ShardConfig,
    settings: ShardSettings,
    /// The actor's own thread: its connection managers' I/O runs here, not on the workers.
    arbiter: Arbiter,
    handle: ShardHandle,
}

impl RunningShard {
    fn start(
        config: ShardConfig,
        settings: ShardSettings,
        health: Arc<ShardHealth>,
    ) -> RunningShard {
        let readers = ShardReaders::new(settings.clone(), health.clone());
        let (arbiter, addr) = spawn_actor(&readers);
        let handle = ShardHandle {
            name: Arc::from(settings.name.as_str()),
            name_hash: hashing::name_hash(&settings.name),
            addr,
            health,
            readers,
        };
        tracing::info!(shard = %settings.name, addr = %config.redacted_addr(), "redis shard started");
        RunningShard {
            config,
            settings,
            arbiter,
            handle,
        }
    }

    /// Stops the actor's thread; messages in flight to it answer with a mailbox error.
    fn stop(self) {
        self.arbiter.stop();
    }
}

fn spawn_actor(readers: &Arc<ShardReaders>) -> (Arbiter, Addr<ShardActor>) {
    let arbiter = Arbiter::new();
    let readers = readers.clone();
    let addr = ShardActor::start_in_arbiter(&arbiter.handle(), move |_| {
        ShardActor::with_readers(&readers)
    });
    (arbiter, addr)
}

/// The shard list before the last change of names, while it is drained.
struct Previous {
    /// Every name of that list.
    names: Vec<String>,
    /// The shards it had that the current list removed, still running.
    draining: BTreeMap<String, RunningShard>,
    until: Instant,
    /// Tells the timer that ends this drain from one a later change replaced it with.
    generation: u64,
}

/// Owner of the shard actors. Start it with [`RingActor::start`].
///
/// Its reloadable state (the Redis settings, the shard list) is held as actor fields, not in
/// an `ArcSwap` like the other reloadable values: applying a new list starts and stops
/// actors and timers, which must happen one change at a time, and the mailbox orders them.
/// Readers never see the fields; they read `snapshot`, an `ArcSwap`, like everywhere else.
pub struct RingActor {
    redis: RedisConfig,
    shards: BTreeMap<String, RunningShard>,
    previous: Option<Previous>,
    /// Counts drains started, see [`Previous::generation`].
    drains: u64,
    snapshot: Arc<ArcSwap<Snapshot>>,
}

impl RingActor {
    /// Starts every configured shard and the ring actor (call inside an actix `System`).
    /// The returned handle routes at once; shards count as down until their first PING.
    pub fn start(redis: &RedisConfig) -> (Addr<RingActor>, RingHandle) {
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
        let mut ring = RingActor {
            redis: redis.clone(),
            shards: BTreeMap::new(),
            previous: None,
            drains: 0,
            snapshot: snapshot.clone(),
        };
        for shard in &redis.shards {
            ring.start_shard(shard.clone(), Arc::new(ShardHealth::new()));
        }
        ring.publish();
        (ring.start(), RingHandle::new(snapshot))
    }

    fn start_shard(&mut self, config: ShardConfig, health: Arc<ShardHealth>) {
        let settings = ShardSettings::from_config(&config, &self.redis);
        let running = RunningShard::start(config, settings, health);
        if let Some(old) = self.shards.insert(running.settings.name.clone(), running) {
            old.stop();
        }
    }

    /// Publishes the current shard set, and the previous one while it drains, for the
    /// routers. Previous names resolve to today's actors, so a respawn is seen there too.
    fn publish(&self) {
        let shards = self
            .shards
            .values()
            .map(|shard| shard.handle.clone())
            .collect();
        let previous = self.previous.as_ref().map(|previous| PreviousRing {
            shards: previous
                .names
                .iter()
                .filter_map(|name| match self.shards.get(name) {
                    Some(running) => Some((running.handle.clone(), false)),
                    None => previous
                        .draining
                        .get(name)
                        .map(|running| (running.handle.clone(), true)),
                })
                .collect(),
            until: previous.until,
        });
        self.snapshot.store(Arc::new(Snapshot { shards, previous }));
    }

    /// The watchdog: replaces every shard actor whose mailbox closed (draining ones
    /// included), keeping its health flag so routing does not flap while the new actor
    /// connects.
    fn respawn_dead(&mut self) {
        let draining = self
            .previous
            .iter_mut()
            .flat_map(|p| p.draining.values_mut());
        let mut respawned = false;
        for shard in self.shards.values_mut().chain(draining) {
            if shard.handle.addr.connected() {
                continue;
            }
            tracing::warn!(shard = %shard.settings.name, "shard actor died; starting a fresh one");
            mr_shard_actor::note_actor_replaced(&shard.settings.name);
            // The same readers (and health tracker): the fresh actor takes over their shard.
            let (arbiter, addr) = spawn_actor(&shard.handle.readers);
            // A new thread too: the old one may be the reason the actor died.
            std::mem::replace(&mut shard.arbiter, arbiter).stop();
            shard.handle.addr = addr;
            respawned = true;
        }
        if respawned {
            self.publish();
        }
    }

    /// Stops a removed shard and forgets its metrics (now, and once more a moment later in
    /// case its stopping thread wrote a last figure), unless a shard of that name is
    /// configured again by then.
    fn retire(&self, ctx: &mut Context<Self>, name: String, shard: RunningShard) {
        shard.stop();
        if self.shards.contains_key(&name) {
            return;
        }
        mr_shard_actor::forget_shard_metrics(&name);
        ctx.run_later(FORGET_METRICS_AGAIN_AFTER, move |ring, _| {
            if !ring.shards.contains_key(&name) {
                mr_shard_actor::forget_shard_metrics(&name);
            }
        });
    }

    /// Ends the drain of `generation` if it is still the current one.
    fn end_drain(&mut self, ctx: &mut Context<Self>, generation: u64) {
        if self.previous.as_ref().map(|p| p.generation) != Some(generation) {
            return;
        }
        self.end_previous(ctx);
        tracing::info!("reshard drain over: the previous shard list is no longer read");
        self.publish();
    }

    /// Drops the previous list and stops its draining shards (the caller publishes).
    fn end_previous(&mut self, ctx: &mut Context<Self>) {
        if let Some(previous) = self.previous.take() {
            for (name, shard) in previous.draining {
                tracing::info!(shard = %name, "draining redis shard stopped");
                self.retire(ctx, name, shard);
            }
        }
    }

    fn apply(&mut self, ctx: &mut Context<Self>, redis: RedisConfig) {
        let change = ShardDiff::between(&self.redis.shards, &redis.shards);
        self.redis = redis;
        let drain = Duration::from_secs(self.redis.reshard_drain_secs);
        let wanted: BTreeMap<String, ShardConfig> = self
            .redis
            .shards
            .iter()
            .map(|shard| (shard.name.clone(), shard.clone()))
            .collect();
        let names_changed = change.names_changed();

        if names_changed || drain.is_zero() {
            // The drain in progress (if any) describes a list that is no longer the one
            // before the current: the new change starts its own, or drains are off.
            self.end_previous(ctx);
        }
        let removed = change.removed;
        if names_changed && !drain.is_zero() {
            self.drains += 1;
            let generation = self.drains;
            let mut previous = Previous {
                names: self.shards.keys().cloned().collect(),
                draining: BTreeMap::new(),
                until: Instant::now() + drain,
                generation,
            };
            for name in removed {
                if let Some(shard) = self.shards.remove(&name) {
                    tracing::info!(shard = %name, drain_secs = drain.as_secs(), "redis shard removed; draining");
                    previous.draining.insert(name, shard);
                }
            }
            self.previous = Some(previous);
            ctx.run_later(drain, move |ring, ctx| ring.end_drain(ctx, generation));
        } else {
            for name in removed {
                if let Some(shard) = self.shards.remove(&name) {
                    tracing::info!(shard = %name, "redis shard removed");
                    self.retire(ctx, name, shard);
                }
            }
        }

        for (name, config) in wanted {
            let settings = ShardSettings::from_config(&config, &self.redis);
            let health = match self.shards.get(&name) {
                None => Arc::new(ShardHealth::new()),
                Some(running) if running.settings == settings => continue,
                // Same server, other timeouts: its health is still known.
                Some(running) if running.settings.url == settings.url => {
                    running.handle.health.clone()
                }
                Some(_) => Arc::new(ShardHealth::new()),
            };
            self.start_shard(config, health);
        }
        self.publish();
    }
}

impl Actor for RingActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(RESPAWN_CHECK_INTERVAL, |ring, _| ring.respawn_dead());
    }

    /// The ring owns the shard threads: nothing of a stopped ring keeps running.
    fn stopped(&mut self, _ctx: &mut Self::Context) {
        let draining = self.previous.take().map(|p| p.draining).unwrap_or_default();
        for (_, shard) in std::mem::take(&mut self.shards).into_iter().chain(draining) {
            shard.stop();
        }
        self.publish();
    }
}

impl Handler<ApplyRedisConfig> for RingActor {
    type Result = ();

    fn handle(&mut self, msg: ApplyRedisConfig, ctx: &mut Self::Context) {
        self.apply(ctx, msg.0);
    }
}

impl Handler<Status> for RingActor {
    type Result = MessageResult<Status>;

    fn handle(&mut self, _msg: Status, _ctx: &mut Self::Context) -> Self::Result {
        let configured = self.shards.values().map(|shard| (shard, false));
        let draining = self.previous.iter().flat_map(|p| p.draining.values());
        MessageResult(
            configured
                .chain(draining.map(|shard| (shard, true)))
                .map(|(shard, draining)| ShardStatus {
                    name: shard.settings.name.clone(),
                    addr: shard.config.redacted_addr(),
                    up: shard.handle.is_up(),
                    last_error: shard.handle.health.last_error(),
                    write_error: shard.handle.health.write_error(),
                    format_mismatch: shard.handle.health.format_mismatch(),
                    draining,
                })
                .collect(),
        )
    }
}
