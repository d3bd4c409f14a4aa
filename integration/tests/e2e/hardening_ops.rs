//! Operational hardening, through the real binary: metric labels a client cannot grow,
//! operator endpoints only on the operators' listener, HEAD on every GET route,
//! `/readyz`, the drain timeout on SIGTERM, and malformed requests that never log ERROR.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use integration::{metrics, MediaRepo, Synapse};
use reqwest::blocking::Client;
use reqwest::Method;
use serde_json::Value;

use crate::common::{
    config_yaml, matrix_error, random_bytes, users, with_token, Db, Options, Stack,
};

/// Requests with invented methods sent to the public listener.
const INVENTED_METHODS: usize = 2_000;

/// How much `/metrics` may grow over those requests once every label combination they
/// can produce exists: only counter values change. One series per invented method would
/// add some 100 bytes each.
const METRICS_GROWTH_BOUND: usize = 2_048;

/// Bound on one raw-TCP exchange with the local server.
const RAW_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `request` as written on a fresh connection and returns everything the server
/// sent until it closed the connection.
fn raw_exchange(port: u16, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(RAW_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(RAW_TIMEOUT)).unwrap();
    stream.write_all(request).expect("send request");
    let mut reply = Vec::new();
    // A reset after the answer (the server closing with unread input) still leaves the
    // answer in `reply`.
    let _ = stream.read_to_end(&mut reply);
    reply
}

/// (status, body) of a raw HTTP/1.1 reply.
fn parse_reply(reply: &[u8]) -> (u16, Vec<u8>) {
    let text = String::from_utf8_lossy(reply);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP reply: {text:?}"));
    let body = match reply.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => reply[end + 4..].to_vec(),
        None => Vec::new(),
    };
    (status, body)
}

// ------------------------------------------------------------------ 1. metric labels

