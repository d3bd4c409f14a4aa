#!/usr/bin/env python3
"""User-space instructions per small download, counted by callgrind.

wrk's req/s on this 2-core machine moves by 10-30 % with whatever else runs; the number of
instructions a request costs does not. This script runs media-repo (release build) and the
bare handlers under `valgrind --tool=callgrind`, warms each up, zeroes the counters, sends
BENCH_REQUESTS authenticated downloads of one BENCH_KIB file over BENCH_CONNECTIONS
keep-alive connections, and prints instructions per request, media-repo against the bare
handler of the same backend (memory, redis = one shard, none = file). The kernel's part
(TCP on loopback, most of a small request's time) is not counted: this measures only what
user-space changes can move. BENCH_ANNOTATE=1 also prints each run's functions with the most
inclusive instructions (callgrind_annotate), BENCH_KEEP=1 keeps the callgrind.out files.

Environment: BENCH_BACKENDS (default memory,redis,none), BENCH_REQUESTS (default 3000),
BENCH_KIB (default 4), BENCH_CONNECTIONS (default 4), BENCH_MEDIA_REPO_BIN=path (another
build). The Synapse set-up, process handling and build come from download.py (imported).
"""

import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import download as dl  # noqa: E402  (the shared harness: Synapse, processes, build)

BACKENDS = os.environ.get("BENCH_BACKENDS", "memory,redis,none").split(",")
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "3000"))
KIB = int(os.environ.get("BENCH_KIB", "4"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "4"))
ANNOTATE = os.environ.get("BENCH_ANNOTATE") == "1"
WARMUP_REQUESTS = 200
#: Valgrind runs the server ~50x slower: generous start-up bounds.
START_TIMEOUT_S = 180


def valgrind_wrapper(tmp, label):
    """A script that runs its arguments under callgrind, writing to a known file."""
    out = os.path.join(tmp, f"callgrind.{label}.out")
    path = os.path.join(tmp, f"callgrind-{label}.sh")
    with open(path, "w") as f:
        f.write("#!/bin/sh\nexec valgrind --tool=callgrind --quiet "
                f"--callgrind-out-file={out} \"$@\"\n")
    os.chmod(path, 0o755)
    return path, out


