//! Quarantine and the admin API. Media-repos A and B both serve hs1 and share three real
//! redis-server shards; hs2 is another Synapse (with its own media repo: a remote origin,
//! and the reference for Synapse's admin answers).
//!
//! After a quarantine on A, no shard holds the media's blob, its thumbnails' blobs or its
//! shared record — copies planted on every shard (what a reshard or another repo leaves)
//! and a shard paused during the quarantine included — and A answers 404 on the download,
//! thumbnail and federation paths; new uploads of the bytes are refused; lifting the
//! quarantine serves the media again. For each kind: media, user, origin, content hash.

use std::time::Duration;

use image::ImageFormat;
use integration::federated_repo::{redis_cache_yaml, start_repo_for};
use integration::{wait_until, FederatingSynapse, MediaRepo, RedisServer, TestCa};
use mr_federation::{sign_request, RequestToSign, SigningKey};
use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::common::{count_files, matrix_error, media_id, random_bytes, sqlite_count, urlencode};
use crate::thumbnails::picture;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Cache fills and evictions that wait for a shard run in the background.
const CACHE_TIMEOUT: Duration = Duration::from_secs(15);

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

struct Stack {
    hs1: FederatingSynapse,
    hs2: FederatingSynapse,
    shards: Vec<RedisServer>,
    a: MediaRepo,
    b: MediaRepo,
    http: Client,
    _ca: TestCa,
}

impl Stack {
    /// `extra` is appended to both repos' config.
    fn start(extra: &str) -> Stack {
        let ca = TestCa::new().unwrap();
        let (hs1, hs2) = std::thread::scope(|s| {
            let hs1 = s.spawn(|| {
                FederatingSynapse::builder(&ca)
                    .enable_media_repo(false)
                    .start()
            });
            let hs2 = s.spawn(|| FederatingSynapse::start(&ca));
            (hs1.join().unwrap().unwrap(), hs2.join().unwrap().unwrap())
        });
        let shards: Vec<RedisServer> = (0..3).map(|_| RedisServer::start().unwrap()).collect();
        let config = redis_cache_yaml(&shards) + &extra.replace("{hs1}", &hs1.server_name);
        let a = start_repo_for(&hs1, &ca, &config).unwrap();
        let b = start_repo_for(&hs1, &ca, &config).unwrap();
        Stack {
            hs1,
            hs2,
            shards,
            a,
            b,
            http: Client::builder().timeout(REQUEST_TIMEOUT).build().unwrap(),
            _ca: ca,
        }
    }

    fn upload_to(&self, base_url: &str, token: &str, bytes: &[u8], name: &str) -> Response {
        self.http
            .post(format!(
                "{base_url}/_matrix/media/v3/upload?filename={name}"
            ))
            .bearer_auth(token)
            .header("Content-Type", "image/png")
            .body(bytes.to_vec())
            .send()
            .unwrap()
    }

    /// Uploads to A; returns the media id.
    fn upload(&self, token: &str, bytes: &[u8]) -> String {
        media_id(self.upload_to(&self.a.base_url(), token, bytes, "picture.png"))
    }

    fn download(&self, repo: &MediaRepo, token: &str, origin: &str, id: &str) -> Response {
        self.http
            .get(format!(
                "{}/_matrix/client/v1/media/download/{origin}/{id}",
                repo.base_url()
            ))
            .bearer_auth(token)
            .send()
            .unwrap()
    }

    fn thumbnail(&self, token: &str, id: &str) -> Response {
        self.http
            .get(format!(
                "{}/_matrix/client/v1/media/thumbnail/{}/{id}?width=96&height=96&method=crop",
                self.a.base_url(),
                self.hs1.server_name
            ))
            .bearer_auth(token)
            .send()
            .unwrap()
    }

