"""Deferred durability for pulled blobs: visible at once, on disk a moment later, checked after a
crash.

Waiting for a freshly downloaded blob to reach the disk before renaming it into place would
make a pull run at the disk's write speed rather than the network's. A pull therefore commits a
verified blob like this instead:

1. create an empty ``sha256-<hex>-unsynced`` marker beside where the blob goes;
2. rename the verified partial file into place and fsync the directory (marker and name are now
   durable together);
3. in the background, fsync the blob, then remove the marker (:func:`sync_blob`).

If the machine loses power between 2 and 3, the blob's name may have survived without all of
its bytes. At the next start :func:`recover_unsynced` finds the marker, hashes the blob, and
deletes it unless it matches its name, so the store never serves a blob with the wrong content;
the model then reports the blob missing and a pull fetches it again. A process that is merely
killed loses nothing: the bytes are in the page cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

__all__ = ["UNSYNCED", "fsync_dir", "mark_unsynced", "recover_unsynced", "sync_blob"]

log = logging.getLogger(__name__)

UNSYNCED = "-unsynced"
_HASH_CHUNK = 1 << 20


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _marker(blob: Path) -> Path:
    return blob.with_name(blob.name + UNSYNCED)


def mark_unsynced(blob: Path) -> None:
    """Step 1: record that ``blob`` is about to appear before its bytes are durable."""
    _marker(blob).touch()


def sync_blob(blob: Path) -> None:
    """Step 3: fsync ``blob`` (if it is still there) and drop its marker."""
    try:
        fd = os.open(blob, os.O_RDONLY)
    except FileNotFoundError:
        pass
    else:
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    _marker(blob).unlink(missing_ok=True)


def _digest_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return "sha256-" + h.hexdigest()


def recover_unsynced(blobs_dir: Path) -> list[Path]:
    """Check every blob left with a marker; delete those whose bytes did not survive. Returns
    the blobs deleted."""
    lost = []
    for marker in sorted(blobs_dir.glob("sha256-*" + UNSYNCED)):
        blob = marker.with_name(marker.name[: -len(UNSYNCED)])
        if blob.is_file():
            if _digest_of(blob) == blob.name:
                sync_blob(blob)
                continue
            log.warning("removing blob %s: its bytes did not reach the disk before a crash", blob)
            blob.unlink()
            lost.append(blob)
        marker.unlink(missing_ok=True)
    if lost:
        fsync_dir(blobs_dir)
    return lost
