"""Usage and cost: every finished inference request recorded in SQLite under the data folder
(``db``, which also keeps the totals per day and model), written by an observer's thread and
queried on another (``recorder``), priced on demand (``report``)."""

from __future__ import annotations

from power.usage.db import Usage, usage_path
from power.usage.recorder import UsageRecorder, open_recorder

__all__ = ["Usage", "UsageRecorder", "open_recorder", "usage_path"]
