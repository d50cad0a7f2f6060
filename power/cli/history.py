"""Line editing for the ``>>>`` prompt, with arrow-key history kept in the data folder.

GNU readline (Python's ``readline``) gives the editing keys Ollama's own line editor has
(Ctrl+A/E/K/U/W/L, Alt+B/F, arrows). History lives in ``<data folder>/history``, like Ollama's
``~/.ollama/history``: loaded when a session starts; each line entered is appended to the
file at once (readline trims it to the last 100 entries), so sessions that run one after
another, or side by side, all see it. `OLLAMA_NOHISTORY` (or ``/set nohistory``) stops lines
being recorded; what is already there can still be recalled, as in Ollama.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Protocol

from power.environment import env_bool
from power.location import client_home, trim_env

__all__ = ["HISTORY_LIMIT", "NOHISTORY_VAR", "History", "LineReader", "history_path"]

HISTORY_LIMIT = 100  # Ollama's History.Limit
NOHISTORY_VAR = "OLLAMA_NOHISTORY"


def history_path(env: Mapping[str, str]) -> Path:
    return client_home(env) / "history"


def _nohistory(env: Mapping[str, str]) -> bool:
    value = trim_env(env.get(NOHISTORY_VAR, ""))
    return bool(value) and env_bool(value)


class LineReader(Protocol):
    """What the REPL reads lines with (`History` on a terminal, a script in tests)."""

    enabled: bool  # whether entered lines are recorded (``/set history|nohistory``)

    def read_line(self, prompt: str) -> str: ...

    def record(self, line: str) -> None: ...


class History:
    """The prompt's line reader: `read_line` edits a line, `record` keeps it (if enabled)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.path = history_path(env)
        self.enabled = not _nohistory(env)
        self._readline: ModuleType | None = None
        try:
            import readline
        except ImportError:  # a Python built without it: plain input(), no history
            return
        self._readline = readline
        readline.set_auto_history(False)
        readline.set_history_length(HISTORY_LIMIT)
        readline.clear_history()
        with contextlib.suppress(OSError):  # none yet, or unreadable: start empty
            readline.read_history_file(self.path)

    def read_line(self, prompt: str) -> str:
        return input(prompt)

    def record(self, line: str) -> None:
        """Add an entered line to the history, in memory and in the file."""
        if not self.enabled or self._readline is None or not line.strip():
            return
        self._readline.add_history(line)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                self.path.touch(mode=0o600)
            self._readline.append_history_file(1, self.path)
        except OSError:  # a read-only data folder costs the history, not the session
            return
