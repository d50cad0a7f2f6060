"""Making models: ``/api/create`` (a base, uploaded blobs and modifiers), the offline starter
model, and quantizing with llama.cpp's quantizer (a ``runner`` child process).

Built on ``power.store`` (formats and persistence), beside ``power.registry`` (pull and push).
"""

from __future__ import annotations

from power.create.build import base_to_pull, create_model
from power.create.request import CreateRequest
from power.create.starter import import_if_starter, starter_gguf_path

__all__ = [
    "CreateRequest",
    "base_to_pull",
    "create_model",
    "import_if_starter",
    "starter_gguf_path",
]
