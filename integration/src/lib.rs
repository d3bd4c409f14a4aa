//! Test harness for end-to-end tests: real `redis-server`, Postgres and `media-repo`
//! processes on free ports, each in its own temp dir, killed when their handle drops
//! (also when the test panics, because unwinding runs `Drop`).
//!
//! Everything here is blocking on purpose: a test reads top to bottom, and the HTTP
//! calls run on their own short-lived thread so the harness also works inside
//! `#[tokio::test]` or `#[actix_rt::test]` bodies.

mod binary;
pub mod federated_repo;
pub mod http;
mod log_capture;
mod media_repo;
pub mod metrics;
pub mod nginx;
mod pg_schema;
mod ports;
mod process;
mod redis_server;
pub mod synapse;
mod test_ca;
mod wait;
mod watched;

pub use binary::{media_repo_bin, try_media_repo_bin};
pub use log_capture::{capture_logs, LogCapture, MAX_CAPTURED_BYTES};
pub use media_repo::MediaRepo;
pub use nginx::Nginx;
pub use pg_schema::{schema_exists as pg_schema_exists, PgSchema};
pub use ports::free_port;
pub use process::pid_exists;
pub use redis_server::{redis_ping, RedisServer};
pub use synapse::{FederatingSynapse, FederationListener, Synapse};
pub use test_ca::{ServerCert, TestCa};
pub use wait::wait_until;
