"""Usage and cost: every finished inference request recorded in SQLite under the data folder
(``db``), written by an observer's thread (``recorder``), summed per day and model on demand
(``report``, which prices it)."""

from __future__ import annotations

from power.usage.db import Usage, usage_path
from power.usage.recorder import UsageRecorder, open_recorder

__all__ = ["Usage", "UsageRecorder", "open_recorder", "usage_path"]
