//! First fetch of remote media over federation: media-repo A (serving hs1) against Synapse's
//! own media repo (hs3), both fetching from the same remote Synapse (hs2) on this machine.
//! Time to first and to last byte of a client download, and peak RSS (VmHWM) of A and of
//! hs3's Synapse. Prints a Markdown table; results and how to read them are in
//! docs/benchmarks.md.
//!
//! ```sh
//! cargo build --release -p mr-web --bin media-repo
//! cargo run --release -p integration --bin federation-bench   # -- --help for options
//! ```
//!
//! Setup (all on 127.0.0.1, certificates from a test CA):
//! * hs2: the remote, a Synapse with its media repo on (TLS federation listener);
//! * hs1: a Synapse with its media repo off behind a TLS nginx that routes media paths to
//!   media-repo A, which signs as hs1 with hs1's key (hs2 fetches hs1's key through nginx);
//! * hs3: a Synapse with its own media repo on, the comparison.
//!
//! Every measured download is of media uploaded to hs2 just before with fresh random bytes,
//! so it is a first fetch for both A and hs3. Clients download straight from A's port and
//! from hs3's client port, both plain HTTP on loopback, so neither path pays for a proxy.
//!
//! `--shared` measures something else, remote media fetched once for two repos that share
//! the cache shards (`shared.rs`). `--thumbnails` measures thumbnails of fresh uploads
//! against Synapse's own media repo (`thumbnails.rs`).

mod shared;
mod thumbnails;

use std::io::Read as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use integration::federated_repo::{repo_yaml, trusting};
use integration::{wait_until, FederatingSynapse, MediaRepo, Nginx, TestCa};
use rand::RngCore as _;
use reqwest::blocking::Client;
use sha2::{Digest as _, Sha256};

/// The sizes measured: the issue's 1 MiB and 50 MiB.
const SIZES: [(&str, usize); 2] = [("1 MiB", 1 << 20), ("50 MiB", 50 << 20)];
/// Measurements per size and path unless `--rounds` says otherwise; the median is reported.
const DEFAULT_ROUNDS: usize = 3;
/// Most rounds per run: hs3 fetches 1 + 50 MiB per round, and Synapse refuses remote media
/// past `remote_media_download_burst_count` (default 500 MiB, refilled at 87 KiB/s) with 429.
const MAX_ROUNDS: usize = 8;
/// `max_upload_size` of hs2 and hs3 (128 MiB). Synapse's default, 50M, is exactly 50 MiB,
/// and Synapse applies it to the remote media it fetches too.
const SYNAPSE_MAX_UPLOAD_BYTES: u64 = 128 << 20;
/// A's `downloads.max_bytes` (128 MiB): the largest remote media it fetches.
const REPO_MAX_DOWNLOAD_BYTES: u64 = 128 << 20;
/// Bound for one upload or download; a 50 MiB first fetch on loopback takes seconds.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Size of the warm-up media (not measured): it makes hs2 fetch A's and hs3's signing keys
/// and both open their connections to hs2, so measurements compare media paths, not key
/// fetches.
const WARM_UP_BYTES: usize = 4096;
/// How long Synapse may take to log a request after answering it.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// Pids of the children without a watchdog (media-repos, redis-servers), for the signal
/// thread: on Ctrl-C (no `Drop` runs) it kills them. Synapse and nginx have watchdogs that
/// kill them and remove their dirs when this process is gone.
static KILL_ON_SIGNAL: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// Temp dirs no watchdog removes (A's, the test CA's): the signal thread removes them.
static ORPHAN_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

struct Options {
    rounds: usize,
    /// A's `cache.backend`: `memory` (the sample config's) or `none`.
    cache: String,
    /// `--shared`: the shared-fetch benchmark instead (`shared.rs`).
    shared: bool,
    /// `--thumbnails`: the thumbnail benchmark instead (`thumbnails.rs`).
    thumbnails: bool,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("federation-bench failed: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let Some(options) = parse_args()? else {
        return Ok(());
    };
    kill_repo_on_signal()?;
    use_release_media_repo()?;
    if options.shared {
        return shared::run(options.rounds);
    }
    if options.thumbnails {
        return thumbnails::run(options.rounds);
    }
    let started_at = utc_now();
    let load_before = load_average();

    log("starting hs1, hs2 and hs3 (Synapse), media-repo A and nginx");
    let stack = Stack::start(&options.cache)?;
    stack.check_pids()?;
    // The client reads each body into this buffer, touched once here, and hashes it after
    // the clock stops: neither page faults nor SHA-256 on the client count as fetch time.
    let largest = SIZES.iter().map(|(_, size)| *size).max().unwrap_or(0);
    let mut body = vec![0xa5u8; largest.max(WARM_UP_BYTES) + 1];
    log("warming up (keys, connections)");
    stack.warm_up(&mut body)?;

