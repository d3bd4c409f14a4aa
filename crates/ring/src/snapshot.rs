//! The routing snapshot the ring actor publishes and request handlers read: an immutable list
//! of shards behind an `ArcSwap`, so routing a key never waits on the ring actor's mailbox.
//!
//! For `cache.redis.reshard_drain_secs` after the shard list changed, the snapshot also
//! carries the list as it was before ([`RingHandle::previous_owner`]): a miss on a key's new
//! shard may then read the shard that owned it before, whether that shard is still in the
//! list or was removed and is draining.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use actix::Addr;
use arc_swap::ArcSwap;
use mr_shard_actor::{ShardActor, ShardHealth, ShardReaders};

use crate::hashing;

/// One shard as the router sees it.
#[derive(Clone)]
pub struct ShardHandle {
    /// The configured name: the hashing identity.
    pub name: Arc<str>,
    /// `hashing::name_hash(&name)`, kept so routing hashes only the key.
    pub name_hash: u64,
    /// Where to send commands. Replaced (in a new snapshot) when the actor is respawned.
    pub addr: Addr<ShardActor>,
    /// Flipped by the shard actor's health check.
    pub health: Arc<ShardHealth>,
    /// The shard's per-thread readers: [`ShardReaders::local`] answers a `GET` on the
    /// caller's thread.
    pub readers: Arc<ShardReaders>,
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
    /// The shard list before the last change, while it is drained; `None` otherwise.
    pub(crate) previous: Option<PreviousRing>,
}

/// The shard list before the last change of names, each name resolved to the actor that
/// reads it now: the configured one when the shard is still in the list, else the draining
/// one the ring kept for it.
#[derive(Debug)]
pub(crate) struct PreviousRing {
    /// Sorted by name; `bool`: removed from the list (draining).
    pub(crate) shards: Vec<(ShardHandle, bool)>,
    /// When the drain ends; past it the list is ignored even if the ring has not yet
    /// published the snapshot without it.
    pub(crate) until: Instant,
}

/// Which shard held a key before the last change of the shard list (see
/// [`RingHandle::previous_owner`]).
#[derive(Debug, Clone)]
pub struct PreviousOwner {
    pub shard: ShardHandle,
    /// True when the shard is no longer in the list and is only kept while it drains.
    pub removed: bool,
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
        let up = snapshot.shards.iter().filter(|shard| shard.is_up());
        hashing::pick_hashed(up.map(|shard| (&*shard.name, shard.name_hash, shard)), key).cloned()
    }

    /// Every configured shard, up or down, sorted by name.
    pub fn shards(&self) -> Vec<ShardHandle> {
        self.snapshot.load().shards.clone()
    }

    /// Removed shards still connected while they drain, sorted by name.
    pub fn draining(&self) -> Vec<ShardHandle> {
        let snapshot = self.snapshot.load();
        let previous = snapshot.previous.iter().flat_map(|p| &p.shards);
        previous
            .filter(|(_, removed)| *removed)
            .map(|(shard, _)| shard.clone())
            .collect()
    }

    /// Every shard a key may live on: the configured ones and the draining ones. Deletes
    /// and lease releases go to all of them.
    pub fn all_shards(&self) -> Vec<ShardHandle> {
        let mut all = self.shards();
        all.extend(self.draining());
        all
    }

    /// The shard that owned `key` under the shard list before the last change, while that
    /// list is drained, when it is another shard than `current` (the name [`Self::route`]
    /// gave). Health is not considered here: the previous owner is the one the old list
    /// picks, up or down, so that a caller can skip a down one without any round trip
    /// (another up shard of the old list would not hold the key anyway). `None`: no
    /// change is being drained, or the key did not move.
    pub fn previous_owner(&self, key: &str, current: Option<&str>) -> Option<PreviousOwner> {
        let snapshot = self.snapshot.load();
        let previous = snapshot.previous.as_ref()?;
        if Instant::now() >= previous.until {
            return None;
        }
        let candidates = previous
            .shards
            .iter()
            .map(|entry| (&*entry.0.name, entry.0.name_hash, entry));
        let (shard, removed) = hashing::pick_hashed(candidates, key)?;
        if Some(&*shard.name) == current {
            return None;
        }
        Some(PreviousOwner {
            shard: shard.clone(),
            removed: *removed,
        })
    }
}

impl fmt::Debug for RingHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingHandle")
            .field("shards", &self.snapshot.load().shards)
            .finish()
    }
}
