"""The real app (``create_app``) in-process over fake runners, as a Starlette TestClient, and a
store of models for it to serve."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from power.app import create_app
from power.create.build import create_model
from power.settings import Settings
from power.store.store import ModelStore
from power.supervisor.service import Runners
from power.usage import UsageRecorder
from tests.support.gguf import tiny_gguf
from tests.support.synth import write_gguf

with warnings.catch_warnings():  # starlette prefers httpx2; plain httpx works the same here
    from starlette.exceptions import StarletteDeprecationWarning

    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

__all__ = ["PLAIN", "QWEN", "TestClient", "app_client", "scripted_store"]

# A Qwen-style template: it renders tools and thinking, so a model made from it can do both.
QWEN = (
    "{{- if .Tools }}<tools>{{ range .Tools }}{{ json .Function }}{{ end }}</tools>{{ end }}"
    "{{- range .Messages }}<|{{ .Role }}|>"
    "{{- if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}"
    "{{- .Content }}"
    '{{- range .ToolCalls }}<tool_call>{"name": "{{ .Function.Name }}", '
    '"arguments": {{ json .Function.Arguments }}}</tool_call>{{ end }}'
    "{{ end }}<|assistant|>"
)
PLAIN = "{{ range .Messages }}<|{{ .Role }}|>{{ .Content }} {{ end }}<|assistant|>"


@contextlib.contextmanager
def app_client(
    settings: Settings,
    runners: Runners,
    store: ModelStore,
    *,
    usage: UsageRecorder | None = None,
    **state: Any,
) -> Iterator[TestClient]:
    """A client of ``create_app(settings, runners, store, usage=usage)`` with its lifespan
    running; ``state`` goes on ``app.state`` first (e.g. a ``registry``)."""
    app = create_app(settings, runners, store, usage=usage)
    for key, value in state.items():
        setattr(app.state, key, value)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


def scripted_store(tmp_path: Path) -> ModelStore:
    """A store under ``tmp_path`` with the models API tests ask for: ``qwen`` (tools and
    thinking), ``plain`` (neither) and ``vis`` (``plain`` with a vision projector). Their
    weights are a header-only GGUF: only scripted runners serve them."""
    store = ModelStore(tmp_path / "models")
    gguf = store.add_blob_from_file(tiny_gguf(tmp_path / "tiny.gguf"))
    for name, template in (("qwen", QWEN), ("plain", PLAIN)):
        for _ in create_model(store, name, {"from": gguf, "template": template}):
            pass
    clip = {"general.architecture": "clip", "general.type": "mmproj"}
    projector = store.add_blob_from_file(write_gguf(tmp_path / "mmproj.gguf", clip, {}))
    for _ in create_model(store, "vis", {"from": "plain", "files": {"mmproj.gguf": projector}}):
        pass
    return store
