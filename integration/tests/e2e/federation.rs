//! Federation with real homeservers: media-repo A serves hs1 (a Synapse whose federation
//! port is a TLS nginx routing media paths to A and the rest to hs1), hs2 is a second
//! Synapse. Certificates come from a test CA that A trusts through
//! `federation.extra_ca_file`; A may dial 127.0.0.1 through `federation.allowed_networks`.

use std::process::Command;
use std::time::{Duration, Instant};

use integration::federated_repo::{repo_yaml, trusting};
use integration::synapse::USER_PASSWORD;
use integration::{wait_until, FederatingSynapse, MediaRepo, Nginx, TestCa};
use mr_federation::{sign_request, RequestToSign, SigningKey};
use reqwest::blocking::Client;
use sha2::{Digest, Sha256};

use crate::common::{count_files, matrix_error, random_bytes};

/// One request, including a federation fetch with TLS handshakes and a key fetch.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Synapse or nginx may take to log a request after answering it.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

struct Stack {
    ca: TestCa,
    hs1: FederatingSynapse,
    hs2: FederatingSynapse,
    repo: MediaRepo,
    nginx: Nginx,
    /// Trusts the test CA.
    https: Client,
    http: Client,
}

impl Stack {
    fn start() -> Stack {
        let ca = TestCa::new().unwrap();
        let (hs1, hs2) = std::thread::scope(|s| {
            let hs1 = s.spawn(|| {
                FederatingSynapse::builder(&ca)
                    .behind_proxy()
                    .enable_media_repo(false)
                    .start()
            });
            let hs2 = s.spawn(|| FederatingSynapse::start(&ca));
            (hs1.join().unwrap().unwrap(), hs2.join().unwrap().unwrap())
        });
        let repo = MediaRepo::start(&repo_yaml(
            &hs1.server_name,
            &hs1.client_url(),
            &hs1.signing_key_path().display().to_string(),
            &trusting(&ca),
            "",
        ))
        .unwrap();
        let cert = ca.issue(&["127.0.0.1"]).unwrap();
        let nginx = Nginx::tls(&cert)
            .port(hs1.federation_port())
            .media_upstream(&repo.base_url())
            .federation_upstream(&hs1.internal_federation_url().unwrap())
            .client_upstream(&hs1.client_url())
            .start()
            .unwrap();
        let pem = ca.cert_pem().unwrap();
        let https = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .build()
            .unwrap();
        let http = Client::builder().timeout(REQUEST_TIMEOUT).build().unwrap();
        Stack {
            ca,
            hs1,
            hs2,
            repo,
            nginx,
            https,
            http,
        }
    }

    /// Another media-repo for hs1 like A (not behind hs1's nginx), with `extra` config.
    fn another_repo(&self, extra: &str) -> MediaRepo {
        MediaRepo::start(&repo_yaml(
            &self.hs1.server_name,
            &self.hs1.client_url(),
            &self.hs1.signing_key_path().display().to_string(),
            &trusting(&self.ca),
            extra,
        ))
        .unwrap()
    }

    /// Uploads on `hs`'s own client API; returns the media id.
    fn upload_on(&self, hs: &FederatingSynapse, token: &str, bytes: &[u8]) -> String {
        let body: serde_json::Value = self
            .http
            .post(format!(
                "{}/_matrix/media/v3/upload?filename=remote.bin",
                hs.client_url()
            ))
            .bearer_auth(token)
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .unwrap();
        let uri = body["content_uri"].as_str().unwrap();
        uri.rsplit('/').next().unwrap().to_owned()
    }

    /// A federation request to A's endpoint, signed by hs2 for `destination`.
    fn signed_get(
        &self,
        path: &str,
        destination: &str,
        signed_path: &str,
    ) -> reqwest::blocking::Response {
        self.signed_get_at(&self.repo, path, destination, signed_path)
    }

    /// [`Stack::signed_get`] to `repo`'s endpoint.
    fn signed_get_at(
        &self,
        repo: &MediaRepo,
        path: &str,
        destination: &str,
        signed_path: &str,
    ) -> reqwest::blocking::Response {
        let key = SigningKey::from_file(self.hs2.signing_key_path()).unwrap();
        let header = sign_request(
            &key,
            &RequestToSign {
                method: "GET".to_owned(),
                uri: signed_path.to_owned(),
                origin: self.hs2.server_name.clone(),
                destination: destination.to_owned(),
                content: None,
            },
        )
        .unwrap();
        self.http
            .get(format!("{}{path}", repo.base_url()))
            .header("Authorization", header)
            .send()
            .unwrap()
    }
}

