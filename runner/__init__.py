"""One runner process per loaded model: ``python -m runner``. Imports ``proto``, never ``power``."""

from __future__ import annotations

from runner.engine import Chunk, Engine, EngineError, LoadInfo, Sampled, SeqSampler

__all__ = ["Chunk", "Engine", "EngineError", "LoadInfo", "Sampled", "SeqSampler"]
