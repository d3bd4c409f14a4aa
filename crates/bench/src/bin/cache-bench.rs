//! `cache-bench`: the cache's actor path against plain redis-rs, plus ring lookup cost.
//!
//! One run starts its own `redis-server` (free port, no persistence), then for each blob
//! size measures `put` and `get` with the same number of concurrent tasks through
//!
//! * the actor path: `mr_cache::Cache` (backend redis, one shard = that server), inside an
//!   actix System — `put_blob`, and `open_blob` + every `BlobRead::Data` to the end; and the
//!   same with the tasks spread over two actix arbiters, as the server's requests are over
//!   its two workers (each worker reads through its own shard reader);
//! * plain redis-rs (the baseline): `SET`/`GET` of one value of that size over
//!   `ConnectionManager`s, on a 2-worker tokio runtime; for reference also with the cache's
//!   two commands per operation (chunk + header), and on one thread.
//!
//! Every case is repeated `--rounds` times (paths interleaved) and the median is printed as
//! a markdown table. redis-rs is used here for the baseline only.
//!
//! Run: `cargo run --release -p mr-bench --bin cache-bench [-- --rounds 3 --secs 2]`.

use std::hint::black_box;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use integration::RedisServer;
use mr_bench::cpu::{CpuSnapshot, CpuUse};
use mr_bench::load::{drive, Outcome};
use mr_bench::stats::{median, min_max};
use mr_cache::{BlobRead, Cache};
use mr_config::{CacheBackend, CacheConfig, RedisConfig, ShardConfig};
use mr_ring::{hashing, RingActor, RingHandle};
use redis::aio::ConnectionManager;

/// Blob sizes measured, with the actor/plain ratio the issue asks for (None: no goal set).
const SIZES: [(&str, usize, Option<f64>); 3] = [
    ("4 KiB", 4 * 1024, Some(0.7)),
    ("64 KiB", 64 * 1024, None),
    ("1 MiB", 1024 * 1024, Some(0.9)),
];
/// How long the shards get to report up before the benchmark gives up.
const UP_TIMEOUT: Duration = Duration::from_secs(10);
/// Distinct keys the ring lookups cycle through (a power of two, indexed by mask).
const LOOKUP_KEYS: usize = 4096;
/// Worker threads of the baseline's runtime: the machine's cores.
const PLAIN_THREADS: usize = 2;

#[derive(Parser, Debug)]
#[command(about = "Cache actor path vs plain redis-rs, and ring lookup cost")]
struct Args {
    /// Times every case is repeated; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Measured seconds per case and path.
    #[arg(long, default_value_t = 2.0)]
    secs: f64,
    /// Unmeasured seconds before each case and path.
    #[arg(long, default_value_t = 0.5)]
    warmup_secs: f64,
    /// Concurrent tasks issuing operations.
    #[arg(long, default_value_t = 16)]
    tasks: usize,
    /// Ring lookups timed per figure.
    #[arg(long, default_value_t = 2_000_000)]
    lookups: usize,
    /// Only this blob size, in KiB (for profiling one case; the table then has gaps).
    #[arg(long)]
    only_kib: Option<usize>,
    /// Only this operation: `put` or `get`.
    #[arg(long)]
    only_op: Option<String>,
    /// Only this path: `actor`, `actor2`, `plain`, `plain2` or `plain1`.
    #[arg(long)]
    only_path: Option<String>,
}