#[test]
fn media_over_federation_with_two_synapses() {
    let s = Stack::start();
    let alice = s.hs1.user_token("alice").unwrap();
    let bob = s.hs2.user_token("bob").unwrap();

    // 1. A fetches hs2's media for an hs1 user: identical bytes, kept in A's datastore.
    let remote_bytes = random_bytes(700_000);
    let remote_id = s.upload_on(&s.hs2, &bob, &remote_bytes);
    let download_url = format!(
        "{}/_matrix/client/v1/media/download/{}/{remote_id}",
        s.hs1.federation_url(),
        s.hs2.server_name
    );
    let fetches_at_hs2 = || {
        s.hs2.count_requests(&format!(
            "/_matrix/federation/v1/media/download/{remote_id}"
        ))
    };
    for round in 0..2 {
        let response = s
            .https
            .get(&download_url)
            .bearer_auth(&alice)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "round {round}");
        assert!(response.bytes().unwrap().as_ref() == remote_bytes.as_slice());
        wait_until("hs2 to log the fetch", LOG_TIMEOUT, || {
            fetches_at_hs2() >= 1
        })
        .unwrap();
        assert_eq!(
            fetches_at_hs2(),
            1,
            "the second download is served from A's copy"
        );
    }
    let stored = s.repo.content_file(&remote_bytes);
    assert_eq!(std::fs::read(&stored).unwrap(), remote_bytes);

    // 2. hs2 fetches media uploaded through A over A's federation endpoint (through nginx
    //    on hs1's federation port), by a real client (matrix-nio) on hs2.
    let local_bytes = random_bytes(300_000);
    let uploaded: serde_json::Value = s
        .https
        .post(format!(
            "{}/_matrix/media/v3/upload",
            s.hs1.federation_url()
        ))
        .bearer_auth(&alice)
        .body(local_bytes.clone())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let local_uri = uploaded["content_uri"].as_str().unwrap().to_owned();
    let local_id = local_uri.rsplit('/').next().unwrap().to_owned();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/nio_download.py");
    let out = Command::new(integration::Synapse::shared().python())
        .arg(script)
        .arg(s.hs2.client_url())
        .arg("bob")
        .arg(USER_PASSWORD)
        .arg(&local_uri)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nio: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["sha256"], sha256_hex(&local_bytes));
    wait_until("nginx to log the federation request", LOG_TIMEOUT, || {
        s.nginx
            .count_requests(&format!("/_matrix/federation/v1/media/download/{local_id}"))
            == 1
    })
    .unwrap();
    assert_eq!(
        s.nginx.count_requests(&format!(
            "/_matrix/media/v3/download/{}/{local_id}",
            s.hs1.server_name
        )),
        0,
        "answered by our federation endpoint, not by Synapse's legacy fallback"
    );

    // 2b. Thumbnails over federation: hs2 asks our federation thumbnail endpoint for a
    //     thumbnail of A's image and serves its user the very bytes A serves its own.
    let png = crate::thumbnails::picture(400, 300, image::ImageFormat::Png);
    let uploaded: serde_json::Value = s
        .https
        .post(format!(
            "{}/_matrix/media/v3/upload",
            s.hs1.federation_url()
        ))
        .bearer_auth(&alice)
        .header("content-type", "image/png")
        .body(png)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let image_id = crate::common::media_id_in(&uploaded);
    let query = "width=96&height=96&method=crop";
    let ours = s
        .https
        .get(format!(
            "{}/_matrix/client/v1/media/thumbnail/{}/{image_id}?{query}",
            s.hs1.federation_url(),
            s.hs1.server_name
        ))
        .bearer_auth(&alice)
        .send()
        .unwrap();
    assert_eq!(ours.status(), 200);
    let ours = ours.bytes().unwrap();
    let via_hs2 = s
        .http
        .get(format!(
            "{}/_matrix/client/v1/media/thumbnail/{}/{image_id}?{query}",
            s.hs2.client_url(),
            s.hs1.server_name
        ))
        .bearer_auth(&bob)
        .send()
        .unwrap();
    assert_eq!(via_hs2.status(), 200);
    // (Synapse 1.163 fetches the original over federation and makes its own thumbnail.)
    let via = via_hs2.bytes().unwrap();
    assert!(
        image::load_from_memory(&via).is_ok(),
        "hs2 serves a thumbnail"
    );
    // Our federation thumbnail endpoint answers with the very bytes our clients get.
    let thumb_path = format!("/_matrix/federation/v1/media/thumbnail/{image_id}?{query}");
    let federated = s.signed_get(&thumb_path, &s.hs1.server_name, &thumb_path);
    assert_eq!(federated.status(), 200);
    assert!(federated.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("multipart/mixed; boundary="));
    let body = federated.bytes().unwrap();
    assert!(
        body.windows(ours.len())
            .any(|window| window == ours.as_ref()),
        "the federation thumbnail carries the same bytes"
    );

    // 2c. An async upload over federation: our endpoint waits up to the asker's
    //     `timeout_ms` for the bytes (504 M_NOT_YET_UPLOADED without them), so hs2's user,
    //     asking before the bytes are there, gets them once they arrive.
    let created: serde_json::Value = s
        .https
        .post(format!(
            "{}/_matrix/media/v1/create",
            s.hs1.federation_url()
        ))
        .bearer_auth(&alice)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let pending_id = crate::common::media_id_in(&created);
    let pending_path = format!("/_matrix/federation/v1/media/download/{pending_id}?timeout_ms=0");
    assert_eq!(
        matrix_error(s.signed_get(&pending_path, &s.hs1.server_name, &pending_path)),
        (504, "M_NOT_YET_UPLOADED".into())
    );
    //     A bad thumbnail request for it is refused at once, not after the wait.
    let bad_thumbnail = format!(
        "/_matrix/federation/v1/media/thumbnail/{pending_id}?width=abc&height=32&timeout_ms=20000"
    );
    let started = Instant::now();
    assert_eq!(
        matrix_error(s.signed_get(&bad_thumbnail, &s.hs1.server_name, &bad_thumbnail)),
        (400, "M_INVALID_PARAM".into())
    );
    assert!(started.elapsed() < Duration::from_secs(10), "no wait");
    let late_bytes = random_bytes(50_000);
    let via_hs2 = std::thread::scope(|scope| {
        let asking = scope.spawn(|| {
            s.http
                .get(format!(
                    "{}/_matrix/client/v1/media/download/{}/{pending_id}?timeout_ms=20000",
                    s.hs2.client_url(),
                    s.hs1.server_name
                ))
                .bearer_auth(&bob)
                .send()
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(1500));
        let put = s
            .https
            .put(format!(
                "{}/_matrix/media/v3/upload/{}/{pending_id}",
                s.hs1.federation_url(),
                s.hs1.server_name
            ))
            .bearer_auth(&alice)
            .body(late_bytes.clone())
            .send()
            .unwrap();
        assert_eq!(put.status(), 200);
        asking.join().unwrap()
    });
    assert_eq!(via_hs2.status(), 200, "hs2 waited for the upload on A");
    assert!(via_hs2.bytes().unwrap().as_ref() == late_bytes.as_slice());

    // 3. Our federation endpoint checks X-Matrix.
    let path = format!("/_matrix/federation/v1/media/download/{local_id}");
    let no_auth = s
        .http
        .get(format!("{}{path}", s.repo.base_url()))
        .send()
        .unwrap();
    assert_eq!(matrix_error(no_auth), (401, "M_UNAUTHORIZED".into()));
    let garbage = s
        .http
        .get(format!("{}{path}", s.repo.base_url()))
        .header("Authorization", "X-Matrix origin=nobody")
        .send()
        .unwrap();
    assert_eq!(matrix_error(garbage), (401, "M_UNAUTHORIZED".into()));
    let other_path = s.signed_get(
        &path,
        &s.hs1.server_name,
        "/_matrix/federation/v1/media/download/other",
    );
    assert_eq!(matrix_error(other_path), (401, "M_UNAUTHORIZED".into()));
    let not_us = s.signed_get(&path, "elsewhere.test", &path);
    assert_eq!(matrix_error(not_us), (401, "M_UNAUTHORIZED".into()));
    let unknown = "/_matrix/federation/v1/media/download/NoSuchMedia123";
    assert_eq!(
        matrix_error(s.signed_get(unknown, &s.hs1.server_name, unknown)),
        (404, "M_NOT_FOUND".into())
    );
    // Remote media is never served over federation, even the copy A keeps.
    let remote_path = format!("/_matrix/federation/v1/media/download/{remote_id}");
    assert_eq!(
        matrix_error(s.signed_get(&remote_path, &s.hs1.server_name, &remote_path)),
        (404, "M_NOT_FOUND".into())
    );
    let ok = s.signed_get(&path, &s.hs1.server_name, &path);
    assert_eq!(ok.status(), 200);
    assert!(ok.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("multipart/mixed; boundary="));

    // 4. Legacy paths: with the freeze on (the default), never a remote fetch.
    let unfetched_id = s.upload_on(&s.hs2, &bob, b"never fetched");
    let legacy = format!(
        "/_matrix/media/v3/download/{}/{unfetched_id}",
        s.hs2.server_name
    );
    let frozen = s
        .http
        .get(format!("{}{legacy}", s.repo.base_url()))
        .send()
        .unwrap();
    assert_eq!(frozen.status(), 404);
    //    With it off: allow_remote=false never fetches, and without it the legacy path does.
    let unfrozen = s.another_repo("downloads:\n  legacy_freeze:\n    enabled: false\n");
    let no_remote = s
        .http
        .get(format!(
            "{}{legacy}?allow_remote=false",
            unfrozen.base_url()
        ))
        .send()
        .unwrap();
    assert_eq!(no_remote.status(), 404);
    let unfetched_path = format!("/_matrix/federation/v1/media/download/{unfetched_id}");
    assert_eq!(
        s.hs2.count_requests(&unfetched_path),
        0,
        "no remote request"
    );
    let fetched = s
        .http
        .get(format!("{}{legacy}", unfrozen.base_url()))
        .send()
        .unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.bytes().unwrap().as_ref(), b"never fetched");

    // 5. A certificate the repo does not trust: 502, quickly, nothing stored.
    let untrusting = MediaRepo::start(&repo_yaml(
        &s.hs1.server_name,
        &s.hs1.client_url(),
        &s.hs1.signing_key_path().display().to_string(),
        "  allowed_networks: [\"127.0.0.1\"]\n",
        "",
    ))
    .unwrap();
    let started = Instant::now();
    let refused = s
        .http
        .get(format!(
            "{}/_matrix/client/v1/media/download/{}/{remote_id}",
            untrusting.base_url(),
            s.hs2.server_name
        ))
        .bearer_auth(&alice)
        .send()
        .unwrap();
    assert_eq!(matrix_error(refused).0, 502);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(count_files(&untrusting.dir().join("media")), 0);

    // 6. A media whose file is gone from the datastore (no cache to serve it from): 404
    //    over federation, as on the client endpoint, not a 500.
    let uncached = s.another_repo("cache:\n  backend: none\n");
    let lost_bytes = random_bytes(10_000);
    let uploaded: serde_json::Value = s
        .http
        .post(format!("{}/_matrix/media/v3/upload", uncached.base_url()))
        .bearer_auth(&alice)
        .body(lost_bytes.clone())
        .send()
        .unwrap()
        .json()
        .unwrap();
    let lost_id = crate::common::media_id_in(&uploaded);
    std::fs::remove_file(uncached.content_file(&lost_bytes)).unwrap();
    let lost_path = format!("/_matrix/federation/v1/media/download/{lost_id}");
    assert_eq!(
        matrix_error(s.signed_get_at(&uncached, &lost_path, &s.hs1.server_name, &lost_path)),
        (404, "M_NOT_FOUND".into())
    );
    let client = s
        .http
        .get(format!(
            "{}/_matrix/client/v1/media/download/{}/{lost_id}",
            uncached.base_url(),
            s.hs1.server_name
        ))
        .bearer_auth(&alice)
        .send()
        .unwrap();
    assert_eq!(matrix_error(client), (404, "M_NOT_FOUND".into()));
}

