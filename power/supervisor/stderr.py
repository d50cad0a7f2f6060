"""A runner's stderr, read as it comes: re-logged line by line under ``power.runner``, its last
lines kept for crash messages, and a fatal signal's dump kept whole.

A runner that dies of a fatal signal writes the Python stacks of its threads first
(``faulthandler``): that dump is kept apart from the tail (its first line, what killed it, goes
in the tail too) and logged as an error, so a crash message still ends with the runner's own
last words. Every line is redacted before it is kept or logged.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

from power.logging import redact

__all__ = ["STDERR_TAIL_LINES", "TRACE_LINES", "RunnerStderr"]

runner_log = logging.getLogger("power.runner")

STDERR_TAIL_LINES = 50
TRACE_LINES = 500  # of a faulthandler dump
_FATAL = "Fatal Python error:"  # how faulthandler's dump begins


class RunnerStderr:
    def __init__(self) -> None:
        self.tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.trace: list[str] = []  # the Python stacks a fatal signal dumped

    async def pump(self, stream: asyncio.StreamReader, who: Callable[[], str]) -> None:
        """Read ``stream`` to its end; ``who`` names the runner in the log ("[model pid=N]")."""
        while True:
            line = await stream.readline()
            if not line:
                break
            text = redact(line.decode(errors="replace").rstrip())
            if text.startswith(_FATAL) or self.trace:
                if not self.trace:
                    self.tail.append(text)  # the dump's first line: what killed it
                if len(self.trace) < TRACE_LINES:
                    self.trace.append(text)
            elif text:
                self.tail.append(text)
                if runner_log.isEnabledFor(logging.DEBUG):
                    runner_log.debug("%s %s", who(), text)
        if self.trace:
            stacks = "\n".join(self.trace)
            runner_log.error("%s the Python stacks of its threads when it died:\n%s", who(), stacks)

    def log_tail(self, who: str) -> None:
        """The whole tail, once, as the runner dies: the error's message tells a client only
        the lines that say why."""
        if self.tail:
            runner_log.error("%s its last lines:\n%s", who, "\n".join(self.tail))
