"""HTTP load on the API: req/s and latency percentiles per route and concurrency, printed as JSON.

Starts the real server the service runs (the command of scripts/serve.py: `python -m api`, uvicorn
processes of `api.app:create_app`) on a temp SQLite + filesystem broker, makes an API key, submits a few
jobs (no worker: they stay queued), then drives each route with a fixed number of keep-alive connections
for a fixed time. The client is an asyncio protocol per connection (uvloop when installed), cheap enough
to leave the CPU to the server; its own CPU seconds are reported (`client_cpu_s`), and those of the
server's processes (`server_cpu_s`, and per request) when the benchmark started it.

    python bench/api_load.py [--routes get list post] [--concurrency 1 10 50 200 500] [--duration 5]
                             [--api-workers N] [--repo PATH] [--uvicorn-args ARGS] [--url URL --key KEY]

`--repo` serves another checkout (e.g. an export of an older commit) for before/after figures;
`--url/--key` load a server that is already running. Prints one JSON line per (route, concurrency),
then a JSON list of them all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

JOB_SPEC = {
    "name": "load", "dataset": {"source": "digits", "subset": 320, "test_subset": 100},
    "teacher": {"arch": "resnet8", "train": {"epochs": 1}}, "student": {"arch": "resnet8"},
    "distill": {"method": "kd"}, "train": {"epochs": 1},
}
REQUEST_TIMEOUT_S = 30.0


def _request(method: str, path: str, key: str, body: bytes = b"") -> bytes:
    head = (f"{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Length: {len(body)}\r\n")
    if body:
        head += "Content-Type: application/json\r\n"
    return head.encode() + b"\r\n" + body


def _answer_length(buffer: bytearray) -> tuple[int, bytes] | None:
    """(bytes of the first complete answer in buffer, its lower-cased head), or None while incomplete.
    Bodies have Content-Length (no chunked JSON here)."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = bytes(buffer[:head_end + 2]).lower()
    at = head.find(b"content-length:")
    length = head_end + 4 + (int(head[at + 15:head.index(b"\r\n", at)]) if at >= 0 else 0)
    return (length, head) if len(buffer) >= length else None


class _Client(asyncio.Protocol):
    """One keep-alive connection that sends the request again as soon as its answer is complete. A protocol
    rather than streams: half the client's CPU per request (docs/BENCHMARKS.md), CPU that the server
    does not get on a small machine."""

    def __init__(self, request: bytes, stop_at: float, latencies: list[float], statuses: Counter,
                 firsts: list[float]):
        self.request, self.stop_at, self.latencies, self.statuses = request, stop_at, latencies, statuses
        self.firsts = firsts  # also the latency of each connection's first request (it includes the accept)
        self.buffer = bytearray()
        self.sent_at: float | None = None  # while an answer is awaited
        self.closed = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._ask()

    def _ask(self) -> None:
        if time.perf_counter() >= self.stop_at:
            self.transport.close()
            return
        self.sent_at = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if (answer := _answer_length(self.buffer)) is None:
            return
        length, head = answer
        del self.buffer[:length]
        latency = time.perf_counter() - self.sent_at
        self.latencies.append(latency)
        if self.firsts is not None:
            self.firsts.append(latency)
            self.firsts = None
        self.statuses[head[9:12].decode()] += 1
        self.sent_at = None
        if b"connection: close" in head:
            self.transport.close()
        else:
            self._ask()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sent_at is not None:  # closed with a request unanswered
            self.statuses[type(exc).__name__ if exc else "closed"] += 1
        self.closed.set_result(None)


