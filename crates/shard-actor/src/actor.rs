//! The shard actor: owns the connections to one Redis server, PINGs it, keeps the shared
//! health flag and the shard's gauges current, and runs commands concurrently.

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::{ErrorKind, RedisError, RedisResult};

use crate::error::{Result, ShardError};
use crate::format::{Marker, FORMAT_MARKER_KEY, KEY_FORMAT_VERSION};
use crate::health::{HealthTracker, ShardHealth};
use crate::io_threads::{run_on, IoThreadGone, IoThreads};
use crate::messages::{Del, DelIfEq, Get, Info, Set, SetNx, ShardInfo};
use crate::metrics;
use crate::pool::{self, Conn, Load, Pool, Slot};
use crate::settings::ShardSettings;

/// Messages that may wait in the mailbox. Handlers only start a future, so the mailbox drains
/// fast; the bound keeps a burst from queueing without limit (senders wait instead).
pub const MAILBOX_CAPACITY: usize = 1024;
/// How often memory and key count are read while the shard is up.
pub const STATS_INTERVAL: Duration = Duration::from_secs(5);
/// Failed PINGs in a row on one connection after which it is dropped and created anew,
/// whatever the manager's own reconnect logic thinks of the error.
const RECREATE_AFTER_FAILED_PINGS: u32 = 4;

/// Releases a lease only if it is still ours: compare and delete in one atomic step.
static DEL_IF_EQ: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
    )
});

/// One Redis shard. Start it on its own arbiter (`ShardActor::start_in_arbiter`); see the
/// crate docs. Nothing restarts it in place: an actor that panicked is gone, and the ring's
/// watchdog starts a new one.
pub struct ShardActor {
    settings: ShardSettings,
    tracker: Arc<HealthTracker>,
    /// `Err` holds why the URL was rejected: the actor then stays down and says so.
    client: std::result::Result<redis::Client, String>,
    pool: Pool,
    /// The threads the connections live on; dropping the actor stops them.
    io: IoThreads,
    /// Source of slot generations, so answers about a replaced manager are ignored.
    generation: u64,
}

impl ShardActor {
    /// An actor for `settings` that reports into `health` (shared with the ring).
    pub fn new(settings: ShardSettings, health: Arc<ShardHealth>) -> Self {
        let client = redis::Client::open(settings.url.as_str()).map_err(|err| err.to_string());
        let tracker = Arc::new(HealthTracker::new(
            settings.name.clone(),
            health,
            settings.down_after_failures,
        ));
        let pool = Pool::new(settings.connections);
        let io = IoThreads::new(settings.connections.saturating_sub(1));
        ShardActor {
            settings,
            tracker,
            client,
            pool,
            io,
            generation: 0,
        }
    }

