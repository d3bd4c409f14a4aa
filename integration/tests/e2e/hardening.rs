//! Hardening: an acknowledged upload is never lost, slow or hostile clients and homeservers
//! cannot stall or bloat the service, and no homeserver can act in another's namespace.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use integration::{MediaRepo, Synapse};
use reqwest::blocking::Client;

use crate::common::{
    config_yaml, matrix_error, random_bytes, users, Stack, DEFAULT_MAX_UPLOAD_BYTES,
};

/// A stack with no cache and no cache warming (a lost file cannot hide behind a cached
/// copy), plus `uploads_keys` (indented `uploads:` keys).
fn stack_with_uploads(uploads_keys: &str) -> Stack {
    let synapse = Synapse::shared();
    users();
    let yaml = config_yaml(
        synapse,
        "sqlite://{dir}/media-repo.db",
        DEFAULT_MAX_UPLOAD_BYTES,
        "cache:\n  backend: none\n",
        "",
    )
    .replace(
        "  max_pending_per_user: 3\n",
        &format!("  max_pending_per_user: 3\n  warm_cache: false\n{uploads_keys}"),
    );
    Stack {
        repo: MediaRepo::start(&yaml).expect("media-repo starts"),
        http: Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        server_name: synapse.server_name.clone(),
        schema: None,
    }
}

fn create(s: &Stack, token: &str) -> (String, String) {
    let response = s
        .http
        .post(s.url("/_matrix/media/v1/create"))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().unwrap();
    let uri = body["content_uri"].as_str().unwrap();
    let (server, id) = uri.strip_prefix("mxc://").unwrap().split_once('/').unwrap();
    (server.to_owned(), id.to_owned())
}

fn mxc_of(response: reqwest::blocking::Response) -> Option<(String, String)> {
    if response.status() != 200 {
        return None;
    }
    let body: serde_json::Value = response.json().ok()?;
    let uri = body["content_uri"].as_str()?;
    let (server, id) = uri.strip_prefix("mxc://")?.split_once('/')?;
    Some((server.to_owned(), id.to_owned()))
}

fn assert_downloads(s: &Stack, server: &str, id: &str, expected: &[u8], token: &str) {
    let response = s.download(server, id, token);
    let status = response.status();
    let body = response.bytes().unwrap();
    assert_eq!(
        status,
        200,
        "mxc://{server}/{id}: {}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        body.as_ref() == expected,
        "mxc://{server}/{id}: wrong bytes"
    );
}

/// A PUT to an async id that loses (409) while a POST uploads the same bytes must not take
/// the POST's file with it. 200 trials of the three-way race.
#[test]
fn racing_put_and_post_of_the_same_bytes_never_lose_an_acknowledged_upload() {
    const TRIALS: usize = 200;
    let s = stack_with_uploads("");
    let token = users().alice.clone();
    let mut acknowledged: Vec<(String, String, Vec<u8>)> = Vec::new();
    for _ in 0..TRIALS {
        let (server, id) = create(&s, &token);
        let shared = random_bytes(2_000);
        let other = random_bytes(2_000);
        let put_url = s.url(&format!("/_matrix/media/v3/upload/{server}/{id}"));
        let post_url = s.url("/_matrix/media/v3/upload");
        let requests: Vec<(&str, Vec<u8>)> =
            vec![("put", other), ("put", shared.clone()), ("post", shared)];
        let handles: Vec<_> = requests
            .into_iter()
            .map(|(kind, bytes)| {
                let http = s.http.clone();
                let token = token.clone();
                let url = if kind == "put" {
                    put_url.clone()
                } else {
                    post_url.clone()
                };
                std::thread::spawn(move || {
                    let request = if kind == "put" {
                        http.put(url)
                    } else {
                        http.post(url)
                    };
                    let response = request
                        .bearer_auth(token)
                        .body(bytes.clone())
                        .send()
                        .unwrap();
                    (
                        kind,
                        response.status().as_u16(),
                        response.text().unwrap_or_default(),
                        bytes,
                    )
                })
            })
            .collect();
        for handle in handles {
            let (kind, status, text, bytes) = handle.join().unwrap();
            if status != 200 {
                assert_eq!(kind, "put", "the POST failed: {status} {text}");
                assert_eq!(status, 409, "{text}");
                continue;
            }
            let target = if kind == "put" {
                (server.clone(), id.clone())
            } else {
                let body: serde_json::Value = serde_json::from_str(&text).unwrap();
                let uri = body["content_uri"].as_str().unwrap();
                let (srv, mid) = uri.strip_prefix("mxc://").unwrap().split_once('/').unwrap();
                (srv.to_owned(), mid.to_owned())
            };
            acknowledged.push((target.0, target.1, bytes));
        }
    }
    assert_eq!(
        acknowledged.len(),
        2 * TRIALS,
        "one PUT and the POST win each trial"
    );
    for (server, id, bytes) in &acknowledged {
        assert_downloads(&s, server, id, bytes, &token);
    }
}

