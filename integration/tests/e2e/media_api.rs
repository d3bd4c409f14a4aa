//! The Matrix media API through the real binary, authenticated by a real Synapse, on SQLite
//! and on Postgres: every endpoint, status, errcode and header, and bad input.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::common::{matrix_error, random_bytes, urlencode, users, Db, Options, Stack};
use crate::on_both_databases;

on_both_databases!(
    upload_download_round_trip_with_every_header,
    head_range_and_filename_override,
    config_endpoints,
    auth_is_checked_first_and_bad_tokens_are_refused,
    async_upload_lifecycle,
    bad_media_ids_are_refused_and_store_nothing,
    awkward_filenames_round_trip,
    oversized_uploads_are_refused_and_store_nothing,
    client_disconnect_mid_upload_stores_nothing,
    concurrent_uploads_all_commit,
    unknown_paths_and_methods,
    legacy_download_freeze,
);

const CSP: &str = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';";

fn stack(db: Db) -> Stack {
    Stack::start(Options {
        db,
        ..Options::default()
    })
}

fn header(response: &reqwest::blocking::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no {name} header"))
}

fn upload_download_round_trip_with_every_header(db: Db) {
    let s = stack(db);
    let u = users();
    let bytes = random_bytes(300_000);
    let (server, id) = s.upload(&u.alice, bytes.clone(), "img/png", Some("cat.png"));
    assert_eq!(server, s.server_name);
    assert_eq!(s.media_rows(), 1);

    let response = s.download(&server, &id, &u.bob);
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-type"),
        "img/png",
        "exact Content-Type back"
    );
    assert_eq!(
        header(&response, "content-disposition"),
        "attachment; filename=cat.png"
    );
    assert_eq!(header(&response, "content-security-policy"), CSP);
    assert_eq!(
        header(&response, "cross-origin-resource-policy"),
        "cross-origin"
    );
    assert_eq!(header(&response, "access-control-allow-origin"), "*");
    assert_eq!(header(&response, "content-length"), "300000");
    assert_eq!(response.bytes().unwrap().as_ref(), bytes.as_slice());

    // An inline type, no filename, default content type.
    let (server, id) = s.upload(&u.alice, b"hello".to_vec(), "text/plain", None);
    let response = s.download(&server, &id, &u.alice);
    assert_eq!(header(&response, "content-disposition"), "inline");
    let response = s.upload_raw(&u.alice, b"x".to_vec(), None, "");
    let id = crate::common::media_id(response);
    let response = s.download(&server, &id, &u.alice);
    assert_eq!(
        header(&response, "content-type"),
        "application/octet-stream"
    );

    // Identical bytes are stored once.
    let before = s.datastore_files().0;
    s.upload(&u.bob, bytes.clone(), "image/png", None);
    assert_eq!(s.datastore_files().0, before);
    assert_eq!(s.media_rows(), 4);
}