    /// One health round: create missing connections, PING one ready connection.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(why) => {
                self.tracker.failure(&format_args!("unusable url: {why}"));
                return;
            }
        };
        for idx in 0..self.pool.slots.len() {
            if matches!(self.pool.slots[idx], Slot::Empty) {
                self.pool.slots[idx] = Slot::Connecting;
                self.connect(ctx, idx, client.clone());
            }
        }
        if let Some((idx, conn, generation)) = self.pool.pick() {
            self.ping(ctx, idx, conn, generation);
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>, idx: usize, client: redis::Client) {
        let config = pool::manager_config(&self.settings);
        let bound = pool::connect_bound(&self.settings);
        let io = if pool::is_local(idx) {
            None
        } else {
            match self.io.for_slot(idx - 1) {
                Ok(io) => Some(io),
                Err(err) => {
                    self.pool.slots[idx] = Slot::Empty;
                    self.tracker
                        .failure(&format_args!("no thread for a connection: {err}"));
                    return;
                }
            }
        };
        // Created on the thread it belongs to, so the manager's I/O task runs there.
        let create = async move {
            match tokio::time::timeout(bound, ConnectionManager::new_with_config(client, config))
                .await
            {
                Ok(Ok(manager)) => Ok(manager),
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err(format!("connect took longer than {bound:?}")),
            }
        };
        let fut = async move {
            let created = match &io {
                None => Ok(create.await),
                Some(io) => run_on(io, create).await,
            };
            match created {
                Ok(Ok(manager)) => Ok(Conn::new(manager, io)),
                Ok(Err(why)) => Err(why),
                Err(IoThreadGone) => Err("connection thread stopped".to_owned()),
            }
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| match res {
            Ok(conn) => {
                act.generation += 1;
                let generation = act.generation;
                tracing::debug!(shard = %act.settings.name, slot = idx, "redis connection established");
                act.pool.slots[idx] = Slot::Ready {
                    conn: conn.clone(),
                    generation,
                    failed_pings: 0,
                };
                // Ping right away so a fresh shard is routable without waiting for the next tick.
                act.ping(ctx, idx, conn, generation);
            }
            Err(why) => {
                act.pool.slots[idx] = Slot::Empty;
                act.tracker.failure(&format_args!("connect: {why}"));
            }
        }));
    }

    /// One health probe: PING and the key-format marker in one round trip, the marker
    /// written back when missing.
    fn ping(&mut self, ctx: &mut Context<Self>, idx: usize, conn: Conn, generation: u64) {
        let timeout = self.settings.response_timeout;
        let name = self.settings.name.clone();
        let probe = move |mut conn: ConnectionManager| async move {
            let started = Instant::now();
            let res = tokio::time::timeout(timeout, check_marker(&name, &mut conn)).await;
            let res = match res {
                Ok(Ok(marker)) => Ok(marker),
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err(format!("no PONG within {timeout:?}")),
            };
            metrics::observe(
                &name,
                "ping",
                if res.is_ok() { "ok" } else { "error" },
                started.elapsed(),
            );
            res
        };
        let fut = async move {
            conn.run(probe)
                .await
                .unwrap_or_else(|IoThreadGone| Err("connection thread stopped".to_owned()))
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            let current = match &mut act.pool.slots[idx] {
                Slot::Ready {
                    generation: g,
                    failed_pings,
                    ..
                } if *g == generation => Some(failed_pings),
                _ => None,
            };
            match res {
                Ok(marker) => {
                    if let Some(failed_pings) = current {
                        *failed_pings = 0;
                    }
                    match marker {
                        Marker::Other(found) => act.tracker.format_mismatch(&found),
                        Marker::Ours | Marker::Missing => {
                            if act.tracker.ping_ok() {
                                act.refresh_stats(ctx);
                            }
                        }
                    }
                }
                Err(why) => {
                    act.tracker.failure(&format_args!("ping: {why}"));
                    if let Some(failed_pings) = current {
                        *failed_pings += 1;
                        if *failed_pings >= RECREATE_AFTER_FAILED_PINGS {
                            tracing::debug!(shard = %act.settings.name, slot = idx, "recreating redis connection");
                            act.pool.slots[idx] = Slot::Empty;
                        }
                    }
                }
            }
        }));
    }

    /// Reads memory and key count into the gauges (only while up: a down shard keeps its
    /// last figures rather than reporting zero).
    fn refresh_stats(&mut self, ctx: &mut Context<Self>) {
        if !self.tracker.is_up() {
            return;
        }
        let Some(conn) = self.pool.pick_for_command(Load::Small) else {
            return;
        };
        let timeout = self.settings.response_timeout;
        let name = self.settings.name.clone();
        let read = move |manager: ConnectionManager| async move {
            let res = tokio::time::timeout(timeout, fetch_info(&name, manager)).await;
            match res {
                Ok(Ok(info)) => metrics::set_usage(&name, info.used_memory_bytes, info.keys),
                Ok(Err(err)) => {
                    tracing::debug!(shard = %name, %err, "reading shard stats failed")
                }
                Err(_) => tracing::debug!(shard = %name, "reading shard stats timed out"),
            }
        };
        ctx.spawn(
            async move {
                // A stopped thread means the actor is going away: no stats to keep.
                let _ = conn.run(read).await;
            }
            .into_actor(self),
        );
    }

    /// Checks health and takes a connection for one command.
    fn call(&mut self, op: &'static str, load: Load) -> Result<Call> {
        if !self.tracker.is_up() {
            metrics::observe(&self.settings.name, op, "down", Duration::ZERO);
            let name = self.settings.name.clone();
            return Err(if self.tracker.format_mismatched() {
                ShardError::FormatMismatch(name)
            } else {
                ShardError::Down(name)
            });
        }
        let Some(conn) = self.pool.pick_for_command(load) else {
            metrics::observe(&self.settings.name, op, "error", Duration::ZERO);
            return Err(ShardError::NotConnected(self.settings.name.clone()));
        };
        Ok(Call {
            conn,
            op,
            timeout: self.settings.response_timeout,
            tracker: self.tracker.clone(),
            write: false,
        })
    }

    /// Like [`Self::call`] for a write: also refused at once while writes are paused (a
    /// shard that answered OOM would refuse it anyway), except for the one probe after
    /// each pause.
    fn call_write(&mut self, op: &'static str, load: Load) -> Result<Call> {
        let call = self.call(op, load)?;
        if !self.tracker.claim_write() {
            metrics::observe(&self.settings.name, op, "paused", Duration::ZERO);
            return Err(ShardError::WritesPaused(self.settings.name.clone()));
        }
        Ok(Call {
            write: true,
            ..call
        })
    }
}

