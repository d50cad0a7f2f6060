"""What the API layer may ask of the supervisor: the ``Runners`` protocol and its frozen stats.

``power.api`` imports this module only, never a runner, a process or a socket: it streams a
request's replies, makes a one-reply call, loads or unloads a model, and reads ``RunnerStats``
snapshots. ``Supervisor`` implements it; API tests use a fake that does too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from proto import FromRunner, LoadParams, Msg

if TYPE_CHECKING:
    from power.store.model import LocalModel

__all__ = [
    "NO_EVENTS",
    "Events",
    "RequestTiming",
    "RunnerExit",
    "RunnerStats",
    "Runners",
    "RunnersStatus",
    "ServedModel",
]

# Why a runner stopped: evictions (lru: the model count limit, memory: room for another model,
# expired: keep_alive, request: an unload or a reload asked for, shutdown), or "hung" / "crash".
STOP_REASONS = ("lru", "memory", "expired", "request", "shutdown")


@dataclass(slots=True)
class RequestTiming:
    """Filled in by ``Runners.request``: time spent obtaining a runner, and which one."""

    load_s: float = 0.0
    pid: int = 0


class ServedModel(msgspec.Struct, frozen=True, kw_only=True):
    """One model a runner serves (models that share weights share a runner)."""

    name: str
    digest: str
    details: dict[str, Any]
    context_length: int  # its own num_ctx, at most the runner's


class RunnerStats(msgspec.Struct, frozen=True, kw_only=True):
    """One loaded runner, as it was when asked (memory measured then)."""

    pid: int
    models: tuple[ServedModel, ...]  # the first is the model it was loaded for
    n_ctx: int  # per sequence
    n_vocab: int
    num_parallel: int
    rss: int  # bytes resident in the runner process
    vram: int  # bytes on GPUs, as the driver measures them for the process
    all_on_gpu: bool  # every layer offloaded
    expires_at: float | None  # wall-clock seconds; None = kept forever
    requests_in_flight: int
    queued: int  # requests waiting for one of its parallel sequences
    mean_wait_s: float  # mean time requests waited for admission
    load_s: float
    cpu_mode: str  # proto.CpuMode it loaded in
    cpu_mode_is_default: bool  # the daemon's default mode for this CPU


class RunnerExit(msgspec.Struct, frozen=True, kw_only=True):
    """How a runner ended: why, how (``exit status 0``, ``killed by SIGSEGV``), and its last
    stderr lines."""

    model: str
    pid: int
    reason: str  # one of STOP_REASONS, "hung" or "crash"
    how: str
    at: float  # wall-clock seconds
    stderr_tail: tuple[str, ...] = ()


class RunnersStatus(msgspec.Struct, frozen=True, kw_only=True):
    draining: bool  # stopping: new requests are refused
    queue_depth: int  # requests waiting for a load or a seat
    loaded_models: int
    recent_exits: tuple[RunnerExit, ...]  # the last few, oldest first


class Events(Protocol):
    """What the supervisor reports as it happens (metrics listen)."""

    def runner_loaded(self, model: str, load_s: float) -> None: ...

    def runner_exited(self, event: RunnerExit) -> None: ...

    def request_admitted(self, waited_s: float) -> None:
        """A request got its seat after waiting ``waited_s`` in the queue."""
        ...


class _NoEvents:
    def runner_loaded(self, model: str, load_s: float) -> None:
        pass

    def runner_exited(self, event: RunnerExit) -> None:
        pass

    def request_admitted(self, waited_s: float) -> None:
        pass


NO_EVENTS: Events = _NoEvents()  # for a supervisor nobody listens to


class Runners(Protocol):
    """The supervisor as the API layer sees it."""

    def request(
        self,
        model: LocalModel,
        params: LoadParams,
        keep_alive_s: float | None,
        build: Callable[[int], Msg],
        timing: RequestTiming | None = None,
        deadline_s: float | None = None,
    ) -> AsyncIterator[list[FromRunner]]:
        """Run ``build(id)`` on a runner with a free sequence, yielding batches of its replies
        until the terminal one. Closing the iterator early cancels it on the runner."""
        ...

    async def call(
        self,
        model: LocalModel,
        params: LoadParams,
        keep_alive_s: float | None,
        build: Callable[[int], Msg],
    ) -> FromRunner:
        """The one reply to ``build(id)`` (Tokenize, Detokenize): no sequence is taken."""
        ...

    async def load(
        self, model: LocalModel, params: LoadParams, keep_alive_s: float | None
    ) -> RunnerStats:
        """Load ``model`` (or keep it loaded) for ``keep_alive_s``; its runner's stats."""
        ...

    async def unload(self, model: LocalModel, params: LoadParams) -> bool:
        """Unload now if idle, else when its last request ends; False if it is not loaded."""
        ...

    async def stats(self) -> list[RunnerStats]:
        """Every loaded runner, measured now."""
        ...

    def status(self) -> RunnersStatus:
        """The supervisor as a whole, now (cheap: nothing is measured)."""
        ...
