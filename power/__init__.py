"""A3S Power: a local LLM model server, a drop-in replacement for Ollama.

The gateway (this package) owns HTTP, the model store, scheduling and runner supervision; each
loaded model lives in its own ``python -m runner`` process.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
