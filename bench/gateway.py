"""``make bench-gateway``: authenticated ``POST /infer?mode=async`` throughput, ours vs a peer.

Both servers do the same work per request: verify an RS256 bearer JWT against
one JWKS, validate the JSON body, put one job on an ARQ queue in Redis, and
answer 202 with the job. Ours is ``python -m services.gateway`` (aiohttp,
joserfc, msgspec, one Lua submit); the peer is ``bench/peers/fastapi_peer.py``
(FastAPI + uvicorn, python-jose, pydantic, ``ArqRedis.enqueue_job`` with
pickle), the way the original system was built.

Method: one server process at a time, pinned to CPU 0 (``taskset``); the load
generator (``wrk``, one thread, 64 keep-alive connections, a Lua script that
rotates 100 users' tokens) on CPU 1, loopback only. Each round: flush the
bench database, start the server, warm up, flush again, measure for a fixed
time, count the jobs that reached the queue, stop the server. Rounds
alternate ours/peer so background load hits both alike; the median round
is reported.

Our gateway runs with ``TINYLLAMA_RATE_LIMIT`` set very high (1e9/s) so its
per-user rate limit never trips, and a queue bound larger than the run.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.devstack.identity import mint_token  # noqa: E402
from services.devstack.redis_server import find_redis, free_port  # noqa: E402
from services.protocol import names  # noqa: E402

ISSUER = "https://issuer.bench/pool"
CLIENT_ID = "bench-client"
QUEUE = f"{names.QUEUE_NAME}:bench"
BODY = {"prompt": "Write a haiku about queues.", "max_new_tokens": 64, "temperature": 0.7}
TARGET_RATIO = 3.5
TARGET_P99_MS = 20.0

WRK_SCRIPT = """
local tokens = {%(tokens)s}
local body = %(body)s
local n = 0
counts = {}
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  n = math.random(#tokens)
end

function request()
  n = (n %% #tokens) + 1
  return wrk.format("POST", nil, {
    ["Authorization"] = "Bearer " .. tokens[n],
    ["Content-Type"] = "application/json",
  }, body)
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local statuses = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("counts")) do
      statuses[#statuses + 1] = string.format('"%%d":%%d', status, count)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,' ..
    '"max_us":%%d,"mean_us":%%.1f,"errors":%%d,"statuses":{%%s}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean,
    e.connect + e.read + e.write + e.timeout, table.concat(statuses, ",")))
end
"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Result:
    """One measured run."""

    server: str
    round: int
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    statuses: dict[str, int]
    queued: int
    cpu_s: float  # the server process's CPU time during the measured run
    cpu_us_per_request: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux ``/proc``), all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_redis_url(base: str, db: int) -> str:
    """The same Redis at database ``db`` (the bench flushes only that one)."""
    return urlunparse(urlparse(base)._replace(path=f"/{db}"))


def redis_cli(url: str, *args: str) -> str:
    """One Redis command through a raw socket (RESP), so the bench needs no client state."""
    parsed = urlparse(url)
    parts = [f"SELECT {parsed.path.lstrip('/') or '0'}", " ".join(args)]
    with socket.create_connection((parsed.hostname, parsed.port or 6379), timeout=10) as conn:
        reply = b""
        for part in parts:
            conn.sendall(part.encode() + b"\r\n")
            reply = conn.recv(4096)
    return reply.decode().strip()


def write_identity(workdir: Path, users: int) -> tuple[Path, list[str]]:
    """A fresh RS256 key, its public JWKS on disk, and one token per user."""
    from joserfc.jwk import RSAKey

    key = RSAKey.generate_key(
        2048, parameters={"kid": "bench-1", "use": "sig", "alg": "RS256"}, private=True
    )
    jwks = workdir / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    tokens = [
        mint_token(key, subject=f"user-{i:03d}", issuer=ISSUER, client_id=CLIENT_ID, ttl_s=3600)
        for i in range(users)
    ]
    return jwks, tokens


