//! The Redis backend: the key-value layer over the ring of shard actors.
//!
//! Keys are routed with the ring's lock-free snapshot (no trip through the ring actor's
//! mailbox); the command goes to that shard's actor by message, except a `GET`, which goes to
//! the shard's reader on the calling thread when there is one (no thread crossed; see
//! `mr_shard_actor::ShardReaders`). The wait for its answer
//! needs no deadline of its own: the shard actor owns the response timeout and answers every
//! command within it, and an actor that is gone fails the send at once. No shard up, an
//! actor gone, a shard error or a timed-out command all become a miss (reads) or a no-op
//! (writes), counted by reason. A write to a shard whose writes are
//! paused (it refused one: OOM, READONLY) is skipped here, before any message, by reading the
//! shard's shared health; the shard actor lets the one probe through once the pause is over.
//! A shard holding another key-format version is not up, so routing skips it like a down one.
//! Deletes and lease releases go to every shard, draining ones included, because routing may
//! have moved while the shard holding the key was down or the shard list changed.
//!
//! A copy made with [`RingKv::pinned_to`] reads every key from one shard instead of routing
//! it: a blob found on its previous owner after a reshard is read there to the end.

use std::sync::Arc;
use std::time::Duration;

use actix::{Handler, MailboxError, Message};
use bytes::Bytes;
use futures_util::future::join_all;
use mr_ring::{PreviousOwner, RingHandle, ShardHandle};
use mr_shard_actor::messages::{Del, DelIfEq, Get, Set, SetNx};
use mr_shard_actor::{ShardActor, ShardError};

use crate::kv::SetNx as SetNxOutcome;
use crate::metrics;

const BACKEND: &str = mr_config::CacheBackend::Redis.name();

#[derive(Clone)]
pub(crate) struct RingKv {
    ring: RingHandle,
    /// When set, `get` reads from this shard rather than from the key's route.
    pinned: Option<ShardHandle>,
}

impl RingKv {
    pub(crate) fn new(ring: RingHandle) -> RingKv {
        RingKv { ring, pinned: None }
    }

    pub(crate) fn ring(&self) -> &RingHandle {
        &self.ring
    }

    /// A copy whose reads all go to `shard` (writes still follow the routes).
    pub(crate) fn pinned_to(&self, shard: ShardHandle) -> RingKv {
        RingKv {
            pinned: Some(shard),
            ..self.clone()
        }
    }

    /// The shard that held `key` before the last change of the shard list, when the key
    /// now routes elsewhere and that change is still being drained (see `reshard.rs`).
    pub(crate) fn previous_owner(&self, key: &str) -> Option<PreviousOwner> {
        let current = self.ring.route(key);
        self.ring
            .previous_owner(key, current.as_ref().map(|shard| &*shard.name))
    }

    /// `GET key` on `shard`, whatever the routes say: by this thread's reader of the shard
    /// when there is one with a connection (no thread crossed), else by the shard actor.
    pub(crate) async fn get_on(&self, shard: &ShardHandle, key: &str) -> Option<Bytes> {
        if let Some(reader) = shard.readers.local() {
            let msg = Get {
                key: key.to_owned(),
            };
            match reader.send(msg).await {
                // Still connecting, or just gone: the shard actor answers this one.
                Ok(Err(ShardError::NotConnected(_))) | Err(_) => {}
                answer => return judge(shard, answer, "get").flatten(),
            }
        }
        let msg = Get {
            key: key.to_owned(),
        };
        self.call(shard, msg, "get").await.flatten()
    }

    /// `SET key value NX PX ttl` on `shard`, whatever the routes say.
    pub(crate) async fn set_nx_on(
        &self,
        shard: &ShardHandle,
        key: String,
        value: Bytes,
        ttl: Duration,
    ) -> SetNxOutcome {
        match self.call(shard, SetNx { key, value, ttl }, "set_nx").await {
            Some(true) => SetNxOutcome::Stored,
            Some(false) => SetNxOutcome::Held,
            None => SetNxOutcome::Unavailable,
        }
    }

