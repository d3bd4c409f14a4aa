//! The binary on its own: embedded default, refusing a broken config. (`check-config` is
//! covered by crates/web/tests/cli.rs.)

use std::process::Command;

use integration::{media_repo_bin, MediaRepo};

#[test]
fn starts_on_the_embedded_default_from_an_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let repo = MediaRepo::start_without_config(dir.path()).unwrap();
    let health = reqwest::blocking::get(format!("{}/healthz", repo.base_url())).unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        dir.path().join("data").join("media-repo.db").exists(),
        "SQLite file under ./data"
    );
    assert!(
        dir.path().join("data").join("media").is_dir(),
        "file datastore under ./data/media"
    );
    let logs = repo.logs();
    assert!(
        logs.contains("embedded default"),
        "startup line names the embedded default:\n{logs}"
    );
    assert!(
        logs.contains("Redis"),
        "startup line says how to use Redis:\n{logs}"
    );
    // Metrics are on the operators' listener (127.0.0.1:9000), not the public one.
    assert_eq!(repo.metrics_port(), 9000);
    assert_eq!(repo.get("/metrics").unwrap().status, 404);
    let metrics = repo.metrics().unwrap();
    assert!(
        metrics.contains("media_repo_config_generation 1"),
        "{metrics}"
    );
}

#[test]
fn refuses_to_start_on_a_broken_config_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, "homeservers: []\n").unwrap();
    let out = Command::new(media_repo_bin())
        .args(["--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.to_lowercase().contains("homeserver"), "{stderr}");
}