    let mut results = Vec::new();
    for (label, size) in SIZES {
        let rss_before = [stack.repo_rss()?, stack.synapse_rss()?];
        let mut times = [Vec::new(), Vec::new()];
        for round in 0..options.rounds {
            // Alternate which path goes first, so neither always follows the other's upload.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for path in order {
                let timing = stack.first_fetch(Path::ALL[path], size, &mut body)?;
                log(&format!(
                    "{label} via {}: round {}: first byte {:.3} s, last byte {:.3} s",
                    Path::ALL[path].name(),
                    round + 1,
                    timing.first_byte.as_secs_f64(),
                    timing.last_byte.as_secs_f64(),
                ));
                times[path].push(timing);
            }
        }
        let rss_after = [stack.repo_rss()?, stack.synapse_rss()?];
        for path in 0..2 {
            results.push(Row {
                size_label: label,
                size,
                path: Path::ALL[path],
                times: std::mem::take(&mut times[path]),
                rss_before: rss_before[path],
                rss_after: rss_after[path],
            });
        }
    }
    let load_after = load_average();
    drop(stack);

    println!(
        "federation-bench, {started_at}; A: media-repo {} with cache.backend {}; \
         median of {} first fetches per cell (min–max in brackets); \
         load average before {load_before}, after {load_after}\n",
        integration::media_repo_bin().display(),
        options.cache,
        options.rounds,
    );
    print!("{}", table(&results));
    Ok(())
}

/// `None` after `--help`.
fn parse_args() -> anyhow::Result<Option<Options>> {
    let mut options = Options {
        rounds: DEFAULT_ROUNDS,
        cache: "memory".to_owned(),
        shared: false,
        thumbnails: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--rounds" => {
                options.rounds = value("--rounds")?
                    .parse()
                    .context("--rounds takes a number")?;
                ensure!(
                    (1..=MAX_ROUNDS).contains(&options.rounds),
                    "--rounds is 1 to {MAX_ROUNDS}: Synapse rate-limits remote media downloads \
                     (remote_media_download_burst_count, 500 MiB by default)"
                );
            }
            "--cache" => {
                options.cache = value("--cache")?;
                ensure!(
                    matches!(options.cache.as_str(), "memory" | "none"),
                    "--cache is memory or none"
                );
            }
            "--shared" => options.shared = true,
            "--thumbnails" => options.thumbnails = true,
            "--help" | "-h" => {
                println!(
                    "federation-bench [--rounds N (1-{MAX_ROUNDS}, default {DEFAULT_ROUNDS})] [--cache memory|none (A's cache.backend, default memory)]\n\
                     federation-bench --shared [--rounds N]: 20 concurrent first fetches across two repos \
                     sharing 3 Redis shards, against cache.backend none\n\
                     federation-bench --thumbnails [--rounds N]: upload + first 96x96 crop and 800x600 \
                     scale thumbnails of a 12 MP JPEG and a 4000x3000 PNG, and cached thumbnail req/s \
                     (wrk), against Synapse's own media repo\n\
                     Uses $MEDIA_REPO_BIN, else media-repo next to this executable \
                     (cargo build --release -p mr-web --bin media-repo)."
                );
                return Ok(None);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(Some(options))
}

/// The harness finds media-repo through `MEDIA_REPO_BIN` or next to a *test* executable
/// (`target/<profile>/deps/..`); this is a binary in `target/<profile>/`, so point it at the
/// media-repo beside us unless the caller chose one.
fn use_release_media_repo() -> anyhow::Result<()> {
    if std::env::var_os("MEDIA_REPO_BIN").is_some() {
        return Ok(());
    }
    let exe = std::env::current_exe().context("finding this executable's path")?;
    let bin = exe
        .with_file_name("media-repo")
        .with_extension(std::env::consts::EXE_EXTENSION);
    if !bin.is_file() {
        bail!(
            "no media-repo binary at {}: run `cargo build --release -p mr-web --bin media-repo` \
             first, or set MEDIA_REPO_BIN",
            bin.display()
        );
    }
    // Edition 2021, and no other thread reads the environment yet (the signal thread does not).
    std::env::set_var("MEDIA_REPO_BIN", &bin);
    Ok(())
}

/// The signal that asked us to stop (0: none yet); set by `on_signal`.
static SIGNALLED: AtomicI32 = AtomicI32::new(0);

/// How often the signal thread looks at `SIGNALLED`.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

extern "C" fn on_signal(signal: libc::c_int) {
    // Only an atomic store: the one kind of work that is async-signal-safe here.
    SIGNALLED.store(signal, Ordering::SeqCst);
}

/// On SIGINT or SIGTERM, a thread kills A, removes its dir and exits. A handler, not a
/// blocked mask and `sigwait`: children inherit a blocked mask (measured: media-repo then
/// had SIGINT and SIGTERM blocked, and so would the watchdog shells whose `trap` stops
/// Synapse), while a handler is reset to the default by `exec`.
fn kill_repo_on_signal() -> anyhow::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `on_signal` is an `extern "C" fn(c_int)` that only stores to an atomic.
        let previous =
            unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
        ensure!(
            previous != libc::SIG_ERR,
            "installing a handler for signal {signal} failed"
        );
    }
    std::thread::Builder::new()
        .name("signals".to_owned())
        .spawn(|| loop {
            std::thread::sleep(SIGNAL_POLL);
            let signal = SIGNALLED.load(Ordering::SeqCst);
            if signal == 0 {
                continue;
            }
            eprintln!("federation-bench: signal {signal}, stopping");
            for &pid in KILL_ON_SIGNAL
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
            {
                // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
                // unreaped child (forgotten before it is reaped), so it names no other process.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            for dir in ORPHAN_DIRS.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let _ = std::fs::remove_dir_all(dir);
            }
            std::process::exit(130);
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// The signal thread kills `pid` (a child of ours without a watchdog).
fn kill_on_signal(pid: u32) {
    KILL_ON_SIGNAL
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(pid);
}

/// Before a child registered with [`kill_on_signal`] is stopped and reaped.
fn forget_on_signal(pid: u32) {
    KILL_ON_SIGNAL
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|&p| p != pid);
}

fn remove_on_signal(dir: PathBuf) {
    ORPHAN_DIRS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(dir);
}

/// Where a client downloads remote media from.
#[derive(Clone, Copy)]
enum Path {
    /// media-repo A, for an hs1 user.
    Repo,
    /// hs3's own media repo, for an hs3 user.
    Synapse,
}

impl Path {
    const ALL: [Path; 2] = [Path::Repo, Path::Synapse];

    fn name(self) -> &'static str {
        match self {
            Path::Repo => "A (media-repo)",
            Path::Synapse => "Synapse (hs3)",
        }
    }
}

