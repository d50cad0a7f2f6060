"""Issue-11 figures: what oversized request bodies cost the gateway under the body limit.

    python scripts/bench_body_limit.py [--clients 5] [--mib 200] [--under-mib 90]

Starts ``power serve`` on the fake engine (default limit, 100 MiB) and measures, sampling the
gateway's RSS every 10 ms and timing ``GET /api/version`` every 50 ms from another process:

* ``--clients`` concurrent bodies of ``--mib`` MiB each (over the limit): their statuses, the
  gateway's peak RSS and RSS afterwards, and the longest ``/api/version`` answer meanwhile;
* one body of ``--under-mib`` MiB (under the limit, a valid chat that is decoded and rendered):
  the same figures.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
from machine import Machine  # scripts/machine.py: the CPU and load a figure belongs to

MIB = 2**20


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(home: Path) -> Iterator[tuple[str, psutil.Process]]:
    port = _port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "A3S_POWER_"))}
    env.update(A3S_POWER_HOME=str(home), A3S_POWER_RUNNER_ENGINE="fake:echo")
    with (home / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "power", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.head(url, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield url, psutil.Process(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)


# The latency probe runs in its own process, so the clients' work cannot slow it down.
_PROBE = """
import sys, time, httpx
slowest = 0.0
with httpx.Client(timeout=120) as client:
    while not sys.stdin.closed and sys.stdin.readline():
        started = time.perf_counter()
        client.get(sys.argv[1] + "/api/version")
        slowest = max(slowest, time.perf_counter() - started)
        print(slowest, flush=True)
"""


@contextmanager
def watching(url: str, gateway: psutil.Process) -> Iterator[dict[str, float]]:
    """Peak RSS (MiB) and the slowest /api/version answer (s) while the block runs."""
    figures = {"peak_rss_mib": 0.0, "slowest_version_s": 0.0}
    stop = threading.Event()
    probe = subprocess.Popen(
        [sys.executable, "-c", _PROBE, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert probe.stdin is not None
    assert probe.stdout is not None

    def rss() -> None:
        while not stop.is_set():
            mib = gateway.memory_info().rss / MIB
            figures["peak_rss_mib"] = max(figures["peak_rss_mib"], mib)
            stop.wait(0.01)

    def version() -> None:
        while not stop.is_set():
            probe.stdin.write("go\n")
            probe.stdin.flush()
            figures["slowest_version_s"] = float(probe.stdout.readline())
            stop.wait(0.05)

    threads = [threading.Thread(target=rss), threading.Thread(target=version)]
    for t in threads:
        t.start()
    try:
        yield figures
    finally:
        stop.set()
        for t in threads:
            t.join()
        probe.stdin.close()
        probe.wait(30)
        figures["rss_after_mib"] = gateway.memory_info().rss / MIB


def chat_body(mib: int) -> bytes:
    text = "word " * (mib * MIB // 5)
    body = {"model": "smollm2", "stream": False, "messages": [{"role": "user", "content": text}]}
    return json.dumps(body).encode()


def post(url: str, body: bytes) -> Callable[[], str]:
    def send() -> str:
        try:
            r = httpx.post(f"{url}/api/chat", content=body, timeout=300)
        except httpx.HTTPError as exc:
            return type(exc).__name__  # a transport error, not an answer
        return f"{r.status_code} {r.text[:160]}"

    return send


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--under-mib", type=int, default=90)
    args = parser.parse_args()
    machine = Machine.probe(runner=False)  # (the gateway's limits: no model runs)
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp, server(Path(tmp)) as (url, gateway):
        out["idle_rss_mib"] = round(gateway.memory_info().rss / MIB, 1)
        big = chat_body(args.mib)
        with watching(url, gateway) as figures, ThreadPoolExecutor(args.clients) as pool:
            started = time.perf_counter()
            statuses = list(pool.map(lambda f: f(), [post(url, big)] * args.clients))
            figures["seconds"] = time.perf_counter() - started
        out[f"{args.clients}x{args.mib}MiB"] = {"statuses": statuses, **figures}
        del big
        under = chat_body(args.under_mib)
        with watching(url, gateway) as figures:
            started = time.perf_counter()
            status = post(url, under)()
            figures["seconds"] = time.perf_counter() - started
        out[f"1x{args.under_mib}MiB"] = {"status": status, **figures}
    out["machine"] = machine.finish()
    print(json.dumps(out, indent=2, default=lambda v: round(v, 3)))  # noqa: T201


if __name__ == "__main__":
    main()
