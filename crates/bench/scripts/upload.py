#!/usr/bin/env python3
"""HTTP upload benchmark of issue 11 (upload tail latency), in one run.

16 concurrent uploads (one keep-alive connection each) of 4 KiB, 64 KiB and 1 MiB bodies to:
  * Synapse's own media repo (SQLite),
  * media-repo (release build), metadata in SQLite, file datastore,
  * media-repo, metadata in Postgres (a fresh schema in database `test` on 127.0.0.1:5432),
and prints req/s, p50, p90, p99 and max latency per size, with the ratios to Synapse and
whether the goal (p99 ≤ 2× Synapse's, req/s ≥ 3× Synapse's) is met, and the CPU time the
server process used per upload (from /proc; wrk and, for media-repo on Postgres, the
database are not in it). On two cores shared with wrk, req/s moves by ±15 % from run to
run; the CPU per upload moves far less, so A/B comparisons of media-repo builds read it.

Every request body is different (its first 16 bytes are a per-connection counter), so each
upload stores new content, as real uploads do, instead of finding its bytes already there.

The client is `upload-load` (crates/bench/src/bin/upload-load.rs): each connection reuses one
request buffer and rewrites only those 16 bytes, so the client costs little more than its
socket writes. BENCH_CLIENT=wrk uses wrk and a Lua script instead, as runs before the tenth
session did; at 1 MiB wrk spent 3-7 ms of a core building each distinct body, on the two
cores the servers need (docs/benchmarks.md), so its figures there are the client's pace.

The Synapse set-up, process handling and build come from download.py beside it (imported).
Everything started here is killed at the end, also on failure.

Usage:  python3 crates/bench/scripts/upload.py
Environment: BENCH_DURATION (s, default 10), BENCH_WARMUP (s, default 2),
BENCH_CONNECTIONS (default 16), BENCH_THREADS (default 2), BENCH_KEEP=1 keeps the temp dir
(every upload stays on disk: ~10 GB per full run; delete /tmp/mr-upload-bench-* afterwards,
but minutes before the next run, see docs/benchmarks.md on inode allocation), BENCH_BINARY=path uses that media-repo binary instead of building this checkout (to measure
an older commit in the same run conditions), BENCH_ONLY=synapse,sqlite,postgres picks targets,
BENCH_SIZES="1 MiB" picks sizes, BENCH_CLIENT=wrk picks the client (default upload-load),
BENCH_ROUNDS=N measures every size N times, each round all targets back to back, and reports
media-repo's round with the median ratio to Synapse's (and the spread of the ratios).
Needs what download.py needs, plus psql and a Postgres with trust auth on 127.0.0.1.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import download as dl  # noqa: E402  (the shared harness: Synapse, processes, build)

ALL_SIZES = [("4 KiB", 4 * 1024), ("64 KiB", 64 * 1024), ("1 MiB", 1024 * 1024)]
# BENCH_SIZES="1 MiB" (labels, comma-separated) runs only those sizes, e.g. under a profiler.
_chosen = [s.strip() for s in os.environ.get("BENCH_SIZES", "").split(",") if s.strip()]
SIZES = [size for size in ALL_SIZES if not _chosen or size[0] in _chosen]
if not SIZES:
    raise SystemExit(f"BENCH_SIZES names none of {[label for label, _ in ALL_SIZES]}")
PG_URL = "postgres://postgres@127.0.0.1:5432/test"
# Uploads one user may have running: above the connection count, so no upload is refused.
PER_USER_UPLOADS = 64
CLIENT = os.environ.get("BENCH_CLIENT", "upload-load")
if CLIENT not in ("upload-load", "wrk"):
    raise SystemExit(f"BENCH_CLIENT must be upload-load or wrk, not {CLIENT!r}")

# wrk script: POST the body file with a distinct 16-byte prefix per request.
WRK_SCRIPT = r"""
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local tail, headers
local counter = 0
function init(args)
  local f = assert(io.open(args[1], "rb"))
  tail = f:read("*a"):sub(17)
  f:close()
  headers = {["Authorization"] = "Bearer " .. args[2],
             ["Content-Type"] = "application/octet-stream"}
end

function request()
  counter = counter + 1
  return wrk.format("POST", nil, headers, string.format("%08x%08x", tid, counter) .. tail)
end
"""

UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def to_ms(text):
    """wrk's `412.00us` / `3.20ms` / `1.02s` in milliseconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise RuntimeError(f"cannot read wrk latency {text!r}")
    return float(m.group(1)) * UNIT_MS[m.group(2)]


