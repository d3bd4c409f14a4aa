//! Per-thread readers against real redis-server processes: a `GET` answered on the calling
//! thread with its own connection, one reader per thread and shard, the shard actor's health
//! obeyed, a server restart seen by several readers not taken for an outage, and readers of
//! a shard that is gone dropped with their connections.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr, Arbiter};
use bytes::Bytes;
use common::{wait_until, DETECT, MARGIN, RESPONSE_TIMEOUT};
use integration::RedisServer;
use mr_shard_actor::{
    Get, Set, ShardActor, ShardError, ShardHealth, ShardReader, ShardReaders, ShardSettings,
};
use tokio::sync::oneshot;

fn settings(name: &str, url: String) -> ShardSettings {
    common::shard_settings(name, url, 1)
}

/// A shard actor on its own arbiter, as the ring starts one, with its readers.
struct Shard {
    addr: Addr<ShardActor>,
    health: Arc<ShardHealth>,
    readers: Arc<ShardReaders>,
    _arbiter: Arbiter,
}

async fn start_up(name: &str, server: &RedisServer) -> Shard {
    let health = Arc::new(ShardHealth::new());
    let readers = ShardReaders::new(settings(name, server.url()), health.clone());
    let arbiter = Arbiter::new();
    let r = readers.clone();
    let addr =
        ShardActor::start_in_arbiter(&arbiter.handle(), move |_| ShardActor::with_readers(&r));
    wait_until(DETECT, || health.is_up())
        .await
        .expect("shard not up within 2 s");
    Shard {
        addr,
        health,
        readers,
        _arbiter: arbiter,
    }
}

async fn set(shard: &Shard, key: &str, value: &'static [u8]) {
    shard
        .addr
        .send(Set {
            key: key.to_owned(),
            value: Bytes::from_static(value),
            ttl: None,
        })
        .await
        .unwrap()
        .unwrap();
}

async fn read(reader: &Addr<ShardReader>, key: &str) -> Result<Option<Bytes>, ShardError> {
    reader
        .send(Get {
            key: key.to_owned(),
        })
        .await
        .unwrap()
}

