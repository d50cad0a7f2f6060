"""Writing into the store so that no reader ever sees half a file: :func:`atomic_write` for a
manifest, :class:`BlobWriter` for a blob streamed in while it is hashed (:mod:`power.store.store`
says how the store is laid out and swept)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from power.errors import InvalidRequestError
from power.store.writeback import fsync_dir

if TYPE_CHECKING:
    from power.store.store import ModelStore

__all__ = ["BlobWriter", "atomic_write"]


def atomic_write(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` whole, or what it held before: a temporary file beside it,
    fsynced, renamed over it, and the folder fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


class BlobWriter:
    """Streams bytes to a temporary file while hashing; :meth:`commit` moves it into place.

    Used as a context manager, anything not committed is removed on exit.
    """

    def __init__(self, store: ModelStore, expected: str | None = None) -> None:
        self._store = store
        self._expected = store.normalize_digest(expected) if expected is not None else None
        fd, tmp = tempfile.mkstemp(dir=store.tmp_dir, prefix=".tmp-", suffix="-partial")
        self._tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self.created = False

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    def commit(self) -> str:
        """Verify the digest and store the blob; returns ``sha256:<hex>``. Dedupes silently."""
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            digest = "sha256:" + self._hash.hexdigest()
            if self._expected is not None and digest != self._expected:
                raise InvalidRequestError(
                    f'digest mismatch, expected "{self._expected}", got "{digest}"'
                )
            target = self._store.blob_path(digest)
            if target.exists():
                self._tmp.unlink()
            else:
                os.chmod(self._tmp, 0o644)
                os.replace(self._tmp, target)
                fsync_dir(target.parent)
                self.created = True
            return digest
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()  # a no-op once committed
