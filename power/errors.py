"""The gateway's one error tree and its mapping to HTTP statuses.

```
PowerError                  500  base; str(exc) is the user-facing message
├── InvalidRequestError     400  (msgspec.ValidationError on bodies maps here too)
│   ├── OptionTooLargeError      an option sizes more than the machine has (names it)
│   ├── RequestTooLargeError 413 a body over the limit, a prompt too large for a frame
│   └── RequestTimeoutError 408  a body that stopped arriving (``body_timeout_s``)
├── ModelNotFoundError      404
├── ClientClosedError       499  (logged only)
├── ServerBusyError         503
│   └── ShuttingDownError        draining after SIGTERM, or cut at the end of the grace period
├── InsufficientMemoryError 500  the model cannot fit even alone (not an OOM kill)
├── RunnerError             500  carries model, pid, stderr_tail
│   ├── RunnerLoadError          exit 3 / Failed(code=LOAD); never retried
│   ├── RunnerCrashedError       unexpected exit; SIGKILL -> "possibly out of memory"
│   ├── RunnerTimeoutError       ready/ping deadline
│   └── ProtocolError            bad frame, version mismatch
└── RegistryError           502  pull failures, digest mismatch
```

Every handler raises one of these; `power.app` registers a single Starlette exception handler
for `PowerError` that renders `{"error": str(exc)}` with the class's `status`. Every API surface
reports a failure through `reported`, which also logs it once, at the level it deserves.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence

__all__ = [
    "ClientClosedError",
    "ForbiddenError",
    "InsufficientMemoryError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "OptionTooLargeError",
    "PowerError",
    "ProtocolError",
    "RegistryError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "RunnerCrashedError",
    "RunnerError",
    "RunnerLoadError",
    "RunnerTimeoutError",
    "ServerBusyError",
    "ShuttingDownError",
    "UnauthorizedError",
    "reported",
]

log = logging.getLogger(__name__)


class PowerError(Exception):
    """Base of every error the gateway reports to a client."""

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    @property
    def headers(self) -> dict[str, str]:
        """Response headers every API surface sends with this error."""
        return {}


class InvalidRequestError(PowerError):
    status = 400


class OptionTooLargeError(InvalidRequestError):
    """A request option asks for more of a resource than the machine has; names the option."""

    def __init__(self, message: str, *, option: str) -> None:
        super().__init__(message)
        self.option = option


class RequestTooLargeError(InvalidRequestError):
    """A request body over the configured limit, or a request too large for a runner frame."""

    status = 413


class RequestTimeoutError(InvalidRequestError):
    """A request body that stopped arriving before its end."""

    status = 408


class ClientStalledError(RequestTimeoutError):
    """A client that stopped reading a streamed answer while it was still being generated."""


class UnauthorizedError(PowerError):
    """No API key, or not one of the configured keys."""

    status = 401

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class ForbiddenError(PowerError):
    """A read-only API key on a route that changes models."""

    status = 403


class ModelNotFoundError(PowerError):
    status = 404

    def __init__(self, message: str, *, model: str = "") -> None:
        super().__init__(message)
        self.model = model


class ClientClosedError(PowerError):
    status = 499


class ServerBusyError(PowerError):
    status = 503

    def __init__(
        self,
        message: str = "server busy, please try again.  maximum pending requests exceeded",
        *,
        retry_after_s: float = 1.0,
    ) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, round(self.retry_after_s)))}


class ShuttingDownError(ServerBusyError):
    """The daemon is stopping: new requests are refused, and what still runs when the grace
    period ends is cut (in-band, in each API's own error shape, for a stream)."""

    def __init__(self, message: str = "server is shutting down") -> None:
        super().__init__(message)


# The runner logs as "LEVEL logger: message" (runner.main); what else it writes to stderr is
# its last words: llama.cpp's errors and asserts, the C++ runtime's "terminate called ...",
# faulthandler's "Fatal Python error: ...", an exception's traceback, ggml's backtrace.
_LOGGED = re.compile(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.-]+: ")
_RANK = {"ERROR": 0, "CRITICAL": 0, "WARNING": 2}  # DEBUG and INFO lines are never told
_CAUSE = re.compile(
    r"fatal|abort|assert|terminate called|what\(\):|segmentation fault|bad_alloc"
    r"|out of memory|\berror\b|^[\w.]*(error|exception)\b|fail",
    re.IGNORECASE,
)
_TRACEBACK = "Traceback (most recent call last):"
_NATIVE_FRAME = re.compile(r"^#\d+\s+0x[0-9a-f]+|\[0x[0-9a-f]+\]\s*$")  # gdb, backtrace_symbols
_TOLD_LINES = 5


def _told_lines(tail: Sequence[str]) -> list[str]:
    """The lines of a runner's stderr ``tail`` that a client is told, oldest first.

    Up to ``_TOLD_LINES``, the latest of each rank first: lines that say why (logged at ERROR or
    CRITICAL, or written raw and naming an error, a failure, an assert, an abort), then the
    runner's other raw lines; its warnings only when it wrote neither. Its INFO and DEBUG lines
    (where a model was placed, which blobs were read) and the frames of a Python or native
    backtrace are never told: they stay in the gateway's log.
    """
    ranked: list[tuple[int, int]] = []  # (rank, index)
    frames = False
    for i, line in enumerate(tail):
        if line.startswith(_TRACEBACK):
            frames = True
            continue
        if not line.strip() or (frames and line[:1].isspace()) or _NATIVE_FRAME.search(line):
            continue
        frames = False
        logged = _LOGGED.match(line)
        if logged is None:
            ranked.append((0 if _CAUSE.search(line) else 1, i))
        elif logged.group(1) in _RANK:
            ranked.append((_RANK[logged.group(1)], i))
    if any(rank < 2 for rank, _ in ranked):  # the runner's own words: its warnings are noise
        ranked = [r for r in ranked if r[0] < 2]
    told = sorted(ranked, key=lambda r: (r[0], -r[1]))[:_TOLD_LINES]
    return [tail[i] for i in sorted(i for _, i in told)]


class RunnerError(PowerError):
    """A runner-side failure; carries the runner's identity, its last stderr lines (the message
    tells only those that say why: ``_told_lines``) and, when it died of a fatal signal, the
    Python stacks of its threads (``trace``, not in the message)."""

    status = 500

    def __init__(
        self,
        message: str,
        *,
        model: str = "",
        pid: int | None = None,
        stderr_tail: Sequence[str] = (),
        trace: Sequence[str] = (),
    ) -> None:
        told = _told_lines(stderr_tail)
        super().__init__(f"{message}: " + " | ".join(told) if told else message)
        self.model = model
        self.pid = pid
        self.stderr_tail = list(stderr_tail)
        self.trace = list(trace)


class RunnerLoadError(RunnerError):
    """The runner could not load the model. Never retried."""


class RunnerCrashedError(RunnerError):
    """The runner exited unexpectedly."""


class RunnerTimeoutError(RunnerError):
    """The runner missed a readiness or ping deadline."""


class ProtocolError(RunnerError):
    """A malformed frame or a protocol-version mismatch."""


class InsufficientMemoryError(PowerError):
    """The model cannot fit in this machine's memory even with nothing else loaded."""

    status = 500


class RegistryError(PowerError):
    status = 502


class _Overload:
    """Overload is not an error: one WARNING per window, counting what it held back."""

    WINDOW_S = 10.0

    def __init__(self) -> None:
        self._since = -self.WINDOW_S
        self._held = 0

    def note(self, method: str, path: str, exc: PowerError) -> None:
        now = time.monotonic()
        if now - self._since < self.WINDOW_S:
            self._held += 1
            return
        more = f" ({self._held} more since the last such line)" if self._held else ""
        log.warning("%s %s refused: %s%s", method, path, exc, more)
        self._since, self._held = now, 0


_overload = _Overload()


def reported(exc: Exception, *, method: str, path: str) -> PowerError:
    """``exc`` as the error a client gets, logged once: a bug with its traceback, a server
    fault at ERROR, overload (503) at WARNING at most once per 10 s, a client that went away at
    INFO, and a client's mistake (4xx) not at all."""
    if not isinstance(exc, PowerError):
        log.error("%s %s failed", method, path, exc_info=exc)
        return PowerError("internal server error")
    if isinstance(exc, ClientClosedError):
        log.info("client closed the request: %s", exc)
    elif isinstance(exc, ServerBusyError):
        _overload.note(method, path, exc)
    elif exc.status >= 500:
        log.error("%s %s failed: %s", method, path, exc)
    return exc
