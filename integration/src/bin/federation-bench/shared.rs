//! `federation-bench --shared`: remote media fetched once for every repo that shares the
//! cache shards. media-repo A (serving hs1) and media-repo B (serving hs3) share three
//! redis-server shards (`cache.backend: redis`); the comparison is the same two repos with
//! `cache.backend: none`, where each repo fetches for itself. Per round, fresh media on
//! hs2 and 20 concurrent first requests, 10 to A (a user on hs1) and 10 to B (a user on
//! hs3): how many requests reach hs2, and the wall time until all 20 are served (every body
//! checked against the upload's SHA-256 after the clock stops).
//!
//! Setup as in the e2e test `shared_fetch` (`integration::federated_repo`): three
//! `FederatingSynapse`s, three `RedisServer`s, A and B started from `repo_yaml`; clients
//! talk to A's and B's ports straight (plain HTTP on loopback).

use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use integration::federated_repo::{redis_cache_yaml, start_repo_for, start_three_synapses};
use integration::{wait_until, FederatingSynapse, MediaRepo, RedisServer, TestCa};
use rand::RngCore as _;
use reqwest::blocking::Client;
use sha2::{Digest as _, Sha256};

use crate::{
    forget_on_signal, kill_on_signal, load_average, log, median, remove_on_signal, spread,
    upload_to_hs2, utc_now, LOG_TIMEOUT, REQUEST_TIMEOUT,
};

/// Concurrent first requests per round, split evenly across A and B.
const CLIENTS: usize = 20;
/// Redis shards A and B share.
const SHARDS: usize = 3;
/// After hs2 logged the first federation download of a round's media, how long to wait
/// for a late second one before counting (Synapse logs a request when it has answered it).
const SETTLE: Duration = Duration::from_secs(1);
/// The warm-up round's media size (not measured): hs2 fetches hs1's and hs3's keys, the
/// repos check the users' tokens, and the client opens its 20 connections.
const WARM_UP_BYTES: usize = 4096;

/// One configuration measured: media size, and `cache.max_object_bytes` if not the
/// default (64 MiB).
struct Case {
    label: &'static str,
    size: usize,
    max_object_bytes: Option<u64>,
}

const CASES: [Case; 3] = [
    Case {
        label: "1 MiB",
        size: 1 << 20,
        max_object_bytes: None,
    },
    Case {
        label: "20 MiB",
        size: 20 << 20,
        max_object_bytes: None,
    },
    Case {
        label: "20 MiB",
        size: 20 << 20,
        max_object_bytes: Some(8 << 20),
    },
];

/// A's and B's `cache.backend`s, the shared one first.
const BACKENDS: [&str; 2] = ["redis", "none"];