fn head_range_and_filename_override(db: Db) {
    let s = stack(db);
    let u = users();
    let bytes = random_bytes(10_000);
    let (server, id) = s.upload(&u.alice, bytes.clone(), "image/png", Some("a.png"));
    let path = format!("/_matrix/client/v1/media/download/{server}/{id}");

    let head = s
        .http
        .head(s.url(&path))
        .bearer_auth(&u.alice)
        .send()
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(header(&head, "content-length"), "10000");
    assert_eq!(header(&head, "content-type"), "image/png");
    assert_eq!(head.bytes().unwrap().len(), 0);

    let part = s
        .http
        .get(s.url(&path))
        .bearer_auth(&u.alice)
        .header("Range", "bytes=100-199")
        .send()
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(header(&part, "content-range"), "bytes 100-199/10000");
    assert_eq!(part.bytes().unwrap().as_ref(), &bytes[100..200]);

    let suffix = s
        .http
        .get(s.url(&path))
        .bearer_auth(&u.alice)
        .header("Range", "bytes=-10")
        .send()
        .unwrap();
    assert_eq!(suffix.status(), 206);
    assert_eq!(suffix.bytes().unwrap().as_ref(), &bytes[9_990..]);

    let past = s
        .http
        .get(s.url(&path))
        .bearer_auth(&u.alice)
        .header("Range", "bytes=20000-")
        .send()
        .unwrap();
    assert_eq!(header(&past, "content-range"), "bytes */10000");
    assert_eq!(past.status(), 416);

    for malformed in ["bytes=abc", "bytes=5-1", "lines=1-2", "bytes=0-1,5-6"] {
        let whole = s
            .http
            .get(s.url(&path))
            .bearer_auth(&u.alice)
            .header("Range", malformed)
            .send()
            .unwrap();
        assert_eq!(whole.status(), 200, "{malformed} is ignored");
        assert_eq!(whole.bytes().unwrap().as_ref(), bytes.as_slice());
    }

    let named = s.get(&format!("{path}/other%20name.png"), Some(&u.alice));
    assert_eq!(
        header(&named, "content-disposition"),
        "inline; filename*=utf-8''other%20name.png"
    );
    assert_eq!(named.bytes().unwrap().as_ref(), bytes.as_slice());
}

fn config_endpoints(db: Db) {
    let s = stack(db);
    let u = users();
    for path in [
        "/_matrix/client/v1/media/config",
        "/_matrix/media/v3/config",
        "/_matrix/media/r0/config",
    ] {
        let response = s.get(path, Some(&u.alice));
        assert_eq!(response.status(), 200, "{path}");
        let body: serde_json::Value = response.json().unwrap();
        assert_eq!(body["m.upload.size"], 8_388_608, "{path}");
        assert_eq!(
            matrix_error(s.get(path, None)),
            (401, "M_MISSING_TOKEN".into()),
            "{path}"
        );
    }
}

fn auth_is_checked_first_and_bad_tokens_are_refused(db: Db) {
    let s = stack(db);
    let u = users();
    let synapse = integration::Synapse::shared();
    // Garbage media id without a token: the token is checked first.
    assert_eq!(
        matrix_error(s.get("/_matrix/client/v1/media/download/a..b/%00", None)),
        (401, "M_MISSING_TOKEN".into())
    );
    assert_eq!(
        matrix_error(s.get(
            "/_matrix/client/v1/media/download/x/y",
            Some("garbage-token")
        )),
        (401, "M_UNKNOWN_TOKEN".into())
    );
    let upload = s.upload_raw("garbage-token", b"x".to_vec(), None, "");
    assert_eq!(matrix_error(upload), (401, "M_UNKNOWN_TOKEN".into()));
    let no_token = s
        .http
        .post(s.url("/_matrix/media/v3/upload"))
        .body("x")
        .send()
        .unwrap();
    assert_eq!(matrix_error(no_token), (401, "M_MISSING_TOKEN".into()));
    let wrong_scheme = s
        .http
        .get(s.url("/_matrix/client/v1/media/config"))
        .header("Authorization", "Basic abc")
        .send()
        .unwrap();
    assert_eq!(matrix_error(wrong_scheme), (401, "M_MISSING_TOKEN".into()));

    // The deprecated query parameter still works.
    let (server, id) = s.upload(&u.alice, b"q".to_vec(), "text/plain", None);
    let by_query = s.get(
        &format!(
            "/_matrix/client/v1/media/download/{server}/{id}?access_token={}",
            urlencode(&u.bob)
        ),
        None,
    );
    assert_eq!(by_query.status(), 200);

    // An expired (logged out) token is refused: with the whoami cache off, at once.
    drop(s);
    let s = Stack::start(Options {
        db,
        extra_yaml: "auth:\n  whoami_cache_secs: 0\n",
        ..Options::default()
    });
    let (server, id) = s.upload(&u.alice, b"q".to_vec(), "text/plain", None);
    let token = synapse.login("bob").unwrap();
    assert_eq!(s.download(&server, &id, &token).status(), 200);
    synapse.logout(&token).unwrap();
    assert_eq!(
        matrix_error(s.download(&server, &id, &token)),
        (401, "M_UNKNOWN_TOKEN".into())
    );
    assert_eq!(s.media_rows(), 1);
}

