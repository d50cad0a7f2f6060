"""The on-disk model store, laid out exactly like Ollama's so ``OLLAMA_MODELS`` can be shared.

```
<root>/manifests/<host>/<namespace>/<model>/<tag>   manifest JSON
<root>/blobs/sha256-<hex>                            content-addressed blobs
```

Every write goes to a temporary file in the target's directory, is fsynced, renamed into place
with ``os.replace`` and the directory fsynced, so a reader never sees half a manifest or blob.
(Pulled blobs are fsynced just after the rename instead: see :mod:`power.store.writeback`.)
Temporary names start with ``.`` (never a valid tag or blob name) and are swept by :meth:`prune`.
A running daemon holds a shared lock on ``<root>/.a3s-power.lock`` (:meth:`claim`): only a
daemon that finds no other one using the store prunes it, so one daemon never deletes what
another is writing, and then every temporary file of ours is a crashed writer's, whatever its
age. All methods are synchronous; the gateway calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from power.errors import InvalidRequestError, ModelNotFoundError, PowerError
from power.store import manifest as mf
from power.store.blobs import BlobWriter, atomic_write
from power.store.model import LocalModel, ModelEntry, load_model, model_entry
from power.store.names import ModelName, parse_name
from power.store.sweep import (
    manifest_digests,
    referenced_digests,
    remove_empty_dirs,
    sweep,
)
from power.store.writeback import fsync_dir

__all__ = ["ModelStore"]

log = logging.getLogger(__name__)

_DIGEST_RE = re.compile(r"^sha256[:-]([0-9a-fA-F]{64})$")
_COPY_CHUNK = 1 << 20
LOCK_NAME = ".a3s-power.lock"


class ModelStore:
    """Manifests and blobs under ``root``. Thread-safe; mutations are serialised by one lock."""

    def __init__(
        self,
        root: Path,
        *,
        noprune: bool = False,
        on_missing: Callable[[ModelStore, ModelName], bool] | None = None,
        tmp_dir: Path | None = None,
    ) -> None:
        self.root = Path(root)
        self.noprune = noprune
        # Called by `get` for a name the store lacks; True when it made the model meanwhile
        # (the daemon wires `power.create.starter.import_if_starter` here).
        self._on_missing = on_missing
        self.manifests_dir = self.root / "manifests"
        self.blobs_dir = self.root / "blobs"
        self.manifests_dir.mkdir(parents=True, exist_ok=True)
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        # where uploads and the quantizer write until their blob is complete (OLLAMA_TMPDIR)
        self.tmp_dir = self._usable_tmp_dir(tmp_dir)
        self._lock = threading.RLock()
        self._claim: int | None = None
        # blobs a pull or create in progress will reference (``pinned``): not removed meanwhile
        self._pins: collections.Counter[str] = collections.Counter()

    def _usable_tmp_dir(self, wanted: Path | None) -> Path:
        """``wanted`` if it is on the blobs' filesystem, else the blobs folder: a finished
        temporary file becomes its blob by an atomic rename, which cannot cross filesystems
        (a copy would be neither atomic nor free). Pulls keep Ollama's resumable
        ``blobs/sha256-…-partial`` files wherever this is."""
        if wanted is None:
            return self.blobs_dir
        try:
            wanted.mkdir(parents=True, exist_ok=True)
            same = os.stat(wanted).st_dev == os.stat(self.blobs_dir).st_dev
        except OSError as exc:
            log.warning("temporary folder %s unusable (%s): using %s", wanted, exc, self.blobs_dir)
            return self.blobs_dir
        if not same:
            log.warning(
                "temporary folder %s is on another filesystem than %s, where finished files are"
                " renamed to: using %s",
                wanted, self.blobs_dir, self.blobs_dir,
            )  # fmt: skip
            return self.blobs_dir
        return wanted

    def claim(self) -> bool:
        """Hold the store for this daemon's life; True when no other daemon holds it."""
        if self._claim is None:
            self._claim = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        fcntl.flock(self._claim, fcntl.LOCK_SH)  # others may start beside us from now on
        return alone

    def release(self) -> None:
        if self._claim is not None:
            os.close(self._claim)
            self._claim = None

    # -- blobs ---------------------------------------------------------------------------------

    @staticmethod
    def normalize_digest(digest: str) -> str:
        """``sha256:<hex>`` or ``sha256-<hex>`` -> ``sha256:<lowercase hex>``, else 400."""
        m = _DIGEST_RE.match(digest)
        if m is None:
            raise InvalidRequestError("invalid digest format")
        return "sha256:" + m.group(1).lower()

    def blob_path(self, digest: str) -> Path:
        return self.blobs_dir / self.normalize_digest(digest).replace(":", "-")

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def open_blob_writer(self, expected: str | None = None) -> BlobWriter:
        return BlobWriter(self, expected)

    def write_blob_stream(self, expected: str, chunks: Iterable[bytes]) -> bool:
        """Store a blob whose sha256 must equal ``expected``; True if it was newly created."""
        with self.open_blob_writer(expected) as writer:
            for chunk in chunks:
                writer.write(chunk)
            writer.commit()
            return writer.created

    def add_blob_bytes(self, data: bytes) -> str:
        with self.open_blob_writer() as writer:
            writer.write(data)
            return writer.commit()

    def add_blob_from_file(self, path: str | Path) -> str:
        """Copy a file into the store, hashing as it goes; returns its digest."""
        with open(path, "rb") as src, self.open_blob_writer() as writer:
            while chunk := src.read(_COPY_CHUNK):
                writer.write(chunk)
            return writer.commit()

    def adopt_blob(
        self, path: Path, *, pin: Callable[[str], None] | None = None
    ) -> tuple[str, bool]:
        """Hash a finished file in ``blobs/`` and rename it into place: (digest, newly created).

        ``pin`` (what :meth:`pinned` yields) gets the digest before the blob is looked for, so
        a copy already there is not removed before the caller's manifest names it."""
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(_COPY_CHUNK):
                h.update(chunk)
        digest = "sha256:" + h.hexdigest()
        if pin is not None:
            pin(digest)
        target = self.blob_path(digest)
        if target.exists():
            path.unlink()
            return digest, False
        os.chmod(path, 0o644)
        with path.open("rb") as f:  # (its data durable before a manifest can name it)
            os.fsync(f.fileno())
        os.replace(path, target)
        fsync_dir(target.parent)
        return digest, True

    def delete_blob(self, digest: str) -> bool:
        """Remove one blob (``DELETE /api/blobs``); False when it was not there. One that a
        model, or a pull or create in progress, uses is an ``InvalidRequestError`` naming it."""
        with self._lock:
            users = sorted(self._blob_users(digest))
            if users or self._pins[digest]:
                using = ", ".join(users) or "a pull or create in progress"
                raise InvalidRequestError(f"blob {digest} is in use by {using}")
            try:
                self.blob_path(digest).unlink()
            except FileNotFoundError:
                return False
            return True

    def _blob_users(self, digest: str) -> Iterator[str]:
        for name in self.names():
            try:
                manifest = mf.decode_manifest(self.read_manifest_bytes(name))
            except (PowerError, OSError, ValueError):
                continue
            if digest in manifest_digests(manifest):
                yield name.display

    @contextlib.contextmanager
    def pinned(self, digests: Iterable[str]) -> Iterator[Callable[[str], None]]:
        """Keep ``digests`` (and those given to the function it yields) from being removed until
        the block ends: the blobs a manifest being made will reference, which no manifest on
        disk may reference yet (a pull that found them present, a create's inputs)."""
        held: list[str] = []

        def pin(digest: str) -> None:
            with self._lock:
                self._pins[digest] += 1
            held.append(digest)

        for digest in set(digests):
            pin(digest)
        try:
            yield pin
        finally:
            with self._lock:
                self._pins.subtract(held)
                for digest in held:
                    if self._pins[digest] <= 0:
                        del self._pins[digest]

    def pinned_manifest(self, name: str | ModelName, pin: Callable[[str], None]) -> mf.Manifest:
        """The manifest of ``name``, every blob it names given to ``pin`` (what :meth:`pinned`
        yields) under the lock, so no delete runs between reading it and pinning them."""
        with self._lock:
            manifest = mf.decode_manifest(self.read_manifest_bytes(name))
            for digest in manifest_digests(manifest):
                pin(digest)
        return manifest

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    # -- manifests -----------------------------------------------------------------------------

    def manifest_path(self, name: ModelName) -> Path:
        return self.manifests_dir / name.filepath()

    def resolve(self, name: str | ModelName) -> ModelName:
        """Parse ``name`` and canonicalise each part case-insensitively against the store."""
        n = parse_name(name) if isinstance(name, str) else name
        parts = list(n.parts)
        here = self.manifests_dir
        for i, part in enumerate(parts):
            try:
                entries = os.listdir(here)
            except (FileNotFoundError, NotADirectoryError):
                break
            if part not in entries:
                folded = sorted(e for e in entries if e.lower() == part.lower())
                if not folded:
                    break
                parts[i] = folded[0]
            here = here / parts[i]
        return ModelName(
            host=parts[0],
            namespace=parts[1],
            model=parts[2],
            tag=parts[3],
            scheme=n.scheme,
        )

    def read_manifest_bytes(self, name: str | ModelName) -> bytes:
        n = self.resolve(name)
        try:
            return self.manifest_path(n).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ModelNotFoundError(f"model '{_shown(name)}' not found", model=n.display) from None

    def write_manifest(self, name: str | ModelName, manifest: mf.Manifest) -> str:
        """Write a freshly encoded manifest; returns its digest (sha256 hex of the bytes)."""
        return self.write_manifest_bytes(name, mf.encode_go_json(manifest))

    def write_manifest_bytes(self, name: str | ModelName, raw: bytes) -> str:
        """Write manifest bytes verbatim (as a registry pull must); returns their sha256 hex."""
        n = self.resolve(name)
        with self._lock:
            atomic_write(self.manifest_path(n), raw)
        return hashlib.sha256(raw).hexdigest()

    def copy(self, src: str | ModelName, dst: str | ModelName) -> ModelName:
        """Copy the manifest file byte for byte; the destination is overwritten."""
        with self._lock:
            raw = self.read_manifest_bytes(src)
            target = self.resolve(dst)
            atomic_write(self.manifest_path(target), raw)
        return target

    def delete(self, name: str | ModelName) -> None:
        """Remove a manifest, prune empty folders, then blobs nothing else references."""
        with self._lock:
            raw = self.read_manifest_bytes(name)
            n = self.resolve(name)
            path = self.manifest_path(n)
            path.unlink()
            fsync_dir(path.parent)
            remove_empty_dirs(path.parent, self.manifests_dir)
            if self.noprune:
                return
            try:
                digests = manifest_digests(mf.decode_manifest(raw))
            except ValueError:
                log.warning("deleted %s had an unreadable manifest; no blobs pruned", n.display)
                return
            self.remove_unreferenced(digests)

    def remove_unreferenced(self, digests: Iterable[str]) -> list[str]:
        """Delete those of ``digests`` that no manifest references (unless noprune)."""
        if self.noprune:
            return []
        with self._lock:
            referenced = referenced_digests(self.manifests_dir)
            if referenced is None:
                return []
            removed = []
            for digest in set(digests) - referenced - self._pins.keys():
                with contextlib.suppress(FileNotFoundError, InvalidRequestError):
                    self.blob_path(digest).unlink()
                    removed.append(digest)
            return removed

    def names(self) -> Iterator[ModelName]:
        """Every valid name that has a manifest file (Ollama's ``manifests/*/*/*/*``)."""
        for path in self.manifests_dir.glob("*/*/*/*"):
            name = ModelName.from_parts(path.relative_to(self.manifests_dir).parts)
            if name is not None and path.is_file():
                yield name

    def list(self) -> list[ModelEntry]:
        """Entries for /api/tags, newest first. Unreadable manifests are skipped with a warning."""
        entries = []
        for name in self.names():
            try:
                entries.append(model_entry(self, name))
            except (OSError, ValueError) as exc:
                log.warning("skipping model %s: %s", name.display, exc)
        entries.sort(key=lambda e: e.modified_at, reverse=True)
        return entries

    def get(self, name: str | ModelName) -> LocalModel:
        """Load a model; one the store lacks is asked of ``on_missing`` first."""
        n = self.resolve(name)
        path = self.manifest_path(n)
        if not path.is_file() and self._on_missing is not None and self._on_missing(self, n):
            n = self.resolve(n)
            path = self.manifest_path(n)
        try:
            raw = path.read_bytes()
            mtime = path.stat().st_mtime
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ModelNotFoundError(f"model '{_shown(name)}' not found", model=n.display) from None
        return load_model(self, n, raw, mtime)

    def config(self, manifest: mf.Manifest) -> mf.ConfigV2:
        try:
            return mf.decode_config(self.read_blob(manifest.config.digest))
        except (OSError, ValueError, InvalidRequestError) as exc:
            log.warning("unreadable config blob %s: %s", manifest.config.digest, exc)
            return mf.ConfigV2()

    # -- start-up ------------------------------------------------------------------------------

    def prune(self) -> None:
        """Sweep temporary files, orphan blobs and empty manifest folders.

        Call it only while no other daemon uses the store (:meth:`claim`): our own temporary
        files (uploads, quantizer output, manifest writes) are then a crashed writer's and go
        whatever their age; an interrupted pull's parts are kept for a while, for a resume
        (``power.store.sweep``).
        """
        if self.noprune:
            return
        with self._lock:
            sweep(self.manifests_dir, self.blobs_dir, self.tmp_dir)


def _shown(name: str | ModelName) -> str:
    return name if isinstance(name, str) else name.display
