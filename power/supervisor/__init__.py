"""Runner lifecycle: spawn, handshake, multiplexed requests, leases, keep_alive and eviction.

The supervisor never imports Starlette; the API layer never touches processes or sockets.
"""

from __future__ import annotations

from power.supervisor.client import RequestStream, RunnerClient
from power.supervisor.process import RunnerProcess
from power.supervisor.supervisor import (
    Loaded,
    RequestTiming,
    RunnerFactory,
    Supervisor,
    runner_key,
)

__all__ = [
    "Loaded",
    "RequestStream",
    "RequestTiming",
    "RunnerClient",
    "RunnerFactory",
    "RunnerProcess",
    "Supervisor",
    "runner_key",
]
