"""The incremental sha256 of a download (``PrefixHasher``) and the part writer that feeds it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from power.registry.checksum import MAX_BACKLOG, PrefixHasher
from power.registry.parts import Part, _PartWriter, plan_parts, pwritev

pytestmark = pytest.mark.anyio


class Counter:
    key = "test"
    completed = 0


@pytest.fixture
def fd(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path / "partial", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        yield fd
    finally:
        os.close(fd)


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write(fd: int, hasher: PrefixHasher, part: Part, data: bytes) -> None:
    """What a part writer does: write, count the bytes as landed, feed them."""
    pos = part.Offset + part.Completed
    pwritev(fd, [data], pos)
    part.Completed += len(data)
    hasher.feed(pos, [data])


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_parts_landing_in_any_order(fd: int, seed: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(3_000_000)
    os.ftruncate(fd, len(data))
    parts = plan_parts(len(data), 400_000)  # 8 parts
    hasher = PrefixHasher(fd, parts)
    pending = {p.N: p for p in parts}
    while pending:  # a random part gets its next random-sized chunk, until all are full
        p = pending[rng.choice(list(pending))]
        n = min(rng.randint(1, 150_000), p.Size - p.Completed)
        start = p.Offset + p.Completed
        write(fd, hasher, p, data[start : start + n])
        if p.Completed == p.Size:
            del pending[p.N]
        if rng.random() < 0.3:
            await asyncio.sleep(0)  # let hashing jobs finish at varied points
    assert await hasher.finish(len(data)) == digest(data)
    await hasher.aclose()


async def test_a_resumed_prefix_is_read_back_from_disk(fd: int) -> None:
    data = random.Random(7).randbytes(2_000_000)
    os.ftruncate(fd, len(data))
    parts = plan_parts(len(data), 500_000)
    for p, saved in zip(parts, (500_000, 123_456, 0, 9), strict=True):  # as a killed pull left it
        os.pwrite(fd, data[p.Offset : p.Offset + saved], p.Offset)
        p.Completed = saved
    hasher = PrefixHasher(fd, parts)
    hasher.kick()
    for p in parts:
        start = p.Offset + p.Completed
        write(fd, hasher, p, data[start : p.Offset + p.Size])
    assert await hasher.finish(len(data)) == digest(data)


async def test_the_disk_is_what_gets_verified(fd: int) -> None:
    data = random.Random(8).randbytes(1_000_000)
    os.ftruncate(fd, len(data))
    parts = plan_parts(len(data), 250_000)
    os.pwrite(fd, data[250_000:500_000], 250_000)  # part 1 landed first...
    parts[1].Completed = parts[1].Size
    os.pwrite(fd, b"\x00", 300_000)  # ...and one byte of it rotted on disk
    hasher = PrefixHasher(fd, parts)
    for p in (parts[0], parts[2], parts[3]):
        write(fd, hasher, p, data[p.Offset : p.Offset + p.Size])
    assert await hasher.finish(len(data)) != digest(data)


async def test_a_backlog_too_large_to_hold_is_read_back(fd: int) -> None:
    data = random.Random(9).randbytes(MAX_BACKLOG + 1_000_000)
    os.ftruncate(fd, len(data))
    parts = [Part(N=0, Offset=0, Size=len(data))]
    hasher = PrefixHasher(fd, parts)
    write(fd, hasher, parts[0], data[:1000])
    write(fd, hasher, parts[0], data[1000:])  # over the limit: not held in memory
    assert await hasher.finish(len(data)) == digest(data)


async def test_a_write_that_already_landed_is_counted_before_the_next(fd: int) -> None:
    """Regression: awaiting a write job that is already done does not yield to the loop, so its
    done callback has not run; the next buffer must still go after it, not over it."""
    data = random.Random(10).randbytes(64_000)
    os.ftruncate(fd, len(data))
    part = Part(N=0, Offset=0, Size=len(data))
    hasher = PrefixHasher(fd, [part])
    writer = _PartWriter(Counter(), fd, part, hasher)
    for i in range(0, len(data), 16_000):
        writer.add(data[i : i + 16_000])
        await writer.flush()
        assert writer.inflight is not None
        writer.inflight.landed.wait()  # blocks the loop: the job is done, its callback pending
    await writer.drain()
    assert part.Completed == len(data)
    assert os.pread(fd, len(data), 0) == data
    assert await hasher.finish(len(data)) == digest(data)


async def test_abandon_keeps_what_arrived(fd: int) -> None:
    data = random.Random(11).randbytes(50_000)
    os.ftruncate(fd, len(data))
    part = Part(N=0, Offset=0, Size=len(data))
    progress = Counter()
    hasher = PrefixHasher(fd, [part])
    writer = _PartWriter(progress, fd, part, hasher)
    writer.add(data[:20_000])
    await writer.flush()  # in flight
    writer.add(data[20_000:30_000])  # buffered
    writer.abandon()  # a dropped connection: synchronous, as in a cancelled task
    assert part.Completed == progress.completed == 30_000
    assert os.pread(fd, 30_000, 0) == data[:30_000]
    write(fd, hasher, part, data[30_000:])
    assert await hasher.finish(len(data)) == digest(data)
