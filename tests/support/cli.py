"""``python -m power ARGS`` as a child process: its exit status and text output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["power_cli"]


def power_cli(
    env: dict[str, str], *args: str, cwd: Path | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the CLI with no stdin (a prompt for input would read EOF, never hang)."""
    return subprocess.run(
        [sys.executable, "-m", "power", *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