/// A small remote server for what Synapse cannot be made to do: plain HTTP behind a TLS
/// nginx, answering each path from a script, counting the requests it gets.
mod scripted {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    /// What to answer for a request path: status line, headers and body.
    pub type Script = Arc<dyn Fn(&str) -> (String, Vec<(String, String)>, Vec<u8>) + Send + Sync>;

    /// Answers for paths containing "stalled" or "held" stop after this many body bytes (more than
    /// media-repo's STREAM_AFTER_BYTES, 1 MiB) until [`Remote::release`] (or 20 s).
    pub const STALL_AFTER: usize = 1_200_000;

    pub struct Remote {
        pub port: u16,
        pub requests: Arc<Mutex<Vec<String>>>,
        released: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Remote {
        pub fn start(ip: &str, script: Script) -> Remote {
            let listener = TcpListener::bind((ip, 0)).unwrap();
            let port = listener.local_addr().unwrap().port();
            let requests = Arc::new(Mutex::new(Vec::new()));
            let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (seen, gate) = (requests.clone(), released.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let (script, seen, gate) = (script.clone(), seen.clone(), gate.clone());
                    std::thread::spawn(move || answer(stream, &script, &seen, &gate));
                }
            });
            Remote {
                port,
                requests,
                released,
            }
        }