/// What one round measured.
struct Round {
    /// Requests for this media that reached hs2's federation download endpoint.
    remote_requests: usize,
    /// From releasing the 20 clients to the last byte of the last body.
    all_served: Duration,
    /// The same for A's 10 clients and for B's, the repo done first first (with the shared
    /// cache, that is normally the lease holder, whose clients read while the bytes arrive).
    repos_served: [Duration; 2],
    /// Whether A's clients were served first.
    a_first: bool,
    /// What A and B logged about this media: copied from the shared cache, or found the
    /// shared record without a usable blob and fetched it themselves.
    logged: [&'static str; 2],
}

struct Stack {
    shards: Vec<RedisServer>,
    hs1: FederatingSynapse,
    hs3: FederatingSynapse,
    hs2: FederatingSynapse,
    ca: TestCa,
    /// bob on hs2 (uploads), alice on hs1 (downloads through A), carol on hs3 (through B).
    tokens: [String; 3],
    http: Client,
}

/// A and B with one cache backend; their pids are registered with the signal thread.
struct Pair {
    a: MediaRepo,
    b: MediaRepo,
}

impl Drop for Pair {
    fn drop(&mut self) {
        // Before the fields' `Drop` kills and reaps them.
        forget_on_signal(self.a.pid());
        forget_on_signal(self.b.pid());
    }
}

pub fn run(rounds: usize) -> anyhow::Result<()> {
    let started_at = utc_now();
    let load_before = load_average();
    log("--shared: starting hs1, hs2, hs3 (Synapse) and 3 redis-server shards");
    let stack = Stack::start()?;
    let mut lines = Vec::new();
    for case in &CASES {
        let pairs = [
            stack.pair(BACKENDS[0], case.max_object_bytes)?,
            stack.pair(BACKENDS[1], case.max_object_bytes)?,
        ];
        for (pair, backend) in pairs.iter().zip(BACKENDS) {
            stack
                .round(pair, WARM_UP_BYTES)
                .with_context(|| format!("warm-up round, cache.backend {backend}"))?;
        }
        let mut results: [Vec<Round>; 2] = [Vec::new(), Vec::new()];
        for round in 0..rounds {
            // Alternate which backend goes first.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let r = stack.round(&pairs[i], case.size).with_context(|| {
                    format!(
                        "{}, cache.backend {}, round {}",
                        case.label,
                        BACKENDS[i],
                        round + 1
                    )
                })?;
                log(&format!(
                    "{} (max_object_bytes {}), cache.backend {}: round {}: {} remote request(s), all {CLIENTS} served in {:.3} s ({} first, after {:.3} s); A {}, B {}",
                    case.label,
                    max_object_label(case.max_object_bytes),
                    BACKENDS[i],
                    round + 1,
                    r.remote_requests,
                    r.all_served.as_secs_f64(),
                    if r.a_first { "A's clients" } else { "B's clients" },
                    r.repos_served[0].as_secs_f64(),
                    r.logged[0],
                    r.logged[1],
                ));
                results[i].push(r);
            }
        }
        lines.push((row(case, &results), per_repo_row(case, &results)));
    }
    let load_after = load_average();
    drop(stack);

    println!(
        "federation-bench --shared, {started_at}; media-repo {}; A (hs1) and B (hs3), \
         {CLIENTS} concurrent first requests per round split {}/{}; \
         median of {rounds} rounds (min–max in brackets); \
         load average before {load_before}, after {load_after}\n",
        integration::media_repo_bin().display(),
        CLIENTS / 2,
        CLIENTS - CLIENTS / 2,
    );
    println!(
        "| media | cache.max_object_bytes | remote requests, redis (per round) | remote requests, none (per round) | all {CLIENTS} served, redis, s | all {CLIENTS} served, none, s | redis / none, time | redis / none, remote requests |\n\
         |---|---|---|---|---:|---:|---:|---:|"
    );
    for (line, _) in &lines {
        println!("{line}");
    }
    println!(
        "\n| media | cache.max_object_bytes | first repo's {half} served, redis, s | other repo's {half}, redis, s | first repo's {half}, none, s | other repo's {half}, none, s |\n\
         |---|---|---:|---:|---:|---:|",
        half = CLIENTS / 2
    );
    for (_, line) in &lines {
        println!("{line}");
    }
    Ok(())
}

fn max_object_label(max: Option<u64>) -> String {
    match max {
        None => "64 MiB (default)".to_owned(),
        Some(bytes) => format!("{} MiB", bytes >> 20),
    }
}

/// Per backend, when the first repo's clients and when the other's were all served (median
/// of rounds).
fn per_repo_row(case: &Case, results: &[Vec<Round>; 2]) -> String {
    let times = |rounds: &[Round], repo: usize| -> String {
        let values: Vec<f64> = rounds
            .iter()
            .map(|r| r.repos_served[repo].as_secs_f64())
            .collect();
        format!("{:.3}", median(&values))
    };
    format!(
        "| {} | {} | {} | {} | {} | {} |",
        case.label,
        max_object_label(case.max_object_bytes),
        times(&results[0], 0),
        times(&results[0], 1),
        times(&results[1], 0),
        times(&results[1], 1),
    )
}

