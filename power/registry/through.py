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

The pull runs on the daemon's event loop, and no thread ever waits for it there: a thread that
waits for the loop can be one the loop's own work needs (aiohttp's DNS, the store's writes on
the default executor), and as many such waits as there are threads stop the daemon. So the
daemon's lookups go through :func:`deferred`: the store's lookup in a thread, where the hook
does not pull but hands the pull back (:class:`_PullDeferred`); the request then awaits the
shared pull on the loop and looks the model up once more. Code that reads only what the store
has uses :func:`local_only`. Any other lookup in a thread still waits for the pull there, but at
most ``WAIT_S``. :meth:`PullThrough.aclose` cancels pulls still running at shutdown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import enum
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from power.errors import ServerBusyError
from power.registry.pull import ManifestNotFoundError, pull_as
from power.store.names import DEFAULT_HOST, DEFAULT_NAMESPACE, ModelName

if TYPE_CHECKING:
    from power.registry.service import RegistryService
    from power.store.store import ModelStore

__all__ = ["WAIT_S", "PullThrough", "deferred", "local_only"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_LOG_EVERY_S = 2.0  # byte progress lines of one blob, at most this often
# The longest a lookup in a thread that is neither deferred nor local waits for a pull; none of
# the daemon's own lookups is such a one (a pull of a large model takes longer, and goes on).
WAIT_S = 60.0


class _Mode(enum.Enum):
    WAIT = "wait"  # the hook waits for the pull (at most WAIT_S)
    DEFER = "defer"  # the hook hands the pull back to `deferred`, which awaits it on the loop
    LOCAL = "local"  # the hook never pulls: the store has the model, or it is a 404


_mode: contextvars.ContextVar[_Mode] = contextvars.ContextVar("pull_through", default=_Mode.WAIT)


class _PullDeferred(Exception):
    """Out of ``store.get`` in a :func:`deferred` call: the pull the lookup needs first.

    Not a PowerError, so that no handler of those stops it on its way out of the store.
    """

    def __init__(self, through: PullThrough, name: ModelName, source: ModelName) -> None:
        super().__init__(name.display)
        self.through = through
        self.name = name
        self.source = source


async def deferred(
    fn: Callable[..., T], *args: Any, executor: concurrent.futures.Executor | None = None
) -> T:
    """``fn(*args)`` in ``executor`` (the loop's default when None); a model its lookups lack
    is pulled through here, awaited on the loop, and then ``fn`` runs once more, with the
    store's hook pulling nothing (a model the source lacks is then the store's own 404).

    ``fn`` runs twice when it needs a pull, so it must only read before its lookups.
    """
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(executor, _in_mode, _Mode.DEFER, fn, *args)
    except _PullDeferred as need:
        await need.through._shared(need.name, need.source)
    return await loop.run_in_executor(executor, _in_mode, _Mode.LOCAL, fn, *args)


def local_only(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` with the store's hook pulling nothing: for work in a thread
    that needs only what the store has (``asyncio.to_thread(local_only, fn, ...)``)."""
    return _in_mode(_Mode.LOCAL, fn, *args, **kwargs)


def _in_mode(mode: _Mode, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    token = _mode.set(mode)  # an executor's thread keeps its context from one job to the next
    try:
        return fn(*args, **kwargs)
    finally:
        _mode.reset(token)


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
        """Pull ``name`` for a lookup in a worker thread; True once it is in the store.

        In a :func:`deferred` lookup it raises the pull for the caller to await instead.
        """
        mode = _mode.get()
        if mode is _Mode.LOCAL or store is not self.svc.store:
            return False  # another store is not ours to fill
        if threading.get_ident() == self._loop_thread:
            return False  # never block the event loop
        source = self.source_of(name)
        if source is None:
            return False
        if mode is _Mode.DEFER:
            raise _PullDeferred(self, name, source)
        try:
            done = asyncio.run_coroutine_threadsafe(self._shared(name, source), self._loop)
        except RuntimeError:  # the loop has closed: the daemon is gone
            return False
        try:
            return done.result(WAIT_S)
        except concurrent.futures.CancelledError:  # the daemon is stopping
            return False
        except TimeoutError:
            done.cancel()  # this wait only: the pull goes on for the next request
            raise ServerBusyError(
                f"still pulling {name.display} from {source.full}; try again later",
                retry_after_s=WAIT_S,
            ) from None

    async def _shared(self, name: ModelName, source: ModelName) -> bool:
        """Start the pull of ``name``, or join the one running; False when it was cancelled."""
        key = name.key()
        task = self._pulls.get(key)
        if task is None:
            # owned by _pulls until done; aclose() cancels and awaits what is left
            task = asyncio.ensure_future(self._pull(name, source))
            self._pulls[key] = task
            task.add_done_callback(lambda _: self._pulls.pop(key, None))
        await asyncio.wait([task])  # a waiter that goes away leaves the pull to the others
        if task.cancelled():  # the daemon is stopping
            return False
        return task.result()

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