#[test]
fn invented_methods_do_not_grow_metrics() {
    let s = Stack::start(Options::default());
    let port = s.repo.port();
    let send = |i: usize| {
        // Half to a known route (405), half to an unknown path (404): both label sets.
        let path = if i.is_multiple_of(2) {
            "/healthz".to_owned()
        } else {
            format!("/invented/path/{i}")
        };
        let request = format!("FOO{i} {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let (status, _) = parse_reply(&raw_exchange(port, request.as_bytes()));
        assert!(status == 404 || status == 405, "FOO{i} {path}: {status}");
    };
    // Every label combination these requests can make exists after the first few.
    for i in 0..10 {
        send(i);
    }
    let before = s.repo.metrics().unwrap();
    for i in 10..10 + INVENTED_METHODS {
        send(i);
    }
    let after = s.repo.metrics().unwrap();
    assert!(
        after.len() < before.len() + METRICS_GROWTH_BOUND,
        "/metrics grew from {} to {} bytes over {INVENTED_METHODS} invented methods",
        before.len(),
        after.len()
    );
    assert!(!after.contains("FOO"), "an invented method became a label");
    assert!(!after.contains("/invented/"), "a raw path became a label");
    let counted = metrics::sum_values(&after, r#"media_repo_http_requests_total{method="other"}"#)
        .unwrap_or(0.0);
    assert_eq!(counted as usize, 10 + INVENTED_METHODS, "{after}");
    assert_eq!(
        metrics::find_value(
            &after,
            r#"media_repo_http_requests_total{method="other",route="unmatched",status="4xx"}"#
        ),
        Some(((10 + INVENTED_METHODS) / 2) as f64),
        "{after}"
    );
    assert!(
        !after.contains(r#"status="404""#) && !after.contains(r#"status="405""#),
        "statuses are classes"
    );
}

// ------------------------------------------------------------------ 2. operators' listener

#[test]
fn operator_endpoints_live_only_on_the_operators_listener() {
    let s = Stack::start(Options::default());
    for path in ["/metrics", "/_media_repo/v1/cache"] {
        assert_eq!(
            matrix_error(s.get(path, None)),
            (404, "M_UNRECOGNIZED".into()),
            "{path} on the public listener"
        );
        let head = s.http.head(s.url(path)).send().unwrap();
        assert_eq!(head.status(), 404, "HEAD {path} on the public listener");
        let reply = s.repo.get_operators(path).unwrap();
        assert_eq!(reply.status, 200, "{path} on the operators' listener");
    }
    assert!(s
        .repo
        .metrics()
        .unwrap()
        .contains("media_repo_config_generation 1"));
    let status: Value = serde_json::from_str(&s.repo.cache_status().unwrap()).unwrap();
    assert_eq!(status["backend"], "memory", "{status}");
    // The media API is not on the operators' listener.
    assert_eq!(
        s.repo.get_operators("/healthz").unwrap().status,
        404,
        "the operators' listener only serves operator endpoints"
    );
}

#[test]
fn metrics_bind_null_means_no_operators_listener() {
    let s = Stack::start(Options {
        extra_yaml: "metrics:\n  bind: null\n",
        ..Options::default()
    });
    let refused = TcpStream::connect(("127.0.0.1", s.repo.metrics_port()))
        .err()
        .map(|e| e.kind());
    assert_eq!(
        refused,
        Some(std::io::ErrorKind::ConnectionRefused),
        "nothing listens on the operators' port"
    );
    assert_eq!(
        matrix_error(s.get("/metrics", None)),
        (404, "M_UNRECOGNIZED".into()),
        "and /metrics did not move to the public listener"
    );
    assert_eq!(s.get("/healthz", None).status(), 200);
}

// ------------------------------------------------------------------ 3. HEAD everywhere

#[test]
fn every_get_route_answers_head() {
    let s = Stack::start(Options::default());
    let u = users();
    let (server, id) = s.upload(&u.alice, b"head me".to_vec(), "text/plain", None);
    // Every GET path the server serves (the route table in crates/web/src/routes.rs;
    // its unit test walks the table itself), with the answer HEAD must give.
    let mut public: Vec<(String, Option<&str>, u16)> = vec![
        ("/healthz".into(), None, 200),
        ("/readyz".into(), None, 200),
        (
            "/_matrix/client/v1/media/config".into(),
            Some(u.alice.as_str()),
            200,
        ),
        (
            "/_matrix/media/v3/config".into(),
            Some(u.alice.as_str()),
            200,
        ),
        (
            "/_matrix/media/r0/config".into(),
            Some(u.alice.as_str()),
            200,
        ),
        (
            format!("/_matrix/client/v1/media/download/{server}/{id}"),
            Some(u.alice.as_str()),
            200,
        ),
        (
            format!("/_matrix/client/v1/media/download/{server}/{id}/name.txt"),
            Some(u.alice.as_str()),
            200,
        ),
    ];
    for version in ["v3", "r0"] {
        // Frozen for media this new (legacy freeze on by default): 404, but routed.
        for suffix in ["", "/name.txt"] {
            public.push((
                format!("/_matrix/media/{version}/download/{server}/{id}{suffix}"),
                None,
                404,
            ));
        }
    }
    for (path, token, expected) in &public {
        let head = with_token(s.http.head(s.url(path)), *token).send().unwrap();
        assert_eq!(head.status(), *expected, "HEAD {path}");
        let get = with_token(s.http.get(s.url(path)), *token).send().unwrap();
        assert_eq!(get.status(), *expected, "GET {path}");
    }
    for path in ["/metrics", "/_media_repo/v1/cache"] {
        let url = format!("{}{path}", s.repo.operators_url());
        assert_eq!(
            s.http.head(&url).send().unwrap().status(),
            200,
            "HEAD {path}"
        );
    }
}

// ------------------------------------------------------------------ 4. /readyz

fn readyz(s: &Stack) -> (u16, Value) {
    let response = s.get("/readyz", None);
    let status = response.status().as_u16();
    (status, response.json().expect("/readyz answers JSON"))
}

#[test]
fn readyz_fails_when_the_sqlite_file_is_deleted() {
    let s = Stack::start(Options::default());
    let (status, body) = readyz(&s);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["database"], "ok");
    assert_eq!(body["datastore"], "ok");
    assert_eq!(body["cache"]["backend"], "memory", "{body}");
    assert_eq!(s.http.head(s.url("/readyz")).send().unwrap().status(), 200);

    let db = s.repo.dir().join("media-repo.db");
    assert!(db.is_file());
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", db.display());
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !suffix.is_empty() => {}
            Err(e) => panic!("removing {path}: {e}"),
        }
    }
    let (status, body) = readyz(&s);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN", "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("database"),
        "{body}"
    );
    assert_eq!(body["database"], "unusable", "{body}");
    assert_eq!(body["datastore"], "ok", "{body}");
    assert_eq!(body["cache"]["backend"], "memory", "{body}");
    assert_eq!(s.http.head(s.url("/readyz")).send().unwrap().status(), 503);
    // Alive, just not ready.
    assert_eq!(s.get("/healthz", None).status(), 200);
}

#[test]
fn readyz_fails_when_the_datastore_is_gone() {
    // Postgres, so the database half of the check runs on the other backend too.
    let s = Stack::start(Options {
        db: Db::Postgres,
        ..Options::default()
    });
    let (status, body) = readyz(&s);
    assert_eq!(status, 200, "{body}");
    std::fs::remove_dir_all(s.repo.dir().join("media")).unwrap();
    let (status, body) = readyz(&s);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN", "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("datastore"),
        "{body}"
    );
    assert_eq!(body["database"], "ok", "{body}");
    assert_eq!(body["datastore"], "unusable", "{body}");
}

// ------------------------------------------------------------------ 5. drain timeout

/// Large enough that the socket buffers on both sides cannot hold it, so a reader that
/// stops reading keeps the response in flight.
const SLOW_DOWNLOAD_BYTES: usize = 32 * 1024 * 1024;

/// The configured drain, and how much later than it the process may still exit (start
/// of the stop, scheduling on a busy test machine). Far below the 30 s default.
const DRAIN_SECS: u64 = 2;
const EXIT_MARGIN: Duration = Duration::from_secs(6);