struct Timing {
    first_byte: Duration,
    last_byte: Duration,
}

struct Stack {
    // Dropped in declaration order: the clients' servers go before the remote.
    repo: MediaRepo,
    _nginx: Nginx,
    hs1: FederatingSynapse,
    hs3: FederatingSynapse,
    hs2: FederatingSynapse,
    _ca: TestCa,
    /// hs2 user (uploads), hs1 user (downloads through A), hs3 user.
    tokens: [String; 3],
    http: Client,
}

impl Stack {
    fn start(cache: &str) -> anyhow::Result<Stack> {
        let ca = TestCa::new().context("creating the test CA")?;
        if let Some(dir) = ca.cert_path().parent() {
            remove_on_signal(dir.to_owned());
        }
        let (hs1, hs2, hs3) = std::thread::scope(|s| {
            let hs1 = s.spawn(|| {
                FederatingSynapse::builder(&ca)
                    .behind_proxy()
                    .enable_media_repo(false)
                    .start()
                    .context("starting hs1 (Synapse behind nginx, media repo off)")
            });
            let hs2 = s.spawn(|| {
                FederatingSynapse::builder(&ca)
                    .max_upload_size(SYNAPSE_MAX_UPLOAD_BYTES)
                    .start()
                    .context("starting hs2 (the remote Synapse)")
            });
            let hs3 = s.spawn(|| {
                FederatingSynapse::builder(&ca)
                    .max_upload_size(SYNAPSE_MAX_UPLOAD_BYTES)
                    .start()
                    .context("starting hs3 (Synapse with its own media repo)")
            });
            let join = |h: std::thread::ScopedJoinHandle<'_, anyhow::Result<FederatingSynapse>>| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a Synapse start panicked"))?
            };
            // Join all three before failing, so no Synapse outlives a failed start unowned.
            let (a, b, c) = (join(hs1), join(hs2), join(hs3));
            anyhow::Ok((a?, b?, c?))
        })?;
        let repo = MediaRepo::start(&repo_yaml(
            &hs1.server_name,
            &hs1.client_url(),
            &hs1.signing_key_path().display().to_string(),
            &trusting(&ca),
            &format!(
                "downloads:\n  max_bytes: {REPO_MAX_DOWNLOAD_BYTES}\ncache:\n  backend: {cache}\n"
            ),
        ))
        .context("starting media-repo A")?;
        kill_on_signal(repo.pid());
        remove_on_signal(repo.dir().to_owned());
        let cert = ca
            .issue(&["127.0.0.1"])
            .context("issuing nginx's certificate")?;
        let internal = hs1
            .internal_federation_url()
            .context("hs1 has no internal federation listener")?;
        let nginx = Nginx::tls(&cert)
            .port(hs1.federation_port())
            .media_upstream(&repo.base_url())
            .federation_upstream(&internal)
            .client_upstream(&hs1.client_url())
            .start()
            .context("starting nginx in front of hs1 and A")?;
        let tokens = [
            hs2.user_token("uploader").context("user on hs2")?,
            hs1.user_token("alice").context("user on hs1")?,
            hs3.user_token("carol").context("user on hs3")?,
        ];
        let http = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(Stack {
            repo,
            _nginx: nginx,
            hs1,
            hs3,
            hs2,
            _ca: ca,
            tokens,
            http,
        })
    }

    /// The pids whose VmHWM is read must be the servers themselves, not a wrapper shell.
    fn check_pids(&self) -> anyhow::Result<()> {
        let synapse = cmdline(self.hs3.pid())?;
        ensure!(
            synapse.contains("python") && synapse.contains("synapse.app.homeserver"),
            "hs3's pid {} is not Synapse's Python process: {synapse}",
            self.hs3.pid()
        );
        let repo = cmdline(self.repo.pid())?;
        ensure!(
            repo.contains("media-repo"),
            "A's pid {} is not media-repo: {repo}",
            self.repo.pid()
        );
        log(&format!(
            "measuring A pid {} ({repo}) and hs3 pid {} ({synapse}); hs1 is {}",
            self.repo.pid(),
            self.hs3.pid(),
            self.hs1.server_name
        ));
        Ok(())
    }

    fn warm_up(&self, body: &mut [u8]) -> anyhow::Result<()> {
        for path in Path::ALL {
            self.first_fetch(path, WARM_UP_BYTES, body)
                .with_context(|| format!("warm-up fetch via {}", path.name()))?;
        }
        Ok(())
    }

    /// Uploads `size` fresh random bytes to hs2 and downloads them through `path` into
    /// `body` (at least `size + 1` bytes), timing from sending the request to its headers
    /// and to the body's last byte. Checks the bytes, and that hs2 answered exactly one
    /// federation download of that media (a real first fetch, on the federation endpoint).
    fn first_fetch(&self, path: Path, size: usize, body: &mut [u8]) -> anyhow::Result<Timing> {
        ensure!(body.len() > size, "body buffer too small for {size} bytes");
        let mut bytes = vec![0u8; size];
        rand::thread_rng().fill_bytes(&mut bytes);
        let expected = Sha256::digest(&bytes);
        let media_id = self.upload_to_hs2(bytes)?;
        let (base, token) = match path {
            Path::Repo => (self.repo.base_url(), &self.tokens[1]),
            Path::Synapse => (self.hs3.client_url(), &self.tokens[2]),
        };
        let url = format!(
            "{base}/_matrix/client/v1/media/download/{}/{media_id}",
            self.hs2.server_name
        );
        let started = Instant::now();
        let mut response = self
            .http
            .get(&url)
            .bearer_auth(token)
            .send()
            .with_context(|| format!("GET {url}"))?;
        let first_byte = started.elapsed();
        let status = response.status();
        if !status.is_success() {
            let body = response.text().unwrap_or_default();
            bail!("GET {url} via {}: {status}: {body}", path.name());
        }
        let mut received = 0;
        loop {
            let n = response
                .read(&mut body[received..])
                .with_context(|| format!("reading the body of GET {url}"))?;
            if n == 0 || received + n == body.len() {
                received += n;
                break;
            }
            received += n;
        }
        let last_byte = started.elapsed();
        ensure!(
            received == size && Sha256::digest(&body[..size]) == expected,
            "GET {url} via {}: got {received} bytes, not the {size} uploaded (or other bytes)",
            path.name()
        );
        let federation_path = format!("/_matrix/federation/v1/media/download/{media_id}");
        wait_until("hs2 to log the federation download", LOG_TIMEOUT, || {
            self.hs2.count_requests(&federation_path) >= 1
        })
        .with_context(|| {
            format!(
                "hs2 logged no {federation_path} after a fetch via {}",
                path.name()
            )
        })?;
        let fetches = self.hs2.count_requests(&federation_path);
        ensure!(
            fetches == 1,
            "hs2 answered {fetches} federation downloads of {media_id} for one fetch via {}",
            path.name()
        );
        Ok(Timing {
            first_byte,
            last_byte,
        })
    }

    fn upload_to_hs2(&self, bytes: Vec<u8>) -> anyhow::Result<String> {
        upload_to_hs2(&self.http, &self.hs2, &self.tokens[0], bytes)
    }

    fn repo_rss(&self) -> anyhow::Result<Rss> {
        Rss::of(self.repo.pid())
    }

    fn synapse_rss(&self) -> anyhow::Result<Rss> {
        Rss::of(self.hs3.pid())
    }
}