def run_wrk(url, script, body_path, token, duration):
    argv = ["wrk", f"-t{dl.THREADS}", f"-c{dl.CONNECTIONS}", f"-d{duration}s", "--latency", "--timeout", "10s",
            "-s", script, url, "--", body_path, token]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    stats = {"raw": out}
    for pct in ("50", "90", "99"):
        found = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        stats[f"p{pct}"] = to_ms(found.group(1)) if found else float("nan")
    latency = re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", out, re.M)
    stats["max"] = to_ms(latency.group(1)) if latency else float("nan")
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    stats["rps"] = float(rps.group(1)) if rps else 0.0
    done = re.search(r"^\s*(\d+) requests in", out, re.M)
    stats["requests"] = int(done.group(1)) if done else 0
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    if bad or errors or not rps:
        raise RuntimeError(f"wrk on {url}: failed requests\n{out}")
    return stats


def build_client():
    """The upload-load binary (release build of this checkout)."""
    dl.log("cargo build --release -p mr-bench --bin upload-load")
    subprocess.run(["cargo", "build", "--release", "-p", "mr-bench", "--bin", "upload-load"], cwd=dl.REPO,
                   check=True)
    binary = os.path.join(dl.TARGET, "release", "upload-load")
    if not os.path.exists(binary):
        raise RuntimeError(f"{binary} not built")
    return binary


