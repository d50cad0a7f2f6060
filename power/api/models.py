"""Handlers that only touch the model store: tags, show, copy, delete, create and blobs.

Each handler takes the store from ``request.app.state.store`` and runs blocking store work in a
worker thread. Errors are raised as ``power.errors`` exceptions and rendered by the app's one
``PowerError`` handler as ``{"error": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Iterator
from datetime import datetime
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Send

from power.api import blobs
from power.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    PowerError,
)
from power.store.create import create_model
from power.store.gguf import GGUFInfo, read_gguf
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


def _json(content: Any, status_code: int = 200) -> Response:
    return Response(
        msgspec.json.encode(content),
        status_code,
        media_type="application/json; charset=utf-8",
    )


async def _object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object: empty -> "missing request body", malformed -> 400."""
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequestError("missing request body")
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(str(exc)) from exc
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object")
    return data


async def _body(request: Request, kind: type[_T]) -> _T:
    data = await _object(request)
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(str(exc)) from exc


def _store(request: Request) -> ModelStore:
    store: ModelStore = request.app.state.store
    return store


# -- GET /api/tags ---------------------------------------------------------------------------


async def list_models(request: Request) -> Response:
    entries = await asyncio.to_thread(_store(request).list)
    models = [
        {
            "name": e.name,
            "model": e.name,
            "modified_at": format_time(e.modified_at),
            "size": e.size,
            "digest": e.digest,
            "details": e.details,
        }
        for e in entries
    ]
    return _json({"models": models})


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
    for key in sorted(params):
        values = params[key] if isinstance(params[key], list) else [params[key]]
        lines += [f"PARAMETER {key} {_quote(_plain(v))}" for v in values]
    lines += [f"LICENSE {_quote(text)}" for text in m.license]
    for msg in m.messages:
        lines.append(f"MESSAGE {msg.get('role', '')} {_quote(str(msg.get('content', '')))}")
    return "\n".join(lines) + "\n"


def _model_info(m: LocalModel, verbose: bool) -> dict[str, Any]:
    info = _kv(m.gguf, verbose, skip=("general.name", "tokenizer.chat_template"))
    info["general.parameter_count"] = m.gguf.parameter_count
    return dict(sorted(info.items()))


def _kv(gguf: GGUFInfo, verbose: bool, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        key: [] if isinstance(value, list) and len(value) > 5 and not verbose else value
        for key, value in sorted(gguf.metadata.items())
        if key not in skip
    }


def _show(
    m: LocalModel, req: _ShowRequest, user_agent: str, projector: GGUFInfo | None = None
) -> dict[str, Any]:
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
    resp["details"] = m.details
    if m.messages:
        resp["messages"] = m.messages
    resp["model_info"] = _model_info(m, req.verbose)
    if user_agent.startswith(_COPILOT_PREFIX):
        resp["model_info"]["general.basename"] = req.model
    if projector is not None:
        resp["projector_info"] = _kv(projector, req.verbose)
    if req.verbose:
        resp["tensors"] = m.gguf.tensors
    resp["capabilities"] = m.capabilities
    resp["modified_at"] = format_time(m.modified_at)
    return resp


async def show_model(request: Request) -> Response:
    req = await _body(request, _ShowRequest)
    req.model = req.model or req.name
    if not req.model:
        raise InvalidRequestError("model is required")
    m = await asyncio.to_thread(_store(request).get, req.model)
    projector = await asyncio.to_thread(read_gguf, m.projector) if m.projector else None
    return _json(_show(m, req, request.headers.get("user-agent", ""), projector))


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


# -- POST /api/create ------------------------------------------------------------------------


class _NDJSONStream(StreamingResponse):
    """Streams one JSON object per line; the generator is closed when the response ends."""

    media_type = "application/x-ndjson"

    def __init__(self, lines: AsyncGenerator[bytes, None]) -> None:
        super().__init__(lines)
        self._lines = lines

    async def stream_response(self, send: Send) -> None:
        async with contextlib.aclosing(self._lines):
            await super().stream_response(send)


def _line(obj: Any) -> bytes:
    return msgspec.json.encode(obj) + b"\n"


async def _progress_lines(
    first: dict[str, Any], it: Iterator[dict[str, Any]]
) -> AsyncGenerator[bytes, None]:
    try:
        yield _line(first)
        while (item := await asyncio.to_thread(next, it, None)) is not None:
            yield _line(item)
    except PowerError as exc:
        yield _line({"error": str(exc)})
    except Exception as exc:
        log.exception("create failed after the stream started")
        yield _line({"error": str(exc) or type(exc).__name__})
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            with contextlib.suppress(ValueError):  # still running in a worker thread
                close()


async def create(request: Request) -> Response:
    store = _store(request)
    raw = await _object(request)
    name = str(raw.get("model") or raw.get("name") or "")
    it = await asyncio.to_thread(create_model, store, name, raw)
    first = await asyncio.to_thread(next, it, None)  # errors so far become real statuses
    if raw.get("stream") is False:
        while first is not None:
            first = await asyncio.to_thread(next, it, None)
        return _json({"status": "success"})
    if first is None:
        return _json({"status": "success"})
    return _NDJSONStream(_progress_lines(first, it))


routes: list[Route] = [
    Route("/api/tags", list_models, methods=["GET", "HEAD"]),
    Route("/api/show", show_model, methods=["POST"]),
    Route("/api/copy", copy_model, methods=["POST"]),
    Route("/api/delete", delete_model, methods=["DELETE"]),
    Route("/api/create", create, methods=["POST"]),
    *blobs.routes,
]