def wait_healthy(port: int, process: subprocess.Popen, *, timeout_s: float = 30.0) -> None:
    """Poll ``GET /health`` until it answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("server did not become healthy")


def server_command(name: str, *, port: int, redis_url: str, jwks: Path, log_level: str):
    """The command line and environment of one server."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    if name == "gateway":
        env.update(
            TINYLLAMA_ENV="local",
            TINYLLAMA_HOST="127.0.0.1",
            TINYLLAMA_PORT=str(port),
            TINYLLAMA_JWKS_URL=jwks.as_uri(),
            TINYLLAMA_JWT_ISSUER=ISSUER,
            TINYLLAMA_JWT_CLIENT_IDS=CLIENT_ID,
            TINYLLAMA_QUEUE_NAME=QUEUE,
            TINYLLAMA_RATE_LIMIT="1e9",  # the bench measures throughput, not the limiter
            TINYLLAMA_MAX_QUEUE_DEPTH="100000000",
            TINYLLAMA_LOG_LEVEL=log_level,
            REDIS_URL=redis_url,
        )
        return [sys.executable, "-m", "services.gateway"], env
    env.update(
        PEER_JWKS_PATH=str(jwks),
        PEER_ISSUER=ISSUER,
        PEER_CLIENT_IDS=CLIENT_ID,
        PEER_QUEUE_NAME=QUEUE,
        REDIS_URL=redis_url,
    )
    command = [
        sys.executable, "-m", "uvicorn", "fastapi_peer:app",
        "--app-dir", str(ROOT / "bench" / "peers"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--log-level", log_level.lower(),
    ]  # fmt: skip
    if log_level.upper() != "INFO":
        command.append("--no-access-log")
    return command, env


def pinned(cpu: int | None, command: list[str]) -> list[str]:
    """``command`` under ``taskset -c cpu`` when pinning is possible."""
    if cpu is None or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", str(cpu), *command]


def run_wrk(script: Path, url: str, *, seconds: float, connections: int, cpu: int | None) -> dict:
    """Run wrk once and return the JSON line its ``done`` hook printed."""
    command = pinned(
        cpu,
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", "-s", str(script),
         url],
    )  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRK "))
    return json.loads(line[4:])