/// One command about to run: its connection and what it needs to report the outcome.
struct Call {
    conn: Conn,
    op: &'static str,
    timeout: Duration,
    tracker: Arc<HealthTracker>,
    /// A write: its outcome also ends or starts a write pause.
    write: bool,
}

impl Call {
    /// Runs `command` on the connection's thread, bounded by the response timeout; `outcome`
    /// names the metric result of a success (`hit`/`miss`/`ok`).
    async fn run<T, F, Fut>(self, command: F, outcome: fn(&T) -> &'static str) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(ConnectionManager) -> Fut + Send + 'static,
        Fut: Future<Output = RedisResult<T>> + Send + 'static,
    {
        let Call {
            conn,
            op,
            timeout,
            tracker,
            write,
        } = self;
        let shard = tracker.name().to_owned();
        let gone = shard.clone();
        let work = move |manager: ConnectionManager| async move {
            let started = Instant::now();
            let res = tokio::time::timeout(timeout, command(manager)).await;
            let elapsed = started.elapsed();
            match res {
                Ok(Ok(value)) => {
                    tracker.command_ok();
                    if write {
                        tracker.write_ok();
                    }
                    metrics::observe(&shard, op, outcome(&value), elapsed);
                    Ok(value)
                }
                Ok(Err(source)) => {
                    if is_connection_failure(&source) {
                        tracker.failure(&format_args!("{op}: {source}"));
                    } else if write && is_error_reply(&source) {
                        tracker.write_refused(&format_args!("{op}: {source}"));
                    }
                    metrics::observe(&shard, op, "error", elapsed);
                    Err(ShardError::Redis { shard, source })
                }
                Err(_) => {
                    tracker.failure(&format_args!("{op}: no answer within {timeout:?}"));
                    metrics::observe(&shard, op, "error", elapsed);
                    Err(ShardError::Timeout { shard, timeout })
                }
            }
        };
        conn.run(work).await.unwrap_or_else(|IoThreadGone| {
            metrics::observe(&gone, op, "error", Duration::ZERO);
            Err(ShardError::NotConnected(gone))
        })
    }
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
fn is_error_reply(err: &RedisError) -> bool {
    matches!(err.kind(), ErrorKind::Server(_) | ErrorKind::Extension)
}

fn ok<T>(_: &T) -> &'static str {
    "ok"
}

/// PING and `GET` of the marker, pipelined; a missing marker is written with `SET .. NX`
/// (never over another version's) and read again if another repo wrote one first. A server
/// that refuses the write (OOM under `noeviction`) leaves the marker missing, which is no
/// reason to stop using the shard: the next health round tries again.
async fn check_marker(shard: &str, conn: &mut ConnectionManager) -> RedisResult<Marker> {
    let (_pong, value): (String, Option<Vec<u8>>) = redis::pipe()
        .cmd("PING")
        .cmd("GET")
        .arg(FORMAT_MARKER_KEY)
        .query_async(conn)
        .await?;
    let marker = Marker::of(value.as_deref());
    if marker != Marker::Missing {
        return Ok(marker);
    }
    let written: RedisResult<Option<String>> = redis::cmd("SET")
        .arg(FORMAT_MARKER_KEY)
        .arg(KEY_FORMAT_VERSION)
        .arg("NX")
        .query_async(conn)
        .await;
    match written {
        Ok(Some(_)) => {
            tracing::debug!(
                shard,
                version = %KEY_FORMAT_VERSION,
                "wrote the key-format marker"
            );
            Ok(Marker::Ours)
        }
        // Another repo wrote one between our GET and SET: whatever it wrote decides.
        Ok(None) => {
            let value: Option<Vec<u8>> = redis::cmd("GET")
                .arg(FORMAT_MARKER_KEY)
                .query_async(conn)
                .await?;
            Ok(Marker::of(value.as_deref()))
        }
        Err(err) if is_error_reply(&err) => {
            tracing::debug!(shard, %err, "writing the key-format marker was refused");
            Ok(Marker::Missing)
        }
        Err(err) => Err(err),
    }
}

async fn fetch_info(shard: &str, mut conn: ConnectionManager) -> Result<ShardInfo> {
    let redis_err = |source| ShardError::Redis {
        shard: shard.to_owned(),
        source,
    };
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .map_err(redis_err)?;
    let keys: u64 = redis::cmd("DBSIZE")
        .query_async(&mut conn)
        .await
        .map_err(redis_err)?;
    let used_memory_bytes = parse_used_memory(&info).ok_or_else(|| ShardError::Protocol {
        shard: shard.to_owned(),
        detail: "INFO memory has no used_memory field".to_owned(),
    })?;
    Ok(ShardInfo {
        used_memory_bytes,
        keys,
    })
}

/// `used_memory:<n>` from an INFO reply.
fn parse_used_memory(info: &str) -> Option<u64> {
    info.lines()
        .find_map(|line| line.trim_end().strip_prefix("used_memory:"))
        .and_then(|value| value.parse().ok())
}

/// Room for the argument bytes of `SET key value [NX] PX ms` besides key and value: the
/// command and option names plus the digits of any `u64`.
const SET_ARGS_OVERHEAD: usize = "SET".len() + "NX".len() + "PX".len() + 20;

/// `SET key value [NX] [PX ms]`, its argument buffer sized once up front: growing it while
/// appending after a large value would reallocate (and copy) that value a second time.
fn set_command(key: &str, value: &[u8], px_ms: Option<u64>, nx: bool) -> redis::Cmd {
    let mut cmd = redis::Cmd::with_capacity(6, key.len() + value.len() + SET_ARGS_OVERHEAD);
    cmd.arg("SET").arg(key).arg(value);
    if nx {
        cmd.arg("NX");
    }
    if let Some(ms) = px_ms {
        cmd.arg("PX").arg(ms);
    }
    cmd
}

/// Milliseconds for `PX`, at least 1 (Redis rejects 0).
fn px(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Actor for ShardActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        if let Err(why) = &self.client {
            tracing::error!(shard = %self.settings.name, %why, "redis shard url rejected; shard stays down");
        }
        tracing::debug!(shard = %self.settings.name, "shard actor started");
        self.tick(ctx);
        ctx.run_interval(self.settings.health_interval, |act, ctx| act.tick(ctx));
        ctx.run_interval(STATS_INTERVAL, |act, ctx| act.refresh_stats(ctx));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        tracing::debug!(shard = %self.settings.name, "shard actor stopped");
    }
}

