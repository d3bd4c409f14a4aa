//! The binary's command line. (Also makes `cargo test --workspace` build `media-repo`
//! before the integration tests run it.)

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_media-repo");

#[test]
fn check_config_accepts_the_sample() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config.sample.yaml");
    let out = Command::new(BIN)
        .args(["check-config", sample])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}

#[test]
fn check_config_names_the_bad_key_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "uploads:\n  max_bytez: 5\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("max_bytez") && stderr.contains("uploads"),
        "{stderr}"
    );
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let out = Command::new(BIN)
        .args(["--config", "/nonexistent/media-repo.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/media-repo.yaml"), "{stderr}");
}
