//! The shard actor's answer to each message of [`crate::messages`], in the same order: each
//! handler is admitted by the actor ([`ShardActor::command`]) and runs one exchange through
//! the one command path ([`crate::command::Command::run`]), so every command is bounded,
//! counted and judged the same way.

use std::sync::LazyLock;

use actix::prelude::*;
use bytes::Bytes;
use redis::aio::ConnectionManager;

use crate::actor::ShardActor;
use crate::command::{ok, Failure};
use crate::encode::set_command;
use crate::error::Result;
use crate::info;
use crate::messages::{Del, DelIfEq, Get, Info, Set, SetNx, ShardInfo};
use crate::pool::Load;
use crate::reader::get_exchange_outcome;

/// Releases a lease only if it is still ours: compare and delete in one atomic step.
static DEL_IF_EQ: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
    )
});

impl Handler<Get> for ShardActor {
    type Result = ResponseFuture<Result<Option<Bytes>>>;

    fn handle(&mut self, msg: Get, _ctx: &mut Self::Context) -> Self::Result {
        let command = self.command("get", Load::Small);
        Box::pin(async move {
            command?
                .run(
                    move |conn| get_exchange(conn, msg.key),
                    get_exchange_outcome,
                )
                .await
        })
    }
}

/// The `GET key` exchange, as the shard actor and its per-thread readers both run it.
pub(crate) async fn get_exchange(
    mut conn: ConnectionManager,
    key: String,
) -> std::result::Result<Option<Bytes>, Failure> {
    Ok(redis::cmd("GET").arg(&key).query_async(&mut conn).await?)
}

impl Handler<Set> for ShardActor {
    type Result = ResponseFuture<Result<()>>;

    fn handle(&mut self, msg: Set, _ctx: &mut Self::Context) -> Self::Result {
        // Encoded here, on the actor's thread, so a large value's first copy is not one more
        // on its connection thread (which still packs, writes and sends it). The message,
        // value included, is dropped before the command waits for its turn.
        let prepared = self
            .write_command("set", Load::of_value(msg.value.len()))
            .map(|command| (command, set_command(&msg.key, &msg.value, msg.ttl, false)));
        drop(msg);
        Box::pin(async move {
            let (command, cmd) = prepared?;
            command
                .run(
                    move |mut conn| async move {
                        cmd.query_async::<()>(&mut conn)
                            .await
                            .map_err(Failure::from)
                    },
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
            .write_command("setnx", Load::of_value(msg.value.len()))
            .map(|command| {
                (
                    command,
                    set_command(&msg.key, &msg.value, Some(msg.ttl), true),
                )
            });
        drop(msg);
        Box::pin(async move {
            let (command, cmd) = prepared?;
            command
                .run(
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
        let command = self.command("delifeq", Load::Small);
        Box::pin(async move {
            command?
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
        let command = self.command("del", Load::Small);
        Box::pin(async move {
            command?
                .run(
                    move |mut conn| async move {
                        Ok(redis::cmd("DEL")
                            .arg(&msg.keys)
                            .query_async(&mut conn)
                            .await?)
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
        let command = self.command("info", Load::Small);
        Box::pin(async move { info::read_usage(command?).await })
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::messages::Panic> for ShardActor {
    type Result = ();

    fn handle(&mut self, _msg: crate::messages::Panic, _ctx: &mut Self::Context) {
        panic!(
            "fault injection: shard actor {} panics on request",
            self.name()
        );
    }
}