fn row(case: &Case, results: &[Vec<Round>; 2]) -> String {
    let requests = |rounds: &[Round]| -> Vec<f64> {
        rounds.iter().map(|r| r.remote_requests as f64).collect()
    };
    let times = |rounds: &[Round]| -> Vec<f64> {
        rounds.iter().map(|r| r.all_served.as_secs_f64()).collect()
    };
    let list = |rounds: &[Round]| {
        rounds
            .iter()
            .map(|r| r.remote_requests.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "| {} | {} | {} ({}) | {} ({}) | {} | {} | **{:.2}** | **{:.2}** |",
        case.label,
        max_object_label(case.max_object_bytes),
        median(&requests(&results[0])),
        list(&results[0]),
        median(&requests(&results[1])),
        list(&results[1]),
        spread(&times(&results[0])),
        spread(&times(&results[1])),
        median(&times(&results[0])) / median(&times(&results[1])),
        median(&requests(&results[0])) / median(&requests(&results[1])),
    )
}

impl Stack {
    fn start() -> anyhow::Result<Stack> {
        let ca = TestCa::new().context("creating the test CA")?;
        if let Some(dir) = ca.cert_path().parent() {
            remove_on_signal(dir.to_owned());
        }
        let (hs1, hs2, hs3) = start_three_synapses(&ca)?;
        let mut shards = Vec::new();
        for _ in 0..SHARDS {
            let shard = RedisServer::start().context("starting a redis-server shard")?;
            kill_on_signal(shard.pid());
            remove_on_signal(shard.dir().to_owned());
            shards.push(shard);
        }
        let tokens = [
            hs2.user_token("bob").context("user on hs2")?,
            hs1.user_token("alice").context("user on hs1")?,
            hs3.user_token("carol").context("user on hs3")?,
        ];
        let http = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(Stack {
            shards,
            hs1,
            hs3,
            hs2,
            ca,
            tokens,
            http,
        })
    }

    /// A (for hs1) and B (for hs3) with `cache.backend` `backend` (`redis` over the three
    /// shards, or `none`), and `cache.max_object_bytes` if given.
    fn pair(&self, backend: &str, max_object_bytes: Option<u64>) -> anyhow::Result<Pair> {
        let mut cache = if backend == "redis" {
            redis_cache_yaml(&self.shards)
        } else {
            format!("cache:\n  backend: {backend}\n")
        };
        if let Some(max) = max_object_bytes {
            cache += &format!("  max_object_bytes: {max}\n");
        }
        let start = |hs: &FederatingSynapse| -> anyhow::Result<MediaRepo> {
            let repo = start_repo_for(hs, &self.ca, &cache)?;
            kill_on_signal(repo.pid());
            remove_on_signal(repo.dir().to_owned());
            Ok(repo)
        };
        let a = start(&self.hs1).context("starting A")?;
        let b = start(&self.hs3).context("starting B")?;
        Ok(Pair { a, b })
    }

    /// Uploads `size` fresh random bytes to hs2, releases [`CLIENTS`] concurrent downloads
    /// of them (even ones through A, odd ones through B), and measures.
    fn round(&self, pair: &Pair, size: usize) -> anyhow::Result<Round> {
        let mut bytes = vec![0u8; size];
        rand::thread_rng().fill_bytes(&mut bytes);
        let expected = Sha256::digest(&bytes);
        let media_id = upload_to_hs2(&self.http, &self.hs2, &self.tokens[0], bytes)?;
        let barrier = Barrier::new(CLIENTS + 1);
        let (started, served) = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..CLIENTS)
                .map(|i| {
                    let (repo, token) = if i % 2 == 0 {
                        (&pair.a, &self.tokens[1])
                    } else {
                        (&pair.b, &self.tokens[2])
                    };
                    let url = format!(
                        "{}/_matrix/client/v1/media/download/{}/{media_id}",
                        repo.base_url(),
                        self.hs2.server_name
                    );
                    let (http, barrier) = (&self.http, &barrier);
                    scope.spawn(move || -> anyhow::Result<(Instant, Vec<u8>)> {
                        barrier.wait();
                        let response = http
                            .get(&url)
                            .bearer_auth(token)
                            .send()
                            .with_context(|| format!("GET {url}"))?;
                        let status = response.status();
                        let body = response
                            .bytes()
                            .with_context(|| format!("reading the body of GET {url}"))?;
                        ensure!(status.is_success(), "GET {url}: {status}");
                        Ok((Instant::now(), body.to_vec()))
                    })
                })
                .collect();
            barrier.wait();
            let started = Instant::now();
            let served: Vec<_> = handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("a client thread panicked"))?
                })
                .collect();
            (started, served)
        });
        let mut last = [started; 2];
        for (i, result) in served.into_iter().enumerate() {
            let (done, body) = result?;
            ensure!(
                body.len() == size && Sha256::digest(&body) == expected,
                "a client got {} bytes, not the {size} uploaded (or other bytes)",
                body.len()
            );
            last[i % 2] = last[i % 2].max(done);
        }
        let federation_path = format!("/_matrix/federation/v1/media/download/{media_id}");
        wait_until("hs2 to log the federation download", LOG_TIMEOUT, || {
            self.hs2.count_requests(&federation_path) >= 1
        })
        .with_context(|| format!("hs2 logged no {federation_path}"))?;
        std::thread::sleep(SETTLE);
        let logged = [&pair.a, &pair.b].map(|repo| what_repo_logged(repo, &media_id));
        Ok(Round {
            remote_requests: self.hs2.count_requests(&federation_path),
            all_served: last[0].max(last[1]) - started,
            repos_served: [
                last[0].min(last[1]) - started,
                last[0].max(last[1]) - started,
            ],
            a_first: last[0] <= last[1],
            logged,
        })
    }
}

/// What `repo` logged about `media_id`: one of the shared-fetch outcomes of
/// `crates/web/src/media/remote.rs`, else "fetched or logged nothing".
fn what_repo_logged(repo: &MediaRepo, media_id: &str) -> &'static str {
    let logs = repo.logs();
    let about: Vec<&str> = logs.lines().filter(|l| l.contains(media_id)).collect();
    if about
        .iter()
        .any(|l| l.contains("copied from the shared cache"))
    {
        "copied from the cache"
    } else if about
        .iter()
        .any(|l| l.contains("not usable from the cache"))
    {
        "found the record without a usable blob and fetched"
    } else {
        "fetched or logged nothing"
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for shard in &self.shards {
            forget_on_signal(shard.pid());
        }
    }
}
