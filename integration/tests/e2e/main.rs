//! End-to-end tests of the real `media-repo` binary, with real redis-server processes,
//! the real Postgres and (where a homeserver is needed) a real Synapse.
//!
//! One test binary with modules, so the suite links once.

mod binary;
mod cache_redis;
mod common;
mod fast_path;
mod federation;
mod hardening;
mod hardening_ops;
mod media_api;
mod purge;
mod quarantine;
mod real_deployment;
mod reload;
mod reshard;
mod shared_fetch;
mod thumbnails;
mod upload_warming;