impl Handler<Get> for ShardActor {
    type Result = ResponseFuture<Result<Option<Bytes>>>;

    fn handle(&mut self, msg: Get, _ctx: &mut Self::Context) -> Self::Result {
        let call = self.call("get", Load::Small);
        Box::pin(async move {
            call?
                .run(
                    move |mut conn| async move {
                        redis::cmd("GET").arg(&msg.key).query_async(&mut conn).await
                    },
                    |value: &Option<Bytes>| if value.is_some() { "hit" } else { "miss" },
                )
                .await
        })
    }
}

impl Handler<Set> for ShardActor {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, msg: Set, _ctx: &mut Self::Context) -> Self::Result {
        // Encoded here, on the actor's thread, so a large value's first copy is not one more
        // on its connection thread (which still packs, writes and sends it). The message,
        // value included, is dropped before the command waits for its turn.
        let prepared = self
            .call_write("set", Load::of_value(msg.value.len()))
            .map(|call| {
                (
                    call,
                    set_command(&msg.key, &msg.value, msg.ttl.map(px), false),
                )
            });
        drop(msg);
        Box::pin(async move {
            let (call, cmd) = prepared?;
            call.run(
                move |mut conn| async move { cmd.query_async::<()>(&mut conn).await },
                ok,
            )
            .await
        })
    }
}

impl Handler<SetNx> for ShardActor {
    type Result = ResponseFuture<Result<bool>>;

    fn handle(&mut self, msg: SetNx, _ctx: &mut Self::Context) -> Self::Result {
        let prepared = self
            .call_write("setnx", Load::of_value(msg.value.len()))
            .map(|call| {
                (
                    call,
                    set_command(&msg.key, &msg.value, Some(px(msg.ttl)), true),
                )
            });
        drop(msg);
        Box::pin(async move {
            let (call, cmd) = prepared?;
            call.run(
                move |mut conn| async move {
                    let reply: Option<String> = cmd.query_async(&mut conn).await?;
                    Ok(reply.is_some())
                },
                ok,
            )
            .await
        })
    }
}

