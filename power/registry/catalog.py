"""The built-in offline catalog: popular names -> fallback sources, tried after the registry.

A source is a registry name (``hf.co/<user>/<repo>:<quant>``, Hugging Face's Ollama-compatible
registry) or a direct ``https://…/file.gguf`` URL. Keys are display names (``llama3.2:3b``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from importlib import resources

from power.store.names import ModelName

__all__ = ["catalog_sources", "load_catalog"]

log = logging.getLogger(__name__)


def load_catalog() -> dict[str, list[str]]:
    try:
        text = resources.files("power.registry").joinpath("catalog.json").read_text()
        models = json.loads(text).get("models", {})
    except (OSError, ValueError) as exc:
        log.warning("built-in catalog unreadable: %s", exc)
        return {}
    return {str(k).lower(): [str(s) for s in v] for k, v in models.items() if isinstance(v, list)}


def catalog_sources(catalog: Mapping[str, list[str]], name: ModelName) -> list[str]:
    """Fallback sources for ``name``; only names on the default registry have any."""
    if name.host.lower() != "registry.ollama.ai":
        return []
    return list(catalog.get(name.display.lower(), []))
