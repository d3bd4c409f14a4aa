//! The one path every exchange with a shard's server takes: the commands of
//! [`crate::messages`], the periodic stats read and the health PING alike.
//!
//! [`Command::run`] runs one exchange on its connection's thread, bounded by the shard's
//! response timeout, and reports the outcome: one latency/result sample in the metrics, and
//! what it says about the shard to the [`HealthTracker`] (a lost connection or a timeout is a
//! failure; a write the server refused pauses writes; a good answer resets the failure count).
//!
//! **This is the only timeout on a shard command.** redis-rs is configured without a response
//! timeout of its own (`pool::manager_config`), and the cache waits for the actor's answer
//! without a deadline. The bound lives here because only here is it known (a) for exchanges
//! nobody waits on (PING, stats), (b) that a timeout must count against the shard's health,
//! and (c) on the thread the exchange runs on, so a hung server's command is dropped there
//! rather than kept alive on its connection thread by a caller who merely stopped waiting.
//! A caller can still never be held longer: handlers only start a [`Command`] and return, so
//! the mailbox keeps draining, and an actor that died closes its mailbox, which fails the
//! caller's send at once.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::{ErrorKind, RedisError};

use crate::error::{Result, ShardError};
use crate::health::HealthTracker;
use crate::io_threads::IoThreadGone;
use crate::metrics;
use crate::pool::Conn;

/// What an exchange is, which decides what its failures say about the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A read or delete: only a lost connection or a timeout counts against the shard.
    Read,
    /// A write: as a read, and an error reply (OOM, READONLY, ...) pauses writes, while a
    /// success ends a pause.
    Write,
    /// A read by a per-thread reader ([`crate::reader`]): only a timeout counts against the
    /// shard. A lost connection is left to the PING, which sees an outage once, where each
    /// reader's connection would report it again at its next use.
    LocalRead,
    /// The health probe: any failure counts, an error reply included (a server that answers
    /// PING with `-NOAUTH` is not usable). Only the caller may declare the shard up.
    Probe,
}

/// Why an exchange produced no value, before it is put into the shard's words.
#[derive(Debug)]
pub(crate) enum Failure {
    /// redis-rs gave up: the connection failed, or the server answered with an error.
    Redis(RedisError),
    /// The server answered something this crate cannot interpret.
    Protocol(String),
}

impl From<RedisError> for Failure {
    fn from(err: RedisError) -> Failure {
        Failure::Redis(err)
    }
}

/// One exchange about to run: its connection and what it needs to report the outcome.
pub(crate) struct Command {
    conn: Conn,
    op: &'static str,
    kind: Kind,
    timeout: Duration,
    tracker: Arc<HealthTracker>,
}

impl Command {
    /// `op` is the metrics label (one of `metrics::OPS`); `timeout` the shard's response
    /// timeout.
    pub(crate) fn new(
        conn: Conn,
        op: &'static str,
        kind: Kind,
        timeout: Duration,
        tracker: Arc<HealthTracker>,
    ) -> Command {
        Command {
            conn,
            op,
            kind,
            timeout,
            tracker,
        }
    }

    /// The shard's name, as the metrics label it.
    pub(crate) fn shard(&self) -> &str {
        self.tracker.name()
    }

    /// Runs `exchange` on the connection's thread within the response timeout; `outcome`
    /// names the metric result of a success (`hit`/`miss`/`ok`).
    pub(crate) async fn run<T, F, Fut>(
        self,
        exchange: F,
        outcome: fn(&T) -> &'static str,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(ConnectionManager) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, Failure>> + Send + 'static,
    {
        let Command {
            conn,
            op,
            kind,
            timeout,
            tracker,
        } = self;
        let shard = tracker.name().to_owned();
        let report = tracker.clone();
        let work = move |manager: ConnectionManager| async move {
            let started = Instant::now();
            let res = tokio::time::timeout(timeout, exchange(manager)).await;
            let elapsed = started.elapsed();
            match res {
                Ok(Ok(value)) => {
                    tracker.command_ok();
                    if kind == Kind::Write {
                        tracker.write_ok();
                    }
                    metrics::observe(&shard, op, outcome(&value), elapsed);
                    Ok(value)
                }
                Ok(Err(Failure::Redis(source))) => {
                    if kind == Kind::Probe
                        || (kind != Kind::LocalRead && is_connection_failure(&source))
                    {
                        tracker.failure(&format_args!("{op}: {source}"));
                    } else if kind == Kind::Write && is_error_reply(&source) {
                        tracker.write_refused(&format_args!("{op}: {source}"));
                    }
                    metrics::observe(&shard, op, "error", elapsed);
                    Err(ShardError::Redis { shard, source })
                }
                Ok(Err(Failure::Protocol(detail))) => {
                    if kind == Kind::Probe {
                        tracker.failure(&format_args!("{op}: {detail}"));
                    }
                    metrics::observe(&shard, op, "error", elapsed);
                    Err(ShardError::Protocol { shard, detail })
                }
                Err(_) => {
                    tracker.failure(&format_args!("{op}: no answer within {timeout:?}"));
                    metrics::observe(&shard, op, "error", elapsed);
                    Err(ShardError::Timeout { shard, timeout })
                }
            }
        };
        conn.run(work).await.unwrap_or_else(|IoThreadGone| {
            // The connection's thread is gone, so is the actor that owned it: nothing to
            // report about the server, only this one exchange's outcome.
            let shard = report.name().to_owned();
            if kind == Kind::Probe {
                report.failure(&format_args!("{op}: connection thread stopped"));
            }
            metrics::observe(&shard, op, "error", Duration::ZERO);
            Err(ShardError::NotConnected(shard))
        })
    }
}

/// The metric result of a success that is neither a hit nor a miss.
pub(crate) fn ok<T>(_: &T) -> &'static str {
    "ok"
}

/// Errors that say the server is unreachable, as opposed to Redis refusing one command.
fn is_connection_failure(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_unrecoverable_error()
}

/// An error the server answered (`-OOM ...`, `-READONLY ...`): it heard the command and
/// refused it.
pub(crate) fn is_error_reply(err: &RedisError) -> bool {
    matches!(err.kind(), ErrorKind::Server(_) | ErrorKind::Extension)
}