impl Args {
    fn wants(&self, size: usize, op: Op, path: Path) -> bool {
        let op_name = if op == Op::Put { "put" } else { "get" };
        let path_name = match path {
            Path::Actor => "actor",
            Path::ActorOnWorkers => "actor2",
            Path::Plain => "plain",
            Path::PlainTwoCommands => "plain2",
            Path::PlainOneThread => "plain1",
        };
        let size_ok = match self.only_kib {
            Some(kib) => kib * 1024 == size,
            None => true,
        };
        let op_ok = match &self.only_op {
            Some(only) => only == op_name,
            None => true,
        };
        let path_ok = match &self.only_path {
            Some(only) => only == path_name,
            None => true,
        };
        size_ok && op_ok && path_ok
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Put,
    Get,
}

/// The ways a case is run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    /// `mr_cache::Cache` → ring → shard actor (its own thread) → Redis, every task on the
    /// System's one thread.
    Actor,
    /// The actor path with the tasks spread over [`PLAIN_THREADS`] actix arbiters: the
    /// server's shape (requests on every worker), and the baseline's number of threads.
    ActorOnWorkers,
    /// Plain redis-rs, one command per operation, 2-worker runtime: the baseline.
    Plain,
    /// Plain redis-rs issuing the cache's command pattern (chunk + header, one after the
    /// other), 2-worker runtime: separates the key layout's cost from the actor hop's.
    PlainTwoCommands,
    /// The baseline on one thread (the same runtime shape as the actor path's callers).
    PlainOneThread,
}

const PATHS: [Path; 5] = [
    Path::Actor,
    Path::ActorOnWorkers,
    Path::Plain,
    Path::PlainTwoCommands,
    Path::PlainOneThread,
];
/// Size of the header value the two-command baseline writes: about what the cache's blob
/// header takes for a one-chunk blob.
const HEADER_BYTES: usize = 40;

struct Sample {
    size_idx: usize,
    op: Op,
    path: Path,
    outcome: Outcome,
    /// CPU this process and the redis-server used during the measured run.
    cpu: CpuUse,
}

/// The same allocator as the `media-repo` binary, so the actor path is measured as it runs
/// there (the plain baseline shares it: one process).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rounds == 0 || args.tasks == 0 || args.secs <= 0.0 {
        bail!("--rounds, --tasks and --secs must be positive");
    }
    let server = RedisServer::start()?;
    let system = actix_rt::System::new();
    let connections = RedisConfig::default().connections_per_shard;

    let cache = system.block_on(start_cache(&server.url()))?;
    let plain_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(PLAIN_THREADS)
        .enable_all()
        .build()?;
    // Each set of managers is created on the runtime that will drive it, so its I/O task
    // runs there (see DESIGN.md: a manager's I/O stays on the thread that created it).
    let plain = plain_rt.block_on(connect_plain(&server.url(), connections))?;
    let plain_local = system.block_on(connect_plain(&server.url(), connections))?;
    let workers: Vec<actix_rt::Arbiter> = (0..PLAIN_THREADS)
        .map(|_| actix_rt::Arbiter::new())
        .collect();

    let warmup = Duration::from_secs_f64(args.warmup_secs);
    let measure = Duration::from_secs_f64(args.secs);
    let mut samples = Vec::new();
    for round in 0..args.rounds {
        eprintln!("round {}/{}", round + 1, args.rounds);
        for (size_idx, &(_, size, _)) in SIZES.iter().enumerate() {
            let data = blob(size);
            for op in [Op::Put, Op::Get] {
                for path in PATHS {
                    if !args.wants(size, op, path) {
                        continue;
                    }
                    let case = Case {
                        size,
                        op,
                        first_task: 0,
                        tasks: args.tasks,
                        data: data.clone(),
                    };
                    let run = |duration| match path {
                        Path::Actor => system.block_on(case.actor(&cache, duration)),
                        Path::ActorOnWorkers => {
                            system.block_on(case.actor_on(&workers, &cache, duration))
                        }
                        Path::Plain => plain_rt.block_on(case.plain(&plain, duration, false)),
                        Path::PlainTwoCommands => {
                            plain_rt.block_on(case.plain(&plain, duration, true))
                        }
                        Path::PlainOneThread => {
                            system.block_on(case.plain(&plain_local, duration, false))
                        }
                    };
                    run(warmup);
                    let before = CpuSnapshot::take(server.pid());
                    let outcome = run(measure);
                    let cpu = before.until(&CpuSnapshot::take(server.pid()));
                    samples.push(Sample {
                        size_idx,
                        op,
                        path,
                        outcome,
                        cpu,
                    });
                }
            }
        }
    }

    let ring = system.block_on(ring_costs(&server.url(), args.lookups))?;
    print_report(&args, &samples, &ring, connections);
    drop(server);
    Ok(())
}

