//! The download fast path keeps nothing stale: whatever a download left cached (the media
//! row in the process, the blob in the memory cache or on a real redis-server), a media
//! deleted or quarantined through the admin API answers 404 on the very next download, and
//! one unquarantined is served again at once — on every cache backend.

use integration::federated_repo::redis_cache_yaml;
use integration::{wait_until, RedisServer, Synapse};
use reqwest::blocking::Response;
use sha2::{Digest, Sha256};

use crate::common::{
    config_yaml, matrix_error, random_bytes, users, Db, Options, Stack, DEFAULT_MAX_UPLOAD_BYTES,
};

/// A background cache fill lands within this.
const FILL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// A download's first request (row read, cache miss and fill) and a repeat (every cache warm).
const WARMING_DOWNLOADS: usize = 3;

fn admin_post(s: &Stack, path: &str) {
    let response = s
        .http
        .post(s.url(path))
        .bearer_auth(&users().alice)
        .json(&serde_json::json!({}))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "POST {path}");
}

fn admin_delete(s: &Stack, server: &str, id: &str) {
    let path = format!("/_synapse/admin/v1/media/{server}/{id}");
    let response = s
        .http
        .delete(s.url(&path))
        .bearer_auth(&users().alice)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "DELETE {path}");
}

fn head(s: &Stack, server: &str, id: &str) -> Response {
    s.http
        .head(s.url(&format!("/_matrix/client/v1/media/download/{server}/{id}")))
        .bearer_auth(&users().alice)
        .send()
        .unwrap()
}

fn range(s: &Stack, server: &str, id: &str) -> Response {
    s.http
        .get(s.url(&format!("/_matrix/client/v1/media/download/{server}/{id}")))
        .bearer_auth(&users().alice)
        .header("Range", "bytes=10-99")
        .send()
        .unwrap()
}

/// Downloads until every cache holds the media (for Redis: the blob is on the shard).
fn warm(s: &Stack, server: &str, id: &str, bytes: &[u8], shard: Option<&RedisServer>) {
    for _ in 0..WARMING_DOWNLOADS {
        let response = s.download(server, id, &users().alice);
        assert_eq!(response.status(), 200);
        assert!(response.bytes().unwrap().as_ref() == bytes, "wrong bytes");
    }
    if let Some(shard) = shard {
        let sha = hex::encode(Sha256::digest(bytes));
        wait_until("the blob to be cached", FILL_TIMEOUT, || {
            shard
                .cli(&["EXISTS", &format!("mr1:blob:{{{sha}}}:m")])
                .is_ok_and(|n| n.trim() == "1")
        })
        .unwrap();
        let response = s.download(server, id, &users().alice);
        assert_eq!(response.status(), 200, "served from the cache");
    }
    assert_eq!(head(s, server, id).status(), 200);
    assert_eq!(range(s, server, id).status(), 206);
}

/// Every way of asking for the media answers 404 now.
fn assert_gone(s: &Stack, server: &str, id: &str, what: &str) {
    assert_eq!(
        matrix_error(s.download(server, id, &users().alice)),
        (404, "M_NOT_FOUND".to_owned()),
        "download right after {what}"
    );
    assert_eq!(head(s, server, id).status(), 404, "HEAD after {what}");
    assert_eq!(range(s, server, id).status(), 404, "range after {what}");
}

