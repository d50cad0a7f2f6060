"""`RotatingLog`: the log file rotates by size, keeps a bounded number of old files, and the
file descriptors it takes over (stdout and stderr in the daemon) follow it to each new file."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from power.logging import RotatingLog


def test_rotation_keeps_the_taken_over_fd_on_the_current_file(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "server.log"
    started_with = tmp_path / "started-with.log"
    fd = os.open(started_with, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    handler = RotatingLog(str(log_file), max_bytes=300, backups=2, fds=(fd,))
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("tests.log_file")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        os.write(fd, b"raw before\n")
        for i in range(20):
            logger.warning("record %02d %s", i, "x" * 40)  # 50 bytes: rotates every 6
        os.write(fd, b"raw after\n")
    finally:
        logger.removeHandler(handler)
        handler.close()
        os.close(fd)
    names = sorted(p.name for p in log_file.parent.iterdir())
    assert names == ["server.log", "server.log.1", "server.log.2"]
    assert all(p.stat().st_size <= 300 for p in log_file.parent.iterdir())
    current = log_file.read_text()
    assert current.endswith("record 19 " + "x" * 40 + "\nraw after\n")
    assert "raw before" not in current
    assert started_with.read_text() == ""  # nothing went to the file the fd was opened on