async def _connection(host: str, port: int, request: bytes, stop_at: float, latencies: list[float],
                      statuses: Counter, firsts: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while time.perf_counter() < stop_at:
        try:
            transport, client = await loop.create_connection(
                lambda: _Client(request, stop_at, latencies, statuses, firsts), host, port)
        except OSError as exc:
            statuses[type(exc).__name__] += 1
            await asyncio.sleep(0.05)
            continue
        while not client.closed.done():  # until the run ends or the server closes; a stuck answer is a timeout
            await asyncio.wait([client.closed], timeout=1.0)
            if client.sent_at is not None and time.perf_counter() - client.sent_at > REQUEST_TIMEOUT_S:
                statuses["timeout"] += 1
                client.sent_at = None
                transport.abort()


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def run_level(url: str, request: bytes, concurrency: int, duration: float) -> dict:
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    firsts: list[float] = []
    statuses: Counter = Counter()
    cpu0, start = os.times(), time.perf_counter()
    stop_at = start + duration
    await asyncio.gather(*(_connection(host, int(port), request, stop_at, latencies, statuses, firsts)
                           for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    cpu1 = os.times()
    latencies.sort()
    ms = {f"p{int(q * 100)}_ms": round(1000 * v, 2) if (v := _percentile(latencies, q)) is not None else None
          for q in (0.5, 0.9, 0.99)}
    return {"concurrency": concurrency, "requests": len(latencies), "seconds": round(elapsed, 2),
            "req_per_s": round(len(latencies) / elapsed, 1), **ms,
            "max_ms": round(1000 * latencies[-1], 1) if latencies else None,
            # The slowest answers, on which connections: the first request of each, or the later ones.
            "first_requests_max_ms": round(1000 * max(firsts), 1) if firsts else None,
            "later_requests_over_1s": sum(v > 1 for v in latencies) - sum(v > 1 for v in firsts),
            "status": dict(sorted(statuses.items())),
            "client_cpu_s": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 2)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(repo: Path, var_dir: Path, api_workers: int | None,
                 extra: list[str] = ()) -> tuple[subprocess.Popen, str, str]:
    """The API as serve.py runs it, on var_dir; returns (process, url, API key)."""
    env = {**os.environ, "KD_ARTIFACT_DIR": str(var_dir), "KD_DATABASE_URL": f"sqlite:///{var_dir}/kd.db",
           "KD_BROKER_URL": "filesystem://", "PYTHONPATH": str(repo)}
    if api_workers:
        env["KD_API_WORKERS"] = str(api_workers)
    code = ("import sys; from kdservice.db import make_engine, make_sessionmaker, upgrade_database;"
            "from kdservice.security import create_api_key; from kdservice.settings import get_settings;"
            "s = get_settings(); upgrade_database(s.database_url);"
            "f = make_sessionmaker(make_engine(s.database_url));\n"
            "with f.begin() as session: print(create_api_key(session, 'bench')[1])")
    key = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, check=True, capture_output=True,
                         text=True).stdout.strip()
    port = _free_port()
    try:  # the command serve.py runs, when this checkout has it
        sys.path.insert(0, str(repo / "scripts"))
        from serve import api_command  # type: ignore[import-not-found]

        from kdservice.settings import Settings

        args = api_command(Settings(artifact_dir=var_dir, host="127.0.0.1", port=port,
                                    **({"api_workers": api_workers} if api_workers else {})))
    except ImportError:  # an older checkout: plain uvicorn, as its serve.py ran it
        args = ["-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen([sys.executable, *args, *extra], cwd=repo, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                return proc, url, key
        except OSError:
            time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError("the API did not start")


def tree_cpu_seconds(proc: subprocess.Popen | None) -> float | None:
    """User + system CPU seconds of a started server and every process under it (None for --url)."""
    if proc is None:
        return None
    root = psutil.Process(proc.pid)
    total = 0.0
    for process in (root, *root.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def seed_jobs(url: str, key: str, count: int) -> str:
    body = json.dumps(JOB_SPEC).encode()
    job_id = ""
    for _ in range(count):
        request = urllib.request.Request(f"{url}/v1/jobs", data=body, method="POST", headers={
            "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            job_id = json.loads(response.read())["id"]
    return job_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", nargs="+", default=["get", "list", "post"], choices=["get", "list", "post"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 10, 50, 200, 500])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per (route, concurrency)")
    parser.add_argument("--api-workers", type=int, default=None, help="uvicorn processes (default: serve.py's)")
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout to serve (before/after runs)")
    parser.add_argument("--url", help="an already running API (with --key) instead of starting one")
    parser.add_argument("--key", help="API key for --url")
    parser.add_argument("--seed-jobs", type=int, default=50)
    parser.add_argument("--uvicorn-args", default="", help='appended to the server command of a --repo whose '
                        'serve.py runs the uvicorn CLI, e.g. "--http h11 --loop asyncio" (what uvicorn picks '
                        'without uvicorn[standard])')
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    proc = None
    with tempfile.TemporaryDirectory(prefix="kd-load-") as tmp:
        if args.url:
            url, key = args.url, args.key
        else:
            proc, url, key = start_server(args.repo.resolve(), Path(tmp), args.api_workers,
                                          args.uvicorn_args.split())
        try:
            job_id = seed_jobs(url, key, args.seed_jobs)
            requests = {"get": _request("GET", f"/v1/jobs/{job_id}", key),
                        "list": _request("GET", "/v1/jobs", key),
                        "post": _request("POST", "/v1/jobs", key, json.dumps(JOB_SPEC).encode())}
            results = []
            for route in args.routes:
                for concurrency in args.concurrency:
                    server_cpu = tree_cpu_seconds(proc)
                    row = {"route": route, **asyncio.run(run_level(url, requests[route], concurrency,
                                                                   args.duration))}
                    if server_cpu is not None:  # what the server's processes used, all of them
                        row["server_cpu_s"] = round(tree_cpu_seconds(proc) - server_cpu, 2)
                        row["server_cpu_ms_per_request"] = round(1000 * row["server_cpu_s"] / max(row["requests"], 1),
                                                                 3)
                    print(json.dumps(row), flush=True)
                    results.append(row)
            print(json.dumps({"load_average": os.getloadavg(), "results": results}, indent=1))
        finally:
            if proc is not None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
