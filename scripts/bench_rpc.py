"""Issue-16 figure: decode speed of SmolLM2 split over two llama.cpp RPC workers on loopback
(and this machine) against the same model run locally, measured in one run.

    python scripts/bench_rpc.py [--rounds 5] [--tokens 128] [--worker-threads N] [--out FILE]

Needs llama-cpp-python built with GGML_RPC=ON (docs/rpc.md). Two ``power serve`` daemons,
one plain and one with ``A3S_POWER_RPC_WORKERS`` naming two ``power rpc-worker`` processes,
each warm and kept loaded; rounds alternate between them, one greedy ``/api/generate`` each.
Decode speed is the server's own ``eval_count / eval_duration``. Reported: medians and the
ratio split over local. On loopback every worker shares this machine's cores, so the figure
is the cost of the RPC round trips per token, not a multi-machine speed-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scripts.machine import publish  # noqa: E402
from tests.support.rpc import rpc_worker  # noqa: E402
from tests.support.server import power_server  # noqa: E402


def decode_tps(client: httpx.Client, url: str, tokens: int, prompt: str) -> float:
    body = {
        "model": "smollm2",
        "prompt": prompt,
        "raw": True,
        "stream": False,
        "options": {"temperature": 0, "num_predict": tokens},
    }
    resp = client.post(f"{url}/api/generate", json=body)
    resp.raise_for_status()
    answer = resp.json()
    return float(answer["eval_count"]) / (answer["eval_duration"] / 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    # 1: on loopback the workers share this machine's cores with the runner (and ggml's
    # threads spin while they wait), so more threads per worker only oversubscribe them
    parser.add_argument("--worker-threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    threads = args.worker_threads
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "A3S_POWER_"))}
        env.update(
            A3S_POWER_HOME=str(tmp / "home"), OLLAMA_KEEP_ALIVE="-1", OLLAMA_MODELS=str(tmp / "m")
        )
        with (
            rpc_worker(env, tmp / "a.log", threads) as a,
            rpc_worker(env, tmp / "b.log", threads) as b,
            power_server(env, tmp / "local.log") as local,
            power_server(
                dict(env, A3S_POWER_RPC_WORKERS=f"{a.endpoint},{b.endpoint}"), tmp / "split.log"
            ) as split,
            httpx.Client(timeout=600) as client,
        ):
            urls = {"local": local.url, "split": split.url}
            for url in urls.values():
                decode_tps(client, url, 8, "Warm up:")
            rates: dict[str, list[float]] = {"local": [], "split": []}
            for i in range(args.rounds):
                order = list(urls.items())
                for which, url in order if i % 2 == 0 else order[::-1]:
                    prompt = f"Round {i}, {which}: 1, 2, 3, 4, 5,"
                    rates[which].append(decode_tps(client, url, args.tokens, prompt))
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {
        "rounds": args.rounds,
        "tokens": args.tokens,
        "cpus": os.cpu_count(),
        "worker_threads": threads,
        "decode_tokens_per_s_median": {k: round(v, 2) for k, v in med.items()},
        "ratio_split_over_local": round(med["split"] / med["local"], 3),
    }
    publish(result, args.out)


if __name__ == "__main__":
    main()
