//! An upload warms the cache (`uploads.warm_cache`): one of at most one write batch
//! (128 KiB) from the bytes it received, a larger one by reading its stored file back.
//!
//! Which source a fill used is shown by removing the stored file while the upload waits
//! before writing its row (the debug build's `x-media-repo-test-pause-ms` hook): the small
//! upload is served from the cache all the same, the large one never reaches the cache.

use std::path::PathBuf;
use std::time::Duration;

use integration::wait_until;

use crate::common::{matrix_error, random_bytes, users, Options, Stack};

/// How long the upload waits before its row: ample time to remove its file.
const PAUSE_MS: u64 = 3_000;

/// The largest body kept in memory for warming (the storage crate's write batch).
const KEPT_BODY_BYTES: usize = 128 * 1024;

fn stored_blobs(s: &Stack) -> f64 {
    s.repo
        .metric_value(
            "media_repo_cache_requests_total{backend=\"memory\",op=\"blob_put\",result=\"stored\"}",
        )
        .unwrap_or(0.0)
}

/// Uploads `bytes` with the pause before the row and removes the stored file during it;
/// returns `(server, media_id)` once the upload answered.
fn upload_and_remove_its_file(s: &Stack, bytes: Vec<u8>) -> (String, String) {
    let file: PathBuf = s.repo.content_file(&bytes);
    let request = s
        .http
        .post(s.url("/_matrix/media/v3/upload"))
        .bearer_auth(&users().alice)
        .header("Content-Type", "application/octet-stream")
        .header("x-media-repo-test-pause-ms", PAUSE_MS.to_string())
        .body(bytes);
    let upload = std::thread::spawn(move || request.send().unwrap());
    wait_until("the upload's file", Duration::from_secs(10), || {
        file.exists()
    })
    .unwrap();
    std::fs::remove_file(&file).unwrap();
    let response = upload.join().unwrap();
    assert_eq!(response.status(), 200, "upload");
    let answer: serde_json::Value = response.json().unwrap();
    let uri = answer["content_uri"].as_str().expect("content_uri");
    let (server, id) = uri
        .strip_prefix("mxc://")
        .and_then(|rest| rest.split_once('/'))
        .expect("mxc://server/id");
    (server.to_owned(), id.to_owned())
}

#[test]
fn a_small_upload_warms_the_cache_from_its_body_and_a_large_one_from_its_file() {
    let s = Stack::start(Options::default());
    let alice = &users().alice;

    let small = random_bytes(KEPT_BODY_BYTES);
    let (server, id) = upload_and_remove_its_file(&s, small.clone());
    s.repo
        .wait_for("the small upload cached", Duration::from_secs(15), || {
            stored_blobs(&s) >= 1.0
        })
        .unwrap();
    let response = s.download(&server, &id, alice);
    assert_eq!(
        response.status(),
        200,
        "served from the cache, its file gone"
    );
    assert!(
        response.bytes().unwrap().as_ref() == small.as_slice(),
        "wrong bytes from the cache"
    );

    let large = random_bytes(KEPT_BODY_BYTES + 1);
    let (server, id) = upload_and_remove_its_file(&s, large);
    s.repo
        .wait_for(
            "the large upload's fill to fail",
            Duration::from_secs(15),
            || {
                s.repo
                    .logs()
                    .contains("cache fill could not open its source")
            },
        )
        .unwrap();
    assert_eq!(stored_blobs(&s), 1.0, "the large upload was cached");
    assert_eq!(
        matrix_error(s.download(&server, &id, alice)),
        (404, "M_NOT_FOUND".to_owned()),
        "a large upload's cache copy comes from its file"
    );
}
