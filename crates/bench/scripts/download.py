#!/usr/bin/env python3
"""HTTP download benchmark (issues 4 and 11), in one run.

Downloads of a 4 KiB, a 64 KiB and a 1 MiB file with wrk from:
  * media-repo (release build) with cache.backend memory, redis (one redis-server),
    redis (three redis-servers as three shards) and none,
  * each beside its bare actix-web handler (`bare-handlers`, crates/bench/src/bin), measured right
    after it for each size: memory (bytes from process memory), redis (one redis-rs GET per
    request, no auth, no metadata; the same handler for 1 and 3 shards) and file (the same
    file streamed from disk) -- the ratio media-repo / bare handler is the fast-path goal,
  * Synapse's own media repo (the same files uploaded to it),
  * nginx serving the same files statically with sendfile (the ceiling),
then the peak RSS (VmHWM) of a fresh media-repo (memory cache) while a 1 GiB file is
uploaded (streamed, never held in this script's memory) and downloaded.

Prints markdown tables. Everything started here is killed at the end, also on failure.

Usage (from the repository root or anywhere):  python3 crates/bench/scripts/download.py
Environment: BENCH_DURATION (s, default 10), BENCH_WARMUP (s, default 2),
BENCH_CONNECTIONS (default 16), BENCH_THREADS (default 2), BENCH_BIG_MIB (default 1024),
BENCH_KEEP=1 keeps the temp dir, BENCH_MEDIA_REPO_PRELOAD=lib.so is put in LD_PRELOAD of
media-repo only, BENCH_BARE_ONLY=1 runs only media-repo against the bare handlers (no
Synapse or nginx targets, no RSS run; Synapse still checks the tokens),
BENCH_BACKENDS=memory,redis,redis3,none picks the media-repo backends, BENCH_ROUNDS=N
(default 1) measures each media-repo/bare pair N times and reports the median ratio,
BENCH_MEDIA_REPO_BIN=path measures that media-repo binary instead of the one built (e.g. a
copy made before a change, for before/after numbers on the same machine).
Needs: cargo, python3 with venv, redis-server, nginx, wrk, curl
(`apt-get install -y nginx-light wrk redis-server curl`).
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

# This file is crates/bench/scripts/download.py: the repository root is three levels up.
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
SYNAPSE_PACKAGE = "matrix-synapse==1.163.2"
SECRET = "media-repo-bench-registration-secret"
USER = "bench"
PASSWORD = "bench password 1234"

DURATION = int(os.environ.get("BENCH_DURATION", "10"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "2"))
ROUNDS = max(1, int(os.environ.get("BENCH_ROUNDS", "1")))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "16"))
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
BIG_MIB = int(os.environ.get("BENCH_BIG_MIB", "1024"))
# An LD_PRELOAD library for the media-repo processes only (an experiment hook, e.g. a shim
# that sets TCP_NODELAY on every TCP socket: see docs/benchmarks.md).
PRELOAD = os.environ.get("BENCH_MEDIA_REPO_PRELOAD", "")

BARE_ONLY = os.environ.get("BENCH_BARE_ONLY") == "1"
MEDIA_REPO_BIN = os.environ.get("BENCH_MEDIA_REPO_BIN", "")
BACKENDS = os.environ.get("BENCH_BACKENDS", "memory,redis,redis3,none").split(",")

SIZES = [("4 KiB", "4k.bin", 4 * 1024), ("64 KiB", "64k.bin", 64 * 1024), ("1 MiB", "1m.bin", 1024 * 1024)]
# The fast-path goal of issue 11: media-repo / its bare handler, per size.
GOALS = {"4 KiB": 0.8, "64 KiB": 0.8, "1 MiB": 0.9}

# Everything started, killed (process group) in reverse order at the end.
PROCS = []


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 6379:
            return port


def spawn(name, argv, logfile, cwd=None, env=None):
    out = open(logfile, "wb")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=cwd, env=env, start_new_session=True)
    proc.bench_name = name
    proc.bench_log = logfile
    PROCS.append(proc)
    return proc


def stop(proc):
    """Kills one started process (its whole process group) and reaps it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    if proc in PROCS:
        PROCS.remove(proc)


