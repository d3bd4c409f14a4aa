//! Routing of cache keys to Redis shards.
//!
//! [`hashing`] is pure rendezvous hashing over shard names. [`RingActor`] owns one shard actor
//! per configured shard (each on its own thread), replaces dead ones and applies new shard
//! lists; it publishes an immutable snapshot that [`RingHandle::route`] reads without a
//! mailbox round trip, skipping shards whose health check says they are down. After the
//! shard list changes, the snapshot keeps the previous list for `reshard_drain_secs`
//! ([`RingHandle::previous_owner`]) and removed shards stay connected meanwhile, so a miss
//! on a key's new shard can still find the key where it was.

mod actor;
pub mod hashing;
mod messages;
mod snapshot;

pub use actor::{RingActor, RESPAWN_CHECK_INTERVAL};
pub use messages::{ApplyRedisConfig, ShardStatus, Status};
pub use snapshot::{PreviousOwner, RingHandle, ShardHandle};
