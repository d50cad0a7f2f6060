"""A real terminal for interactive CLI tests: one command in a tmux pane on a private server.

Keys go in with ``send-keys`` and the screen comes back with ``capture-pane`` (the scrollback
too), so the REPL sees a TTY exactly as a user's shell gives it one: readline, Ctrl+C as
SIGINT from the terminal, Ctrl+D as end of input. Each `Terminal` runs its own tmux server
(its socket in a temporary folder, no user config) and kills it on close, which hangs up the
command. Waits poll the screen until a deadline; nothing is timed.

The command runs under ``sh``, which writes its exit status to a file: tmux 3.3 does not always
reap a pane's process promptly (it can sit as a zombie with the pane still "alive"), so the
status file, not tmux, says when and how the command ended. The shell traps SIGINT (Ctrl+C
reaches the whole foreground group) so that only the command decides what Ctrl+C does.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

__all__ = ["PROMPT", "Terminal", "terminal"]

PROMPT = ">>>"
WAIT_S = 60.0  # the deadline of one wait; SmolLM2 on a busy CI runner answers in seconds
_POLL_S = 0.1


class Terminal:
    def __init__(self, folder: Path, env: Mapping[str, str]) -> None:
        self._base = ["tmux", "-S", str(folder / "tmux.sock"), "-f", os.devnull]
        self._env = dict(env)
        self._status = folder / "status"
        self._pids: list[int] = []  # the tmux server and the pane's shell, waited for by `close`

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(
            [*self._base, *args],
            env=self._env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout

    def start(self, command: Sequence[str], *, width: int = 120, height: int = 40) -> None:
        script = f'trap : INT; "$@"; echo $? > {shlex.quote(str(self._status))}'
        # remain-on-exit keeps the pane (and so the screen) after the command ends
        self._tmux(
            "start-server", ";", "set-option", "-g", "remain-on-exit", "on", ";",
            "set-option", "-g", "history-limit", "10000", ";",
            "new-session", "-d", "-s", "main", "-x", str(width), "-y", str(height),
            shlex.join(["sh", "-c", script, "sh", *command]),
        )  # fmt: skip
        pids = self._tmux("display-message", "-p", "-t", "main", "#{pid} #{pane_pid}")
        self._pids = [int(pid) for pid in pids.split()]

    def send(self, *keys: str) -> None:
        """tmux key names (``Enter``, ``C-c``, ``Up``) as they are; other text typed literally."""
        for key in keys:
            if key in {"Enter", "Up", "Down", "C-c", "C-d"}:
                self._tmux("send-keys", "-t", "main", key)
            else:
                self._tmux("send-keys", "-t", "main", "-l", key)

    def type_line(self, text: str) -> None:
        self.send(text, "Enter")

    def screen(self) -> str:
        """Everything the pane has shown, wrapped lines joined, trailing blanks dropped."""
        text = self._tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "main")
        return "\n".join(line.rstrip() for line in text.rstrip("\n").splitlines()).rstrip()

    def lines(self, screen: str | None = None) -> list[str]:
        """The non-blank lines of ``screen`` (by default, of the screen now)."""
        text = self.screen() if screen is None else screen
        return [line for line in text.splitlines() if line.strip()]

    def wait(self, pred: Callable[[str], bool], what: str, timeout_s: float = WAIT_S) -> str:
        """Poll the screen until ``pred`` holds; fail with the screen when the deadline passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            screen = self.screen()
            if pred(screen):
                return screen
            if self.exited() is not None and not pred(screen := self.screen()):
                raise AssertionError(f"the command ended while waiting for {what}:\n{screen}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout_s}s; the screen:\n{screen}")
            time.sleep(_POLL_S)

    def wait_text(self, text: str) -> str:
        return self.wait(lambda screen: text in screen, repr(text))

    def prompts(self, screen: str | None = None) -> int:
        """How many ``>>>`` prompts the screen shows (an empty one is a line of its own)."""
        lines = self.lines(screen)
        return sum(1 for line in lines if line == PROMPT or line.startswith(PROMPT + " "))

    def wait_prompt(self, after: int) -> str:
        """Wait for a fresh, empty ``>>>`` prompt: more prompts than ``after``, the last empty."""

        def fresh(screen: str) -> bool:
            lines = self.lines(screen)
            return self.prompts(screen) > after and lines[-1] == PROMPT

        return self.wait(fresh, "a new >>> prompt")

    def ask(self, text: str) -> str:
        """Type a line at the prompt and wait for the next prompt; the screen then."""
        before = self.prompts()
        self.type_line(text)
        return self.wait_prompt(before)

    def exited(self) -> int | None:
        """The command's exit status once it has ended, else None."""
        try:
            text = self._status.read_text()
        except FileNotFoundError:
            return None
        return int(text) if text.endswith("\n") else None  # a whole line: written

    def wait_exit(self) -> int:
        self.wait(lambda _s: self.exited() is not None, "the command to exit")
        status = self.exited()
        assert status is not None
        return status

    def close(self) -> None:
        """Kill the tmux server (the command gets SIGHUP) and wait until all of it is gone."""
        procs: list[psutil.Process] = []
        for pid in self._pids:
            try:
                proc = psutil.Process(pid)
                procs += [proc, *proc.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        subprocess.run(
            [*self._base, "kill-server"],
            env=self._env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
        deadline = time.monotonic() + 10
        while any(_running(p) for p in procs) and time.monotonic() < deadline:
            time.sleep(_POLL_S)
        for proc in procs:
            if _running(proc):
                proc.kill()


def _running(proc: psutil.Process) -> bool:
    """Alive and not a zombie (a zombie of tmux's is reaped when tmux exits)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@contextmanager
def terminal(env: Mapping[str, str], command: Sequence[str]) -> Iterator[Terminal]:
    """A tmux pane running ``command`` with ``env``; its server is killed on the way out."""
    if shutil.which("tmux") is None:
        pytest.fail("tmux is missing: apt-get install tmux")
    with tempfile.TemporaryDirectory(prefix="power-term-") as tmp:
        term = Terminal(Path(tmp), env)
        try:
            term.start(command)
            yield term
        finally:
            term.close()
