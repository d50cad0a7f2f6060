"""``systemd-analyze verify`` on a unit's text (Debian's ``systemd`` package provides it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from power.unit import UNIT_NAME

SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"


def verify(unit: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    if not Path(SYSTEMD_ANALYZE).exists():
        pytest.fail("systemd-analyze is missing: apt-get install -y systemd")
    path = tmp_path / UNIT_NAME
    path.write_text(unit)
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=60
    )
