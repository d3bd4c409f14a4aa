//! The shard actor's protocol: one message per Redis command the cache needs.
//! Every answer is a `Result<_, ShardError>`; any error means "cache miss" to the caller.

use std::time::Duration;

use actix::Message;
use bytes::Bytes;

use crate::error::Result;

/// `GET key`: `None` when the key is absent (or evicted).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Option<Bytes>>")]
pub struct Get {
    pub key: String,
}

/// `SET key value [PX ttl]`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<()>")]
pub struct Set {
    pub key: String,
    pub value: Bytes,
    /// `None` keeps the key until Redis evicts it.
    pub ttl: Option<Duration>,
}

/// `SET key value NX PX ttl`: take a lease. `true` when this caller now holds it.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<bool>")]
pub struct SetNx {
    pub key: String,
    pub value: Bytes,
    pub ttl: Duration,
}

/// Deletes `key` only if it still holds `value` (atomically, in a Lua script): releases a lease
/// without removing one another holder took after ours expired. `true` when deleted.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<bool>")]
pub struct DelIfEq {
    pub key: String,
    pub value: Bytes,
}

/// `DEL keys...`: the number of keys that existed.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<u64>")]
pub struct Del {
    pub keys: Vec<String>,
}

/// Memory and key count of the shard, from `INFO memory` and `DBSIZE`.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<ShardInfo>")]
pub struct Info;

/// What [`Info`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardInfo {
    /// `used_memory` from `INFO memory`.
    pub used_memory_bytes: u64,
    /// `DBSIZE` of the configured database.
    pub keys: u64,
}

/// Makes the actor panic inside its handler, to prove that whoever owns it notices and
/// starts a fresh one.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Panic;
