"""Deferred durability of pulled blobs: the marker, the fsync after it, recovery after a crash."""

from __future__ import annotations

import hashlib
from pathlib import Path

from power.store.writeback import mark_unsynced, recover_unsynced, sync_blob


def blob(blobs: Path, data: bytes, *, content: bytes | None = None) -> Path:
    """A blob named for ``data``'s digest, holding ``content`` (default: ``data``)."""
    path = blobs / ("sha256-" + hashlib.sha256(data).hexdigest())
    path.write_bytes(data if content is None else content)
    return path


def test_the_marker_lives_until_the_blob_is_synced(tmp_path: Path) -> None:
    path = blob(tmp_path, b"weights")
    mark_unsynced(path)
    assert (tmp_path / (path.name + "-unsynced")).is_file()
    sync_blob(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    mark_unsynced(path)
    path.unlink()  # deleted before its fsync ran: the marker still goes
    sync_blob(path)
    assert list(tmp_path.iterdir()) == []


def test_recovery_keeps_intact_blobs_and_deletes_lost_ones(tmp_path: Path) -> None:
    intact = blob(tmp_path, b"all of it reached the disk")
    lost = blob(tmp_path, b"the data", content=b"\0" * 8)  # a power cut kept the name only
    unmarked = blob(tmp_path, b"never checked", content=b"not what the name says")
    for path in (intact, lost):
        mark_unsynced(path)
    (tmp_path / ("sha256-" + "e" * 64 + "-unsynced")).touch()  # its blob was deleted
    assert recover_unsynced(tmp_path) == [lost]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([intact.name, unmarked.name])