        /// Lets stalled answers finish.
        pub fn release(&self) {
            self.released
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }

        pub fn count(&self, needle: &str) -> usize {
            self.requests
                .lock()
                .unwrap()
                .iter()
                .filter(|p| p.contains(needle))
                .count()
        }
    }

    fn answer(
        stream: TcpStream,
        script: &Script,
        seen: &Mutex<Vec<String>>,
        released: &std::sync::atomic::AtomicBool,
    ) {
        let mut reader = BufReader::new(stream);
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).is_err() {
            return;
        }
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {}
            }
        }
        let path = request_line
            .split(' ')
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        seen.lock().unwrap().push(path.clone());
        let (status, headers, body) = script(&path);
        let mut out = reader.into_inner();
        let mut head = format!(
            "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head += &format!("{name}: {value}\r\n");
        }
        head += "\r\n";
        let _ = out.write_all(head.as_bytes());
        if (path.contains("stalled") || path.contains("held")) && body.len() > STALL_AFTER {
            let _ = out.write_all(&body[..STALL_AFTER]);
            let _ = out.flush();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while !released.load(std::sync::atomic::Ordering::SeqCst)
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = out.write_all(&body[STALL_AFTER..]);
        } else {
            let _ = out.write_all(&body);
        }
    }

    /// A federation media answer: `{}` then the bytes, or a Location part.
    pub fn multipart(
        bytes: Option<&[u8]>,
        location: Option<&str>,
    ) -> (String, Vec<(String, String)>, Vec<u8>) {
        let boundary = "6b1a7e0c55f24b2d";
        let mut body = format!(
            "\r\n--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\n"
        )
        .into_bytes();
        match (bytes, location) {
            (Some(bytes), _) => {
                body.extend_from_slice(b"Content-Type: text/plain\r\nContent-Disposition: attachment; filename=scripted.txt\r\n\r\n");
                body.extend_from_slice(bytes);
            }
            (None, Some(location)) => {
                body.extend_from_slice(format!("Location: {location}\r\n\r\n").as_bytes())
            }
            (None, None) => {}
        }
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        (
            "200 OK".to_owned(),
            vec![(
                "Content-Type".to_owned(),
                format!("multipart/mixed; boundary={boundary}"),
            )],
            body,
        )
    }
}