def run_upload_load(binary, url, size, token, duration):
    argv = [binary, "--url", url, "--token", token, "--size", str(size), "--connections", str(dl.CONNECTIONS),
            "--threads", str(dl.THREADS), "--seconds", str(duration)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    stats = json.loads(out)
    if stats["bad_status"] or stats["errors"] or not stats["requests"]:
        raise RuntimeError(f"upload-load on {url}: failed requests\n{out}")
    stats["raw"] = out
    return stats


def run_client(client, url, label, size, token, duration):
    """One timed run of the chosen client; `client` is the upload-load binary or the wrk script."""
    if CLIENT == "wrk":
        return run_wrk(url, client["script"], client["bodies"][label], token, duration)
    return run_upload_load(client["binary"], url, size, token, duration)


PHASE_SERIES = re.compile(r'^media_repo_upload_phase_seconds_(sum|count)\{phase="(\w+)"\}\s+(\S+)$', re.M)
PHASE_BUCKETS = re.compile(r'^media_repo_upload_phase_seconds_bucket\{phase="(\w+)",le="([^"]+)"\}\s+(\S+)$', re.M)
# The whole request as the server timed it (until its response head was ready), shown beside
# the phases as "handler": what the phases leave out (auth, the upload slot, the reply) is
# the difference, and what wrk's latency adds beyond it is the client's and the kernel's.
HANDLER_SERIES = re.compile(
    r'^media_repo_http_request_duration_seconds_(sum|count)\{route="/_matrix/media/v3/upload"\}\s+(\S+)$', re.M)
HANDLER_BUCKETS = re.compile(
    r'^media_repo_http_request_duration_seconds_bucket\{route="/_matrix/media/v3/upload",le="([^"]+)"\}\s+(\S+)$',
    re.M)


def phase_totals(metrics_base):
    """{phase: {"secs", "count", "buckets": {le: count}}} so far, from media-repo's /metrics;
    {} for Synapse."""
    if not metrics_base:
        return {}
    status, text = dl.request("GET", metrics_base + "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    text = text.decode()
    totals = {}
    for kind, phase, value in PHASE_SERIES.findall(text):
        totals.setdefault(phase, {"buckets": {}})["secs" if kind == "sum" else "count"] = float(value)
    for phase, le, value in PHASE_BUCKETS.findall(text):
        totals.setdefault(phase, {"buckets": {}})["buckets"][float(le)] = float(value)
    for kind, value in HANDLER_SERIES.findall(text):
        totals.setdefault("handler", {"buckets": {}})["secs" if kind == "sum" else "count"] = float(value)
    for le, value in HANDLER_BUCKETS.findall(text):
        totals.setdefault("handler", {"buckets": {}})["buckets"][float(le)] = float(value)
    return totals


def phase_stats(before, after):
    """Per phase over one run: mean ms, and the bucket bound (ms) under which 99 % fell."""
    stats = {}
    for phase, now in after.items():
        was = before.get(phase, {"secs": 0.0, "count": 0.0, "buckets": {}})
        count = now["count"] - was.get("count", 0.0)
        if count <= 0:
            continue
        p99 = float("inf")
        for le in sorted(now["buckets"]):
            if now["buckets"][le] - was["buckets"].get(le, 0.0) >= 0.99 * count:
                p99 = le
                break
        stats[phase] = (1000 * (now["secs"] - was.get("secs", 0.0)) / count, 1000 * p99)
    return stats


def cpu_seconds(pid):
    """User + system CPU time the process `pid` has used so far (its threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        # The fields after the command name, which is in parentheses and may hold spaces.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_one(title, base, token, client, pid, metrics_base, label, size):
    """One warm-up and one measured client run of `size` against `base`; `pid` is the server,
    whose CPU time per upload is reported too (a figure the machine's load moves far less
    than req/s). Whatever an earlier run left dirty in the page cache (Synapse does not fsync
    what it stores) is written back first, so that no target pays for another's writeback
    (a 4 KiB p99 of 420-690 ms was measured right after Synapse's gigabyte, 36 ms without it)."""
    flushed = time.time()
    os.sync()
    if time.time() - flushed > 0.5:
        dl.log(f"sync before {title}: {time.time() - flushed:.2f} s")
    url = base + "/_matrix/media/v3/upload?filename=bench.bin"
    run_client(client, url, label, size, token, dl.WARMUP)
    before = phase_totals(metrics_base)
    cpu_before = cpu_seconds(pid)
    r = run_client(client, url, label, size, token, dl.DURATION)
    r["cpu_ms"] = 1000 * (cpu_seconds(pid) - cpu_before) / max(r["requests"], 1)
    after = phase_totals(metrics_base)
    r["phases"] = phase_stats(before, after)
    dl.log(f"{title:28} {label:7} {r['rps']:8.1f} req/s  p50 {r['p50']:.1f}  p90 {r['p90']:.1f}  "
           f"p99 {r['p99']:.1f}  max {r['max']:.1f} ms")
    return r


def measure_all(servers, token, client):
    """Every size, BENCH_ROUNDS times over, each round running every target back to back (so
    Synapse and media-repo see the same state of the shared machine). Returns {title: {size
    label: [run per round]}}."""
    runs = {title: {label: [] for label, _ in SIZES} for title, _, _, _ in servers}
    for label, size in SIZES:
        for _ in range(dl.ROUNDS):
            for title, base, pid, metrics_base in servers:
                runs[title][label].append(measure_one(title, base, token, client, pid, metrics_base, label, size))
    return runs


def pick_rounds(runs):
    """{title: {size label: run}}: for media-repo, the round whose throughput ratio to Synapse's
    (taken within the round) is the median, with every round's ratio in "ratios"; for
    Synapse (or without it) the round with the median req/s."""
    syn = runs.get("Synapse media repo")
    picked = {}
    for title, by_size in runs.items():
        picked[title] = {}
        for label, _ in SIZES:
            rounds = list(enumerate(by_size[label]))
            if syn and title != "Synapse media repo":
                def ratio(indexed):
                    return indexed[1]["rps"] / syn[label][indexed[0]]["rps"]
                rounds.sort(key=ratio)
                index, run = rounds[len(rounds) // 2]
                run = dict(run, ratios=[ratio(r) for r in rounds], synapse=syn[label][index])
            else:
                rounds.sort(key=lambda indexed: indexed[1]["rps"])
                run = rounds[len(rounds) // 2][1]
            picked[title][label] = run
    return picked


def psql(sql):
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-v", "ON_ERROR_STOP=1",
                    "-qc", sql], check=True, stdout=subprocess.DEVNULL)


def start_repo(binary, tmp, label, synapse_name, synapse_port, database_url):
    """media-repo with the given metadata database, a file datastore and the default cache."""
    d = os.path.join(tmp, f"mr-{label}")
    os.makedirs(d)
    port, metrics_port = dl.free_port(), dl.free_port()
    # JSON is YAML: the config is built as data, so no value needs quoting by hand.
    config = {
        "server": {"bind": f"127.0.0.1:{port}"},
        "homeservers": [{"name": synapse_name, "client_api_url": f"http://127.0.0.1:{synapse_port}"}],
        "database": {"url": database_url},
        "datastores": [{"id": "default", "kind": "file", "path": os.path.join(d, "media")}],
        "uploads": {"max_concurrent_per_user": PER_USER_UPLOADS},
        "metrics": {"bind": f"127.0.0.1:{metrics_port}"},
    }
    path = os.path.join(d, "config.yaml")
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
    proc = dl.spawn(f"media-repo ({label})", [binary, "--config", path], os.path.join(d, "media-repo.log"), cwd=d)
    dl.wait_http(f"http://127.0.0.1:{port}/healthz", proc, timeout=60)
    return proc, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}"


def report(results, load_before, load_after, synapse_version):
    client = f"wrk -t{dl.THREADS}" if CLIENT == "wrk" else f"upload-load --threads {dl.THREADS}"
    print(f"\n{client} -c{dl.CONNECTIONS} -d{dl.DURATION}s POST (after a {dl.WARMUP} s warm-up), "
          f"every body distinct, loopback, {os.cpu_count()} cores shared by client and servers; "
          f"Synapse {synapse_version}; load average before {' '.join(load_before)}, after {' '.join(load_after)}"
          + (f"; of {dl.ROUNDS} rounds, media-repo's round with the median ratio to Synapse's in that "
             "round (× Synapse: min–max of the rounds) and Synapse's with its median req/s"
             if dl.ROUNDS > 1 else "") + "\n")
    print("| target | size | req/s | × Synapse | p50 ms | p90 ms | p99 ms | p99 / Synapse's | max ms "
          "| server CPU ms per upload |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    verdicts = []
    for title, by_size in results.items():
        for label, _ in SIZES:
            r = by_size[label]
            ratio = p99_ratio = "–"
            if "synapse" in r:
                s = r["synapse"]
                ratio_v, p99_v = r["rps"] / s["rps"], r["p99"] / s["p99"]
                spread = r["ratios"]
                ratio = f"{ratio_v:.2f}×" + (f" ({spread[0]:.2f}–{spread[-1]:.2f})" if len(spread) > 1 else "")
                p99_ratio = f"{p99_v:.2f}×"
                met = ratio_v >= 3 and p99_v <= 2
                verdicts.append(f"{title} {label}: {'met' if met else 'MISSED'}")
            print(f"| {title} | {label} | {r['rps']:,.0f} | {ratio} | {r['p50']:.1f} | {r['p90']:.1f} | "
                  f"{r['p99']:.1f} | {p99_ratio} | {r['max']:.0f} | {r['cpu_ms']:.2f} |")
    # (Before the record phase applied the standing quarantine, quarantine_recheck timed it.)
    phases = ["body", "sync", "store", "record", "handler"]
    timed = [(t, label) for t, by_size in results.items() for label, _ in SIZES if by_size[label].get("phases")]
    if timed:
        print("\nTime per upload in each phase, mean / p99 in ms (from the histogram "
              "media_repo_upload_phase_seconds, and for the whole handler "
              "media_repo_http_request_duration_seconds; p99 is the bucket bound 99 % fell under):\n")
        print("| target | size | " + " | ".join(phases) + " |")
        print("|---|---|" + "---:|" * len(phases))
        for title, label in timed:
            means = results[title][label]["phases"]
            cells = [f"{means[p][0]:.1f} / {means[p][1]:g}" if p in means else "–" for p in phases]
            print(f"| {title} | {label} | " + " | ".join(cells) + " |")
    if verdicts:
        print("\nGoal (p99 ≤ 2× Synapse's and req/s ≥ 3× Synapse's): " + "; ".join(verdicts))


def main():
    dl.check_tools()
    if shutil.which("psql") is None:
        raise RuntimeError("missing tool: psql")
    only = set(os.environ.get("BENCH_ONLY", "synapse,sqlite,postgres").split(","))
    binary = os.environ.get("BENCH_BINARY") or dl.build_media_repo()[0]
    venv, synapse_version = dl.synapse_venv()
    tmp = tempfile.mkdtemp(prefix="mr-upload-bench-")
    schema = f"bench_upload_{os.getpid()}"
    schema_made = False
    dl.log(f"working in {tmp}, media-repo binary {binary}")
    _, load_before = dl.machine_notes()
    results = {}
    try:
        if CLIENT == "wrk":
            script = os.path.join(tmp, "upload.lua")
            with open(script, "w") as f:
                f.write(WRK_SCRIPT)
            bodies = {}
            for label, size in SIZES:
                bodies[label] = os.path.join(tmp, f"{size}.bin")
                with open(bodies[label], "wb") as f:
                    f.write(os.urandom(size))
            client = {"script": script, "bodies": bodies}
        else:
            client = {"binary": build_client()}

        dl.log("starting Synapse (media repo enabled)")
        synapse, sport, sname = dl.start_synapse(venv, tmp)
        sbase = f"http://127.0.0.1:{sport}"
        token = dl.synapse_token(venv, sbase)
        servers = []
        if "synapse" in only:
            servers.append(("Synapse media repo", sbase, synapse.pid, None))

        targets = []
        if "sqlite" in only:
            targets.append(("sqlite", "media-repo, SQLite", f"sqlite://{tmp}/mr-sqlite/media-repo.db"))
        if "postgres" in only:
            psql(f"CREATE SCHEMA {schema}")
            schema_made = True
            targets.append(("postgres", "media-repo, Postgres",
                            f"{PG_URL}?options=-c%20search_path%3D{schema}"))
        # Every target runs for the whole bench (an idle one costs nothing), so that each
        # round can measure them back to back.
        for label, title, url in targets:
            proc, base, metrics_base = start_repo(binary, tmp, label, sname, sport, url)
            servers.append((title, base, proc.pid, metrics_base))
        results = pick_rounds(measure_all(servers, token, client))
        dl.stop(synapse)
    finally:
        for proc in reversed(list(dl.PROCS)):
            dl.stop(proc)
        if schema_made:
            psql(f"DROP SCHEMA {schema} CASCADE")
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(tmp, ignore_errors=True)
    _, load_after = dl.machine_notes()
    report(results, load_before, load_after, synapse_version)


if __name__ == "__main__":
    main()
