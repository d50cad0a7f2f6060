"""A create keeps every blob its manifest will name until it is written: a model deleted, or a
blob deleted by digest, between two of its steps leaves the new model whole. The progress
iterator is stepped by hand, so each delete lands at a known step, as a ``DELETE`` arriving
while ``/api/create`` streams would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from power.create.build import create_model
from power.errors import InvalidRequestError
from power.store import manifest as mf
from power.store.store import ModelStore
from tests.support.gguf import tiny_gguf


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.fixture
def weights(store: ModelStore, tmp_path: Path) -> str:
    return store.add_blob_from_file(tiny_gguf(tmp_path / "tiny.gguf"))


def _step_to(steps: Iterator[dict[str, Any]], status: str) -> None:
    for step in steps:
        if step["status"] == status:
            return
    pytest.fail(f"the create never reported {status!r}")


def _assert_whole(store: ModelStore, name: str) -> None:
    manifest = mf.decode_manifest(store.read_manifest_bytes(name))
    missing = [
        x.digest for x in (manifest.config, *manifest.layers) if not store.has_blob(x.digest)
    ]
    assert missing == []
    store.get(name)  # (a missing blob is a FileNotFoundError here: a 500 on show and chat)


def test_a_create_from_a_model_keeps_its_layers_when_that_model_is_deleted_meanwhile(
    store: ModelStore, weights: str
) -> None:
    base = {
        "files": {"m.gguf": weights},
        "template": "{{ .Prompt }}",
        "system": "only in a",
        "license": "L-a",
        "parameters": {"temperature": 0.5},
    }
    list(create_model(store, "a", base))
    steps = create_model(store, "b", {"from": "a"})
    assert next(steps)["status"].startswith("using existing layer")  # the base's first layer
    store.delete("a")
    assert [step["status"] for step in steps][-1] == "success"
    _assert_whole(store, "b")
    model = store.get("b")
    assert (model.system, model.parameters) == ("only in a", {"temperature": 0.5})


def test_a_layer_the_create_stores_is_kept_when_the_model_that_also_has_it_is_deleted(
    store: ModelStore, weights: str
) -> None:
    list(create_model(store, "c", {"files": {"m.gguf": weights}, "system": "shared"}))
    request = {"files": {"m.gguf": weights}, "system": "shared", "license": "only in d"}
    steps = create_model(store, "d", request)
    _step_to(steps, f"using existing layer {mf.sha256_digest(b'shared')}")
    store.delete("c")  # the only manifest that names the system layer
    assert [step["status"] for step in steps][-1] == "success"
    _assert_whole(store, "d")
    assert store.get("d").system == "shared"


def test_a_blob_the_create_made_cannot_be_deleted_by_digest_before_its_manifest_is_written(
    store: ModelStore, weights: str
) -> None:
    system = mf.sha256_digest(b"new text")
    steps = create_model(store, "e", {"files": {"m.gguf": weights}, "system": "new text"})
    _step_to(steps, f"creating new layer {system}")
    with pytest.raises(InvalidRequestError, match="in use by a pull or create in progress"):
        store.delete_blob(system)
    assert [step["status"] for step in steps][-1] == "success"
    _assert_whole(store, "e")