/// Uploads `bytes` to `hs2` as the user with `token`; the new media's id.
fn upload_to_hs2(
    http: &Client,
    hs2: &FederatingSynapse,
    token: &str,
    bytes: Vec<u8>,
) -> anyhow::Result<String> {
    let url = format!(
        "{}/_matrix/media/v3/upload?filename=bench.bin",
        hs2.client_url()
    );
    let response = http
        .post(&url)
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let body = response.text().context("reading hs2's upload answer")?;
    ensure!(status.is_success(), "upload to hs2: {status}: {body}");
    let json: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("hs2's upload answer is not JSON: {body}"))?;
    let uri = json["content_uri"]
        .as_str()
        .with_context(|| format!("no content_uri in hs2's upload answer: {body}"))?;
    Ok(uri.rsplit('/').next().unwrap_or(uri).to_owned())
}

/// From `/proc/<pid>/status`, in KiB.
#[derive(Clone, Copy)]
struct Rss {
    /// VmHWM: the peak resident set size since the process started.
    peak_kib: u64,
}

impl Rss {
    fn of(pid: u32) -> anyhow::Result<Rss> {
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {path} (did the process exit?)"))?;
        let peak_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no VmHWM line in {path}"))?;
        Ok(Rss { peak_kib })
    }
}