/// A `Cache` with the redis backend over one shard (the bench server), once it is up.
async fn start_cache(url: &str) -> Result<Cache> {
    let cfg = CacheConfig {
        backend: CacheBackend::Redis,
        redis: redis_config(
            url,
            &["bench"],
            RedisConfig::default().connections_per_shard,
        ),
        ..CacheConfig::default()
    };
    let cache = Cache::start(&cfg);
    let started = Instant::now();
    loop {
        let status = cache.status().await;
        if !status.shards.is_empty() && status.shards.iter().all(|s| s.up) {
            return Ok(cache);
        }
        if started.elapsed() > UP_TIMEOUT {
            bail!("the cache's shard did not come up: {:?}", status.shards);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn redis_config(url: &str, names: &[&str], connections: usize) -> RedisConfig {
    RedisConfig {
        shards: names
            .iter()
            .map(|name| ShardConfig {
                name: (*name).to_owned(),
                addr: url.to_owned(),
            })
            .collect(),
        connections_per_shard: connections,
        ..RedisConfig::default()
    }
}

/// As many plain managers as the shard actor has connections, used round-robin by task.
async fn connect_plain(url: &str, connections: usize) -> Result<Arc<Vec<ConnectionManager>>> {
    let client = redis::Client::open(url)?;
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        conns.push(
            ConnectionManager::new(client.clone())
                .await
                .context("plain redis-rs connection")?,
        );
    }
    Ok(Arc::new(conns))
}

/// `size` bytes of a repeating, not-all-zero pattern.
fn blob(size: usize) -> Bytes {
    (0..size)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into()
}

/// One blob size and operation, as every path runs it.
#[derive(Clone)]
struct Case {
    size: usize,
    op: Op,
    /// Index of this case's first task: cases run side by side on several arbiters use
    /// different keys.
    first_task: usize,
    tasks: usize,
    data: Bytes,
}

impl Case {
    /// Per-task blob ids (valid sha256 hex) so tasks never share a key.
    fn shas(&self) -> Arc<Vec<String>> {
        Arc::new(
            (self.first_task..self.first_task + self.tasks)
                .map(|t| format!("{:016x}{:048x}", self.size, t))
                .collect(),
        )
    }

    /// [`Case::actor`] with the tasks spread over `workers` (each its own thread), run at
    /// once; the outcomes add up, over the longest run's time.
    async fn actor_on(
        &self,
        workers: &[actix_rt::Arbiter],
        cache: &Cache,
        duration: Duration,
    ) -> Outcome {
        let mut results = Vec::new();
        let mut first_task = 0;
        for (i, worker) in workers.iter().enumerate() {
            let tasks = self.tasks / workers.len() + usize::from(i < self.tasks % workers.len());
            let part = Case {
                first_task,
                tasks,
                ..self.clone()
            };
            first_task += tasks;
            let (done, result) = tokio::sync::oneshot::channel();
            let cache = cache.clone();
            worker.spawn(async move {
                let _ = done.send(part.actor(&cache, duration).await);
            });
            results.push(result);
        }
        let mut total = Outcome::default();
        for result in results {
            // A worker that died is a bug in the benchmark: one failure, no operations.
            let part = result.await.unwrap_or(Outcome {
                failed: 1,
                ..Outcome::default()
            });
            total.ok += part.ok;
            total.failed += part.failed;
            total.elapsed = total.elapsed.max(part.elapsed);
        }
        total
    }

    fn plain_keys(&self) -> Arc<Vec<String>> {
        Arc::new(
            (0..self.tasks)
                .map(|t| format!("bench:plain:{}:{t}", self.size))
                .collect(),
        )
    }

    async fn actor(&self, cache: &Cache, duration: Duration) -> Outcome {
        let shas = self.shas();
        let size = self.size;
        if self.op == Op::Get {
            for sha in shas.iter() {
                let stored = cache.put_blob(sha, size as u64, &self.data[..]).await;
                if !matches!(stored, Ok(true)) {
                    eprintln!("warning: preloading {sha} through the cache failed: {stored:?}");
                }
            }
        }
        let cache = cache.clone();
        let data = self.data.clone();
        match self.op {
            Op::Put => {
                drive(self.tasks, duration, move |task| {
                    let (cache, shas, data) = (cache.clone(), shas.clone(), data.clone());
                    async move {
                        matches!(
                            cache.put_blob(&shas[task], size as u64, &data[..]).await,
                            Ok(true)
                        )
                    }
                })
                .await
            }
            Op::Get => {
                drive(self.tasks, duration, move |task| {
                    let (cache, shas) = (cache.clone(), shas.clone());
                    async move {
                        let Some(mut reader) = cache.open_blob(&shas[task], None).await else {
                            return false;
                        };
                        let mut read = 0;
                        loop {
                            match reader.next().await {
                                BlobRead::Data(bytes) => read += black_box(bytes).len(),
                                BlobRead::End => return read == size,
                                BlobRead::Lost { .. } => return false,
                            }
                        }
                    }
                })
                .await
            }
        }
    }

    /// `two_commands`: also write / read a small header key after / before the value, one
    /// command after the other, as the cache does for a one-chunk blob.
    async fn plain(
        &self,
        conns: &Arc<Vec<ConnectionManager>>,
        duration: Duration,
        two_commands: bool,
    ) -> Outcome {
        let keys = self.plain_keys();
        let header = Bytes::from(vec![7u8; HEADER_BYTES]);
        let size = self.size;
        if self.op == Op::Get {
            for key in keys.iter() {
                let mut conn = conns[0].clone();
                let stored: redis::RedisResult<()> = redis::pipe()
                    .cmd("SET")
                    .arg(key)
                    .arg(self.data.as_ref())
                    .ignore()
                    .cmd("SET")
                    .arg(format!("{key}:m"))
                    .arg(header.as_ref())
                    .ignore()
                    .query_async(&mut conn)
                    .await;
                if let Err(err) = stored {
                    eprintln!("warning: preloading {key} with plain redis-rs failed: {err}");
                }
            }
        }
        let conns = conns.clone();
        let data = self.data.clone();
        let op = self.op;
        drive(self.tasks, duration, move |task| {
            let mut conn = conns[task % conns.len()].clone();
            let (keys, data, header) = (keys.clone(), data.clone(), header.clone());
            async move {
                let key = &keys[task];
                match op {
                    Op::Put => {
                        let value = redis::cmd("SET")
                            .arg(key)
                            .arg(data.as_ref())
                            .query_async::<()>(&mut conn)
                            .await;
                        if value.is_err() || !two_commands {
                            return value.is_ok();
                        }
                        redis::cmd("SET")
                            .arg(format!("{key}:m"))
                            .arg(header.as_ref())
                            .query_async::<()>(&mut conn)
                            .await
                            .is_ok()
                    }
                    Op::Get => {
                        if two_commands {
                            let got = redis::cmd("GET")
                                .arg(format!("{key}:m"))
                                .query_async::<Option<Bytes>>(&mut conn)
                                .await;
                            if !matches!(got, Ok(Some(_))) {
                                return false;
                            }
                        }
                        matches!(
                            redis::cmd("GET")
                                .arg(&keys[task])
                                .query_async::<Option<Bytes>>(&mut conn)
                                .await,
                            Ok(Some(bytes)) if black_box(&bytes).len() == size
                        )
                    }
                }
            }
        })
        .await
    }
}

/// Nanoseconds per ring lookup: `(label, ns)`.
async fn ring_costs(url: &str, lookups: usize) -> Result<Vec<(String, f64)>> {
    let keys: Vec<String> = (0..LOOKUP_KEYS)
        .map(|i| format!("mr1:blob:{{{i:064x}}}:m"))
        .collect();
    let lookups = lookups.max(1);
    let mut costs = Vec::new();
    for shards in [3usize, 8] {
        let names: Vec<String> = (0..shards).map(|i| format!("shard-{i}")).collect();
        let started = Instant::now();
        for i in 0..lookups {
            black_box(hashing::pick(
                names.iter().map(String::as_str),
                black_box(&keys[i & (LOOKUP_KEYS - 1)]),
            ));
        }
        costs.push((
            format!("`hashing::pick`, {shards} shards"),
            started.elapsed().as_nanos() as f64 / lookups as f64,
        ));
    }
    for shards in [3usize, 8] {
        let names: Vec<String> = (0..shards).map(|i| format!("shard-{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        // Every shard points at the bench server, so all are up without more servers.
        let (_ring, handle) = RingActor::start(&redis_config(url, &names, 1));
        wait_all_up(&handle, shards).await?;
        let started = Instant::now();
        for i in 0..lookups {
            black_box(handle.route(black_box(&keys[i & (LOOKUP_KEYS - 1)])));
        }
        costs.push((
            format!("`RingHandle::route`, {shards} shards up"),
            started.elapsed().as_nanos() as f64 / lookups as f64,
        ));
    }
    Ok(costs)
}

async fn wait_all_up(handle: &RingHandle, shards: usize) -> Result<()> {
    let started = Instant::now();
    loop {
        let all = handle.shards();
        if all.len() == shards && all.iter().all(|s| s.is_up()) {
            return Ok(());
        }
        if started.elapsed() > UP_TIMEOUT {
            bail!("ring with {shards} shards did not come up");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn print_report(args: &Args, samples: &[Sample], ring: &[(String, f64)], connections: usize) {
    let redis_version = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "{} tasks, {} s measured after {} s warm-up per case and path, median of {} rounds; \
         {} connections per shard (actor) and per baseline; {} cores; {}\n",
        args.tasks, args.secs, args.warmup_secs, args.rounds, connections, cores, redis_version
    );
    println!(
        "| blob | op | actor ops/s | actor MB/s | plain ops/s | plain MB/s | actor/plain \
         (min–max) | goal | actor on 2 workers ops/s | actor on 2 workers/plain (min–max) | \
         plain 2-cmd ops/s | actor/plain 2-cmd | plain 1-thread ops/s | actor/plain 1-thread |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    let mut failed = Vec::new();
    for (size_idx, &(label, size, goal)) in SIZES.iter().enumerate() {
        for op in [Op::Put, Op::Get] {
            let outcomes = |path: Path| -> Vec<Outcome> {
                samples
                    .iter()
                    .filter(|s| s.size_idx == size_idx && s.op == op && s.path == path)
                    .map(|s| s.outcome)
                    .collect()
            };
            let actor = outcomes(Path::Actor);
            let ops =
                |o: &[Outcome]| median(&o.iter().map(Outcome::ops_per_sec).collect::<Vec<_>>());
            // Ratios per round (paths ran back to back), so slow phases of the machine
            // weigh on both sides of one ratio.
            let ratios_of = |ours: &[Outcome], other: &[Outcome]| -> Vec<f64> {
                ours.iter()
                    .zip(other)
                    .map(|(a, p)| a.ops_per_sec() / p.ops_per_sec())
                    .collect()
            };
            let ratios = |other: &[Outcome]| ratios_of(&actor, other);
            let mut cells = Vec::new();
            for path in PATHS {
                let o = outcomes(path);
                let lost: u64 = o.iter().map(|o| o.failed).sum();
                if lost > 0 {
                    failed.push(format!("{label} {op:?} {path:?}: {lost}"));
                }
                cells.push((ops(&o), median(&ratios(&o)), min_max(&ratios(&o))));
            }
            let [(a, _, _), (w, _, _), (p, r, (lo, hi)), (p2, r2, _), (p1, r1, _)] = cells[..]
            else {
                continue;
            };
            let on_workers = ratios_of(&outcomes(Path::ActorOnWorkers), &outcomes(Path::Plain));
            let (rw, (wlo, whi)) = (median(&on_workers), min_max(&on_workers));
            let mb = |ops: f64| ops * size as f64 / 1e6;
            let goal = goal.map_or("—".to_owned(), |g| {
                format!("≥ {g} {}", if r >= g { "met" } else { "**missed**" })
            });
            println!(
                "| {label} | {} | {a:.0} | {:.1} | {p:.0} | {:.1} | {r:.2} ({lo:.2}–{hi:.2}) | \
                 {goal} | {w:.0} | {rw:.2} ({wlo:.2}–{whi:.2}) | {p2:.0} | {r2:.2} | {p1:.0} | \
                 {r1:.2} |",
                if op == Op::Put { "put" } else { "get" },
                mb(a),
                mb(p),
            );
        }
    }
    if failed.is_empty() {
        println!("\nfailed operations: none\n");
    } else {
        println!(
            "\nfailed operations (not counted as throughput): {}\n",
            failed.join(", ")
        );
    }
    print_cpu(samples);
    println!("| ring lookup | ns/op |");
    println!("|---|---:|");
    for (label, ns) in ring {
        println!("| {label} | {ns:.0} |");
    }
}

/// Where the CPU went, per case, for the actor path and the baseline: CPU per operation of
/// this process and the redis-server together (medians over the rounds), how many cores each
/// kept busy, and this process's busiest threads in the last round.
fn print_cpu(samples: &[Sample]) {
    println!(
        "| blob | op | path | CPU µs/op (bench + redis) | bench cores | redis cores | \
         busiest threads, last round (share of a core) |"
    );
    println!("|---|---|---|---:|---:|---:|---|");
    for (size_idx, &(label, _, _)) in SIZES.iter().enumerate() {
        for op in [Op::Put, Op::Get] {
            for path in [Path::Actor, Path::ActorOnWorkers, Path::Plain] {
                let runs: Vec<&Sample> = samples
                    .iter()
                    .filter(|s| s.size_idx == size_idx && s.op == op && s.path == path)
                    .collect();
                let Some(last) = runs.last() else {
                    continue;
                };
                let per_run = |f: &dyn Fn(&Sample) -> f64| -> f64 {
                    median(&runs.iter().map(|s| f(s)).collect::<Vec<_>>())
                };
                let us_per_op = per_run(&|s| {
                    (s.cpu.process_secs + s.cpu.redis_secs) * 1e6 / s.outcome.ok.max(1) as f64
                });
                let cores = |secs: &dyn Fn(&CpuUse) -> f64| {
                    per_run(&|s| secs(&s.cpu) / s.outcome.elapsed.as_secs_f64())
                };
                let threads: Vec<String> = last
                    .cpu
                    .busiest
                    .iter()
                    .map(|(name, share)| format!("{name} {:.0} %", share * 100.0))
                    .collect();
                println!(
                    "| {label} | {} | {path:?} | {us_per_op:.1} | {:.2} | {:.2} | {} |",
                    if op == Op::Put { "put" } else { "get" },
                    cores(&|c| c.process_secs),
                    cores(&|c| c.redis_secs),
                    threads.join(", "),
                );
            }
        }
    }
    println!();
}
