"""llama.cpp's log (and mtmd's): errors always on stderr, the rest as llama-cpp-python prints
it, the last error kept, and what a load allocated (``runner.placement``) read from it.

llama.cpp reports why a call failed only in its log; ``take()`` after a failed call gives that
line, so the error the gateway sees can say it (e.g. which LoRA tensor has the wrong shape).
(llama-cpp-python's own callback reads ggml's older level numbers and hides errors unless
verbose.)
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Iterator
from typing import Any

import llama_cpp
from llama_cpp import _logger as llama_logger

from runner.placement import Placement

__all__ = ["NativeLog", "llama_log", "mtmd_log"]

_INFO, _ERROR, _CONT = 2, 4, 5  # ggml_log_level


class NativeLog:
    def __init__(self) -> None:
        self._error: list[str] = []
        self._in_error = False
        self._placement: Placement | None = None
        self.callback = llama_cpp.llama_log_callback(self._write)

    def _write(self, level: int, text: bytes, user_data: Any) -> None:
        placement = self._placement
        if level == _INFO and placement is not None:
            placement.feed(text.decode("utf-8", errors="replace"))
        self._in_error = level == _ERROR or (level == _CONT and self._in_error)
        if not self._in_error:
            llama_logger.llama_log_callback(level, text, user_data)
            return
        if level == _ERROR:
            self._error = []
        line = text.decode("utf-8", errors="replace")
        self._error.append(line)
        sys.stderr.write(line)
        sys.stderr.flush()

    def take(self) -> str:
        """The last error line logged since the previous ``take``, or ""."""
        lines = [line.strip() for line in "".join(self._error).splitlines() if line.strip()]
        self._error = []
        return lines[-1] if lines else ""

    @contextlib.contextmanager
    def placement(self) -> Iterator[Placement]:
        """What llama.cpp reports allocating while the block runs (on the thread that loads)."""
        self._placement = placed = Placement()
        try:
            yield placed
        finally:
            self._placement = None


_log = NativeLog()
_installed: set[str] = set()


def llama_log() -> NativeLog:
    """The log of llama.cpp itself (model, context, adapters)."""
    if "llama" not in _installed:
        llama_cpp.llama_log_set(_log.callback, ctypes.c_void_p(0))
        _installed.add("llama")
    return _log


def mtmd_log() -> NativeLog:
    """The log of the multimodal library and its helpers."""
    if "mtmd" not in _installed:
        from llama_cpp import mtmd_cpp as mtmd

        mtmd.mtmd_helper_log_set(_log.callback, ctypes.c_void_p(0))  # (sets mtmd's too)
        _installed.add("mtmd")
    return _log
