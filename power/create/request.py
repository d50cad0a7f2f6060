"""The create request: its fields, the older Modelfile form merged in, and its checks.

Every check here needs neither the store's models nor the disk, so a bad request is a 400
before anything is pulled or written.

A request names models and uploaded blobs, never files: the server does not open a path a
client sends (in ``from``, ``adapters`` or a Modelfile's FROM/ADAPTER), as Ollama's server does
not; ``power create`` uploads local files first and sends their digests. What is a path is
decided from the text alone, so the answer never tells whether a path exists here.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from power.create.quantize import normalize_type
from power.errors import InvalidRequestError
from power.options import check_options
from power.store.model import StoredMessage
from power.store.modelfile import is_path_ref, modelfile_to_create_request, parse_modelfile
from power.store.names import ModelName, parse_name
from power.template import GoTemplate

if TYPE_CHECKING:
    from power.store.store import ModelStore

__all__ = ["CreateRequest", "check_files", "prepare", "storable"]

_UPLOAD = "upload the file first (POST /api/blobs/sha256:<digest>)"


class CreateRequest(msgspec.Struct, kw_only=True):
    """The fields of a create request this server acts on; others are ignored."""

    model: str = ""
    name: str = ""  # deprecated spelling of model
    from_: str = msgspec.field(name="from", default="")
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    template: str = ""
    system: str = ""
    license: str | list[str] | None = None
    parameters: dict[str, Any] | None = None
    messages: list[StoredMessage] | None = None
    quantize: str = ""
    quantization: str = ""
    renderer: str = ""
    parser: str = ""
    requires: str = ""
    modelfile: str = ""
    stream: bool | None = None


def _request(req: CreateRequest | Mapping[str, Any]) -> CreateRequest:
    if isinstance(req, CreateRequest):
        return req
    try:
        return msgspec.convert(dict(req), CreateRequest)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(str(exc)) from exc


def _not_read(command: str, ref: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"{command} {ref}: the server does not read files; {_UPLOAD} and name it as "
        "@sha256:<digest>, as `power create` does"
    )


def _merge_modelfile(req: CreateRequest) -> CreateRequest:
    """``req`` with its Modelfile's fields, where the request does not set them itself.

    FROM and ADAPTER name models and uploaded blobs (``@sha256:…``), never files: the server
    does not read the paths a client names (Ollama's CLI uploads them first).
    """
    fields = modelfile_to_create_request(parse_modelfile(req.modelfile))
    source = fields.get("from", "")
    if is_path_ref(source):
        raise _not_read("FROM", source)
    for ref in (fields.get("files") or {}).values():  # further FROMs: a projector, say
        if not ref.startswith("sha256"):
            if is_path_ref(ref):
                raise _not_read("FROM", ref)
            raise InvalidRequestError(
                f"FROM {ref}: only the first FROM may name a model; further FROMs name "
                "uploaded blobs (@sha256:<digest>)"
            )
    for ref in (fields.get("adapters") or {}).values():
        if not ref.startswith("sha256"):
            raise _not_read("ADAPTER", ref)
    merged = msgspec.to_builtins(req)
    for key, value in fields.items():
        if not merged.get(key):
            merged[key] = value
    merged["modelfile"] = ""  # merged: preparing the result again does not parse it again
    return msgspec.convert(merged, CreateRequest)


def storable(name: ModelName) -> ModelName:
    """``name``, if it can be stored (a 400 naming why, before anything is written)."""
    name.filepath()
    return name


def prepare(req: CreateRequest | Mapping[str, Any]) -> CreateRequest:
    """The request, its Modelfile merged, checked on its own (no store, no disk): 400s.

    Prepare a request once and pass the result on (to ``base_to_pull`` and ``create_model``):
    its Modelfile, which may be large, is then parsed once.
    """
    r = _request(req)
    if r.modelfile:
        r = _merge_modelfile(r)
    if r.from_ and not r.from_.startswith("sha256"):
        if is_path_ref(r.from_):
            raise InvalidRequestError(
                f"from: {r.from_!r} is a file path, not a model name or blob digest; the "
                f"server does not read files: {_UPLOAD} and pass its digest in 'files'"
            )
        storable(parse_name(r.from_))
    for filename, ref in (r.adapters or {}).items():
        if not ref.startswith("sha256"):
            raise InvalidRequestError(
                f"adapter {filename}: {ref!r} is not a blob digest; the server does not read "
                f"files: {_UPLOAD} and pass its digest"
            )
    qtype = r.quantize or r.quantization
    if qtype:
        r.quantize = normalize_type(qtype)
    if isinstance(r.license, list) and not all(isinstance(x, str) for x in r.license):
        raise InvalidRequestError("license must be a string or a list of strings")
    if r.template:
        GoTemplate.parse(r.template)  # "template error: …", as Ollama's setTemplate
    if r.parameters:
        check_options(r.parameters)  # else every request to the model would fail
    return r


def check_files(files: Mapping[str, str], store: ModelStore) -> None:
    """``files`` maps relative paths to blobs that are in the store."""
    for path, digest in files.items():
        if path in ("", ".") or posixpath.isabs(path) or "\\" in path or ":" in path:
            raise InvalidRequestError(f"file path must be relative: {path}")
        if ".." in path.split("/"):
            raise InvalidRequestError(f"file path must be relative: {path}")
        if not digest:
            raise InvalidRequestError("invalid digest format")
        if not store.has_blob(digest):
            raise InvalidRequestError(f"blob not found for {path} (digest {digest})")
