"""`power create`: turn a Modelfile into a structured /api/create request, and send it.

Parsing and the command-to-field mapping belong to `power.store.modelfile`; this module only
uploads the local files that FROM and ADAPTER name, as blobs, and swaps them for digests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from power.cli.client import Client, ResponseError
from power.cli.progress import show_progress

__all__ = ["create", "create_request"]

_DIGEST_PREFIX = "sha256:"


def _local_files(client: Client, ref: str, base: Path) -> dict[str, str] | None:
    """Upload the file (or directory of files) ``ref`` names; None if it is not local."""
    path = Path(ref).expanduser()
    if not path.is_absolute():
        path = base / path
    if path.is_file():
        return {path.name: client.upload_blob(path)}
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return {p.relative_to(path).as_posix(): client.upload_blob(p) for p in files}
    return None


def create_request(client: Client, model: str, text: str, *, base: Path) -> dict[str, Any]:
    """Build the /api/create body; local paths are relative to ``base`` (the Modelfile's dir).

    The server never reads a path it is sent, so every local file FROM or ADAPTER names is
    uploaded here and sent as a digest; what names no local file is a model name.
    """
    from power.errors import PowerError
    from power.store.modelfile import is_path_ref, modelfile_to_create_request, parse_modelfile

    try:
        fields = modelfile_to_create_request(parse_modelfile(text))
    except PowerError as exc:
        raise ResponseError(str(exc)) from exc
    request: dict[str, Any] = {"model": model, **fields}
    more = request.pop("files", None) or {}  # FROM lines after the first (e.g. a projector)
    source = str(request.pop("from", ""))
    if source.startswith(_DIGEST_PREFIX):  # FROM @sha256:... names an uploaded blob
        request["files"] = {"model.gguf": source}
    elif (files := _local_files(client, source, base)) is not None:
        request["files"] = files
    elif is_path_ref(source):
        raise ResponseError(f"FROM {source}: no such file or directory")
    else:
        request["from"] = source
    for name, ref in more.items():
        if str(ref).startswith(_DIGEST_PREFIX):
            request.setdefault("files", {})[name] = str(ref)
        elif (files := _local_files(client, str(ref), base)) is not None:
            request.setdefault("files", {}).update(files)
        else:
            raise ResponseError(f"FROM {ref}: only the first FROM may name a model")
    adapters: dict[str, str] = {}
    for name, ref in (request.pop("adapters", None) or {}).items():
        if str(ref).startswith(_DIGEST_PREFIX):
            adapters[name] = str(ref)
        elif (files := _local_files(client, str(ref), base)) is not None:
            adapters.update(files)
        else:
            raise ResponseError(f"adapter not found: {ref}")
    if adapters:
        request["adapters"] = adapters
    return request


@click.command()
@click.argument("model")
@click.option(
    "-f",
    "--file",
    "file_",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Name of the Modelfile (default: Modelfile).",
)
@click.option("-q", "--quantize", default=None, help="Quantize the model (e.g. q4_K_M).")
def create(model: str, file_: Path | None, quantize: str | None) -> None:
    """Create a model from a Modelfile."""
    path = file_ or Path("Modelfile")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"reading {path}: {exc.strerror or exc}") from exc
    client = Client.from_env()
    request = create_request(client, model, text, base=path.resolve().parent)
    if quantize:
        request["quantize"] = quantize
    show_progress(client.stream("/api/create", request))