def get_many(port, path, token, count):
    """`count` GETs of `path` over CONNECTIONS keep-alive connections, in turn."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=120) for _ in range(CONNECTIONS)]
    for i in range(count):
        conn = conns[i % CONNECTIONS]
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200 or len(body) != KIB * 1024:
            raise RuntimeError(f"GET {path}: {resp.status}, {len(body)} bytes")
    for conn in conns:
        conn.close()


def control(pid, flag):
    subprocess.run(["callgrind_control", flag, str(pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def total_instructions(out_prefix):
    """Sum of `summary:`/`totals:` over the dump files callgrind wrote for this run."""
    directory, base = os.path.split(out_prefix)
    total = 0
    for name in os.listdir(directory):
        if not name.startswith(base + "."):
            continue  # only the explicit dumps (`.1`, `.2`, ...), not the final one
        with open(os.path.join(directory, name)) as f:
            for line in f:
                m = re.match(r"(?:summary|totals): (\d+)", line)
                if m:
                    total += int(m.group(1))
                    break
    return total


def measure(label, proc_pid, port, path, token, out_prefix):
    get_many(port, path, token, WARMUP_REQUESTS)
    control(proc_pid, "-z")
    get_many(port, path, token, REQUESTS)
    control(proc_pid, "-d")
    time.sleep(1)
    per_request = total_instructions(out_prefix) / REQUESTS
    dl.log(f"{label}: {per_request:,.0f} instructions per request")
    if ANNOTATE:
        dumps = sorted(n for n in os.listdir(os.path.dirname(out_prefix))
                       if n.startswith(os.path.basename(out_prefix) + "."))
        for name in dumps:
            text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=99",
                                   os.path.join(os.path.dirname(out_prefix), name)],
                                  capture_output=True, text=True).stdout
            print(f"--- {label}: {name} (inclusive)")
            print("\n".join(text.splitlines()[:60]))
    return per_request


def main():
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise RuntimeError("valgrind is missing (apt-get install -y valgrind)")
    binary, bare_binary = dl.build_media_repo()
    venv, _ = dl.synapse_venv()
    tmp = tempfile.mkdtemp(prefix="mr-instr-")
    dl.log(f"working in {tmp}")
    procs = []
    rows = []
    try:
        static = os.path.join(tmp, "static")
        os.makedirs(static)
        name = f"{KIB}k.bin"
        file_path = os.path.join(static, name)
        with open(file_path, "wb") as f:
            f.write(os.urandom(KIB * 1024))
        synapse, sport, sname = dl.start_synapse(venv, tmp)
        procs.append(synapse)
        token = dl.synapse_token(venv, f"http://127.0.0.1:{sport}")
        redis, redis_port = dl.start_redis(tmp)
        procs.append(redis)

        wrapper, bare_out = valgrind_wrapper(tmp, "bare")
        bare_port = dl.free_port()
        bare = dl.spawn("bare-handlers (callgrind)",
                        [wrapper, bare_binary, "--bind", f"127.0.0.1:{bare_port}", "--dir", static,
                         "--redis", f"redis://127.0.0.1:{redis_port}"],
                        os.path.join(tmp, "bare-handlers.log"))
        procs.append(bare)
        dl.wait_http(f"http://127.0.0.1:{bare_port}/memory/{name}", bare, timeout=START_TIMEOUT_S)

        caches = {
            "memory": ("cache:\n  backend: memory\n", "memory"),
            "redis": (dl.redis_yaml([redis_port]), "redis"),
            "none": ("cache:\n  backend: none\n", "file"),
        }
        for label in BACKENDS:
            cache_yaml, bare_kind = caches[label]
            wrapper, out = valgrind_wrapper(tmp, label)
            proc, port = start_under(wrapper, binary, tmp, label, sname, sport, cache_yaml)
            procs.append(proc)
            path = dl.upload(f"http://127.0.0.1:{port}", token, file_path, name)
            if label == "redis":
                time.sleep(2)  # the upload's background cache fill: the run measures hits
            ours = measure(f"media-repo, {label}", proc.pid, port, path, token, out)
            for old in os.listdir(tmp):
                if old.startswith(os.path.basename(bare_out) + "."):
                    os.remove(os.path.join(tmp, old))
            theirs = measure(f"bare, {bare_kind}", bare.pid, bare_port, f"/{bare_kind}/{name}", None,
                             bare_out)
            rows.append((label, ours, bare_kind, theirs))
            dl.stop(proc)
            procs.remove(proc)
    finally:
        for proc in procs:
            dl.stop(proc)
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"User-space instructions per {KIB} KiB download (callgrind, {REQUESTS} requests after "
          f"{WARMUP_REQUESTS} warm-up, {CONNECTIONS} keep-alive connections)")
    print()
    print("| backend | media-repo | bare handler | bare | media-repo / bare |")
    print("|---|---:|---|---:|---:|")
    for label, ours, bare_kind, theirs in rows:
        print(f"| {label} | {ours:,.0f} | {bare_kind} | {theirs:,.0f} | {ours / theirs:.2f} |")


def start_under(wrapper, binary, tmp, label, sname, sport, cache_yaml):
    """download.py's media-repo start, with the binary run by `wrapper` (callgrind)."""
    original = dl.wait_http

    def patient(url, proc, timeout=120, expect=200):
        return original(url, proc, timeout=max(timeout, START_TIMEOUT_S), expect=expect)

    dl.wait_http = patient
    try:
        return dl.start_media_repo(wrapper_for(wrapper, binary, tmp, label), tmp, label, sname, sport,
                                   cache_yaml)
    finally:
        dl.wait_http = original


def wrapper_for(wrapper, binary, tmp, label):
    """A script running `binary` with its arguments under `wrapper`."""
    path = os.path.join(tmp, f"media-repo-{label}.sh")
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\nexec {wrapper} {binary} \"$@\"\n")
    os.chmod(path, 0o755)
    return path


if __name__ == "__main__":
    main()