    /// A's federation download of its media `id`, signed by hs2.
    fn federation_download(&self, id: &str) -> Response {
        let path = format!("/_matrix/federation/v1/media/download/{id}");
        let key = SigningKey::from_file(self.hs2.signing_key_path()).unwrap();
        let header = sign_request(
            &key,
            &RequestToSign {
                method: "GET".to_owned(),
                uri: path.clone(),
                origin: self.hs2.server_name.clone(),
                destination: self.hs1.server_name.clone(),
                content: None,
            },
        )
        .unwrap();
        self.http
            .get(format!("{}{path}", self.a.base_url()))
            .header("Authorization", header)
            .send()
            .unwrap()
    }

    fn post(&self, base_url: &str, path: &str, token: Option<&str>) -> Response {
        let request = self.http.post(format!("{base_url}{path}")).json(&json!({}));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
        .unwrap()
    }

    /// An admin call on A that must succeed; its JSON answer.
    fn admin_post(&self, token: &str, path: &str) -> Value {
        let response = self.post(&self.a.base_url(), path, Some(token));
        assert_eq!(response.status(), 200, "{path}");
        response.json().unwrap()
    }

    /// Per shard: how many keys contain `needle` (a content hash or `{origin/id}`).
    fn keys_with(&self, needle: &str) -> Vec<usize> {
        self.shards
            .iter()
            .map(|shard| {
                shard
                    .cli(&["KEYS", &format!("*{needle}*")])
                    .unwrap()
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .count()
            })
            .collect()
    }

    /// Writes `key` on every shard, as a copy a reshard or another repo may leave behind.
    fn plant_everywhere(&self, key: &str) {
        for shard in &self.shards {
            shard.cli(&["SET", key, "a copy elsewhere"]).unwrap();
        }
    }

    /// Waits until no shard holds a key containing any of `needles`.
    fn wait_until_gone(&self, needles: &[String]) {
        wait_until("no shard to hold the media", CACHE_TIMEOUT, || {
            needles
                .iter()
                .all(|n| self.keys_with(n).iter().all(|&k| k == 0))
        })
        .unwrap_or_else(|_| {
            let left: Vec<(String, Vec<usize>)> = needles
                .iter()
                .map(|n| (n.clone(), self.keys_with(n)))
                .collect();
            panic!("keys left on the shards: {left:?}")
        });
    }

    /// Waits until some shard holds the blob of `sha` (a download's fill is background).
    fn wait_until_cached(&self, sha: &str) {
        wait_until("the blob to be cached", CACHE_TIMEOUT, || {
            self.keys_with(sha).iter().sum::<usize>() > 0
        })
        .unwrap();
    }

    fn a_media_rows(&self) -> u64 {
        let out = sqlite_count(
            &self.a.dir().join("media-repo.db"),
            "SELECT COUNT(*) FROM media",
        );
        out.trim().parse().unwrap()
    }

    fn a_temp_files(&self) -> usize {
        count_files(&self.a.dir().join("media").join("tmp"))
    }

    /// An upload of `bytes` is refused with 403, leaving no row and no file.
    fn assert_upload_refused(&self, token: &str, bytes: &[u8]) {
        let rows = self.a_media_rows();
        let response = self.upload_to(&self.a.base_url(), token, bytes, "again.png");
        assert_eq!(matrix_error(response), (403, "M_FORBIDDEN".to_owned()));
        assert_eq!(self.a_media_rows(), rows, "no row for a refused upload");
        wait_until(
            "the refused upload's temp file to go",
            CACHE_TIMEOUT,
            || self.a_temp_files() == 0,
        )
        .unwrap();
    }
}