struct Row {
    size_label: &'static str,
    size: usize,
    path: Path,
    times: Vec<Timing>,
    rss_before: Rss,
    rss_after: Rss,
}

impl Row {
    fn first_bytes(&self) -> Vec<f64> {
        self.times
            .iter()
            .map(|t| t.first_byte.as_secs_f64())
            .collect()
    }

    fn last_bytes(&self) -> Vec<f64> {
        self.times
            .iter()
            .map(|t| t.last_byte.as_secs_f64())
            .collect()
    }
}

/// One row per size and path, then per size the ratios A / Synapse.
fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| size | path | first byte, s | last byte, s | MB/s | peak RSS (VmHWM) after, MiB | growth over this size, MiB |\n\
         |---|---|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let last = median(&row.last_bytes());
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {:.1} | {:.1} |\n",
            row.size_label,
            row.path.name(),
            spread(&row.first_bytes()),
            spread(&row.last_bytes()),
            row.size as f64 / last / 1e6,
            mib(row.rss_after.peak_kib),
            mib(row.rss_after.peak_kib) - mib(row.rss_before.peak_kib),
        ));
    }
    out.push_str(
        "\n| size | A / Synapse, last byte | A / Synapse, first byte | A / Synapse, peak RSS |\n\
         |---|---:|---:|---:|\n",
    );
    for pair in rows.chunks(2) {
        let [a, s] = pair else { continue };
        out.push_str(&format!(
            "| {} | **{:.2}** | {:.2} | **{:.2}** |\n",
            a.size_label,
            median(&a.last_bytes()) / median(&s.last_bytes()),
            median(&a.first_bytes()) / median(&s.first_bytes()),
            a.rss_after.peak_kib as f64 / s.rss_after.peak_kib as f64,
        ));
    }
    out
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// `median (min–max)` in seconds.
fn spread(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(0.0, f64::max);
    format!("{:.3} ({min:.3}–{max:.3})", median(values))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn cmdline(pid: u32) -> anyhow::Result<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline"))
        .with_context(|| format!("reading /proc/{pid}/cmdline"))?;
    Ok(String::from_utf8_lossy(&raw)
        .replace('\0', " ")
        .trim()
        .to_owned())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| {
            let fields: Vec<&str> = l.split_whitespace().take(3).collect();
            (fields.len() == 3).then(|| fields.join(" "))
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown time".to_owned())
}

fn log(message: &str) {
    eprintln!("[federation-bench] {message}");
}
