"""Pull-through: a daemon of a fleet fetches a model it lacks from the fleet's registry.

With ``model_source = "host[:port][/namespace]"`` set, a request for a model the store lacks
(the store's ``on_missing`` hook, so generate, chat, embed, show and the OpenAI and Anthropic
layers alike) pulls it from that registry first and then goes on, instead of a 404. Which names:

* a name on Ollama's default registry (``smollm2``, ``alice/tool:1b``) is looked up on the
  source host, ``library`` replaced by the source's namespace (other namespaces kept);
* a name on the source host itself is pulled as it is;
* any other host is never contacted: the fleet's registry is its only model source.

The model is stored under the name the client asked for (``smollm2:latest``), so later requests
find it locally. Blobs are verified as in any pull. Concurrent requests for one model share one
pull (and, through :class:`~power.registry.download.Downloads`, one transfer per blob); its
progress goes to the log. A model the registry does not have is still a 404; a registry that
cannot be reached is a 502 naming it.

The hook runs in a worker thread (the store is synchronous) and waits for the pull, which runs
on the daemon's event loop; :meth:`PullThrough.aclose` cancels pulls still running at shutdown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from power.registry.pull import ManifestNotFoundError, pull_as
from power.store.names import DEFAULT_HOST, DEFAULT_NAMESPACE, ModelName

if TYPE_CHECKING:
    from power.registry.service import RegistryService
    from power.store.store import ModelStore

__all__ = ["PullThrough"]

log = logging.getLogger(__name__)

_LOG_EVERY_S = 2.0  # byte progress lines of one blob, at most this often


class PullThrough:
    """The store's ``on_missing`` hook for a fleet: see the module docstring."""

    def __init__(
        self,
        svc: RegistryService,
        host: str,
        namespace: str,
        *,
        insecure: bool,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.svc = svc
        self.host = host
        self.namespace = namespace
        self.insecure = insecure
        self._loop = loop
        self._loop_thread = threading.get_ident()  # made on the loop it serves
        self._pulls: dict[tuple[str, str, str, str], asyncio.Task[bool]] = {}

    def source_of(self, name: ModelName) -> ModelName | None:
        """Where ``name`` comes from on the model source; None for a host it never contacts."""
        host = name.host.lower()
        if host == self.host.lower():
            return name
        if host != DEFAULT_HOST:
            return None
        namespace = name.namespace
        if namespace.lower() == DEFAULT_NAMESPACE:
            namespace = self.namespace
        return ModelName(host=self.host, namespace=namespace, model=name.model, tag=name.tag)

    def __call__(self, store: ModelStore, name: ModelName) -> bool:
        """Pull ``name`` (blocking this worker thread); True once it is in the store."""
        if threading.get_ident() == self._loop_thread or store is not self.svc.store:
            return False  # never block the event loop; another store is not ours to fill
        source = self.source_of(name)
        if source is None:
            return False
        try:
            done = asyncio.run_coroutine_threadsafe(self._shared(name, source), self._loop)
        except RuntimeError:  # the loop has closed: the daemon is gone
            return False
        try:
            return done.result()
        except concurrent.futures.CancelledError:  # the daemon is stopping
            return False

    async def _shared(self, name: ModelName, source: ModelName) -> bool:
        key = name.key()
        task = self._pulls.get(key)
        if task is None:
            # owned by _pulls until done; aclose() cancels and awaits what is left
            task = asyncio.ensure_future(self._pull(name, source))
            self._pulls[key] = task
            task.add_done_callback(lambda _: self._pulls.pop(key, None))
        return await asyncio.shield(task)

    async def _pull(self, name: ModelName, source: ModelName) -> bool:
        log.info("pulling %s through from %s", name.display, source.full)
        started = time.monotonic()
        try:
            async with contextlib.aclosing(
                pull_as(self.svc, source, name, insecure=self.insecure)
            ) as progress:
                await _log_progress(name, progress)
        except ManifestNotFoundError:
            log.info("%s is not on the model source (%s)", name.display, source.full)
            return False
        except Exception as exc:
            log.warning("pulling %s through from %s failed: %s", name.display, source.full, exc)
            raise
        log.info("pulled %s through in %.1fs", name.display, time.monotonic() - started)
        return True

    async def aclose(self) -> None:
        """Cancel the pulls still running (their transfers keep part state for a resume)."""
        tasks = list(self._pulls.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


async def _log_progress(name: ModelName, progress: Any) -> None:
    """One log line per step, and per blob its bytes every ``_LOG_EVERY_S``."""
    last_status, last_at = "", 0.0
    async for p in progress:
        status = p.get("status", "")
        now = time.monotonic()
        if status != last_status:
            last_status, last_at = status, now
            log.info("pull-through %s: %s", name.display, status)
        elif "completed" in p and now - last_at >= _LOG_EVERY_S:
            last_at = now
            total = p.get("total") or 0
            share = f" ({100 * p['completed'] / total:.0f}%)" if total else ""
            log.info("pull-through %s: %s %d bytes%s", name.display, status, p["completed"], share)