#[test]
fn sigterm_cuts_in_flight_downloads_after_the_drain_timeout() {
    let synapse = Synapse::shared();
    let u = users();
    let yaml = config_yaml(
        synapse,
        "sqlite://{dir}/media-repo.db",
        64 * 1024 * 1024,
        "cache:\n  backend: none\n",
        "",
    )
    .replacen(
        "server:\n",
        &format!("server:\n  shutdown_timeout_secs: {DRAIN_SECS}\n"),
        1,
    );
    let repo = MediaRepo::start(&yaml).unwrap();
    let http = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let upload = http
        .post(format!("{}/_matrix/media/v3/upload", repo.base_url()))
        .bearer_auth(&u.alice)
        .header("Content-Type", "application/octet-stream")
        .body(random_bytes(SLOW_DOWNLOAD_BYTES))
        .send()
        .unwrap();
    assert_eq!(upload.status(), 200);
    let uri: Value = upload.json().unwrap();
    let mxc = uri["content_uri"].as_str().unwrap().to_owned();
    let (server, id) = mxc.trim_start_matches("mxc://").split_once('/').unwrap();

    // A client that reads the head and a little of the body, then stops reading.
    let request = format!(
        "GET /_matrix/client/v1/media/download/{server}/{id} HTTP/1.1\r\nHost: a\r\n\
         Authorization: Bearer {}\r\nConnection: close\r\n\r\n",
        u.alice
    );
    let mut slow = TcpStream::connect(("127.0.0.1", repo.port())).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    slow.write_all(request.as_bytes()).unwrap();
    let mut first = vec![0u8; 64 * 1024];
    let n = slow.read(&mut first).unwrap();
    assert!(
        String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..n.min(200)])
    );

    let stopping = Instant::now();
    repo.sigterm();
    repo.wait_for(
        "media-repo to exit after SIGTERM",
        Duration::from_secs(DRAIN_SECS) + EXIT_MARGIN,
        || !repo.is_alive(),
    )
    .unwrap_or_else(|e| {
        panic!(
            "still running {:?} after SIGTERM: {e:#}",
            stopping.elapsed()
        )
    });

    // The download was cut, not finished: the client never gets the whole file.
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(
        n + rest.len() < SLOW_DOWNLOAD_BYTES,
        "the whole download arrived ({} bytes), so nothing was in flight",
        n + rest.len()
    );
    assert!(
        repo.logs().contains("shutdown_timeout_secs=2"),
        "the log states the drain"
    );
}

// ------------------------------------------------------------------ 6. malformed requests

#[test]
fn malformed_requests_get_matrix_json_and_never_log_error() {
    let s = Stack::start(Options::default());
    let u = users();
    let port = s.repo.port();

    // Requests actix-http cannot parse: it answers 400 itself, before the app, with an
    // empty body (nothing in the app can give them JSON).
    for request in [
        "GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: a\r\nHeaderWithoutColon\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
    ] {
        let reply = raw_exchange(port, request.as_bytes());
        assert_eq!(
            parse_reply(&reply).0,
            400,
            "{request:?}: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    // A body whose chunked framing breaks after the app took the request: the connection
    // ends (the client may only see a reset), and it is not an error of the server's.
    let broken_body = format!(
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\n\
         Transfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\nnot-hex\r\nabc\r\n",
        u.alice
    );
    let reply = raw_exchange(port, broken_body.as_bytes());
    assert!(
        reply.is_empty() || (400..500).contains(&parse_reply(&reply).0),
        "{}",
        String::from_utf8_lossy(&reply)
    );

    // Malformed requests that reach the app: Matrix JSON 4xx.
    for (method, path, token) in [
        (
            "FOO123",
            "/_matrix/media/v3/config".to_owned(),
            Some(&u.alice),
        ),
        (
            "GET",
            "/_matrix/media/v3/download/a/%ZZ%ff".to_owned(),
            None,
        ),
        (
            "GET",
            format!(
                "/_matrix/client/v1/media/download/{}/abc?timeout_ms=soon",
                s.server_name
            ),
            Some(&u.alice),
        ),
        (
            "PUT",
            "/_matrix/media/v3/upload/a/%00".to_owned(),
            Some(&u.alice),
        ),
        ("GET", "/_matrix/%2e%2e/%2e%2e/etc/passwd".to_owned(), None),
    ] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let response = with_token(
            s.http.request(method.clone(), s.url(&path)),
            token.map(|t| t.as_str()),
        )
        .send()
        .unwrap();
        let status = response.status().as_u16();
        let text = response.text().unwrap();
        assert!(
            (400..500).contains(&status),
            "{method} {path}: {status} {text}"
        );
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text:?}"));
        assert!(
            body["errcode"]
                .as_str()
                .is_some_and(|c| c.starts_with("M_")),
            "{method} {path}: {body}"
        );
    }

    // The server is fine, and none of it was an ERROR.
    assert_eq!(s.get("/healthz", None).status(), 200);
    let logs = s.repo.logs();
    let errors: Vec<&str> = logs.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(
        errors.is_empty(),
        "client errors logged as ERROR:\n{}",
        errors.join("\n")
    );
}