/// Reads `key` through this thread's reader until it answers (a reader answers
/// `NotConnected` while its connection is being made); the time it took.
async fn read_when_connected(readers: &Arc<ShardReaders>, key: &str) -> Option<Bytes> {
    let reader = readers.local().expect("the test runs on an actix arbiter");
    let started = Instant::now();
    loop {
        match read(&reader, key).await {
            Ok(value) => return value,
            Err(err) => assert!(started.elapsed() < DETECT, "reader not serving: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Clients connected to `server`, not counting the redis-cli that asks.
fn clients(server: &RedisServer) -> usize {
    let list = server.cli(&["CLIENT", "LIST"]).unwrap();
    list.lines().count() - 1
}

/// Runs `read_when_connected` on `arbiter`'s thread, with that thread's reader.
async fn read_on(arbiter: &Arbiter, readers: &Arc<ShardReaders>, key: &str) -> Option<Bytes> {
    let (tx, rx) = oneshot::channel();
    let (readers, key) = (readers.clone(), key.to_owned());
    arbiter.spawn(async move {
        let value = read_when_connected(&readers, &key).await;
        let _ = tx.send(value);
    });
    rx.await.unwrap()
}

#[actix_rt::test]
async fn a_thread_gets_one_reader_per_shard_with_its_own_connection() {
    let server = RedisServer::start().unwrap();
    let shard = start_up("readers-one", &server).await;
    set(&shard, "k", b"value").await;
    let actor_only = clients(&server);

    let value = read_when_connected(&shard.readers, "k").await;
    assert_eq!(value, Some(Bytes::from_static(b"value")));
    assert_eq!(read_when_connected(&shard.readers, "absent").await, None);
    let first = shard.readers.local().unwrap();
    let again = shard.readers.local().unwrap();
    assert_eq!(first, again, "one reader per thread and shard");
    assert_eq!(
        clients(&server),
        actor_only + 1,
        "the reader's own connection"
    );

    // Another thread: another reader, another connection; this thread's is unchanged.
    let other = Arbiter::new();
    let value = read_on(&other, &shard.readers, "k").await;
    assert_eq!(value, Some(Bytes::from_static(b"value")));
    assert_eq!(clients(&server), actor_only + 2);
    assert_eq!(shard.readers.local().unwrap(), first);
    other.stop();
}

#[actix_rt::test]
async fn a_task_outside_the_arbiters_local_set_gets_a_reader_too() {
    // `tokio::spawn` on an arbiter's runtime runs outside its `LocalSet` (as the cache's
    // fills do): the reader must still start there, on the same thread.
    let server = RedisServer::start().unwrap();
    let shard = start_up("readers-spawned-task", &server).await;
    set(&shard, "k", b"v").await;
    let readers = shard.readers.clone();
    let value = tokio::spawn(async move { read_when_connected(&readers, "k").await })
        .await
        .unwrap();
    assert_eq!(value, Some(Bytes::from_static(b"v")));
}

#[actix_rt::test]
async fn off_an_arbiter_there_is_no_reader() {
    let server = RedisServer::start().unwrap();
    let shard = start_up("readers-plain-thread", &server).await;
    let readers = shard.readers.clone();
    let none = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move { readers.local().is_none() })
    })
    .join()
    .unwrap();
    assert!(none, "a plain tokio thread cannot run an actor: no reader");
}

#[actix_rt::test]
async fn readers_refuse_while_the_shard_is_down_and_time_out_on_a_hung_one() {
    let mut server = RedisServer::start().unwrap();
    let shard = start_up("readers-faults", &server).await;
    set(&shard, "k", b"v").await;
    assert!(read_when_connected(&shard.readers, "k").await.is_some());
    let reader = shard.readers.local().unwrap();

    // Hung: every read ends within the response timeout, and the shard goes down.
    server.pause();
    let calls = (0..20).map(|_| {
        let reader = reader.clone();
        async move {
            let started = Instant::now();
            (read(&reader, "k").await, started.elapsed())
        }
    });
    for (res, took) in futures_util::future::join_all(calls).await {
        assert!(res.is_err());
        assert!(took < RESPONSE_TIMEOUT + MARGIN, "read took {took:?}");
    }
    wait_until(DETECT, || !shard.health.is_up())
        .await
        .expect("hung shard not marked down");
    // Down: refused at once, without the network.
    let started = Instant::now();
    assert!(matches!(read(&reader, "k").await, Err(ShardError::Down(_))));
    assert!(started.elapsed() < Duration::from_millis(250));
    server.resume();
    wait_until(DETECT, || shard.health.is_up())
        .await
        .expect("resumed shard not marked up");
    assert!(read_when_connected(&shard.readers, "k").await.is_some());

    // Killed and restarted empty: the readers' connections each fail once, which is not
    // an outage (the PING judges those): once up, the shard stays up while four
    // threads' readers find their way back.
    let others: Vec<Arbiter> = (0..3).map(|_| Arbiter::new()).collect();
    for arbiter in &others {
        assert!(read_on(arbiter, &shard.readers, "k").await.is_some());
    }
    server.kill9();
    wait_until(DETECT, || !shard.health.is_up())
        .await
        .expect("killed shard not marked down");
    server.restart().unwrap();
    wait_until(DETECT, || shard.health.is_up())
        .await
        .expect("restarted shard not marked up");
    set(&shard, "k", b"again").await;
    let watch_health = {
        let health = shard.health.clone();
        actix_rt::spawn(async move {
            let until = Instant::now() + Duration::from_secs(1);
            while Instant::now() < until {
                assert!(
                    health.is_up(),
                    "readers' stale connections marked the shard down"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let reads = others
        .iter()
        .map(|arbiter| read_on(arbiter, &shard.readers, "k"));
    for value in futures_util::future::join_all(reads).await {
        assert_eq!(value, Some(Bytes::from_static(b"again")));
    }
    assert_eq!(
        read_when_connected(&shard.readers, "k").await,
        Some(Bytes::from_static(b"again"))
    );
    watch_health.await.unwrap();
}

#[actix_rt::test]
async fn readers_of_a_shard_that_is_gone_are_dropped_with_their_connections() {
    let server = RedisServer::start().unwrap();
    let other_server = RedisServer::start().unwrap();
    let gone = start_up("readers-gone", &server).await;
    let kept = start_up("readers-kept", &other_server).await;
    assert_eq!(read_when_connected(&gone.readers, "k").await, None);
    let with_reader = clients(&server);
    assert_eq!(ShardReaders::readers_on_this_thread(), 1);

    // The shard is removed: its actor stops and its readers are no longer referenced.
    let Shard {
        addr,
        health: _,
        readers,
        _arbiter,
    } = gone;
    drop(readers);
    _arbiter.stop();
    drop(addr);
    // The next lookup on this thread forgets the dead shard's reader, which then stops.
    assert_eq!(read_when_connected(&kept.readers, "k").await, None);
    assert_eq!(ShardReaders::readers_on_this_thread(), 1);
    let closed = wait_until(DETECT, || clients(&server) < with_reader).await;
    assert!(closed.is_some(), "the reader's connection is still open");
}