/// The body of the scripted "stalled" media: more than the remote sends before it stalls.
fn stalled_bytes() -> Vec<u8> {
    (0..scripted::STALL_AFTER as u32 + 50_000)
        .map(|i| (i % 253) as u8)
        .collect()
}

/// Fetch paths Synapse cannot produce, against a scripted remote behind TLS nginx.
#[test]
fn remote_fetch_limits_redirects_fallback_and_backoff() {
    use std::sync::Arc;

    use scripted::{multipart, Remote};

    let ca = TestCa::new().unwrap();
    // 127.0.0.2 is loopback but not on the allow-list: a redirect there must not connect.
    let forbidden = Remote::start(
        "127.0.0.2",
        Arc::new(|_| ("200 OK".to_owned(), vec![], b"leaked".to_vec())),
    );
    let raw_port = std::sync::OnceLock::<u16>::new();
    let raw_port = Arc::new(raw_port);
    let script_port = raw_port.clone();
    let forbidden_port = forbidden.port;
    // The scripted origin's own name and key, for its (expired) key document.
    let origin_name = Arc::new(std::sync::OnceLock::<String>::new());
    let script_origin = origin_name.clone();
    let origin_key = Arc::new(SigningKey::from_seed("remote1", [9u8; 32]).unwrap());
    let script_key = origin_key.clone();
    // "pending" is an async upload that is not there at the first request, then is.
    let pending_asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let script_pending = pending_asked.clone();
    let remote = Remote::start(
        "127.0.0.1",
        Arc::new(move |path: &str| {
            if path == "/_matrix/key/v2/server" {
                let an_hour_ago = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64
                    - 3_600_000;
                let name = script_origin.get().cloned().unwrap_or_default();
                let document =
                    mr_federation::our_key_document(&name, &script_key, an_hour_ago).unwrap();
                return (
                    "200 OK".to_owned(),
                    vec![("Content-Type".into(), "application/json".into())],
                    document.to_string().into_bytes(),
                );
            }
            let id = path
                .split('?')
                .next()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap_or_default();
            let raw = format!(
                "http://127.0.0.1:{}/raw/{id}",
                script_port.get().copied().unwrap_or(0)
            );
            if path.starts_with("/raw/") {
                return (
                    "200 OK".to_owned(),
                    vec![("Content-Type".into(), "text/plain".into())],
                    format!("raw bytes of {id}").into_bytes(),
                );
            }
            if path.starts_with("/_matrix/media/v3/download/") {
                return (
                    "200 OK".to_owned(),
                    vec![("Content-Type".into(), "text/plain".into())],
                    b"legacy bytes".to_vec(),
                );
            }
            match id {
                "small" => multipart(Some(b"small bytes"), None),
                "pending"
                    if script_pending.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 =>
                {
                    (
                        "504 Gateway Timeout".to_owned(),
                        vec![("Content-Type".into(), "application/json".into())],
                        br#"{"errcode":"M_NOT_YET_UPLOADED","error":"not yet"}"#.to_vec(),
                    )
                }
                "pending" => multipart(Some(b"uploaded at last"), None),
                "waited" => multipart(Some(b"waited for"), None),
                "stalled" | "held" => multipart(Some(&stalled_bytes()), None),
                "small-3" => multipart(Some(b"small bytes"), None),
                "big" => multipart(Some(&vec![b'x'; 300_000]), None),
                "malformed" => {
                    let (status, headers, mut body) = multipart(Some(b"cut short"), None);
                    body.truncate(body.len() - 10);
                    (status, headers, body)
                }
                "redirected" => multipart(None, Some(&raw)),
                "forbidden" => multipart(
                    None,
                    Some(&format!("http://127.0.0.2:{forbidden_port}/raw/x")),
                ),
                "legacy" => (
                    "404 Not Found".to_owned(),
                    vec![("Content-Type".into(), "application/json".into())],
                    br#"{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}"#.to_vec(),
                ),
                "broken" => (
                    "500 Internal Server Error".to_owned(),
                    vec![],
                    b"oops".to_vec(),
                ),
                _ => (
                    "404 Not Found".to_owned(),
                    vec![("Content-Type".into(), "application/json".into())],
                    br#"{"errcode":"M_NOT_FOUND","error":"no"}"#.to_vec(),
                ),
            }
        }),
    );
    raw_port.set(remote.port).unwrap();
    let cert = ca.issue(&["127.0.0.1"]).unwrap();
    let nginx = Nginx::tls(&cert)
        .client_upstream(&format!("http://127.0.0.1:{}", remote.port))
        .start()
        .unwrap();
    let origin = format!("127.0.0.1:{}", nginx.port());
    origin_name.set(origin.clone()).unwrap();

    // Our homeserver for auth: the shared Synapse; our signing key: made here.
    let synapse = integration::Synapse::shared();
    let token = crate::common::users().alice.clone();
    let key_dir = tempfile::tempdir().unwrap();
    let key_path = key_dir.path().join("signing.key");
    let key = SigningKey::from_seed("test1", [7u8; 32]).unwrap();
    std::fs::write(&key_path, key.to_key_file_line()).unwrap();
    let repo = MediaRepo::start(&repo_yaml(
        &synapse.server_name,
        &synapse.base_url(),
        &key_path.display().to_string(),
        &trusting(&ca),
        "downloads:\n  max_bytes: 280000\n",
    ))
    .unwrap();
    // A second repo with the default limit, for a media large enough to be streamed.
    let streaming_repo = MediaRepo::start(&repo_yaml(
        &synapse.server_name,
        &synapse.base_url(),
        &key_path.display().to_string(),
        &trusting(&ca),
        "",
    ))
    .unwrap();
    let http = Client::builder().timeout(REQUEST_TIMEOUT).build().unwrap();
    let get_from = |repo: &MediaRepo, id: &str| {
        http.get(format!(
            "{}/_matrix/client/v1/media/download/{origin}/{id}",
            repo.base_url()
        ))
        .bearer_auth(&token)
        .send()
        .unwrap()
    };
    let get = |id: &str| get_from(&repo, id);
    let body_of = |id: &str| {
        let response = get(id);
        assert_eq!(response.status(), 200, "{id}");
        response.bytes().unwrap().to_vec()
    };

    assert_eq!(body_of("small"), b"small bytes");
    // The fetch runs on its own task; its log lines name the media and the request.
    let logs = repo.logs();
    let fetched = logs
        .lines()
        .find(|line| line.contains("remote media fetched"))
        .expect("the fetch is logged");
    assert!(
        fetched.contains(&format!("remote_fetch{{mxc=mxc://{origin}/small"))
            && fetched.contains("request{"),
        "{fetched}"
    );

    // An async upload still pending at its origin: the origin is told how long it may
    // wait, its 504 M_NOT_YET_UPLOADED is passed on, and nothing is backed off: asked
    // again, the origin is asked again and answers with the bytes.
    assert_eq!(
        matrix_error(get("pending")),
        (504, "M_NOT_YET_UPLOADED".into())
    );
    assert_eq!(body_of("pending"), b"uploaded at last");
    assert_eq!(remote.count("/pending"), 2);
    assert!(
        remote
            .requests
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.ends_with("/pending?timeout_ms=10000")),
        "half of federation.request_timeout_ms (20 s)"
    );
    //    A client that waits less has the origin wait no longer either.
    let waited = http
        .get(format!(
            "{}/_matrix/client/v1/media/download/{origin}/waited?timeout_ms=1500",
            repo.base_url()
        ))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(waited.status(), 200);
    assert!(
        remote
            .requests
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.ends_with("/waited?timeout_ms=1500")),
        "the client's timeout_ms"
    );

    // Fetches running at once are capped: with one allowed (a held one),
    // a second media is refused with 429 and its origin is not asked.
    let one_at_a_time = MediaRepo::start(&repo_yaml(
        &synapse.server_name,
        &synapse.base_url(),
        &key_path.display().to_string(),
        &format!("{}  max_concurrent_fetches: 1\n", trusting(&ca)),
        "",
    ))
    .unwrap();
    {
        use std::io::Read;
        let mut held = get_from(&one_at_a_time, "held");
        assert_eq!(held.status(), 200);
        let mut some = vec![0u8; 1000];
        held.read_exact(&mut some).unwrap();
        let refused = get_from(&one_at_a_time, "small-3");
        assert!(refused.headers().get("retry-after").is_some());
        assert_eq!(matrix_error(refused), (429, "M_LIMIT_EXCEEDED".into()));
        assert_eq!(remote.count("/small-3"), 0);
        drop(held);
    }

    // Bytes reach the client while the fetch still runs: the first client reads what the
    // remote sent before it stalled; a second client joins the same fetch.
    {
        use std::io::Read;
        let expected = stalled_bytes();
        let mut first = get_from(&streaming_repo, "stalled");
        assert_eq!(first.status(), 200);
        let mut head = vec![0u8; 100_000];
        first
            .read_exact(&mut head)
            .expect("bytes before the remote finished");
        assert!(head == expected[..100_000]);
        let second = std::thread::scope(|scope| {
            let joining = scope.spawn(|| {
                let response = get_from(&streaming_repo, "stalled");
                assert_eq!(response.status(), 200);
                response.bytes().unwrap().to_vec()
            });
            std::thread::sleep(Duration::from_millis(300));
            remote.release();
            joining.join().unwrap()
        });
        let mut rest = Vec::new();
        first.read_to_end(&mut rest).unwrap();
        head.extend_from_slice(&rest);
        assert!(head == expected, "the first client got every byte");
        assert!(second == expected, "the joining client got every byte");
        assert_eq!(remote.count("/stalled"), 1, "one fetch for both");
    }

    assert_eq!(matrix_error(get("big")), (502, "M_TOO_LARGE".into()));
    assert_eq!(matrix_error(get("malformed")).0, 502);
    assert_eq!(body_of("redirected"), b"raw bytes of redirected");
    assert_eq!(remote.count("/raw/redirected"), 1);
    assert_eq!(matrix_error(get("forbidden")).0, 502);
    assert_eq!(
        forbidden.requests.lock().unwrap().len(),
        0,
        "a refused address is never dialled"
    );
    assert_eq!(body_of("legacy"), b"legacy bytes");
    assert_eq!(remote.count("/_matrix/media/v3/download/"), 1);
    assert!(remote
        .requests
        .lock()
        .unwrap()
        .iter()
        .any(|p| p.ends_with("/legacy?allow_remote=false&allow_redirect=true&timeout_ms=10000")));
    assert_eq!(matrix_error(get("unknown")), (404, "M_NOT_FOUND".into()));
    // Nothing of the refused ones was kept: only small, pending, waited, redirected and
    // legacy are stored.
    let media = repo.dir().join("media");
    assert_eq!(count_files(&media) - count_files(&media.join("tmp")), 5);
    assert_eq!(count_files(&media.join("tmp")), 0);

    // A broken origin: 502, then backed off: neither that media nor another one from the
    // same origin is asked for again at once.
    let started = Instant::now();
    assert_eq!(matrix_error(get("broken")).0, 502);
    let broken = remote.count("/broken");
    assert_eq!(broken, 1);
    let again = get("broken");
    assert!(again.headers().get("retry-after").is_some());
    assert_eq!(matrix_error(again).0, 502);
    assert_eq!(
        matrix_error(get("small-2")).0,
        502,
        "the origin is backed off"
    );
    assert_eq!(remote.count("/broken"), 1);
    assert_eq!(remote.count("/small-2"), 0);
    assert!(started.elapsed() < Duration::from_secs(5));

    // The metrics tell each of these fetches by how it ended, and the back-offs.
    let metric = |name: &str| repo.metric_value(name).unwrap_or(-1.0);
    for (outcome, count) in [
        ("stored", 5.0), // small, pending, waited, redirected, legacy
        ("not_found", 1.0),
        ("not_yet_uploaded", 1.0),
        ("too_large", 1.0),
        ("timeout", 0.0),
        ("failed", 3.0), // malformed, forbidden, broken
        ("error", 0.0),
    ] {
        assert_eq!(
            metric(&format!(
                "media_repo_remote_fetches_total{{outcome=\"{outcome}\"}}"
            )),
            count,
            "{outcome}"
        );
    }
    let stored_bytes = [
        "small bytes",
        "uploaded at last",
        "waited for",
        "raw bytes of redirected",
        "legacy bytes",
    ]
    .iter()
    .map(|b| b.len())
    .sum::<usize>();
    assert_eq!(
        metric("media_repo_remote_stored_bytes_total{source=\"origin\"}"),
        stored_bytes as f64
    );
    assert_eq!(
        metric("media_repo_remote_stored_bytes_total{source=\"shared_cache\"}"),
        0.0
    );
    assert_eq!(
        metric("media_repo_remote_backoff_refusals_total{scope=\"media\"}"),
        1.0
    );
    assert_eq!(
        metric("media_repo_remote_backoff_refusals_total{scope=\"origin\"}"),
        1.0
    );
    assert_eq!(metric("media_repo_remote_fetches_in_flight"), 0.0);

    // A request for our media signed by an origin whose key document has expired: 401.
    let ours = crate::common::users();
    let uploaded: serde_json::Value = http
        .post(format!("{}/_matrix/media/v3/upload", repo.base_url()))
        .bearer_auth(&ours.alice)
        .body("ours")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let our_id = crate::common::media_id_in(&uploaded);
    let path = format!("/_matrix/federation/v1/media/download/{our_id}");
    let header = sign_request(
        &origin_key,
        &RequestToSign {
            method: "GET".to_owned(),
            uri: path.clone(),
            origin: origin.clone(),
            destination: synapse.server_name.clone(),
            content: None,
        },
    )
    .unwrap();
    let expired = http
        .get(format!("{}{path}", repo.base_url()))
        .header("Authorization", header)
        .send()
        .unwrap();
    assert_eq!(matrix_error(expired), (401, "M_UNAUTHORIZED".into()));
    assert_eq!(
        remote.count("/_matrix/key/v2/server"),
        1,
        "the key was asked for, and refused"
    );

    // An origin that does not answer at all: 502 within the connect timeout.
    let dead = integration::free_port();
    let started = Instant::now();
    let response = http
        .get(format!(
            "{}/_matrix/client/v1/media/download/127.0.0.1:{dead}/x",
            repo.base_url()
        ))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(matrix_error(response).0, 502);
    assert!(started.elapsed() < Duration::from_secs(6));
}