def tail(path, n=40):
    try:
        with open(path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
    except OSError:
        return ""


def wait_http(url, proc, timeout=120, expect=200):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.bench_name} exited ({proc.returncode}):\n{tail(proc.bench_log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == expect:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{proc.bench_name} not answering {url} after {timeout}s:\n{tail(proc.bench_log)}")


def request(method, url, body=None, headers=None, timeout=60):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def check_tools():
    missing = [t for t in ("cargo", "redis-server", "wrk", "curl") if shutil.which(t) is None]
    if not os.path.exists("/usr/sbin/nginx") and shutil.which("nginx") is None:
        missing.append("nginx")
    if missing:
        raise RuntimeError(f"missing tools: {missing} (apt-get install -y nginx-light wrk redis-server curl)")


def build_media_repo():
    """Builds media-repo (unless BENCH_MEDIA_REPO_BIN names one) and bare-handlers."""
    targets = ["-p", "mr-bench", "--bin", "bare-handlers"]
    if not MEDIA_REPO_BIN:
        targets = ["-p", "mr-web", "--bin", "media-repo"] + targets
    log(f"cargo build --release {' '.join(targets)}")
    subprocess.run(["cargo", "build", "--release"] + targets, cwd=REPO, check=True)
    # Another build of media-repo (e.g. the one before a change) is measured the same way.
    binaries = [MEDIA_REPO_BIN or os.path.join(TARGET, "release", "media-repo"),
                os.path.join(TARGET, "release", "bare-handlers")]
    for binary in binaries:
        if not os.path.exists(binary):
            raise RuntimeError(f"{binary} not built")
    return binaries


def start_bare(binary, tmp, static_root, redis_port):
    port = free_port()
    proc = spawn("bare-handlers", [binary, "--bind", f"127.0.0.1:{port}", "--dir", static_root,
                                   "--redis", f"redis://127.0.0.1:{redis_port}"],
                 os.path.join(tmp, "bare-handlers.log"))
    for kind in ("memory", "redis", "file"):
        wait_http(f"http://127.0.0.1:{port}/{kind}/4k.bin", proc, timeout=30)
    return proc, port


def synapse_venv():
    venv = os.path.join(TARGET, "synapse-venv")
    python = os.path.join(venv, "bin", "python")
    ok = os.path.exists(python) and subprocess.run(
        [python, "-c", "import synapse"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    if not ok:
        log(f"creating {venv} with {SYNAPSE_PACKAGE}")
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([os.path.join(venv, "bin", "pip"), "install", "-q", "--disable-pip-version-check",
                        SYNAPSE_PACKAGE], check=True)
    version = subprocess.run([python, "-c", "import synapse; print(synapse.__version__)"],
                             capture_output=True, text=True, check=True, cwd="/").stdout.split()[0]
    return venv, version


def start_synapse(venv, tmp):
    d = os.path.join(tmp, "synapse")
    os.makedirs(os.path.join(d, "data"))
    port = free_port()
    name = f"localhost:{port}"
    python = os.path.join(venv, "bin", "python")
    subprocess.run([python, "-m", "synapse.app.homeserver", "--server-name", name,
                    "--config-path", os.path.join(d, "generated.yaml"),
                    "--data-directory", os.path.join(d, "data"),
                    "--generate-config", "--report-stats=no"],
                   cwd=d, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = f"""server_name: "{name}"
pid_file: {d}/data/homeserver.pid
public_baseurl: "http://{name}/"
listeners:
  - port: {port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: true
    resources:
      - names: [client, media]
        compress: false
database:
  name: sqlite3
  args: {{database: {d}/data/homeserver.db}}
log_config: "{d}/{name}.log.config"
signing_key_path: "{d}/{name}.signing.key"
report_stats: false
registration_shared_secret: "{SECRET}"
macaroon_secret_key: "media-repo-bench-macaroon-secret-key"
form_secret: "media-repo-bench-form-secret"
enable_registration: false
trusted_key_servers: []
federation_domain_whitelist: []
enable_media_repo: true
media_store_path: "{d}/media_store"
max_upload_size: 64M
url_preview_enabled: false
rc_login:
  address: {{per_second: 1000, burst_count: 1000}}
  account: {{per_second: 1000, burst_count: 1000}}
  failed_attempts: {{per_second: 1000, burst_count: 1000}}
rc_message: {{per_second: 1000, burst_count: 1000}}
"""
    with open(os.path.join(d, "homeserver.yaml"), "w") as f:
        f.write(config)
    proc = spawn("synapse", [python, "-m", "synapse.app.homeserver", "-c", os.path.join(d, "homeserver.yaml")],
                 os.path.join(d, "synapse.out"), cwd=d)
    wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=180)
    return proc, port, name


def synapse_token(venv, base):
    out = subprocess.run([os.path.join(venv, "bin", "register_new_matrix_user"), "-u", USER, "-p", PASSWORD,
                          "--no-admin", "-k", SECRET, base], capture_output=True, text=True)
    if out.returncode != 0 and "User ID already taken" not in out.stderr:
        raise RuntimeError(f"register_new_matrix_user failed: {out.stderr}{out.stdout}")
    body = json.dumps({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": USER},
                       "password": PASSWORD}).encode()
    status, answer = request("POST", f"{base}/_matrix/client/v3/login", body, {"Content-Type": "application/json"})
    if status != 200:
        raise RuntimeError(f"login failed: {status} {answer[:300]}")
    return json.loads(answer)["access_token"]


def upload(base, token, path, filename):
    """Uploads a small file on the legacy v3 endpoint; returns the download path (authenticated API)."""
    with open(path, "rb") as f:
        data = f.read()
    status, answer = request("POST", f"{base}/_matrix/media/v3/upload?filename={filename}", data,
                             {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"})
    if status != 200:
        raise RuntimeError(f"upload to {base} failed: {status} {answer[:300]}")
    mxc = json.loads(answer)["content_uri"]
    server, media_id = mxc[len("mxc://"):].split("/", 1)
    dl = f"/_matrix/client/v1/media/download/{server}/{media_id}"
    status, got = request("GET", base + dl, headers={"Authorization": f"Bearer {token}"})
    if status != 200 or got != data:
        raise RuntimeError(f"download check on {base}{dl} failed: {status}, {len(got)} bytes")
    return dl


def start_media_repo(binary, tmp, label, synapse_name, synapse_port, cache_yaml, max_upload=104857600):
    d = os.path.join(tmp, f"mr-{label}")
    os.makedirs(d)
    port = free_port()
    config = f"""server:
  bind: "127.0.0.1:{port}"
homeservers:
  - name: "{synapse_name}"
    client_api_url: "http://127.0.0.1:{synapse_port}"
database:
  url: "sqlite://{d}/media-repo.db"
datastores:
  - id: default
    kind: file
    path: "{d}/media"
uploads:
  max_bytes: {max_upload}
metrics:
  bind: null  # no operators' listener: the default 9000 would clash between runs
{cache_yaml}"""
    cfg = os.path.join(d, "config.yaml")
    with open(cfg, "w") as f:
        f.write(config)
    env = dict(os.environ)
    if PRELOAD:
        env["LD_PRELOAD"] = PRELOAD
    proc = spawn(f"media-repo ({label})", [binary, "--config", cfg], os.path.join(d, "media-repo.log"), cwd=d, env=env)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, timeout=60)
    return proc, port


def start_redis(tmp):
    port = free_port()
    proc = spawn("redis-server", ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                                  "--bind", "127.0.0.1", "--dir", tmp], os.path.join(tmp, f"redis-{port}.log"))
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, port
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"redis-server did not start:\n{tail(proc.bench_log)}")


def start_nginx(tmp, static_root):
    d = os.path.join(tmp, "nginx")
    os.makedirs(d)
    port = free_port()
    conf = f"""user root;
worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    types {{ }}
    default_type application/octet-stream;
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        location /static/ {{ alias {static_root}/; }}
    }}
}}
"""
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(conf)
    nginx = "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else "nginx"
    proc = spawn("nginx", [nginx, "-p", d, "-c", "nginx.conf", "-g", "daemon off;"], os.path.join(d, "nginx.out"))
    wait_http(f"http://127.0.0.1:{port}/static/4k.bin", proc, timeout=20)
    return proc, port


def wrk(url, token=None, duration=DURATION):
    argv = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration}s", "--latency"]
    if token:
        argv += ["-H", f"Authorization: Bearer {token}"]
    argv.append(url)
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if not rps:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    return {
        "rps": float(rps.group(1)),
        "non2xx": int(bad.group(1)) if bad else 0,
        "errors": errors.group(0) if errors else "",
        "p50": p50.group(1) if p50 else "?",
        "p99": p99.group(1) if p99 else "?",
        "raw": out,
    }


def warm_and_run(label, size_label, url, token, width=24):
    """A wrk warm-up, then the measured run; any failed request fails the bench."""
    wrk(url, token, duration=WARMUP)
    r = wrk(url, token)
    if r["non2xx"] or r["errors"]:
        raise RuntimeError(f"{label} {size_label}: {r['non2xx']} non-2xx answers, {r['errors']}\n{r['raw']}")
    log(f"{label:{width}} {size_label:6} {r['rps']:10.1f} req/s  p50 {r['p50']}  p99 {r['p99']}")
    return r


def measure(label, base, paths, token):
    """wrk warm-up then the measured run, for each size."""
    return {size_label: warm_and_run(label, size_label, base + paths[size_label], token)
            for size_label, _, _ in SIZES}


def measure_pair(label, base, paths, token, bare_label, bare_base, bare_paths):
    """For each size: media-repo, then its bare handler right after (warm-up and run each),
    so both see the same load on the shared machine; BENCH_ROUNDS times over. Returns the
    round with the median ratio for each size, and every round's ratio: this machine's
    speed drifts by 20-30 % over tens of seconds, which one pair alone cannot tell from a
    change."""
    ours, bare, ratios = {}, {}, {}
    for size_label, _, _ in SIZES:
        rounds = []
        for _ in range(ROUNDS):
            pair = []
            for name, target, target_paths, target_token in (
                    (label, base, paths, token), (bare_label, bare_base, bare_paths, None)):
                url = target + target_paths[size_label]
                pair.append(warm_and_run(name, size_label, url, target_token, width=28))
            rounds.append(pair)
        rounds.sort(key=lambda pair: pair[0]["rps"] / pair[1]["rps"])
        ours[size_label], bare[size_label] = rounds[len(rounds) // 2]
        ratios[size_label] = [mine["rps"] / theirs["rps"] for mine, theirs in rounds]
    return ours, bare, ratios


def read_status(pid):
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0]) * 1024
    return values


class RssSampler(threading.Thread):
    """Samples VmRSS of a pid every 50 ms; keeps the maximum seen."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.running = True

    def run(self):
        while self.running:
            try:
                self.peak = max(self.peak, read_status(self.pid)["VmRSS"])
            except (OSError, KeyError):
                return
            time.sleep(0.05)

    def stop(self):
        self.running = False
        self.join()
        return self.peak


def big_file_rss(binary, tmp, synapse_name, synapse_port, token):
    size = BIG_MIB * 1024 * 1024
    proc, port = start_media_repo(binary, tmp, "rss", synapse_name, synapse_port,
                                  "cache:\n  backend: memory\n", max_upload=size + 1024 * 1024)
    result = {"start": read_status(proc.pid)["VmHWM"]}
    block = os.urandom(1024 * 1024)

    def chunks():
        for _ in range(size // len(block)):
            yield block

    sampler = RssSampler(proc.pid)
    sampler.start()
    started = time.time()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/_matrix/media/v3/upload?filename=big.bin", body=chunks(),
                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream",
                          "Content-Length": str(size)})
    answer = conn.getresponse()
    body = answer.read()
    conn.close()
    result["upload_secs"] = time.time() - started
    if answer.status != 200:
        sampler.stop()
        raise RuntimeError(f"1 GiB upload failed: {answer.status} {body[:300]}")
    result["after_upload"] = read_status(proc.pid)["VmHWM"]
    server, media_id = json.loads(body)["content_uri"][len("mxc://"):].split("/", 1)
    url = f"http://127.0.0.1:{port}/_matrix/client/v1/media/download/{server}/{media_id}"
    started = time.time()
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                          "-H", f"Authorization: Bearer {token}", url], capture_output=True, text=True, check=True)
    result["download_secs"] = time.time() - started
    code, got = out.stdout.split()
    if code != "200" or int(got) != size:
        sampler.stop()
        raise RuntimeError(f"1 GiB download failed: {out.stdout} {out.stderr}")
    result["after_download"] = read_status(proc.pid)["VmHWM"]
    result["sampled_peak_rss"] = sampler.stop()
    stop(proc)
    return result


def mib(n):
    return f"{n / (1024 * 1024):.1f} MiB"


def machine_notes():
    cores = os.cpu_count()
    load = open("/proc/loadavg").read().split()[:3]
    return cores, load


def redis_yaml(ports):
    shards = "".join(f"      - name: bench{i}\n        addr: \"redis://127.0.0.1:{port}\"\n"
                     for i, port in enumerate(ports))
    return f"cache:\n  backend: redis\n  redis:\n    shards:\n{shards}"


def main():
    check_tools()
    binary, bare_binary = build_media_repo()
    venv, synapse_version = synapse_venv()
    tmp = tempfile.mkdtemp(prefix="mr-bench-")
    log(f"working in {tmp}")
    cores, load_before = machine_notes()
    results = {}
    pairs = []  # (backend title, media-repo results, bare title, bare results)
    rss = None
    try:
        static = os.path.join(tmp, "static")
        os.makedirs(static)
        files = {}
        for size_label, name, size in SIZES:
            path = os.path.join(static, name)
            with open(path, "wb") as f:
                f.write(os.urandom(size))
            files[size_label] = (path, name)

        log("starting Synapse (media repo enabled)")
        synapse, sport, sname = start_synapse(venv, tmp)
        sbase = f"http://127.0.0.1:{sport}"
        token = synapse_token(venv, sbase)

        # The homeserver stays up for all media-repo runs (it checks the tokens) but idles.
        if not BARE_ONLY:
            synapse_paths = {s: upload(sbase, token, p, n) for s, (p, n) in files.items()}
            results["Synapse media repo"] = measure("Synapse media repo", sbase, synapse_paths, token)

        redis_servers = [start_redis(tmp) for _ in range(3)]
        redis_ports = [port for _, port in redis_servers]
        bare, bare_port = start_bare(bare_binary, tmp, static, redis_ports[0])
        bare_base = f"http://127.0.0.1:{bare_port}"
        caches = [
            ("memory", "media-repo, memory cache", "cache:\n  backend: memory\n",
             "bare: bytes from memory", "memory"),
            ("redis", "media-repo, Redis cache (1 shard)", redis_yaml(redis_ports[:1]),
             "bare: one redis-rs GET", "redis"),
            ("redis3", "media-repo, Redis cache (3 shards)", redis_yaml(redis_ports),
             "bare: one redis-rs GET", "redis"),
            ("none", "media-repo, no cache", "cache:\n  backend: none\n",
             "bare: file streamed from disk", "file"),
        ]
        for label, title, cache_yaml, bare_title, bare_kind in caches:
            if label not in BACKENDS:
                continue
            proc, port = start_media_repo(binary, tmp, label, sname, sport, cache_yaml)
            base = f"http://127.0.0.1:{port}"
            paths = {s: upload(base, token, p, n) for s, (p, n) in files.items()}
            if label.startswith("redis"):
                # Let the uploads' background cache fills land: the runs measure hits.
                time.sleep(1)
            bare_paths = {s: f"/{bare_kind}/{n}" for s, (_, n) in files.items()}
            ours, theirs, ratios = measure_pair(title, base, paths, token, bare_title, bare_base, bare_paths)
            results[title] = ours
            pairs.append((title, ours, bare_title, theirs, ratios))
            stop(proc)
        stop(bare)
        for proc, _ in redis_servers:
            stop(proc)

        if not BARE_ONLY:
            nginx, nport = start_nginx(tmp, static)
            results["nginx static (ceiling)"] = measure(
                "nginx static", f"http://127.0.0.1:{nport}", {s: f"/static/{n}" for s, (_, n) in files.items()},
                None)
            stop(nginx)

            log(f"peak RSS: {BIG_MIB} MiB upload and download through a fresh media-repo (memory cache)")
            rss = big_file_rss(binary, tmp, sname, sport, token)
        stop(synapse)
    finally:
        for proc in reversed(list(PROCS)):
            stop(proc)
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(tmp, ignore_errors=True)

    _, load_after = machine_notes()
    print(f"\nwrk -t{THREADS} -c{CONNECTIONS} -d{DURATION}s (after a {WARMUP} s warm-up), loopback, "
          f"{cores} cores shared by client and servers; Synapse {synapse_version}; "
          f"load average before {' '.join(load_before)}, after {' '.join(load_after)}\n")

    print("media-repo (authenticated v1 download) against its bare handler, measured right after it"
          + (f"; the round with the median ratio of {ROUNDS} (min–max of the rounds)" if ROUNDS > 1 else "")
          + ":\n")
    print("| backend | bare handler | " + " | ".join(f"{s} req/s (bare) | ratio" for s, _, _ in SIZES) + " |")
    print("|---|---|" + "---:|---:|" * len(SIZES))
    missed = []
    for title, ours, bare_title, theirs, ratios in pairs:
        cells = []
        for size_label, _, _ in SIZES:
            ratio = ours[size_label]["rps"] / theirs[size_label]["rps"]
            if ratio < GOALS[size_label]:
                missed.append(f"{title} {size_label} {ratio:.2f} < {GOALS[size_label]}")
            spread = ratios[size_label]
            ratio_cell = f"{ratio:.2f}" + (f" ({spread[0]:.2f}–{spread[-1]:.2f})" if len(spread) > 1 else "")
            cells += [f"{ours[size_label]['rps']:,.0f} ({theirs[size_label]['rps']:,.0f})", ratio_cell]
        print(f"| {title} | {bare_title} | " + " | ".join(cells) + " |")
    print("\n| backend | " + " | ".join(f"{s} p50 / p99 (bare)" for s, _, _ in SIZES) + " |")
    print("|---|" + "---|" * len(SIZES))
    for title, ours, _, theirs, _ in pairs:
        print(f"| {title} | " + " | ".join(
            f"{ours[s]['p50']} / {ours[s]['p99']} ({theirs[s]['p50']} / {theirs[s]['p99']})"
            for s, _, _ in SIZES) + " |")
    goals = ", ".join(f"{s} >= {g}" for s, g in GOALS.items())
    print(f"\nFast-path goals ({goals}): " + ("met" if not missed else "MISSED: " + "; ".join(missed)))

    if BARE_ONLY:
        return
    syn = results["Synapse media repo"]
    ngx = results["nginx static (ceiling)"]
    print("\n| target | " + " | ".join(f"{s} req/s | × Synapse | / nginx" for s, _, _ in SIZES) + " |")
    print("|---|" + "---:|---:|---:|" * len(SIZES))
    for title, r in results.items():
        cells = []
        for size_label, _, _ in SIZES:
            rps = r[size_label]["rps"]
            cells += [f"{rps:,.0f}", f"{rps / syn[size_label]['rps']:.2f}×",
                      f"{100 * rps / ngx[size_label]['rps']:.0f} %"]
        print(f"| {title} | " + " | ".join(cells) + " |")
    print("\n| target | " + " | ".join(f"{s} p50 / p99" for s, _, _ in SIZES) + " |")
    print("|---|" + "---|" * len(SIZES))
    for title, r in results.items():
        print(f"| {title} | " + " | ".join(f"{r[s]['p50']} / {r[s]['p99']}" for s, _, _ in SIZES) + " |")
    if rss:
        print(f"\nPeak RSS of media-repo (memory cache, fresh process), {BIG_MIB} MiB file:\n")
        print("| moment | VmHWM |")
        print("|---|---:|")
        print(f"| after start | {mib(rss['start'])} |")
        print(f"| after upload ({rss['upload_secs']:.1f} s, {BIG_MIB / rss['upload_secs']:.0f} MiB/s) | "
              f"{mib(rss['after_upload'])} |")
        print(f"| after download ({rss['download_secs']:.1f} s, {BIG_MIB / rss['download_secs']:.0f} MiB/s) | "
              f"{mib(rss['after_download'])} |")
        print(f"| (max VmRSS sampled every 50 ms) | {mib(rss['sampled_peak_rss'])} |")
    if "media-repo, memory cache" in results:
        goal4 = results["media-repo, memory cache"]["4 KiB"]["rps"] / syn["4 KiB"]["rps"]
        goal1 = results["media-repo, memory cache"]["1 MiB"]["rps"] / syn["1 MiB"]["rps"]
        print(f"\nGoals of issue 4 (memory cache): 4 KiB {goal4:.2f}× Synapse (goal ≥ 5×: "
              f"{'met' if goal4 >= 5 else 'MISSED'}), 1 MiB {goal1:.2f}× Synapse (goal ≥ 3×: "
              f"{'met' if goal1 >= 3 else 'MISSED'})")


if __name__ == "__main__":
    main()
