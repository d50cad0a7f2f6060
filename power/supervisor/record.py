"""``LoadedRunner``: the gateway's record of one runner with a model loaded.

("Slot" means one thing in this project: a KV sequence inside a runner.)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from power.supervisor import policy
from power.supervisor.process import RunnerProcess
from proto import LoadParams

if TYPE_CHECKING:
    from power.store.model import LocalModel

__all__ = ["LoadedRunner", "RunnerFactory", "runner_key"]


class RunnerFactory(Protocol):
    async def __call__(self, params: LoadParams, *, model: str) -> RunnerProcess: ...


def runner_key(params: LoadParams) -> str:
    """What makes two loads the same runner: the weights, adapters and projector."""
    parts = (params.model_path, *params.lora_paths)
    return "\0".join((*parts, params.projector_path) if params.projector_path else parts)


@dataclass(eq=False)
class LoadedRunner:
    """One loaded runner and its scheduling state."""

    key: str
    model: LocalModel
    params: LoadParams
    runner: RunnerProcess
    keep_alive_s: float
    loaded_at: float
    last_used: float
    refcount: int = 0
    expires_at: float | None = None  # monotonic; None while busy or when kept forever
    stopping: bool = False
    dead: bool = False
    reason: str = ""  # why it is stopping: expired, evicted, reload, shutdown, unloaded
    timer: asyncio.TimerHandle | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)  # its watcher and pinger
    seats: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    queued: int = 0  # requests waiting for a seat (one of the runner's parallel sequences)
    waits: int = 0
    wait_total_s: float = 0.0
    vram: int = 0  # bytes of GPU memory the runner holds, measured after loading
    all_on_gpu: bool = False  # every layer offloaded
    need_ram: int = 0  # the RAM it was estimated to take when placed
    asked: LoadParams | None = None  # what the load asked for, before placement set `params`
    # every model this runner served (same weights, several names), with its own num_ctx
    served: dict[str, tuple[LocalModel, int]] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return not (self.stopping or self.dead)

    def serves(self, wanted: LoadParams) -> bool:
        """In service, and loaded as a request for ``wanted`` needs (``policy.serves``)."""
        return self.usable and policy.serves(self.params, wanted, self.asked)

    def snapshot(self) -> policy.RunnerSnapshot:
        return policy.RunnerSnapshot(
            key=self.key,
            name=self.model.name,
            refcount=self.refcount,
            keep_alive_s=self.keep_alive_s,
            last_used=self.last_used,
        )