def profile(pid: int, seconds: float, out: Path) -> subprocess.Popen:
    """Sample the server with py-spy (collapsed stacks) while load runs."""
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen(
        [binary, "record", "--pid", str(pid), "--duration", f"{seconds:g}", "--rate", "200",
         "--format", "raw", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def summarize_profile(path: Path, *, top: int = 20) -> str:
    """Top functions by inclusive and by self samples from py-spy's collapsed stacks."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"py-spy: {total} samples (200 Hz, active threads only)", "", "self:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def measure(name: str, rnd: int, args, *, redis_url: str, jwks: Path, script: Path, workdir: Path):
    """Start one server, warm it up, measure it, stop it."""
    port = free_port()
    command, env = server_command(
        name, port=port, redis_url=redis_url, jwks=jwks, log_level=args.log_level
    )
    redis_cli(redis_url, "FLUSHDB")
    log = (workdir / f"{name}-{rnd}.log").open("wb")
    cwd = args.gateway_root if name == "gateway" else ROOT
    process = subprocess.Popen(
        pinned(args.server_cpu, command), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_healthy(port, process)
        url = f"http://127.0.0.1:{port}/infer?mode=async"
        run_wrk(script, url, seconds=args.warmup, connections=args.connections, cpu=args.load_cpu)
        redis_cli(redis_url, "FLUSHDB")
        spy = None
        if args.profile:
            spy = profile(process.pid, args.duration, workdir / f"{name}-{rnd}.pyspy")
        cpu_before = cpu_seconds(process.pid)
        data = run_wrk(
            script, url, seconds=args.duration, connections=args.connections, cpu=args.load_cpu
        )
        cpu_used = cpu_seconds(process.pid) - cpu_before
        if spy is not None:
            spy.wait(timeout=30)
        time.sleep(0.2)  # let the last enqueues land before counting
        queued = int(redis_cli(redis_url, "ZCARD", QUEUE).lstrip(":") or 0)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    seconds = data["duration_us"] / 1e6
    return Result(
        server=name,
        round=rnd,
        requests=data["requests"],
        rps=data["requests"] / seconds,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        errors=data["errors"],
        statuses=data["statuses"],
        queued=queued,
        cpu_s=cpu_used,
        cpu_us_per_request=1e6 * cpu_used / max(1, data["requests"]),
    )


def median_result(results: list[Result]) -> Result:
    """The round with the median throughput."""
    ordered = sorted(results, key=lambda r: r.rps)
    return ordered[(len(ordered) - 1) // 2]


def report(results: list[Result], args) -> int:
    """Print every round, the medians, the ratio and the verdict; 0 if both targets are met."""
    print(f"\n{'server':8} {'round':>5} {'req/s':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'CPU s':>6} {'CPU us/req':>10} {'errors':>6}  "
          "statuses / jobs queued")  # fmt: skip
    for r in results:
        print(f"{r.server:8} {r.round:5d} {r.rps:8.0f} {r.p50_ms:7.2f} {r.p90_ms:7.2f} "
              f"{r.p99_ms:7.2f} {r.max_ms:7.1f} {r.cpu_s:6.2f} {r.cpu_us_per_request:10.0f} "
              f"{r.errors:6d}  "
              f"{r.statuses} / {r.queued}")  # fmt: skip
    by_server = {s: [r for r in results if r.server == s] for s in ("gateway", "peer")}
    if not all(by_server.values()):
        return 0
    ours, peer = median_result(by_server["gateway"]), median_result(by_server["peer"])
    ratio = ours.rps / peer.rps
    print(f"\nmedian of {args.rounds} rounds, {args.connections} connections, {args.duration:g} s:")
    for r in (ours, peer):
        print(
            f"  {r.server:8} {r.rps:8.0f} req/s  p50 {r.p50_ms:.2f} ms  p99 {r.p99_ms:.2f} ms"
            f"  {r.cpu_us_per_request:.0f} us CPU/req ({r.cpu_s / args.duration:.0%} of a core)"
        )
    cpu_ratio = peer.cpu_us_per_request / ours.cpu_us_per_request
    print(f"  CPU-per-request ratio {cpu_ratio:.2f}x (peer / ours; robust to background load)")
    print(f"  ratio    {ratio:.2f}x   (target >= {TARGET_RATIO}x; ours p99 target < "
          f"{TARGET_P99_MS:g} ms)")  # fmt: skip
    ok = ratio >= TARGET_RATIO and ours.p99_ms < TARGET_P99_MS
    print(f"  verdict  {'MET' if ok else 'NOT MET'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """Parse options, set up Redis, identity and wrk, run the rounds, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--users", type=int, default=100, help="distinct token subjects")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per server")
    parser.add_argument("--only", choices=("gateway", "peer"), help="measure one server only")
    parser.add_argument("--redis-db", type=int, default=12, help="database the bench flushes")
    parser.add_argument("--log-level", default="WARNING", help="server log level (INFO logs "
                        "every request in both)")  # fmt: skip
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy both servers (collapsed stacks, top functions)",
    )
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--gateway-root", type=Path, default=ROOT,
                        help="checkout whose services/ runs as our gateway "
                        "(e.g. a `git worktree` of a commit)")  # fmt: skip
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        args.server_cpu = args.load_cpu = None
    try:
        import fastapi  # noqa: F401
        import jose  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        print("peer missing: .venv/bin/pip install -r bench/peers/requirements.txt",
              file=sys.stderr)  # fmt: skip
        return 2
    base_url, redis_process = find_redis(os.environ.get("REDIS_URL"))
    if redis_process is not None and args.load_cpu is not None and shutil.which("taskset"):
        subprocess.run(["taskset", "-pc", str(args.load_cpu), str(redis_process.pid)],
                       check=False, capture_output=True)  # fmt: skip
    redis_url = bench_redis_url(base_url, args.redis_db)
    workdir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    try:
        jwks, tokens = write_identity(workdir, args.users)
        script = workdir / "post.lua"
        script.write_text(
            WRK_SCRIPT
            % {
                "tokens": ",".join(json.dumps(t) for t in tokens),
                "body": json.dumps(json.dumps(BODY)),
            }
        )
        servers = [args.only] if args.only else ["gateway", "peer"]
        print(f"redis {redis_url}; server on CPU {args.server_cpu}, wrk on CPU {args.load_cpu}; "
              f"{args.connections} connections, {args.warmup:g} s warm-up + {args.duration:g} s, "
              f"{args.users} users, {args.rounds} rounds; logs in {workdir}")  # fmt: skip
        results = []
        for rnd in range(1, args.rounds + 1):
            for name in servers if rnd % 2 else reversed(servers):
                result = measure(
                    name, rnd, args, redis_url=redis_url, jwks=jwks, script=script, workdir=workdir
                )
                print(f"  {name} round {rnd}: {result.rps:.0f} req/s, p99 {result.p99_ms:.2f} ms",
                      flush=True)  # fmt: skip
                results.append(result)
        if args.json:
            args.json.write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
        code = report(results, args)
        if args.profile:
            for path in sorted(workdir.glob("*.pyspy")):
                print(f"\n{path.name}\n{summarize_profile(path)}")
        return code
    finally:
        redis_cli(redis_url, "FLUSHDB")
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
