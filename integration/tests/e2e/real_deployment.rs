//! As operators run it: a real Matrix client (matrix-nio) through nginx in front of Synapse
//! and media-repo, and a media-repo killed with -9 that comes back with every byte.

use std::process::Command;

use integration::{synapse::USER_PASSWORD, Nginx, Synapse};
use sha2::{Digest, Sha256};

use crate::common::{random_bytes, users, Db, Options, Stack};

#[test]
fn matrix_nio_uploads_and_downloads_through_nginx() {
    let synapse = Synapse::shared();
    users();
    let s = Stack::start(Options::default());
    let nginx = Nginx::start(&s.repo.base_url(), &synapse.base_url(), None).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upload.bin");
    let bytes = crate::thumbnails::picture(900, 700, image::ImageFormat::Png);
    std::fs::write(&file, &bytes).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/nio_roundtrip.py");
    let out = Command::new(synapse.python())
        .arg(script)
        .arg(nginx.base_url())
        .arg("alice")
        .arg(USER_PASSWORD)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nio failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["size"], bytes.len());
    assert_eq!(
        result["sha256"],
        hex::encode(Sha256::digest(&bytes)),
        "identical bytes back through nginx"
    );
    assert_eq!(result["content_type"], "image/png");
    assert_eq!(result["filename"], "nio upload 🐈.png");
    assert!(result["content_uri"]
        .as_str()
        .unwrap()
        .starts_with(&format!("mxc://{}/", synapse.server_name)));
    // Its thumbnail is the one media-repo serves.
    let (server, id) = result["content_uri"].as_str().unwrap()["mxc://".len()..]
        .split_once('/')
        .unwrap();
    let ours = s
        .get(
            &format!(
                "/_matrix/client/v1/media/thumbnail/{server}/{id}?width=32&height=32&method=crop"
            ),
            Some(&users().alice),
        )
        .bytes()
        .unwrap();
    assert_eq!(result["thumbnail_type"], "image/png");
    assert_eq!(
        result["thumbnail_sha256"],
        hex::encode(Sha256::digest(&ours))
    );
    // It really went through media-repo (Synapse has no media repo here).
    assert_eq!(s.media_rows(), 1);
}

fn upload_kill_restart_download(db: Db) {
    let mut s = Stack::start(Options {
        db,
        ..Options::default()
    });
    let u = users();
    let bytes = random_bytes(2_000_000);
    let (server, id) = s.upload(&u.alice, bytes.clone(), "image/jpeg", Some("photo.jpg"));
    s.repo.kill9();
    s.repo.restart().unwrap();
    let response = s.download(&server, &id, &u.bob);
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/jpeg");
    assert!(
        response.bytes().unwrap().as_ref() == bytes.as_slice(),
        "identical bytes after kill -9 and restart"
    );
    assert_eq!(s.media_rows(), 1);
}

#[test]
fn restart_safety_sqlite() {
    upload_kill_restart_download(Db::Sqlite);
}

#[test]
fn restart_safety_postgres() {
    upload_kill_restart_download(Db::Postgres);
}
