//! Benchmark support for media-repo.
//!
//! The `cache-bench` binary measures the cache's actor path (`mr_cache::Cache` → ring →
//! shard actor → Redis) against plain redis-rs on the same Redis server, and the cost of a
//! ring lookup. This crate is the one documented exception to "only `mr-shard-actor`
//! imports `redis`": it uses redis-rs for the *baseline* only, never for the path measured.

pub mod cpu;
pub mod load;
pub mod stats;
