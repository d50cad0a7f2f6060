"""What a store's start-up sweep removes, and which blobs the manifests still reference.

``sweep`` runs only in a daemon that found no other one using the store (``ModelStore.claim``),
under the store's lock: temporary files of ours are then a crashed writer's, whatever their age.
An interrupted pull's parts are kept ``STALE_PARTIAL_S`` so that it can resume, and files in a
temporary folder that may be shared are removed only once that old. A blob is pruned only when
every manifest could be read: one unreadable manifest might be the one that references it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from pathlib import Path

from power.store import manifest as mf

__all__ = [
    "STALE_PARTIAL_S",
    "manifest_digests",
    "referenced_digests",
    "remove_empty_dirs",
    "sweep",
]

log = logging.getLogger(__name__)

STALE_PARTIAL_S = 3600.0  # an interrupted pull's resumable parts are kept this long
_BLOB_NAME_RE = re.compile(r"^sha256-[0-9a-f]{64}$")


def sweep(manifests_dir: Path, blobs_dir: Path, tmp_dir: Path) -> None:
    """Remove temporary files, orphan blobs and empty manifest folders."""
    cutoff = time.time() - STALE_PARTIAL_S
    for path in manifests_dir.rglob(".*.tmp"):
        _unlink(path)
    for folder in sorted(manifests_dir.rglob("*"), reverse=True):
        if folder.is_dir():
            remove_empty_dirs(folder, manifests_dir)
    referenced = referenced_digests(manifests_dir)
    if tmp_dir != blobs_dir:  # maybe shared: only files long abandoned
        for path in tmp_dir.glob(".tmp-*"):
            _unlink(path, cutoff)
    for path in blobs_dir.iterdir():
        if path.name.startswith(".tmp-"):
            _unlink(path)
        elif not _BLOB_NAME_RE.match(path.name):
            _unlink(path, cutoff)
        elif referenced is not None and path.name.replace("-", ":", 1) not in referenced:
            log.info("pruning unreferenced blob %s", path.name)
            path.unlink(missing_ok=True)


def remove_empty_dirs(folder: Path, root: Path) -> None:
    """Remove ``folder`` and its parents while they are empty, up to ``root`` (kept)."""
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def referenced_digests(manifests_dir: Path) -> set[str] | None:
    """Digests every manifest references; None when one cannot be read (prune nothing)."""
    referenced: set[str] = set()
    for path in manifests_dir.glob("*/*/*/*"):
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            referenced |= manifest_digests(mf.decode_manifest(path.read_bytes()))
        except (OSError, ValueError) as exc:
            log.warning("unreadable manifest %s (%s); not pruning blobs", path, exc)
            return None
    return referenced


def manifest_digests(manifest: mf.Manifest) -> set[str]:
    digests = [manifest.config.digest, *(layer.digest for layer in manifest.layers)]
    return {d.lower() for d in digests}


def _unlink(path: Path, cutoff: float | None = None) -> None:
    """Remove the file ``path`` (only if last written before ``cutoff``, when given)."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_file() and (cutoff is None or path.stat().st_mtime < cutoff):
            log.info("removing stale file %s", path)
            path.unlink()