#[test]
fn quarantine_reaches_every_shard_of_two_repos() {
    let s = Stack::start("");
    let admin = s.hs1.admin_token("root").unwrap();
    let alice = s.hs1.user_token("alice").unwrap();
    let bob = s.hs1.user_token("bob").unwrap();
    let hs1 = s.hs1.server_name.clone();
    let synapse = "/_synapse/admin/v1";
    let own = "/_media_repo/v1/admin";

    // --- By media (Synapse's endpoint), with a shard paused while it runs. ---
    let image = picture(300, 200, ImageFormat::Png);
    let sha = sha256_hex(&image);
    let id = s.upload(&alice, &image);
    assert_eq!(s.download(&s.a, &alice, &hs1, &id).status(), 200);
    let thumb = s.thumbnail(&alice, &id);
    assert_eq!(thumb.status(), 200);
    let thumb_sha = sha256_hex(&thumb.bytes().unwrap());
    s.wait_until_cached(&sha);
    s.wait_until_cached(&thumb_sha);
    let record = format!("{{{hs1}/{id}}}");
    for key in [
        format!("mr1:blob:{{{sha}}}:m"),
        format!("mr1:blob:{{{thumb_sha}}}:m"),
        format!("mr1:remote:{record}"),
    ] {
        s.plant_everywhere(&key);
    }
    assert!(s.keys_with(&sha).iter().all(|&n| n > 0));
    s.shards[2].pause();
    let answer = s.admin_post(&admin, &format!("{synapse}/media/quarantine/{hs1}/{id}"));
    assert_eq!(answer, json!({}));
    // Down during the quarantine, the shard gets its deletes once it answers again.
    s.shards[2].resume();
    s.wait_until_gone(&[sha.clone(), thumb_sha.clone(), record.clone()]);
    assert!(
        s.a.logs().contains("deleting again when it is up"),
        "the paused shard's deletes were remembered and retried"
    );
    assert_eq!(
        matrix_error(s.download(&s.a, &alice, &hs1, &id)),
        (404, "M_NOT_FOUND".into())
    );
    assert_eq!(
        matrix_error(s.thumbnail(&alice, &id)),
        (404, "M_NOT_FOUND".into())
    );
    assert_eq!(
        matrix_error(s.federation_download(&id)),
        (404, "M_NOT_FOUND".into())
    );
    s.assert_upload_refused(&bob, &image);
    assert_eq!(
        s.admin_post(&admin, &format!("{synapse}/media/unquarantine/{hs1}/{id}")),
        json!({})
    );
    let served = s.download(&s.a, &alice, &hs1, &id);
    assert_eq!(served.status(), 200);
    assert!(served.bytes().unwrap() == image);
    assert_eq!(s.thumbnail(&alice, &id).status(), 200);
    assert_eq!(s.federation_download(&id).status(), 200);
    assert_eq!(
        s.upload_to(&s.a.base_url(), &bob, &image, "again.png")
            .status(),
        200
    );

    // --- By user (Synapse's endpoint): protected media is skipped. ---
    let bobs: Vec<Vec<u8>> = (0..3)
        .map(|i| picture(40 + i, 30, ImageFormat::Png))
        .collect();
    let ids: Vec<String> = bobs.iter().map(|b| s.upload(&bob, b)).collect();
    for id in &ids {
        assert_eq!(s.download(&s.a, &bob, &hs1, id).status(), 200);
    }
    for bytes in &bobs {
        s.wait_until_cached(&sha256_hex(bytes));
    }
    assert_eq!(
        s.admin_post(&admin, &format!("{synapse}/media/protect/{}", ids[2])),
        json!({})
    );
    let bob_id = urlencode(&format!("@bob:{hs1}"));
    let answer = s.admin_post(&admin, &format!("{synapse}/user/{bob_id}/media/quarantine"));
    // bob's media of the first part (the re-upload) and two of these three.
    assert_eq!(answer, json!({"num_quarantined": 3}));
    s.wait_until_gone(&[sha256_hex(&bobs[0]), sha256_hex(&bobs[1])]);
    for id in &ids[..2] {
        assert_eq!(s.download(&s.a, &bob, &hs1, id).status(), 404);
        assert_eq!(s.federation_download(id).status(), 404);
    }
    assert_eq!(s.download(&s.a, &bob, &hs1, &ids[2]).status(), 200);
    s.assert_upload_refused(&alice, &bobs[0]);
    for id in &ids[..2] {
        let answer = s.admin_post(&admin, &format!("{own}/unquarantine/media/{hs1}/{id}"));
        assert_eq!(answer["num_unquarantined"], 1);
        assert_eq!(s.download(&s.a, &bob, &hs1, id).status(), 200);
    }

    // --- By origin (our endpoint): a remote media B fetched and shared, and A copied. ---
    let hs2 = s.hs2.server_name.clone();
    let carol = s.hs2.user_token("carol").unwrap();
    let remote = random_bytes(200_000);
    let remote_sha = sha256_hex(&remote);
    let remote_id = media_id(s.upload_to(&s.hs2.client_url(), &carol, &remote, "remote.bin"));
    assert!(s.download(&s.b, &alice, &hs2, &remote_id).bytes().unwrap() == remote);
    let remote_record = format!("{{{hs2}/{remote_id}}}");
    s.wait_until_cached(&remote_record);
    assert!(s.download(&s.a, &alice, &hs2, &remote_id).bytes().unwrap() == remote);
    s.wait_until_cached(&remote_sha);
    let answer = s.admin_post(&admin, &format!("{own}/quarantine/origin/{hs2}"));
    assert_eq!(answer["num_quarantined"], 1);
    s.wait_until_gone(&[remote_sha.clone(), remote_record.clone()]);
    assert_eq!(s.download(&s.a, &alice, &hs2, &remote_id).status(), 404);
    // Nothing more is fetched from a quarantined origin.
    let later = random_bytes(10_000);
    let later_id = media_id(s.upload_to(&s.hs2.client_url(), &carol, &later, "later.bin"));
    assert_eq!(s.download(&s.a, &alice, &hs2, &later_id).status(), 404);
    assert_eq!(
        s.hs2
            .count_requests(&format!("/_matrix/federation/v1/media/download/{later_id}")),
        0
    );
    let answer = s.admin_post(&admin, &format!("{own}/unquarantine/origin/{hs2}"));
    assert_eq!(answer["num_unquarantined"], 1);
    assert!(s.download(&s.a, &alice, &hs2, &remote_id).bytes().unwrap() == remote);
    assert!(s.download(&s.a, &alice, &hs2, &later_id).bytes().unwrap() == later);

    // --- By content hash (our endpoint): every copy, and new uploads refused. ---
    let bytes = random_bytes(5_000);
    let hash = sha256_hex(&bytes);
    let first = s.upload(&alice, &bytes);
    let second = s.upload(&bob, &bytes);
    assert_eq!(s.download(&s.a, &alice, &hs1, &first).status(), 200);
    s.wait_until_cached(&hash);
    let answer = s.admin_post(&admin, &format!("{own}/quarantine/hash/{hash}"));
    assert_eq!(answer["num_quarantined"], 2);
    s.wait_until_gone(std::slice::from_ref(&hash));
    for id in [&first, &second] {
        assert_eq!(s.download(&s.a, &alice, &hs1, id).status(), 404);
        assert_eq!(s.federation_download(id).status(), 404);
    }
    s.assert_upload_refused(&alice, &bytes);
    let answer = s.admin_post(&admin, &format!("{own}/unquarantine/hash/{hash}"));
    assert_eq!(answer["num_unquarantined"], 2);
    for id in [&first, &second] {
        assert!(s.download(&s.a, &alice, &hs1, id).bytes().unwrap() == bytes);
    }
    assert_eq!(
        s.upload_to(&s.a.base_url(), &alice, &bytes, "again.bin")
            .status(),
        200
    );
}

