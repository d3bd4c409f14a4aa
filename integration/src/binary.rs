//! Locating (and if needed building) the `media-repo` binary under test.
//!
//! `cargo test` builds a package's binaries only for that package's own tests. `mr-web`
//! has tests of its own (`crates/web/tests/cli.rs`), so `cargo test --workspace` (the
//! README's test command) always builds a current `media-repo` next to the test
//! executables, with the same feature set as the tests: that one is used. Only when it
//! is missing (e.g. `cargo test -p integration` on a fresh tree) does the first lookup run
//! `cargo build -p mr-web --bin media-repo`. Building unconditionally would not do: a
//! plain `cargo build -p mr-web` resolves features differently from a workspace test
//! run, so it would rebuild several crates in the middle of the tests and swap the
//! binary under tests that are running it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context as _};

/// Overrides the lookup (and the build) with an explicit path to the binary.
pub const BIN_ENV: &str = "MEDIA_REPO_BIN";

const BIN_NAME: &str = "media-repo";

/// Path to the `media-repo` binary; panics with an explanation if there is none.
/// See [`try_media_repo_bin`].
pub fn media_repo_bin() -> PathBuf {
    match try_media_repo_bin() {
        Ok(path) => path,
        Err(e) => panic!("{e:#}"),
    }
}

/// Path to the `media-repo` binary: `$MEDIA_REPO_BIN` if set, else the one in this test
/// executable's target dir (`target/<profile>/media-repo`), built by
/// `cargo build -p mr-web --bin media-repo` if it is not there yet.
pub fn try_media_repo_bin() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| locate().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn locate() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(BIN_ENV) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!(
                "{BIN_ENV} is set to {} but no file is there",
                path.display()
            );
        }
        return Ok(path);
    }
    let exe = std::env::current_exe().context("finding the test executable's path")?;
    // Test executables live in target/<profile>/deps/; the binary one level up.
    let profile_dir = exe.parent().and_then(Path::parent).with_context(|| {
        format!(
            "test executable {} is not inside target/<profile>/deps",
            exe.display()
        )
    })?;
    let bin = profile_dir.join(format!("{BIN_NAME}{}", std::env::consts::EXE_SUFFIX));
    if !bin.is_file() {
        build(profile_dir)?;
    }
    if !bin.is_file() {
        bail!(
            "`cargo build -p mr-web --bin {BIN_NAME}` succeeded but {} does not exist; \
             set {BIN_ENV} to the binary's path",
            bin.display()
        );
    }
    Ok(bin)
}

fn build(profile_dir: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("integration/ has no parent dir (the workspace root)")?;
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "-p", "mr-web", "--bin", BIN_NAME])
        .current_dir(workspace);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    eprintln!("integration: running {cmd:?} so the tests use a current {BIN_NAME}");
    let out = cmd
        .output()
        .with_context(|| format!("running {cmd:?} (is cargo on PATH? or set {BIN_ENV})"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}), so there is no {BIN_NAME} binary to test; \
             fix the build or set {BIN_ENV}. cargo said:\n{}",
            out.status,
            compiler_errors(&String::from_utf8_lossy(&out.stderr))
        );
    }
    Ok(())
}

/// Most cargo output is "Compiling ..." lines and warnings; quote from the first error on.
fn compiler_errors(stderr: &str) -> String {
    const MAX_LINES: usize = 60;
    let lines: Vec<&str> = stderr.lines().collect();
    let first_error = lines
        .iter()
        .position(|l| l.starts_with("error"))
        .unwrap_or(0);
    let shown = &lines[first_error..];
    let mut text = shown[..shown.len().min(MAX_LINES)].join("\n");
    if shown.len() > MAX_LINES {
        text.push_str(&format!("\n... ({} more lines)", shown.len() - MAX_LINES));
    }
    text
}
