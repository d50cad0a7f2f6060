"""A load's progress on its way to the gateway: ``Progress`` frames, a few a second at most.

The gateway kills a runner whose load is silent for ``load_timeout_s``; each ``Progress`` resets
that deadline, so a large model that loads slowly but steadily is not taken for a hung one.
llama.cpp reports after every tensor (hundreds a second), so reports closer together than
``PROGRESS_INTERVAL_S`` to the last one sent are dropped; the first always goes out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from proto import Msg, Progress

__all__ = ["PROGRESS_INTERVAL_S", "LoadProgress"]

PROGRESS_INTERVAL_S = 0.25


class LoadProgress:
    """The engine's ``OnProgress`` (``runner.engine``): called on the inference thread, it
    sends through ``send`` (thread-safe) and says stop once ``stopping`` is set."""

    def __init__(
        self,
        send: Callable[[Msg], None],
        stopping: threading.Event,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._stopping = stopping
        self._clock = clock
        self._last_sent: float | None = None

    def __call__(self, fraction: float) -> bool:
        now = self._clock()
        if self._last_sent is None or now - self._last_sent >= PROGRESS_INTERVAL_S:
            self._last_sent = now
            self._send(Progress(fraction=min(max(fraction, 0.0), 1.0)))
        return not self._stopping.is_set()
