"""Handlers that only touch the model store: tags, show, copy and delete.

Each handler takes the store from ``request.app.state.store`` and runs blocking store work in a
worker thread. Errors are raised as ``power.errors`` exceptions and rendered by the app's one
``PowerError`` handler as ``{"error": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from power.api.body import json_object
from power.api.response import json_response
from power.api.semantics import lookup_model
from power.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    PowerError,
)
from power.registry.through import local_only
from power.store.gguf import read_gguf
from power.store.gguf_info import GGUFArray, GGUFInfo
from power.store.model import LocalModel
from power.store.names import ModelName
from power.store.store import ModelStore

__all__ = ["format_time", "routes"]

log = logging.getLogger(__name__)

_T = TypeVar("_T", bound=msgspec.Struct)
_PARAM_WIDTH = 30
_COPILOT_PREFIX = "GitHubCopilotChat/"


class _ShowRequest(msgspec.Struct):
    model: str = ""
    name: str = ""
    verbose: bool = False
    system: str = ""
    options: dict[str, Any] | None = None


class _CopyRequest(msgspec.Struct):
    source: str = ""
    destination: str = ""


class _DeleteRequest(msgspec.Struct):
    model: str = ""
    name: str = ""


def format_time(ts: float) -> str:
    """RFC 3339 in local time with offset, trailing zeros trimmed (Go's ``time.Time`` JSON)."""
    dt = datetime.fromtimestamp(ts).astimezone()
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{dt.microsecond:06d}".rstrip("0")
    if frac:
        text += "." + frac
    offset = dt.utcoffset()
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


async def _body(request: Request, kind: type[_T]) -> _T:
    data = await json_object(request)
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(str(exc)) from exc


def _store(request: Request) -> ModelStore:
    store: ModelStore = request.app.state.store
    return store


# -- GET /api/tags ---------------------------------------------------------------------------


def _tags(store: ModelStore) -> list[dict[str, Any]]:
    """The /api/tags rows, each with the model's ``capabilities`` (what its GGUF header and
    template say, as /api/show has them; headers are cached by digest). A model whose layers
    cannot be read is listed without them."""
    models = []
    for e in store.list():
        row: dict[str, Any] = {
            "name": e.name,
            "model": e.name,
            "modified_at": format_time(e.modified_at),
            "size": e.size,
            "digest": e.digest,
            "details": e.details,
        }
        try:
            row["capabilities"] = store.get(e.name).capabilities
        except (OSError, ValueError, PowerError) as exc:
            log.warning("model %s: no capabilities listed: %s", e.name, exc)
        models.append(row)
    return models


async def list_models(request: Request) -> Response:
    # a model deleted since it was listed is left out, never pulled back in a fleet
    rows = await asyncio.to_thread(local_only, _tags, _store(request))
    return json_response({"models": rows})


# -- POST /api/show --------------------------------------------------------------------------


def _go_value(value: Any) -> str:
    """Go's ``%#v`` for a JSON-decoded value: strings quoted, integral floats without ``.0``."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return str(value)


def _parameters_text(params: dict[str, Any]) -> str:
    lines: list[str] = []
    for key in sorted(params):
        values = params[key] if isinstance(params[key], list) else [params[key]]
        lines.extend(f"{key:<{_PARAM_WIDTH}} {_go_value(v)}" for v in values)
    return "\n".join(lines)


def _quote(s: str) -> str:
    """Ollama's Modelfile quoting: only values with newlines or edge spaces are quoted."""
    if "\n" in s or s.startswith(" ") or s.endswith(" "):
        return f'"""{s}"""' if '"' in s else f'"{s}"'
    return s


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _go_value(value) if isinstance(value, float) else str(value)


def _modelfile(m: LocalModel, system: str | None, params: dict[str, Any]) -> str:
    lines = [
        '# Modelfile generated by "ollama show"',
        "# To build a new Modelfile based on this, replace FROM with:",
        f"# FROM {m.name}",
        "",
        f"FROM {m.model_path}",
    ]
    lines += [f"ADAPTER {_quote(a)}" for a in m.adapters]
    if m.projector:
        lines.append(f"FROM {m.projector}")
    if m.template is not None:
        lines.append(f"TEMPLATE {_quote(m.template)}")
    if system:
        lines.append(f"SYSTEM {_quote(system)}")
    if m.renderer:
        lines.append(f"RENDERER {m.renderer}")
    if m.parser:
        lines.append(f"PARSER {m.parser}")
    for key in sorted(params):
        values = params[key] if isinstance(params[key], list) else [params[key]]
        lines += [f"PARAMETER {key} {_quote(_plain(v))}" for v in values]
    lines += [f"LICENSE {_quote(text)}" for text in m.license]
    for msg in m.messages:
        lines.append(f"MESSAGE {msg.get('role', '')} {_quote(str(msg.get('content', '')))}")
    return "\n".join(lines) + "\n"


def _model_info(m: LocalModel, verbose: bool, whole: GGUFInfo | None) -> dict[str, Any]:
    info = _kv(whole or m.gguf, verbose, skip=("general.name", "tokenizer.chat_template"))
    info["general.parameter_count"] = m.gguf.parameter_count
    return dict(sorted(info.items()))


def _kv(gguf: GGUFInfo, verbose: bool, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The metadata as Ollama shows it: arrays of more than five values as [] unless verbose,
    and as [] where the header was too long to keep them (``GGUFArray``)."""
    return {
        key: [] if _long(value) and (not verbose or isinstance(value, GGUFArray)) else value
        for key, value in sorted(gguf.metadata.items())
        if key not in skip
    }


def _long(value: object) -> bool:
    return isinstance(value, list | GGUFArray) and len(value) > 5


def _header(path: str, verbose: bool) -> GGUFInfo:
    """A GGUF's header for a show: every array whole when verbose (never cached), else the
    cached one (a blob's name is its digest)."""
    if verbose:
        return read_gguf(path, max_array=None)
    return read_gguf(path, cache_key=Path(path).name.replace("-", ":", 1))


def _show(
    m: LocalModel,
    req: _ShowRequest,
    user_agent: str,
    projector: GGUFInfo | None = None,
    whole: GGUFInfo | None = None,
) -> dict[str, Any]:
    """``whole``: the model's header with every array read (for a verbose show)."""
    system = req.system or m.system
    params = {**m.parameters, **(req.options or {})}
    resp: dict[str, Any] = {}
    if m.license:
        resp["license"] = "\n".join(m.license)
    resp["modelfile"] = _modelfile(m, system, params)
    if m.parameters:
        resp["parameters"] = _parameters_text(m.parameters)
    template = m.template if m.template is not None else m.gguf.chat_template
    if template:
        resp["template"] = template
    if system:
        resp["system"] = system
    if m.renderer:
        resp["renderer"] = m.renderer
    if m.parser:
        resp["parser"] = m.parser
    resp["details"] = m.details
    if m.messages:
        resp["messages"] = m.messages
    resp["model_info"] = _model_info(m, req.verbose, whole)
    if user_agent.startswith(_COPILOT_PREFIX):
        resp["model_info"]["general.basename"] = req.model
    if projector is not None:
        resp["projector_info"] = _kv(projector, req.verbose)
    if req.verbose:
        resp["tensors"] = m.gguf.tensors
    resp["capabilities"] = m.capabilities
    resp["modified_at"] = format_time(m.modified_at)
    if m.requires:
        resp["requires"] = m.requires
    return resp


async def show_model(request: Request) -> Response:
    req = await _body(request, _ShowRequest)
    req.model = req.model or req.name
    if not req.model:
        raise InvalidRequestError("model is required")
    m = await lookup_model(request.app.state, req.model)  # pulled through first in a fleet
    projector = await asyncio.to_thread(_header, m.projector, req.verbose) if m.projector else None
    whole = await asyncio.to_thread(_header, m.model_path, True) if req.verbose else None
    agent = request.headers.get("user-agent", "")
    return json_response(_show(m, req, agent, projector, whole))


# -- POST /api/copy, DELETE /api/delete ------------------------------------------------------


async def copy_model(request: Request) -> Response:
    req = await _body(request, _CopyRequest)
    src, dst = ModelName.parse(req.source), ModelName.parse(req.destination)
    if not src.is_valid():
        raise InvalidRequestError(f"source {json.dumps(req.source)} is invalid")
    if not dst.is_valid():
        raise InvalidRequestError(f"destination {json.dumps(req.destination)} is invalid")
    try:
        await asyncio.to_thread(_store(request).copy, src, dst)
    except ModelNotFoundError:
        raise ModelNotFoundError(
            f"model {json.dumps(req.source)} not found", model=req.source
        ) from None
    return Response(status_code=200)


async def delete_model(request: Request) -> Response:
    req = await _body(request, _DeleteRequest)
    name = req.model or req.name
    parsed = ModelName.parse(name)
    if not parsed.is_valid():
        raise InvalidRequestError(f"name {json.dumps(name)} is invalid")
    try:
        await asyncio.to_thread(_store(request).delete, parsed)
    except ModelNotFoundError:
        raise ModelNotFoundError(f"model '{name}' not found", model=name) from None
    return Response(status_code=200)


routes: list[Route] = [
    Route("/api/tags", list_models, methods=["GET", "HEAD"]),
    Route("/api/show", show_model, methods=["POST"]),
    Route("/api/copy", copy_model, methods=["POST"]),
    Route("/api/delete", delete_model, methods=["DELETE"]),
]
