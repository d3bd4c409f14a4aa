//! The routing snapshot the ring actor publishes and request handlers read: an immutable list
//! of shards behind an `ArcSwap`, so routing a key never waits on the ring actor's mailbox.

use std::fmt;
use std::sync::Arc;

use actix::Addr;
use arc_swap::ArcSwap;
use mr_shard_actor::{ShardActor, ShardHealth};

use crate::hashing;

/// One shard as the router sees it.
#[derive(Clone)]
pub struct ShardHandle {
    /// The configured name: the hashing identity.
    pub name: Arc<str>,
    /// Where to send commands. Replaced (in a new snapshot) when the actor is respawned.
    pub addr: Addr<ShardActor>,
    /// Flipped by the shard actor's health check.
    pub health: Arc<ShardHealth>,
}

impl ShardHandle {
    pub fn is_up(&self) -> bool {
        self.health.is_up()
    }
}

impl fmt::Debug for ShardHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardHandle")
            .field("name", &self.name)
            .field("up", &self.is_up())
            .field("connected", &self.addr.connected())
            .finish()
    }
}

/// Every configured shard, sorted by name. Never mutated once published.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) shards: Vec<ShardHandle>,
}

/// Cheap-to-clone reader of the ring's current snapshot.
#[derive(Clone)]
pub struct RingHandle {
    snapshot: Arc<ArcSwap<Snapshot>>,
}

impl RingHandle {
    pub(crate) fn new(snapshot: Arc<ArcSwap<Snapshot>>) -> RingHandle {
        RingHandle { snapshot }
    }

    /// The shard `key` belongs to among the shards that are up; `None` when none is up (the
    /// caller treats that as a miss). A down shard's keys go to their next-best shard, and
    /// come back to it when it is up again.
    pub fn route(&self, key: &str) -> Option<ShardHandle> {
        let snapshot = self.snapshot.load();
        let up = || snapshot.shards.iter().filter(|shard| shard.is_up());
        let name = hashing::pick(up().map(|shard| &*shard.name), key)?;
        up().find(|shard| &*shard.name == name).cloned()
    }

    /// Every configured shard, up or down, sorted by name.
    pub fn shards(&self) -> Vec<ShardHandle> {
        self.snapshot.load().shards.clone()
    }
}

impl fmt::Debug for RingHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingHandle")
            .field("shards", &self.snapshot.load().shards)
            .finish()
    }
}
