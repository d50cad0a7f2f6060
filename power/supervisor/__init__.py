"""Runner lifecycle: spawn, handshake, multiplexed requests, leases, keep_alive and eviction.

The supervisor never imports Starlette; the API layer sees it only as ``Runners``
(``power.supervisor.service``) and never touches processes or sockets.
"""

from __future__ import annotations

from power.supervisor.client import RequestStream, RunnerClient
from power.supervisor.process import RunnerProcess
from power.supervisor.record import LoadedRunner, RunnerFactory, runner_key
from power.supervisor.service import RequestTiming, Runners, RunnerStats, ServedModel
from power.supervisor.supervisor import Supervisor

__all__ = [
    "LoadedRunner",
    "RequestStream",
    "RequestTiming",
    "RunnerClient",
    "RunnerFactory",
    "RunnerProcess",
    "RunnerStats",
    "Runners",
    "ServedModel",
    "Supervisor",
    "runner_key",
]