/// The race made deterministic: the POST pauses (test hook) between storing its bytes and
/// writing its row, while a PUT of the same bytes loses to another PUT and cleans up.
#[test]
fn a_losing_upload_does_not_delete_bytes_a_paused_upload_stored() {
    let s = stack_with_uploads("");
    let token = users().alice.clone();
    let (server, id) = create(&s, &token);
    let put_url = s.url(&format!("/_matrix/media/v3/upload/{server}/{id}"));
    let shared = random_bytes(300_000);

    // POST: bytes renamed into place, then 3 s before its row.
    let post = {
        let (http, url, token, bytes) = (
            s.http.clone(),
            s.url("/_matrix/media/v3/upload"),
            token.clone(),
            shared.clone(),
        );
        std::thread::spawn(move || {
            http.post(url)
                .bearer_auth(token)
                .header("X-Media-Repo-Test-Pause-Ms", "3000")
                .body(bytes)
                .send()
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    // The loser: same bytes (found in place), then 1 s before its row...
    let loser = {
        let (http, url, token, bytes) = (
            s.http.clone(),
            put_url.clone(),
            token.clone(),
            shared.clone(),
        );
        std::thread::spawn(move || {
            http.put(url)
                .bearer_auth(token)
                .header("X-Media-Repo-Test-Pause-Ms", "1000")
                .body(bytes)
                .send()
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(400));
    // ... during which another PUT wins the id.
    let winner = s
        .http
        .put(&put_url)
        .bearer_auth(&token)
        .body("other bytes")
        .send()
        .unwrap();
    assert_eq!(winner.status(), 200);
    assert_eq!(
        matrix_error(loser.join().unwrap()),
        (409, "M_CANNOT_OVERWRITE_MEDIA".into())
    );

    let (post_server, post_id) = mxc_of(post.join().unwrap()).expect("the POST succeeds");
    assert_downloads(&s, &post_server, &post_id, &shared, &token);
    assert_downloads(&s, &server, &id, b"other bytes", &token);
}

/// Writes a request head with a `Content-Length` and no body yet.
fn start_upload(port: u16, token: &str, content_length: usize) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {content_length}\r\n\r\n"
    )
    .unwrap();
    stream
}

/// 600 uploads trickling a byte a second hold no blocking thread, and other users'
/// uploads and uncached downloads go through meanwhile.
#[test]
fn trickling_uploads_do_not_stall_the_service() {
    const TRICKLERS: usize = 600;
    let s = stack_with_uploads(
        "  max_concurrent_per_user: 1000\n  max_concurrent: 1000\n  idle_timeout_secs: 60\n",
    );
    let u = users();
    // Files to download later, uploaded before the trickle starts.
    let files: Vec<(String, String, Vec<u8>)> = (0..5)
        .map(|_| {
            let bytes = random_bytes(200_000);
            let (server, id) = s.upload(&u.bob, bytes.clone(), "application/octet-stream", None);
            (server, id, bytes)
        })
        .collect();

    let mut tricklers: Vec<TcpStream> = (0..TRICKLERS)
        .map(|_| {
            let mut stream = start_upload(s.repo.port(), &u.alice, 1_000_000);
            stream.write_all(b"x").unwrap();
            stream
        })
        .collect();
    s.repo
        .wait_for(
            "all trickling uploads admitted",
            Duration::from_secs(30),
            || s.repo.metric_value("media_repo_uploads_in_progress") == Some(TRICKLERS as f64),
        )
        .unwrap();
    let quick = Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for (server, id, bytes) in &files {
        for stream in &mut tricklers {
            stream.write_all(b"x").unwrap();
        }
        assert_eq!(
            s.repo.metric_value("media_repo_upload_blocking_writes"),
            Some(0.0),
            "an idle upload holds a blocking-pool thread"
        );
        let download = quick
            .get(s.url(&format!("/_matrix/client/v1/media/download/{server}/{id}")))
            .bearer_auth(&u.bob)
            .send()
            .expect("an uncached download completes within 5 s");
        assert_eq!(download.status(), 200);
        assert!(download.bytes().unwrap().as_ref() == bytes.as_slice());
        let upload = quick
            .post(s.url("/_matrix/media/v3/upload"))
            .bearer_auth(&u.bob)
            .body(random_bytes(300_000))
            .send()
            .expect("an upload by another user completes within 5 s");
        assert_eq!(upload.status(), 200);
        std::thread::sleep(Duration::from_millis(1000));
    }
    drop(tricklers);
    s.repo
        .wait_for("aborted uploads to end", Duration::from_secs(30), || {
            s.repo.metric_value("media_repo_uploads_in_progress") == Some(0.0)
        })
        .unwrap();
    assert_eq!(
        s.datastore_files().1,
        0,
        "aborted uploads leave no temp file"
    );
}

#[test]
fn upload_caps_answer_429_with_retry_after() {
    let s = stack_with_uploads("  max_concurrent_per_user: 2\n  max_concurrent: 3\n");
    let u = users();
    let _a1 = start_upload(s.repo.port(), &u.alice, 100);
    let _a2 = start_upload(s.repo.port(), &u.alice, 100);
    s.repo
        .wait_for("two uploads admitted", Duration::from_secs(10), || {
            s.repo.metric_value("media_repo_uploads_in_progress") == Some(2.0)
        })
        .unwrap();
    let third = s.upload_raw(&u.alice, b"one too many".to_vec(), None, "");
    assert!(third.headers().get("retry-after").is_some());
    assert_eq!(matrix_error(third), (429, "M_LIMIT_EXCEEDED".into()));

    let _b1 = start_upload(s.repo.port(), &u.bob, 100);
    s.repo
        .wait_for("three uploads admitted", Duration::from_secs(10), || {
            s.repo.metric_value("media_repo_uploads_in_progress") == Some(3.0)
        })
        .unwrap();
    let over_all = s.upload_raw(&u.bob, b"server full".to_vec(), None, "");
    assert!(over_all.headers().get("retry-after").is_some());
    assert_eq!(matrix_error(over_all), (429, "M_LIMIT_EXCEEDED".into()));
    assert_eq!(s.media_rows(), 0);
}

#[test]
fn a_stalled_upload_is_cut_off_and_leaves_nothing() {
    let s = stack_with_uploads("  idle_timeout_secs: 1\n");
    let mut stream = start_upload(s.repo.port(), &users().alice, 1_000_000);
    stream.write_all(&random_bytes(200_000)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("}") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"errcode\":\"M_UNKNOWN\""), "{text}");
    assert!(started.elapsed() < Duration::from_secs(8));
    assert_eq!(s.datastore_files(), (0, 0));
    assert_eq!(s.media_rows(), 0);
}

/// Two homeservers on one repo; the second one (`b.test`) asks the same Synapse, which
/// vouches for users of its own server name, not `b.test`.
fn two_homeserver_yaml(trusted_proxies: &str) -> String {
    let synapse = Synapse::shared();
    format!(
        "server:\n  bind: \"127.0.0.1:{{port}}\"\n  trusted_proxies: {trusted_proxies}\n\
         homeservers:\n  - name: \"{name}\"\n    client_api_url: \"{url}\"\n\
         \x20 - name: \"b.test\"\n    client_api_url: \"{url}\"\n\
         database:\n  url: \"sqlite://{{dir}}/media-repo.db\"\n\
         datastores:\n  - id: default\n    kind: file\n    path: \"{{dir}}/media\"\n\
         cache:\n  backend: none\n",
        name = synapse.server_name,
        url = synapse.base_url(),
    )
}

#[test]
fn a_homeserver_cannot_write_into_another_homeservers_namespace() {
    let synapse = Synapse::shared();
    let repo = MediaRepo::start(&two_homeserver_yaml("[]")).unwrap();
    let http = Client::new();
    let alice = &users().alice;
    let url = |path: &str| format!("{}{path}", repo.base_url());
    let created = http
        .post(url("/_matrix/media/v1/create"))
        .header("Host", &synapse.server_name)
        .bearer_auth(alice)
        .send()
        .unwrap();
    let body: serde_json::Value = created.json().unwrap();
    let uri = body["content_uri"].as_str().expect("created").to_owned();
    let (server, id) = uri.strip_prefix("mxc://").unwrap().split_once('/').unwrap();
    assert_eq!(server, synapse.server_name);

    // b.test "vouches" for @alice:<synapse>: refused, nothing stored.
    let put = |host: &str| {
        http.put(url(&format!("/_matrix/media/v3/upload/{server}/{id}")))
            .header("Host", host)
            .bearer_auth(alice)
            .body("into someone else's namespace")
            .send()
            .unwrap()
    };
    assert_eq!(matrix_error(put("b.test")), (403, "M_FORBIDDEN".into()));
    let upload_via_b = http
        .post(url("/_matrix/media/v3/upload"))
        .header("Host", "b.test")
        .bearer_auth(alice)
        .body("bytes")
        .send()
        .unwrap();
    assert_eq!(matrix_error(upload_via_b), (403, "M_FORBIDDEN".into()));
    // Her own homeserver may.
    assert_eq!(put(&synapse.server_name).status(), 200);
}

#[test]
fn forwarded_hosts_count_only_from_trusted_proxies() {
    let synapse = Synapse::shared();
    let alice = &users().alice;
    let http = Client::new();
    let upload = |repo: &MediaRepo, header: (&str, String)| {
        http.post(format!("{}/_matrix/media/v3/upload", repo.base_url()))
            .header("Host", "b.test")
            .header(header.0, header.1)
            .bearer_auth(alice)
            .body("forwarded")
            .send()
            .unwrap()
    };
    let forwarded_headers = [
        ("X-Forwarded-Host", synapse.server_name.clone()),
        ("Forwarded", format!("host=\"{}\"", synapse.server_name)),
    ];

    // 127.0.0.1 is not trusted by default: Host (b.test) decides, and b.test does not
    // vouch for alice.
    let untrusting = MediaRepo::start(&two_homeserver_yaml("[]")).unwrap();
    for header in &forwarded_headers {
        assert_eq!(
            matrix_error(upload(&untrusting, header.clone())),
            (403, "M_FORBIDDEN".into())
        );
    }
    // Trusted: the forwarded host decides.
    let trusting = MediaRepo::start(&two_homeserver_yaml("[\"127.0.0.0/8\"]")).unwrap();
    for header in &forwarded_headers {
        let response = upload(&trusting, header.clone());
        assert_eq!(response.status(), 200, "{header:?}");
    }
}

/// A homeserver answering whoami with an endless body costs at most the read cap.
#[test]
fn a_huge_whoami_answer_does_not_grow_memory() {
    const BODY_BYTES: usize = 200 * 1024 * 1024;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let hs_port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n");
                let chunk = vec![b' '; 1 << 20];
                let mut sent = 0;
                while sent < BODY_BYTES {
                    let framed =
                        [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                    if stream.write_all(&framed).is_err() {
                        return;
                    }
                    sent += chunk.len();
                }
                let _ = stream.write_all(b"0\r\n\r\n");
            });
        }
    });
    let yaml = format!(
        "server:\n  bind: \"127.0.0.1:{{port}}\"\n\
         homeservers:\n  - name: \"huge.test\"\n    client_api_url: \"http://127.0.0.1:{hs_port}\"\n\
         auth:\n  homeserver_timeout_ms: 20000\n\
         database:\n  url: \"sqlite://{{dir}}/media-repo.db\"\n\
         datastores:\n  - id: default\n    kind: file\n    path: \"{{dir}}/media\"\n"
    );
    let repo = MediaRepo::start(&yaml).unwrap();
    let before = peak_rss_kib(repo.pid());
    let http = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    for i in 0..5 {
        let response = http
            .get(format!(
                "{}/_matrix/client/v1/media/config",
                repo.base_url()
            ))
            .bearer_auth(format!("token-{i}"))
            .send()
            .unwrap();
        assert_eq!(matrix_error(response), (502, "M_UNKNOWN".into()));
    }
    let growth_mib = (peak_rss_kib(repo.pid()) - before) / 1024;
    assert!(growth_mib < 32, "peak RSS grew by {growth_mib} MiB");
}

/// Peak resident set of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// kill -9 in the middle of an upload, then a restart: no temp file survives.
#[test]
fn a_crash_mid_upload_leaves_no_temp_file_after_restart() {
    let mut s = stack_with_uploads("");
    let mut stream = start_upload(s.repo.port(), &users().alice, 5_000_000);
    stream.write_all(&random_bytes(1_000_000)).unwrap();
    let tmp = s.repo.dir().join("media").join("tmp");
    s.repo
        .wait_for("the upload's temp file", Duration::from_secs(10), || {
            crate::common::count_files(&tmp) > 0
        })
        .unwrap();
    s.repo.kill9();
    drop(stream);
    assert!(
        crate::common::count_files(&tmp) > 0,
        "the crash left a temp file"
    );
    s.repo.restart().unwrap();
    assert_eq!(crate::common::count_files(&tmp), 0);
    assert_eq!(s.media_rows(), 0);
}
