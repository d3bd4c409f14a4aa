//! Smoke tests of the harness itself against real redis-server, Postgres, Synapse and nginx:
//! if these fail, every other integration test's failure is suspect.

#[path = "harness/federation.rs"]
mod federation;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use integration::{pid_exists, PgSchema, RedisServer};

const PING_TIMEOUT: Duration = Duration::from_millis(300);

fn connect_error(port: u16) -> Option<ErrorKind> {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))
        .err()
        .map(|e| e.kind())
}

#[test]
fn redis_server_lifecycle_kill_restart_pause_resume_drop() {
    let mut redis = RedisServer::start().unwrap();
    let port = redis.port();
    assert_ne!(port, 6379);
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    redis.ping(PING_TIMEOUT).unwrap();
    assert_eq!(redis.cli(&["PING"]).unwrap(), "PONG");
    assert_eq!(redis.cli(&["SET", "k", "v"]).unwrap(), "OK");
    assert_eq!(redis.cli(&["GET", "k"]).unwrap(), "v");
    assert_eq!(redis.dbsize().unwrap(), 1);
    let err = redis.cli(&["NOSUCHCOMMAND"]).unwrap_err();
    assert!(format!("{err:#}").contains("unknown command"), "{err:#}");
    let err = redis.cli(&["LPUSH", "k", "x"]).unwrap_err();
    assert!(format!("{err:#}").contains("WRONGTYPE"), "{err:#}");
    // No persistence: a restart must come back empty.
    assert_eq!(redis.cli(&["CONFIG", "GET", "save"]).unwrap(), "save");
    assert_eq!(
        redis.cli(&["CONFIG", "GET", "appendonly"]).unwrap(),
        "appendonly\nno"
    );

    let first_pid = redis.pid();
    redis.kill9();
    assert!(!redis.is_alive());
    assert!(
        !pid_exists(first_pid),
        "killed redis-server {first_pid} still exists"
    );
    assert_eq!(connect_error(port), Some(ErrorKind::ConnectionRefused));
    assert!(redis.ping(PING_TIMEOUT).is_err());

    redis.restart().unwrap();
    assert_eq!(redis.port(), port);
    assert_ne!(redis.pid(), first_pid);
    assert!(redis.is_alive());
    redis.ping(PING_TIMEOUT).unwrap();
    assert_eq!(
        redis.dbsize().unwrap(),
        0,
        "restarted server kept data: persistence is on"
    );

    redis.pause();
    // Give the stop signal a moment to land, then a hung server: TCP connects (kernel
    // backlog) but no reply arrives within the timeout.
    std::thread::sleep(Duration::from_millis(50));
    assert!(redis.is_alive(), "a stopped process is still alive");
    let started = Instant::now();
    let err = redis.ping(PING_TIMEOUT).unwrap_err();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "PING failed after only {waited:?}: {err:#}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "PING took {waited:?} despite a 300 ms timeout"
    );
    let io = err
        .root_cause()
        .downcast_ref::<std::io::Error>()
        .expect("an io error");
    assert!(
        matches!(io.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{err:#}"
    );

    redis.resume();
    redis.ping(PING_TIMEOUT).unwrap();

    let pid = redis.pid();
    drop(redis);
    assert!(!pid_exists(pid), "dropped redis-server {pid} still exists");
    assert_eq!(connect_error(port), Some(ErrorKind::ConnectionRefused));
}

#[test]
fn dropping_a_paused_server_kills_it() {
    let redis = RedisServer::start().unwrap();
    let (pid, port) = (redis.pid(), redis.port());
    redis.pause();
    drop(redis);
    assert!(
        !pid_exists(pid),
        "paused redis-server {pid} survived its drop"
    );
    assert_eq!(connect_error(port), Some(ErrorKind::ConnectionRefused));
}

#[test]
fn a_panicking_test_still_kills_its_server() {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let redis = RedisServer::start().unwrap();
        tx.send((redis.pid(), redis.port())).unwrap();
        panic!("simulated test failure");
    })
    .join();
    assert!(outcome.is_err());
    let (pid, port) = rx.recv().unwrap();
    assert!(
        !pid_exists(pid),
        "redis-server {pid} outlived the panicking test"
    );
    assert_eq!(connect_error(port), Some(ErrorKind::ConnectionRefused));
}

#[test]
fn servers_are_independent() {
    let a = RedisServer::start().unwrap();
    let b = RedisServer::start().unwrap();
    assert_ne!(a.port(), b.port());
    a.cli(&["SET", "only-a", "1"]).unwrap();
    assert_eq!(a.dbsize().unwrap(), 1);
    assert_eq!(b.dbsize().unwrap(), 0);
    assert_ne!(a.dir(), b.dir());
}

#[test]
fn pg_schema_is_private_and_dropped() {
    let schema = PgSchema::create().unwrap();
    let name = schema.name().to_owned();
    assert!(schema.exists().unwrap());
    assert_eq!(
        schema.url(),
        format!("postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3D{name}")
    );
    // Unqualified names land in the schema, because psql runs with its search_path.
    schema
        .psql("CREATE TABLE t (x int); INSERT INTO t VALUES (41), (1)")
        .unwrap();
    assert_eq!(schema.psql("SELECT sum(x) FROM t").unwrap(), "42");
    let qualified = format!("SELECT count(*) FROM {name}.t");
    assert_eq!(schema.psql(&qualified).unwrap(), "2");

    let other = PgSchema::create().unwrap();
    assert_ne!(other.name(), name);
    assert!(
        other.psql("SELECT count(*) FROM t").is_err(),
        "a second schema sees the first one's table"
    );

    drop(schema);
    assert!(!other
        .psql(&format!(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = '{name}'"
        ))
        .unwrap()
        .contains('1'));
    assert!(
        !integration::pg_schema_exists(&name).unwrap(),
        "schema {name} survived its drop (tables and all)"
    );
}

#[test]
fn restart_refuses_a_port_answered_by_someone_elses_server() {
    let mut ours = RedisServer::start().unwrap();
    let port = ours.port();
    ours.kill9();
    // Another process's redis-server grabs the port while ours is down.
    let squatter = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let squatter = KillOnDrop(squatter);
    integration::wait_until("squatter up", Duration::from_secs(5), || {
        integration::redis_ping(port, PING_TIMEOUT).is_ok()
    })
    .unwrap();
    let err = ours.restart().unwrap_err();
    assert!(
        format!("{err:#}").contains(&format!("pid {}", squatter.0.id())),
        "{err:#}"
    );
    assert!(!ours.is_alive());
}