    /// `SET key value PX ttl` on `shard`, whatever the routes say; true when stored.
    pub(crate) async fn set_on(
        &self,
        shard: &ShardHandle,
        key: String,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> bool {
        if shard.health.writes_paused() {
            metrics::backend_error(BACKEND, "set", "write_paused");
            return false;
        }
        self.call(shard, Set { key, value, ttl }, "set")
            .await
            .is_some()
    }

    fn route(&self, key: &str, op: &'static str) -> Option<ShardHandle> {
        let shard = self.ring.route(key);
        if shard.is_none() {
            metrics::backend_error(BACKEND, op, "no_shard");
        }
        shard
    }

    /// Sends `msg` to `shard` and waits for the answer, which the shard actor gives within
    /// its response timeout; None on any failure.
    async fn call<M, T>(&self, shard: &ShardHandle, msg: M, op: &'static str) -> Option<T>
    where
        M: Message<Result = Result<T, ShardError>> + Send + 'static,
        T: Send + 'static,
        ShardActor: Handler<M>,
    {
        judge(shard, shard.addr.send(msg).await, op)
    }

    pub(crate) async fn get(&self, key: &str) -> Option<Bytes> {
        match &self.pinned {
            Some(shard) => self.get_on(shard, key).await,
            None => {
                let shard = self.route(key, "get")?;
                self.get_on(&shard, key).await
            }
        }
    }

    /// The shard `key` belongs to, if it takes writes now; a write to a shard whose writes
    /// are paused is counted and skipped without a message (it would only be refused).
    fn route_write(&self, key: &str, op: &'static str) -> Option<ShardHandle> {
        let shard = self.route(key, op)?;
        if shard.health.writes_paused() {
            metrics::backend_error(BACKEND, op, "write_paused");
            return None;
        }
        Some(shard)
    }

    pub(crate) async fn set(&self, key: String, value: Bytes, ttl: Option<Duration>) -> bool {
        let Some(shard) = self.route_write(&key, "set") else {
            return false;
        };
        self.call(&shard, Set { key, value, ttl }, "set")
            .await
            .is_some()
    }

    pub(crate) async fn set_nx(&self, key: String, value: Bytes, ttl: Duration) -> SetNxOutcome {
        let Some(shard) = self.route_write(&key, "set_nx") else {
            return SetNxOutcome::Unavailable;
        };
        self.set_nx_on(&shard, key, value, ttl).await
    }

    pub(crate) async fn del_if_eq(&self, key: String, value: Bytes) -> bool {
        let shards = self.ring.all_shards();
        let calls = shards.iter().map(|shard| {
            let msg = DelIfEq {
                key: key.clone(),
                value: value.clone(),
            };
            self.call(shard, msg, "del_if_eq")
        });
        join_all(calls).await.into_iter().any(|r| r == Some(true))
    }

    /// Sends `DEL keys` to every shard of the routing snapshot, draining ones included;
    /// returns the names of the shards that did not take it (down, hung, gone) and how
    /// many did.
    pub(crate) async fn del_everywhere(&self, keys: Vec<String>) -> (Vec<Arc<str>>, usize) {
        let shards = self.ring.all_shards();
        let calls = shards
            .iter()
            .map(|shard| self.call(shard, Del { keys: keys.clone() }, "del"));
        let answers = join_all(calls).await;
        let failed: Vec<Arc<str>> = shards
            .iter()
            .zip(&answers)
            .filter(|(_, answer)| answer.is_none())
            .map(|(shard, _)| shard.name.clone())
            .collect();
        let done = answers.len() - failed.len();
        (failed, done)
    }

    /// Sends `DEL keys` to one shard; whether it took it.
    pub(crate) async fn del_on(&self, shard: &ShardHandle, keys: Vec<String>) -> bool {
        self.call(shard, Del { keys }, "del").await.is_some()
    }
}

/// What a shard's answer (from its actor or a reader) means to the cache: the value, or
/// `None` with the reason counted.
fn judge<T>(
    shard: &ShardHandle,
    answer: Result<Result<T, ShardError>, MailboxError>,
    op: &'static str,
) -> Option<T> {
    let reason = match answer {
        Ok(Ok(value)) => return Some(value),
        Ok(Err(ShardError::Down(_))) => "shard_down",
        Ok(Err(ShardError::FormatMismatch(_))) => "format_mismatch",
        Ok(Err(ShardError::WritesPaused(_))) => "write_paused",
        Ok(Err(e)) => {
            tracing::debug!(shard = %shard.name, op, error = %e, "shard command failed");
            "shard_error"
        }
        Err(e) => {
            tracing::debug!(shard = %shard.name, op, error = %e, "shard actor unreachable");
            "mailbox"
        }
    };
    metrics::backend_error(BACKEND, op, reason);
    None
}
