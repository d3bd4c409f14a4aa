//! Routing of cache keys to Redis shards.
//!
//! [`hashing`] is pure rendezvous hashing over shard names. [`RingActor`] owns one shard actor
//! per configured shard (each on its own thread), replaces dead ones and applies new shard
//! lists; it publishes an immutable snapshot that [`RingHandle::route`] reads without a
//! mailbox round trip, skipping shards whose health check says they are down.

mod actor;
pub mod hashing;
mod messages;
mod snapshot;

pub use actor::{RingActor, RESPAWN_CHECK_INTERVAL};
pub use messages::{ApplyRedisConfig, ShardStatus, Status};
pub use snapshot::{RingHandle, ShardHandle};