impl Handler<DelIfEq> for ShardActor {
    type Result = ResponseFuture<Result<bool>>;

    fn handle(&mut self, msg: DelIfEq, _ctx: &mut Self::Context) -> Self::Result {
        let call = self.call("delifeq", Load::Small);
        Box::pin(async move {
            call?
                .run(
                    move |mut conn| async move {
                        let deleted: u64 = DEL_IF_EQ
                            .key(&msg.key)
                            .arg(msg.value.as_ref())
                            .invoke_async(&mut conn)
                            .await?;
                        Ok(deleted > 0)
                    },
                    ok,
                )
                .await
        })
    }
}

impl Handler<Del> for ShardActor {
    type Result = ResponseFuture<Result<u64>>;

    fn handle(&mut self, msg: Del, _ctx: &mut Self::Context) -> Self::Result {
        if msg.keys.is_empty() {
            return Box::pin(async { Ok(0) });
        }
        let call = self.call("del", Load::Small);
        Box::pin(async move {
            call?
                .run(
                    move |mut conn| async move {
                        redis::cmd("DEL")
                            .arg(&msg.keys)
                            .query_async(&mut conn)
                            .await
                    },
                    ok,
                )
                .await
        })
    }
}

impl Handler<Info> for ShardActor {
    type Result = ResponseFuture<Result<ShardInfo>>;

    fn handle(&mut self, _msg: Info, _ctx: &mut Self::Context) -> Self::Result {
        let call = self.call("info", Load::Small);
        Box::pin(async move {
            let Call {
                conn,
                timeout,
                tracker,
                ..
            } = call?;
            let shard = tracker.name().to_owned();
            let gone = shard.clone();
            let work = move |manager: ConnectionManager| async move {
                let started = Instant::now();
                let res = tokio::time::timeout(timeout, fetch_info(&shard, manager)).await;
                let res = match res {
                    Ok(res) => res,
                    Err(_) => Err(ShardError::Timeout {
                        shard: shard.clone(),
                        timeout,
                    }),
                };
                match &res {
                    Ok(info) => {
                        tracker.command_ok();
                        metrics::set_usage(&shard, info.used_memory_bytes, info.keys);
                        metrics::observe(&shard, "info", "ok", started.elapsed());
                    }
                    Err(err) => {
                        if matches!(err, ShardError::Timeout { .. })
                            || matches!(err, ShardError::Redis { source, .. } if is_connection_failure(source))
                        {
                            tracker.failure(err);
                        }
                        metrics::observe(&shard, "info", "error", started.elapsed());
                    }
                }
                res
            };
            conn.run(work).await.unwrap_or_else(|IoThreadGone| {
                metrics::observe(&gone, "info", "error", Duration::ZERO);
                Err(ShardError::NotConnected(gone))
            })
        })
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::messages::Panic> for ShardActor {
    type Result = ();

    fn handle(&mut self, _msg: crate::messages::Panic, _ctx: &mut Self::Context) {
        panic!(
            "fault injection: shard actor {} panics on request",
            self.settings.name
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_memory_is_read_from_info() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n";
        assert_eq!(parse_used_memory(info), Some(1_048_576));
        assert_eq!(parse_used_memory("# Memory\r\n"), None);
    }

    #[test]
    fn set_commands_carry_every_argument_in_order() {
        let value = vec![7u8; 300 * 1024];
        let packed = set_command("k", &value, Some(1500), false).get_packed_command();
        let mut expected = b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$307200\r\n".to_vec();
        expected.extend_from_slice(&value);
        expected.extend_from_slice(b"\r\n$2\r\nPX\r\n$4\r\n1500\r\n");
        assert_eq!(packed, expected);

        let packed = set_command("lease", b"me", Some(u64::MAX), true).get_packed_command();
        let expected = format!(
            "*6\r\n$3\r\nSET\r\n$5\r\nlease\r\n$2\r\nme\r\n$2\r\nNX\r\n$2\r\nPX\r\n$20\r\n{}\r\n",
            u64::MAX
        );
        assert_eq!(packed, expected.as_bytes());

        let packed = set_command("k", b"v", None, false).get_packed_command();
        assert_eq!(packed, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n");
    }

    #[test]
    fn px_is_never_zero() {
        assert_eq!(px(Duration::ZERO), 1);
        assert_eq!(px(Duration::from_secs(2)), 2000);
    }
}
