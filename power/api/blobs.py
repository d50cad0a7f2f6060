"""``/api/blobs/{digest}``: HEAD, POST (verified upload), GET and DELETE.

The digest in the path must be ``sha256:<64 hex>`` or ``sha256-<64 hex>``; anything else is
400 ``invalid digest format`` before the store is touched, so no path can escape ``blobs/``.
"""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from power.errors import ClientClosedError, ModelNotFoundError
from power.store.store import ModelStore

__all__ = ["routes"]

_UPLOAD_BUFFER = 1 << 20


def _store(request: Request) -> ModelStore:
    store: ModelStore = request.app.state.store
    return store


def _digest(request: Request) -> str:
    """The path's digest, strictly ``sha256[:-]<64 hex>`` (400 otherwise): no path tricks."""
    return ModelStore.normalize_digest(request.path_params["digest"])


async def head_blob(request: Request) -> Response:
    digest = _digest(request)
    found = await asyncio.to_thread(_store(request).has_blob, digest)
    return Response(status_code=200 if found else 404)


async def get_blob(request: Request) -> Response:
    digest = _digest(request)
    path = _store(request).blob_path(digest)
    if not await asyncio.to_thread(path.is_file):
        raise ModelNotFoundError(f"blob {digest} not found")
    return FileResponse(path, media_type="application/octet-stream")


async def delete_blob(request: Request) -> Response:
    """Remove a blob that no manifest references; one in use is a 400 naming the model."""
    store = _store(request)
    digest = _digest(request)
    if not await asyncio.to_thread(store.delete_blob, digest):
        raise ModelNotFoundError(f"blob {digest} not found")
    return Response(status_code=200)


async def upload_blob(request: Request) -> Response:
    store = _store(request)
    digest = _digest(request)
    if await asyncio.to_thread(store.has_blob, digest):
        # Read the body anyway: a client still sending it would otherwise block on a full socket.
        async for _ in request.stream():
            pass
        return Response(status_code=200)
    writer = await asyncio.to_thread(store.open_blob_writer, digest)
    try:
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) >= _UPLOAD_BUFFER:
                data = bytes(buf)
                buf.clear()
                await asyncio.to_thread(writer.write, data)
        if buf:
            await asyncio.to_thread(writer.write, bytes(buf))
        await asyncio.to_thread(writer.commit)
    except ClientDisconnect:
        raise ClientClosedError("client closed the connection during the upload") from None
    finally:
        writer.abort()  # a no-op once committed
    return Response(status_code=201)


routes: list[Route] = [
    Route("/api/blobs/{digest}", head_blob, methods=["HEAD"]),
    Route("/api/blobs/{digest}", upload_blob, methods=["POST"]),
    Route("/api/blobs/{digest}", get_blob, methods=["GET"]),
    Route("/api/blobs/{digest}", delete_blob, methods=["DELETE"]),
]
