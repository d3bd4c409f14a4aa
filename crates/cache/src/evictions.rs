//! Deletes that must reach every shard (quarantine), including shards that are down when
//! they are asked.
//!
//! A key lives on the shard the ring routes it to, but after a reshard (or while its owner
//! was down and routing skipped it) a copy can sit on any shard, so an eviction sends `DEL`
//! to every shard of the routing snapshot. A shard that cannot take it now (down, hung,
//! another key format, mailbox gone) may come back with its data — a restarted
//! redis-server with RDB/AOF, a network partition that heals — and would then serve the
//! evicted keys to every repo sharing it. So the keys are remembered per shard name, and a
//! retry loop (every [`EVICTION_RETRY_EVERY`]) deletes them as soon as that shard is up
//! again, before or at the same time as reads reach it. At most
//! [`MAX_PENDING_EVICTION_KEYS`] keys are remembered (a WARN and the
//! `media_repo_cache_pending_evictions` gauge say when more were dropped); they live in
//! this process only, so a restart while a shard is down forgets them (the quarantined
//! media itself is still refused by every repo that checks its rows: only a cached copy
//! could outlive it).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::metrics;
use crate::shards::RingKv;

/// How often keys waiting for a down shard are retried (only shards that are up are asked).
pub const EVICTION_RETRY_EVERY: Duration = Duration::from_secs(1);
/// Keys remembered for down shards, all shards together; beyond it new ones are dropped.
pub const MAX_PENDING_EVICTION_KEYS: usize = 1_000_000;

/// What an eviction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Eviction {
    /// Shards that took the `DEL` now.
    pub shards_done: usize,
    /// Shards that could not be asked: their keys are retried when they are up.
    pub shards_pending: usize,
}

/// Keys still to delete, per shard name.
#[derive(Default)]
pub(crate) struct PendingEvictions {
    /// A std lock: held only to copy or update the sets, never across an await.
    by_shard: Mutex<HashMap<Arc<str>, HashSet<String>>>,
}

impl PendingEvictions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, HashSet<String>>> {
        match self.by_shard.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Remembers `keys` for `shard`.
    pub(crate) fn remember(&self, shard: Arc<str>, keys: &[String]) {
        let mut map = self.lock();
        let held: usize = map.values().map(HashSet::len).sum();
        let room = MAX_PENDING_EVICTION_KEYS.saturating_sub(held);
        if room < keys.len() {
            tracing::warn!(
                shard = %shard,
                dropped = keys.len() - room,
                "too many cache evictions waiting for down shards; some are forgotten"
            );
        }
        map.entry(shard)
            .or_default()
            .extend(keys.iter().take(room).cloned());
        metrics::PENDING_EVICTIONS.set(map.values().map(HashSet::len).sum::<usize>() as i64);
    }

    /// Keys waiting for any shard (tests and status).
    pub(crate) fn len(&self) -> usize {
        self.lock().values().map(HashSet::len).sum()
    }

    /// Deletes the waiting keys on every shard that is up now; keys of shards still down
    /// (or gone from the ring: one may be configured again) wait for the next round.
    pub(crate) async fn retry(&self, kv: &RingKv) {
        let waiting: Vec<(Arc<str>, Vec<String>)> = self
            .lock()
            .iter()
            .filter(|(_, keys)| !keys.is_empty())
            .map(|(shard, keys)| (shard.clone(), keys.iter().cloned().collect()))
            .collect();
        for (name, keys) in waiting {
            let Some(shard) = kv.ring().shards().into_iter().find(|s| s.name == name) else {
                continue;
            };
            if !shard.is_up() {
                continue;
            }
            if kv.del_on(&shard, keys.clone()).await {
                tracing::info!(shard = %name, keys = keys.len(), "evictions that waited for a down shard done");
                let mut map = self.lock();
                if let Some(set) = map.get_mut(&name) {
                    for key in &keys {
                        set.remove(key);
                    }
                    if set.is_empty() {
                        map.remove(&name);
                    }
                }
                metrics::PENDING_EVICTIONS
                    .set(map.values().map(HashSet::len).sum::<usize>() as i64);
            }
        }
    }
}

/// Retries pending evictions until the returned task is aborted (the cache's owner does it
/// when the cache is dropped).
pub(crate) fn start_retry_loop(
    pending: Arc<PendingEvictions>,
    kv: RingKv,
) -> tokio::task::JoinHandle<()> {
    actix::spawn(async move {
        loop {
            tokio::time::sleep(EVICTION_RETRY_EVERY).await;
            pending.retry(&kv).await;
        }
    })
}
