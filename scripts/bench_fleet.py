"""Issue-16 figure: the time to first token through HAProxy (``deploy/haproxy.cfg``) against a
direct request to the same daemon, measured in one run.

    python scripts/bench_fleet.py [--rounds 20] [--out docs/bench-fleet.json]

One ``power serve`` on the real SmolLM2 (warm, kept loaded) and HAProxy in front of it, run from
the shipped template as the tests run it. Each round sends one streamed ``/api/generate``
directly and one through HAProxy, interleaved and in alternating order, each with a prompt of
its own (same length), so neither side is served from the other's prompt cache. TTFT is the
client's time from sending to the first chunk with text. Reported: medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scripts.machine import publish  # noqa: E402
from tests.support.fleet import TEMPLATE, render_config  # noqa: E402
from tests.support.net import free_port  # noqa: E402

MODEL = "smollm2"


def _wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/api/version", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


@contextmanager
def _process(args: list[str], env: dict[str, str], log: Path, url: str) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        _wait(url, proc)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ttft_s(client: httpx.Client, url: str, prompt: str) -> float:
    body = {"model": MODEL, "prompt": prompt, "options": {"temperature": 0, "num_predict": 4}}
    start = time.perf_counter()
    first = 0.0
    with client.stream("POST", f"{url}/api/generate", json=body) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if line and not first and json.loads(line).get("response"):
                first = time.perf_counter() - start
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        raise SystemExit("haproxy is missing: apt-get install -y haproxy")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        daemon_port, proxy_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "A3S_POWER_"))}
        env.update(A3S_POWER_HOME=str(tmp / "home"), OLLAMA_KEEP_ALIVE="-1")
        cfg = tmp / "haproxy.cfg"
        cfg.write_text(render_config(TEMPLATE.read_text(), proxy_port, [daemon_port]))
        direct, proxied = f"http://127.0.0.1:{daemon_port}", f"http://127.0.0.1:{proxy_port}"
        serve = [sys.executable, "-m", "power", "serve", "--port", str(daemon_port)]
        with (
            _process(serve, env, tmp / "serve.log", direct),
            _process([haproxy, "-db", "-f", str(cfg)], env, tmp / "haproxy.log", proxied),
            httpx.Client(timeout=120) as client,
        ):
            for url in (direct, proxied):  # load the model; open both keep-alive connections
                ttft_s(client, url, "Warm up.")
            times: dict[str, list[float]] = {"direct": [], "haproxy": []}
            for i in range(args.rounds):
                order = [("direct", direct), ("haproxy", proxied)]
                for which, url in order if i % 2 == 0 else order[::-1]:
                    prompt = f"Round {i:03d} via {which:>7}: name one colour."
                    times[which].append(ttft_s(client, url, prompt))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "rounds": args.rounds,
        "model": MODEL,
        "ttft_median_ms": {k: round(v * 1000, 2) for k, v in med.items()},
        "extra_ms": round((med["haproxy"] - med["direct"]) * 1000, 2),
        "ratio_haproxy_over_direct": round(med["haproxy"] / med["direct"], 3),
    }
    publish(result, args.out)


if __name__ == "__main__":
    main()