/// The JSON's shape: keys and value types, not values (arrays by their first element).
/// Synapse on SQLite answers `authenticated` (and, in a media's info,
/// `safe_from_quarantine`) as the integer 1 (on Postgres `true`): both count as a bool here.
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("authenticated" | "safe_from_quarantine", Value::Number(_)) => {
                        (k.clone(), json!("bool"))
                    }
                    _ => (k.clone(), shape(v)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.first().map(shape).into_iter().collect()),
        Value::Null => json!("null"),
        Value::Bool(_) => json!("bool"),
        Value::Number(_) => json!("number"),
        Value::String(_) => json!("string"),
    }
}

#[test]
fn admin_api_checks_admins_and_answers_like_synapse() {
    let s = Stack::start("admins: [\"@ops:{hs1}\"]\n");
    let hs1 = s.hs1.server_name.clone();
    let hs2 = s.hs2.server_name.clone();
    let admin = s.hs1.admin_token("root").unwrap();
    let ops = s.hs1.user_token("ops").unwrap();
    let alice = s.hs1.user_token("alice").unwrap();
    // hs2 with its own media repo is the reference.
    let admin2 = s.hs2.admin_token("root").unwrap();
    let alice2 = s.hs2.user_token("alice").unwrap();

    let ours: Vec<String> = (0..3)
        .map(|i| s.upload(&alice, &picture(20 + i, 20, ImageFormat::Png)))
        .collect();
    let theirs: Vec<String> = (0..3)
        .map(|i| {
            let bytes = picture(20 + i, 20, ImageFormat::Png);
            media_id(s.upload_to(&s.hs2.client_url(), &alice2, &bytes, "picture.png"))
        })
        .collect();
    let alice_id = urlencode(&format!("@alice:{hs1}"));
    let alice2_id = urlencode(&format!("@alice:{hs2}"));
    let synapse = "/_synapse/admin/v1";

    // Who may call.
    let probe = format!("{synapse}/media/protect/{}", ours[0]);
    let a = s.a.base_url();
    assert_eq!(
        matrix_error(s.post(&a, &probe, None)),
        (401, "M_MISSING_TOKEN".into())
    );
    assert_eq!(
        matrix_error(s.post(&a, &probe, Some("not-a-token"))),
        (401, "M_UNKNOWN_TOKEN".into())
    );
    assert_eq!(
        matrix_error(s.post(&a, &probe, Some(&alice))),
        (403, "M_FORBIDDEN".into())
    );
    assert_eq!(
        s.post(&a, &probe, Some(&admin)).status(),
        200,
        "hs1's server admin"
    );
    assert_eq!(
        s.post(&a, &probe, Some(&ops)).status(),
        200,
        "listed in admins:"
    );
    let probe2 = format!("{synapse}/media/protect/{}", theirs[0]);
    assert_eq!(
        s.post(&s.hs2.client_url(), &probe2, Some(&admin2)).status(),
        200
    );
    let list = format!("{synapse}/users/{alice_id}/media");
    let get = |base: &str, path: &str, token: Option<&str>| {
        let request = s.http.get(format!("{base}{path}"));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
        .unwrap()
    };
    assert_eq!(
        matrix_error(get(&a, &list, None)),
        (401, "M_MISSING_TOKEN".into())
    );
    assert_eq!(
        matrix_error(get(&a, &list, Some(&alice))),
        (403, "M_FORBIDDEN".into())
    );

    // The same calls on A and on Synapse answer in the same shape.
    let b2 = s.hs2.client_url();
    let calls: Vec<(String, String)> = vec![
        (
            format!("{synapse}/media/quarantine/{hs1}/{}", ours[1]),
            format!("{synapse}/media/quarantine/{hs2}/{}", theirs[1]),
        ),
        (
            format!("{synapse}/media/unquarantine/{hs1}/{}", ours[1]),
            format!("{synapse}/media/unquarantine/{hs2}/{}", theirs[1]),
        ),
        (
            format!("{synapse}/media/protect/{}", ours[2]),
            format!("{synapse}/media/protect/{}", theirs[2]),
        ),
        (
            format!("{synapse}/media/unprotect/{}", ours[2]),
            format!("{synapse}/media/unprotect/{}", theirs[2]),
        ),
        (
            format!("{synapse}/user/{alice_id}/media/quarantine"),
            format!("{synapse}/user/{alice2_id}/media/quarantine"),
        ),
    ];
    for (on_a, on_synapse) in &calls {
        let mine = s.post(&a, on_a, Some(&admin));
        let reference = s.post(&b2, on_synapse, Some(&admin2));
        assert_eq!(mine.status(), 200, "{on_a}");
        assert_eq!(reference.status(), 200, "{on_synapse}");
        let (mine, reference): (Value, Value) = (mine.json().unwrap(), reference.json().unwrap());
        assert_eq!(
            shape(&mine),
            shape(&reference),
            "{on_a}: {mine} vs {reference}"
        );
        assert_eq!(mine, reference, "same numbers for the same history: {on_a}");
    }
    for query in [
        "",
        "?limit=2",
        "?from=1&limit=1&order_by=media_length&dir=b",
    ] {
        let mine = get(&a, &format!("{list}{query}"), Some(&admin));
        let reference = get(
            &b2,
            &format!("{synapse}/users/{alice2_id}/media{query}"),
            Some(&admin2),
        );
        assert_eq!(mine.status(), 200);
        assert_eq!(reference.status(), 200);
        let (mine, reference): (Value, Value) = (mine.json().unwrap(), reference.json().unwrap());
        assert_eq!(
            shape(&mine),
            shape(&reference),
            "{query}: {mine} vs {reference}"
        );
        assert_eq!(mine["total"], reference["total"]);
        assert_eq!(mine["next_token"], reference["next_token"], "{query}");
        assert_eq!(
            mine["media"].as_array().unwrap().len(),
            reference["media"].as_array().unwrap().len()
        );
    }
    let bad = get(&a, &format!("{list}?dir=sideways"), Some(&admin));
    let bad_reference = get(
        &b2,
        &format!("{synapse}/users/{alice2_id}/media?dir=sideways"),
        Some(&admin2),
    );
    assert_eq!(matrix_error(bad), matrix_error(bad_reference));

    // One media's info: ours in Synapse's shape; unknown media 404 on both; admins only.
    let info = |base: &str, token: &str, server: &str, id: &str| {
        get(base, &format!("{synapse}/media/{server}/{id}"), Some(token))
    };
    let mine = info(&a, &admin, &hs1, &ours[0]);
    let reference = info(&b2, &admin2, &hs2, &theirs[0]);
    assert_eq!(mine.status(), 200);
    assert_eq!(reference.status(), 200);
    let (mine, reference): (Value, Value) = (mine.json().unwrap(), reference.json().unwrap());
    assert_eq!(shape(&mine), shape(&reference), "{mine} vs {reference}");
    let mine = &mine["media_info"];
    assert_eq!(mine["media_id"], ours[0].as_str());
    assert_eq!(mine["user_id"], format!("@alice:{hs1}"));
    assert_eq!(mine["media_type"], "image/png");
    let bytes = picture(20, 20, ImageFormat::Png);
    assert_eq!(mine["media_length"], bytes.len());
    assert_eq!(mine["sha256"], sha256_hex(&bytes));
    assert_eq!(mine["safe_from_quarantine"], true, "protected above");
    assert_eq!(
        matrix_error(info(&a, &admin, &hs1, "NoSuchMedia")),
        matrix_error(info(&b2, &admin2, &hs2, "NoSuchMedia"))
    );
    assert_eq!(
        matrix_error(info(&a, &alice, &hs1, &ours[0])),
        (403, "M_FORBIDDEN".into())
    );
    //    Another server's media A keeps: its origin, no uploader, its file. (The one
    //    media of hs2's alice protected from her quarantine above.)
    assert_eq!(s.download(&s.a, &alice, &hs2, &theirs[0]).status(), 200);
    let remote = info(&a, &admin, &hs2, &theirs[0]);
    assert_eq!(remote.status(), 200);
    let remote: Value = remote.json().unwrap();
    let remote = &remote["media_info"];
    assert_eq!(remote["media_origin"], hs2.as_str());
    assert_eq!(remote["user_id"], Value::Null);
    assert_eq!(remote["safe_from_quarantine"], Value::Null);
    assert!(remote["filesystem_id"].is_string(), "{remote}");
    assert_eq!(remote["sha256"], sha256_hex(&bytes));
}
