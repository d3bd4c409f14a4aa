//! One actix actor per Redis shard.
//!
//! A [`ShardActor`] owns a few multiplexed connections to its server: one on its own arbiter
//! thread for small commands, the others each created on and used from one of the actor's
//! connection threads (at most [`MAX_IO_THREADS_PER_SHARD`]) for values of at least
//! [`LARGE_VALUE_BYTES`], so the copying of large values runs beside the actor's thread. It
//! PINGs the server every health interval and flips the shared [`ShardHealth`] the ring reads
//! without a mailbox trip, and runs the commands of [`messages`] concurrently. Every exchange
//! with the server (commands, PING, the periodic INFO) takes one path, `command.rs`, which
//! owns the response timeout: it is the only one (redis-rs has none, and callers need none,
//! because the actor answers every command within it). A shard marked down
//! answers [`ShardError::Down`] at once; callers treat every error as a cache miss.
//!
//! A shard that answers writes with an error (OOM under `noeviction`, READONLY, ...) has its
//! writes paused: [`ShardHealth::writes_paused`] tells writers to skip it without a mailbox
//! trip, the actor refuses writes with [`ShardError::WritesPaused`], and after each pause
//! (from [`WRITE_BACKOFF_INITIAL`], doubling up to [`WRITE_BACKOFF_MAX`]) exactly one write
//! probes the server. Reads are not affected.
//!
//! Every shard carries a key-format marker ([`FORMAT_MARKER_KEY`], value
//! [`KEY_FORMAT_VERSION`]), read with each PING and written back when missing; a shard whose
//! marker names another version is treated as not up, so repos of incompatible major
//! versions never share a shard silently.
//!
//! Reads may also be answered on the caller's own thread: [`ShardReaders::local`] gives that
//! thread's [`ShardReader`] of the shard (its own connection, the shard actor's health), so a
//! `GET` crosses no thread.
//!
//! This is the only crate of the workspace that knows `redis`.

mod actor;
mod command;
mod encode;
pub mod error;
mod format;
mod handlers;
mod health;
mod info;
mod io_threads;
pub mod messages;
mod metrics;
mod pool;
mod probe;
mod reader;
mod settings;

pub use actor::{ShardActor, MAILBOX_CAPACITY, STATS_INTERVAL};
pub use error::ShardError;
pub use format::{FORMAT_MARKER_KEY, KEY_FORMAT_VERSION};
pub use health::{
    ShardHealth, MAX_REASON_BYTES, WRITE_BACKOFF_INITIAL, WRITE_BACKOFF_MAX, WRITE_PROBE_WINDOW,
};
pub use io_threads::MAX_IO_THREADS_PER_SHARD;
pub use messages::{Del, DelIfEq, Get, Info, Set, SetNx, ShardInfo};
pub use metrics::{forget_shard_metrics, note_actor_replaced};
pub use pool::LARGE_VALUE_BYTES;
pub use reader::{ShardReader, ShardReaders, ORPHAN_CHECK_INTERVAL, READER_RECONNECT_DELAY};
pub use settings::ShardSettings;

#[cfg(feature = "fault-injection")]
pub use messages::Panic;