fn async_upload_lifecycle(db: Db) {
    let s = stack(db);
    let u = users();
    let create = |token: &str| {
        let response = s
            .http
            .post(s.url("/_matrix/media/v1/create"))
            .bearer_auth(token)
            .send()
            .unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().unwrap();
        (status, body)
    };
    let (status, body) = create(&u.alice);
    assert_eq!(status, 200);
    assert!(body["unused_expires_at"].as_i64().unwrap() > 0);
    let uri = body["content_uri"].as_str().unwrap().to_owned();
    let (server, id) = uri.strip_prefix("mxc://").unwrap().split_once('/').unwrap();
    let put_path = s.url(&format!("/_matrix/media/v3/upload/{server}/{id}"));

    // Not uploaded yet: 504 after timeout_ms.
    let started = Instant::now();
    let waiting = s.get(
        &format!("/_matrix/client/v1/media/download/{server}/{id}?timeout_ms=300"),
        Some(&u.alice),
    );
    assert_eq!(matrix_error(waiting), (504, "M_NOT_YET_UPLOADED".into()));
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Someone else may not fill it.
    let by_bob = s
        .http
        .put(&put_path)
        .bearer_auth(&u.bob)
        .body("nope")
        .send()
        .unwrap();
    assert_eq!(matrix_error(by_bob), (403, "M_FORBIDDEN".into()));

    // A download waiting for it gets it as soon as it arrives.
    let bytes = random_bytes(50_000);
    let waiter = {
        let url = s.url(&format!(
            "/_matrix/client/v1/media/download/{server}/{id}?timeout_ms=20000"
        ));
        let token = u.alice.clone();
        let http = s.http.clone();
        std::thread::spawn(move || {
            http.get(url)
                .bearer_auth(token)
                .send()
                .unwrap()
                .bytes()
                .unwrap()
                .to_vec()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let put = s
        .http
        .put(&put_path)
        .bearer_auth(&u.alice)
        .header("Content-Type", "image/png")
        .body(bytes.clone())
        .send()
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(waiter.join().unwrap(), bytes);

    let again = s
        .http
        .put(&put_path)
        .bearer_auth(&u.alice)
        .body("again")
        .send()
        .unwrap();
    assert_eq!(
        matrix_error(again),
        (409, "M_CANNOT_OVERWRITE_MEDIA".into())
    );
    let unknown = s
        .http
        .put(s.url(&format!("/_matrix/media/v3/upload/{server}/UnknownId123")))
        .bearer_auth(&u.alice)
        .body("x")
        .send()
        .unwrap();
    assert_eq!(matrix_error(unknown), (404, "M_NOT_FOUND".into()));

    // The pending limit (3 in the test config).
    for _ in 0..3 {
        assert_eq!(create(&u.bob).0, 200);
    }
    let response = s
        .http
        .post(s.url("/_matrix/media/v1/create"))
        .bearer_auth(&u.bob)
        .send()
        .unwrap();
    assert!(response.headers().get("retry-after").is_some());
    assert_eq!(matrix_error(response), (429, "M_LIMIT_EXCEEDED".into()));
}

fn bad_media_ids_are_refused_and_store_nothing(db: Db) {
    let s = stack(db);
    let u = users();
    let long = "a".repeat(300);
    let server = s.server_name.clone();
    let cases = [
        format!("{server}/.."),
        format!("{server}/%2e%2e"),
        format!("{server}/..%2F..%2Fetc%2Fpasswd"),
        format!("{server}/abc%00def"),
        format!("{server}/{long}"),
        format!("{server}/%C3%A9t%C3%A9"),
        format!("{server}/a.b"),
        "..%2F../abc".to_owned(),
        "%2e%2e/abc".to_owned(),
        "exa%00mple.org/abc".to_owned(),
        "ex%C3%A4mple.org/abc".to_owned(),
    ];
    for case in &cases {
        let download = s.get(
            &format!("/_matrix/client/v1/media/download/{case}"),
            Some(&u.alice),
        );
        let (status, errcode) = matrix_error(download);
        assert!(
            (status == 400 && errcode == "M_INVALID_PARAM")
                || (status == 404 && errcode == "M_UNRECOGNIZED"),
            "{case}: {status} {errcode}"
        );
        let put = s
            .http
            .put(s.url(&format!("/_matrix/media/v3/upload/{case}")))
            .bearer_auth(&u.alice)
            .body("x")
            .send()
            .unwrap();
        let (status, _) = matrix_error(put);
        assert!(status == 400 || status == 404, "{case}: {status}");
    }
    assert_eq!(s.media_rows(), 0);
    assert_eq!(s.datastore_files(), (0, 0));
}

fn awkward_filenames_round_trip(db: Db) {
    let s = stack(db);
    let u = users();
    for name in [
        "quote\"d.txt",
        "semi;colon.txt",
        "line\r\nbreak.txt",
        "cat 🐈 emoji.txt",
        "ünïcødé.txt",
        "a=b&c.txt",
    ] {
        let (server, id) = s.upload(&u.alice, b"x".to_vec(), "text/plain", Some(name));
        let response = s.download(&server, &id, &u.alice);
        assert_eq!(response.status(), 200);
        let disposition = header(&response, "content-disposition");
        assert!(!disposition.contains('\r') && !disposition.contains('\n'));
        let encoded = disposition
            .strip_prefix("inline; filename*=utf-8''")
            .unwrap_or_else(|| panic!("{disposition}"));
        let decoded = percent_decode(encoded);
        assert_eq!(decoded, name, "round trip of {name:?}");
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn oversized_uploads_are_refused_and_store_nothing(db: Db) {
    let s = stack(db);
    let u = users();
    // With Content-Length: refused before the body is read.
    let too_big = random_bytes(8_388_609);
    let response = s.upload_raw(&u.alice, too_big.clone(), Some("image/png"), "");
    assert_eq!(matrix_error(response), (413, "M_TOO_LARGE".into()));
    // Without Content-Length (chunked): refused once the limit is crossed.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        too_big.chunks(65_536).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::blocking::Body::new(ChunkReader::new(chunks));
    let response = s
        .http
        .post(s.url("/_matrix/media/v3/upload"))
        .bearer_auth(&u.alice)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(matrix_error(response), (413, "M_TOO_LARGE".into()));
    // Exactly the limit is fine.
    s.upload(
        &u.alice,
        random_bytes(8_388_608),
        "application/octet-stream",
        None,
    );
    wait_for_no_temp_files(&s);
    assert_eq!(s.media_rows(), 1);
    assert_eq!(s.datastore_files(), (1, 0));
}

/// A reader without a known length, so reqwest sends the body chunked.
struct ChunkReader {
    chunks: std::collections::VecDeque<Vec<u8>>,
}

impl ChunkReader {
    fn new(chunks: Vec<Result<Vec<u8>, std::io::Error>>) -> Self {
        ChunkReader {
            chunks: chunks.into_iter().filter_map(Result::ok).collect(),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(chunk) = self.chunks.front_mut() else {
            return Ok(0);
        };
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        chunk.drain(..n);
        if chunk.is_empty() {
            self.chunks.pop_front();
        }
        Ok(n)
    }
}

fn wait_for_no_temp_files(s: &Stack) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.datastore_files().1 > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn client_disconnect_mid_upload_stores_nothing(db: Db) {
    let s = stack(db);
    let u = users();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", s.repo.port())).unwrap();
    write!(
        stream,
        "POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: image/png\r\nContent-Length: 1000000\r\n\r\n",
        s.server_name, u.alice
    )
    .unwrap();
    stream.write_all(&random_bytes(200_000)).unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(stream);
    std::thread::sleep(Duration::from_millis(500));
    wait_for_no_temp_files(&s);
    assert_eq!(s.datastore_files(), (0, 0));
    assert_eq!(s.media_rows(), 0);
    // The server is fine afterwards.
    s.upload(&u.alice, b"after".to_vec(), "text/plain", None);
}

/// Uploads that arrive together (plain and async, two with identical bytes) all commit
/// through the database's writer: every one answers 200, serves its bytes, and leaves its
/// row and no claim, pending row or temp file behind.
fn concurrent_uploads_all_commit(db: Db) {
    /// Per user: the default cap on one user's concurrent uploads.
    const PLAIN_PER_USER: usize = 10;
    /// Bob's async uploads: `max_pending_per_user` of the test stacks.
    const ASYNC: usize = 3;
    let s = stack(db);
    let u = users();
    let shared = random_bytes(30_000);
    let mut jobs: Vec<(String, bool, Vec<u8>)> = Vec::new();
    for i in 0..PLAIN_PER_USER {
        let bytes = if i < 2 {
            shared.clone()
        } else {
            random_bytes(1_000 + i * 7_000)
        };
        jobs.push((u.alice.clone(), false, bytes));
    }
    for i in 0..PLAIN_PER_USER {
        jobs.push((u.bob.clone(), i < ASYNC, random_bytes(2_000 + i * 5_000)));
    }
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(jobs.len()));
    let threads: Vec<_> = jobs
        .into_iter()
        .map(|(token, via_create, bytes)| {
            let (http, base, barrier) = (s.http.clone(), s.repo.base_url(), barrier.clone());
            std::thread::spawn(move || {
                let put_to = via_create.then(|| {
                    let created: serde_json::Value = http
                        .post(format!("{base}/_matrix/media/v1/create"))
                        .bearer_auth(&token)
                        .send()
                        .unwrap()
                        .json()
                        .unwrap();
                    created["content_uri"].as_str().unwrap().to_owned()
                });
                barrier.wait();
                let mxc = match put_to {
                    Some(mxc) => {
                        let path = mxc.strip_prefix("mxc://").unwrap();
                        let response = http
                            .put(format!("{base}/_matrix/media/v3/upload/{path}"))
                            .bearer_auth(&token)
                            .body(bytes.clone())
                            .send()
                            .unwrap();
                        assert_eq!(response.status(), 200, "{:?}", response.text());
                        mxc
                    }
                    None => {
                        let response = http
                            .post(format!("{base}/_matrix/media/v3/upload"))
                            .bearer_auth(&token)
                            .body(bytes.clone())
                            .send()
                            .unwrap();
                        assert_eq!(response.status(), 200, "{:?}", response.text());
                        let body: serde_json::Value = response.json().unwrap();
                        body["content_uri"].as_str().unwrap().to_owned()
                    }
                };
                (token, mxc, bytes)
            })
        })
        .collect();
    let uploaded: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (token, mxc, bytes) in &uploaded {
        let (server, id) = mxc.strip_prefix("mxc://").unwrap().split_once('/').unwrap();
        let download = s.download(server, id, token);
        assert_eq!(download.status(), 200);
        assert!(download.bytes().unwrap().as_ref() == bytes.as_slice());
    }
    assert_eq!(s.media_rows(), 2 * PLAIN_PER_USER as u64);
    assert_eq!(s.count_rows("content_claims"), 0);
    assert_eq!(s.count_rows("pending_uploads"), 0);
    // The two identical uploads share one object.
    assert_eq!(s.datastore_files(), (2 * PLAIN_PER_USER - 1, 0));
}

fn unknown_paths_and_methods(db: Db) {
    let s = stack(db);
    let u = users();
    assert_eq!(
        matrix_error(s.get("/_matrix/media/v3/nonsense", Some(&u.alice))),
        (404, "M_UNRECOGNIZED".into())
    );
    assert_eq!(
        matrix_error(s.get("/", None)),
        (404, "M_UNRECOGNIZED".into())
    );
    let wrong = s
        .http
        .delete(s.url("/_matrix/media/v3/upload"))
        .bearer_auth(&u.alice)
        .send()
        .unwrap();
    assert_eq!(matrix_error(wrong), (405, "M_UNRECOGNIZED".into()));
    let wrong = s
        .http
        .post(s.url("/_matrix/client/v1/media/download/a/b"))
        .send()
        .unwrap();
    assert_eq!(matrix_error(wrong), (405, "M_UNRECOGNIZED".into()));
    let preflight = s
        .http
        .request(reqwest::Method::OPTIONS, s.url("/_matrix/media/v3/upload"))
        .send()
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert_eq!(header(&preflight, "access-control-allow-origin"), "*");
    let missing = s.download(&s.server_name, "NoSuchMedia", &u.alice);
    assert_eq!(matrix_error(missing), (404, "M_NOT_FOUND".into()));
}

fn legacy_download_freeze(db: Db) {
    // Default: everything this repo stores is frozen on the legacy (unauthenticated) paths.
    let s = stack(db);
    let u = users();
    let (server, id) = s.upload(&u.alice, b"legacy".to_vec(), "text/plain", None);
    for version in ["v3", "r0"] {
        let frozen = s.get(
            &format!("/_matrix/media/{version}/download/{server}/{id}"),
            None,
        );
        assert_eq!(matrix_error(frozen), (404, "M_NOT_FOUND".into()));
    }
    drop(s);
    // Freeze from a date in the future: media from before it is served unauthenticated.
    let s = Stack::start(Options {
        db,
        extra_yaml:
            "downloads:\n  legacy_freeze:\n    enabled: true\n    after_ms: 32503680000000\n",
        ..Options::default()
    });
    let (server, id) = s.upload(&u.alice, b"legacy".to_vec(), "text/plain", Some("l.txt"));
    for version in ["v3", "r0"] {
        let served = s.get(
            &format!("/_matrix/media/{version}/download/{server}/{id}"),
            None,
        );
        assert_eq!(served.status(), 200);
        assert_eq!(
            header(&served, "content-disposition"),
            "inline; filename=l.txt"
        );
        assert_eq!(served.bytes().unwrap().as_ref(), b"legacy");
    }
}

#[test]
fn an_unreachable_homeserver_is_a_clear_502() {
    let dead_port = integration::free_port();
    let yaml = format!(
        "server:\n  bind: \"127.0.0.1:{{port}}\"\n\
         homeservers:\n  - name: \"example.org\"\n    client_api_url: \"http://127.0.0.1:{dead_port}\"\n\
         database:\n  url: \"sqlite://{{dir}}/media-repo.db\"\n\
         datastores:\n  - id: default\n    kind: file\n    path: \"{{dir}}/media\"\n"
    );
    let repo = integration::MediaRepo::start(&yaml).unwrap();
    let http = reqwest::blocking::Client::new();
    let response = http
        .post(format!("{}/_matrix/media/v3/upload", repo.base_url()))
        .bearer_auth("some-token")
        .body("bytes")
        .send()
        .unwrap();
    assert!(response.headers().get("retry-after").is_some());
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().unwrap();
    assert_eq!(status, 502);
    assert_eq!(body["errcode"], "M_UNKNOWN");
    assert!(
        body["error"].as_str().unwrap().contains("example.org"),
        "{body}"
    );
    assert_eq!(crate::common::count_files(&repo.dir().join("media")), 0);
}