/// A homeserver without a signing key fetches no remote media, and the log says so once.
#[test]
fn without_a_signing_key_remote_media_is_not_fetched() {
    let synapse = integration::Synapse::shared();
    let token = crate::common::users().alice.clone();
    let yaml = format!(
        "server:\n  bind: \"127.0.0.1:{{port}}\"\n\
         homeservers:\n  - name: \"{}\"\n    client_api_url: \"{}\"\n\
         database:\n  url: \"sqlite://{{dir}}/media-repo.db\"\n\
         datastores:\n  - id: default\n    kind: file\n    path: \"{{dir}}/media\"\n\
         federation:\n  allowed_networks: [\"127.0.0.1\"]\n",
        synapse.server_name,
        synapse.base_url()
    );
    let repo = MediaRepo::start(&yaml).unwrap();
    // A remote that would count any request made to it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let origin = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let response = Client::new()
        .get(format!(
            "{}/_matrix/client/v1/media/download/{origin}/abc",
            repo.base_url()
        ))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(matrix_error(response), (404, "M_NOT_FOUND".into()));
    assert!(
        listener.accept().is_err(),
        "no connection was made to the remote"
    );
    let lines = repo
        .logs()
        .lines()
        .filter(|l| l.contains("no signing_key_path"))
        .count();
    assert_eq!(lines, 1, "{}", repo.logs());
}
