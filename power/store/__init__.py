"""The on-disk model store: Ollama's manifests/blobs layout, GGUF headers, Modelfiles.

Formats and persistence only; making models (create, the starter, quantizing) is ``power.create``.
"""

from __future__ import annotations

from power.store.blobs import BlobWriter
from power.store.gguf import GGUFError, read_gguf
from power.store.gguf_info import GGUFInfo, TensorInfo, human_number
from power.store.manifest import ConfigV2, Layer, Manifest
from power.store.model import Details, LocalModel, ModelEntry
from power.store.modelfile import (
    Command,
    Modelfile,
    ModelfileError,
    modelfile_to_create_request,
    parse_modelfile,
)
from power.store.names import ModelName, parse_name
from power.store.store import ModelStore

__all__ = [
    "BlobWriter",
    "Command",
    "ConfigV2",
    "Details",
    "GGUFError",
    "GGUFInfo",
    "Layer",
    "LocalModel",
    "Manifest",
    "ModelEntry",
    "ModelName",
    "ModelStore",
    "Modelfile",
    "ModelfileError",
    "TensorInfo",
    "human_number",
    "modelfile_to_create_request",
    "parse_modelfile",
    "parse_name",
    "read_gguf",
]
