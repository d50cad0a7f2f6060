"""Issue-2 figures: power serve against in-process llama-cpp-python, measured side by side.

    python scripts/bench_spine.py [--rounds 5] [--tokens 128] [--out docs/bench-spine.json]

Runs, interleaved (A B, then B A: neither side always goes first): decode tokens/s
(client-observed, first to last chunk) through ``power serve`` vs an in-process ``Llama``, with
the ratio of each round and the NDJSON lines an answer took; warm time to first token; a cold
request vs the in-process load; gateway RSS when idle; the runner's exit after ``power stop``;
and the gateway's own CPU per token, streaming from a fake runner paced like a GPU (1.5 ms a
token).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from machine import Machine, publish  # scripts/machine.py: the CPU and load a figure belongs to

from power.create.starter import starter_gguf_path
from power.supervisor.spare import REFILL_DELAY_S
from tests.support.server import runner_children

CTX, THREADS = 2048, 2


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(home: Path, engine: str = "llama") -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "A3S_POWER_"))}
    env.update(A3S_POWER_HOME=str(home), A3S_POWER_RUNNER_ENGINE=engine, OLLAMA_KEEP_ALIVE="-1")
    log = (home / f"server-{port}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "power", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.head(url, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def prompt(i: int) -> str:
    return (
        f"<|im_start|>user\nRequest {i}: write a short story about a lighthouse keeper who "
        "finds a message in a bottle, in five paragraphs.<|im_end|>\n<|im_start|>assistant\n"
    )


_http = httpx.Client(timeout=120)  # one keep-alive connection, as a real client would hold


def power_stream(url: str, text: str, tokens: int, model: str = "smollm2") -> dict[str, float]:
    body = {
        "model": model,
        "prompt": text,
        "raw": True,
        "stream": True,
        "options": {"temperature": 0, "num_predict": tokens, "num_ctx": CTX, "num_thread": THREADS},
    }
    start = time.perf_counter()
    first = last = 0.0
    count = lines = 0
    with _http.stream("POST", f"{url}/api/generate", json=body) as resp:
        for line in resp.iter_lines():
            msg = json.loads(line)
            if msg.get("response"):
                now = time.perf_counter()
                first = first or now
                last = now
                lines += 1
            if msg.get("done"):
                count = msg["eval_count"]
    tps = (count - 1) / (last - first) if last > first else 0.0
    return {"ttft": first - start, "tps": tps, "lines": lines}


def inproc_stream(llm: object, text: str, tokens: int) -> dict[str, float]:
    start = time.perf_counter()
    first = last = 0.0
    n = 0
    for _ in llm.create_completion(text, max_tokens=tokens, temperature=0, stream=True):  # type: ignore[attr-defined]
        now = time.perf_counter()
        first = first or now
        last = now
        n += 1
    return {"ttft": first - start, "tps": (n - 1) / (last - first) if last > first else 0.0}


def settle_spare(gateway_pid: int) -> None:
    """Wait until the spare runner the last load scheduled is started and idle: its start
    (Python, llama-cpp-python's import) would otherwise take CPU from the first decode round."""
    gateway = psutil.Process(gateway_pid)
    deadline = time.monotonic() + REFILL_DELAY_S + 30
    while time.monotonic() < deadline:
        children = runner_children(gateway.pid)
        if len(children) >= 2 and all(c.cpu_percent(0.3) < 5 for c in children):
            return
        time.sleep(0.2)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def gateway_cpu_per_token(home: Path, tokens: int = 2000) -> dict[str, float]:
    """Gateway CPU seconds per streamed token, from a fake runner pacing 1.5 ms a token."""
    with server(home, engine="fake:count?delay=0.0015") as (url, proc):
        power_stream(url, "warm up", 10)
        gw = psutil.Process(proc.pid)
        before = gw.cpu_times()
        t0 = time.perf_counter()
        power_stream(url, "go", tokens)
        wall = time.perf_counter() - t0
        after = gw.cpu_times()
        cpu = (after.user - before.user) + (after.system - before.system)
        return {
            "gateway_cpu_us_per_token": cpu / tokens * 1e6,
            "paced_ms_per_token": 1.5,
            "observed_ms_per_token": wall / tokens * 1e3,
        }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--out", default="docs/bench-spine.json")
    args = ap.parse_args()
    from llama_cpp import Llama

    machine = Machine.probe()
    machine.match_runner_cpu_mode()  # (the in-process baseline's kernels)
    gguf = str(starter_gguf_path())
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        with server(home) as (url, proc):
            httpx.post(f"{url}/api/generate", json={"model": "smollm2"}, timeout=120)  # import
            # cold: unload, then time a 1-token request; baseline: in-process load + 1 token
            cold, load = [], []
            for i in range(args.rounds):
                # the gateway launches its next spare runner REFILL_DELAY_S after a load: a cold
                # request that follows another within that time would start a process itself
                time.sleep(REFILL_DELAY_S + 1.0)
                _http.post(f"{url}/api/generate", json={"model": "smollm2", "keep_alive": 0})
                cold.append(power_stream(url, prompt(1000 + i), 1)["ttft"])
                t0 = time.perf_counter()
                llm = Llama(gguf, n_ctx=CTX, n_threads=THREADS, verbose=False)
                first = inproc_stream(llm, prompt(2000 + i), 1)["ttft"]
                load.append(time.perf_counter() - t0 - first)
                del llm
            settle_spare(proc.pid)
            llm = Llama(gguf, n_ctx=CTX, n_threads=THREADS, verbose=False)
            inproc_stream(llm, prompt(-1), 4)
            power_stream(url, prompt(-1), 4)
            p_tps, i_tps, p_ttft, i_ttft = [], [], [], []
            frames: list[float] = []  # NDJSON lines carrying text, per answer
            for i in range(args.rounds):  # interleaved, A B then B A: neither side always first
                if i % 2 == 0:
                    p = power_stream(url, prompt(i), args.tokens)
                    q = inproc_stream(llm, prompt(i + 500), args.tokens)
                else:
                    q = inproc_stream(llm, prompt(i + 500), args.tokens)
                    p = power_stream(url, prompt(i), args.tokens)
                p_tps.append(p["tps"])
                frames.append(p["lines"])
                i_tps.append(q["tps"])
                p_ttft.append(p["ttft"])
                i_ttft.append(q["ttft"])
            time.sleep(1.0)
            gw_rss = psutil.Process(proc.pid).memory_info().rss
            runner = runner_children(proc.pid)[0].pid
            _http.post(f"{url}/api/generate", json={"model": "smollm2", "keep_alive": 0})
            runner_gone = not psutil.pid_exists(runner)
        results = {
            "decode_tps_power": summary(p_tps),
            "decode_tps_inprocess": summary(i_tps),
            "decode_ratio": statistics.median(p_tps) / statistics.median(i_tps),
            "decode_ratio_per_round": [p / q for p, q in zip(p_tps, i_tps, strict=True)],
            "decode_ratio_median_of_rounds": statistics.median(
                p / q for p, q in zip(p_tps, i_tps, strict=True)
            ),
            "decode_frames_per_answer": statistics.median(frames),
            "ttft_warm_power_s": summary(p_ttft),
            "ttft_warm_inprocess_s": summary(i_ttft),
            "ttft_warm_diff_ms": (statistics.median(p_ttft) - statistics.median(i_ttft)) * 1e3,
            "cold_power_s": summary(cold),
            "load_inprocess_s": summary(load),
            "cold_over_load_plus_ttft_ms": (
                statistics.median(cold) - statistics.median(load) - statistics.median(i_ttft)
            )
            * 1e3,
            "gateway_idle_rss_mb": gw_rss / 2**20,
            "runner_gone_after_stop": runner_gone,
            **gateway_cpu_per_token(home),
            "machine": machine.finish(),
        }
    publish(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