fn deleted_and_quarantined_media_answer_404_at_once(
    cache_yaml: &str,
    db: Db,
    shard: Option<&RedisServer>,
) {
    let admins = format!("admins: [\"@alice:{}\"]\n", Synapse::shared().server_name);
    let s = Stack::start(Options {
        db,
        cache_yaml,
        extra_yaml: &admins,
        ..Options::default()
    });
    let alice = &users().alice;
    let deleted_bytes = random_bytes(4096);
    let quarantined_bytes = random_bytes(4096);
    let (server, deleted) = s.upload(alice, deleted_bytes.clone(), "image/png", None);
    let (_, quarantined) = s.upload(alice, quarantined_bytes.clone(), "image/png", None);

    warm(&s, &server, &deleted, &deleted_bytes, shard);
    admin_delete(&s, &server, &deleted);
    assert_gone(&s, &server, &deleted, "a deletion");

    warm(&s, &server, &quarantined, &quarantined_bytes, shard);
    admin_post(
        &s,
        &format!("/_synapse/admin/v1/media/quarantine/{server}/{quarantined}"),
    );
    assert_gone(&s, &server, &quarantined, "a quarantine");

    admin_post(
        &s,
        &format!("/_synapse/admin/v1/media/unquarantine/{server}/{quarantined}"),
    );
    let served = s.download(&server, &quarantined, alice);
    assert_eq!(served.status(), 200, "served right after the unquarantine");
    assert!(served.bytes().unwrap().as_ref() == quarantined_bytes);
}

#[test]
fn a_deleted_media_answers_404_at_once_with_the_memory_cache() {
    deleted_and_quarantined_media_answer_404_at_once(
        "cache:\n  backend: memory\n",
        Db::Sqlite,
        None,
    );
}

#[test]
fn a_deleted_media_answers_404_at_once_with_the_redis_cache() {
    let shard = RedisServer::start().unwrap();
    let cache_yaml = redis_cache_yaml(std::slice::from_ref(&shard));
    deleted_and_quarantined_media_answer_404_at_once(&cache_yaml, Db::Sqlite, Some(&shard));
}

#[test]
fn a_deleted_media_answers_404_at_once_without_a_cache() {
    deleted_and_quarantined_media_answer_404_at_once("cache:\n  backend: none\n", Db::Sqlite, None);
}

#[test]
fn a_deleted_media_answers_404_at_once_on_postgres() {
    deleted_and_quarantined_media_answer_404_at_once(
        "cache:\n  backend: memory\n",
        Db::Postgres,
        None,
    );
}

/// Each worker remembers the tokens it saw vouched for (as the shared whoami cache does,
/// for `auth.whoami_cache_secs`); a reload that turns the cache off makes every worker
/// forget at once: a token logged out meanwhile is refused on the next request.
#[test]
fn a_reload_makes_every_worker_forget_the_tokens_it_remembers() {
    let synapse = Synapse::shared();
    let s = Stack::start(Options::default());
    let (server, id) = s.upload(&users().alice, b"remembered".to_vec(), "text/plain", None);
    let token = synapse.login("bob").unwrap();
    // Over fresh connections, so both workers are likely to see (and remember) the token.
    let fresh_download = || {
        reqwest::blocking::Client::new()
            .get(s.url(&format!("/_matrix/client/v1/media/download/{server}/{id}")))
            .bearer_auth(&token)
            .send()
            .unwrap()
    };
    for _ in 0..8 {
        assert_eq!(fresh_download().status(), 200);
    }
    synapse.logout(&token).unwrap();
    assert_eq!(
        fresh_download().status(),
        200,
        "within the cache's lifetime the vouched-for answer stands"
    );

    let reloads = |result: &str| {
        s.repo
            .metric_value(&format!(
                "media_repo_config_reloads_total{{result=\"{result}\"}}"
            ))
            .unwrap_or(0.0)
    };
    let applied_before = reloads("applied");
    s.repo
        .write_config(&config_yaml(
            synapse,
            "sqlite://{dir}/media-repo.db",
            DEFAULT_MAX_UPLOAD_BYTES,
            "cache:\n  backend: memory\n",
            "auth:\n  whoami_cache_secs: 0\n",
        ))
        .unwrap();
    s.repo.sighup();
    wait_until("the reload to apply", FILL_TIMEOUT, || {
        reloads("applied") > applied_before
    })
    .unwrap();
    for _ in 0..8 {
        assert_eq!(
            matrix_error(fresh_download()),
            (401, "M_UNKNOWN_TOKEN".to_owned()),
            "a worker still trusted a logged-out token after the reload"
        );
    }
}
