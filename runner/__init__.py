"""One runner process per loaded model: ``python -m runner``. Imports ``proto``, never ``power``."""

from __future__ import annotations

from runner.engine import Engine, EngineError, GenStats, LoadInfo, Sampled

__all__ = ["Engine", "EngineError", "GenStats", "LoadInfo", "Sampled"]
