"""A small synchronous client for the Ollama HTTP API, used by the `power` CLI.

It needs only the standard library (``http.client``) and `power.location`, which reads
``OLLAMA_HOST``, so that commands like ``power ls`` start fast. Streaming endpoints are read as
NDJSON, one object per line; a non-2xx answer or an in-stream ``{"error": ...}`` line raises
`ResponseError`, as the official clients do.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import urllib.parse
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

from power.location import connect_url

__all__ = [
    "Client",
    "ConnectError",
    "ResponseError",
    "file_digest",
]

API_KEY_VAR = "A3S_POWER_API_KEY"  # sent as a Bearer token when set
CONNECT_TIMEOUT_S = 10.0
HEARTBEAT_TIMEOUT_S = 2.0
_CHUNK = 1 << 20


class ResponseError(Exception):
    """The server answered with an error; ``status`` is -1 for an in-stream error line."""

    def __init__(self, message: str, status: int = -1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message


class ConnectError(Exception):
    """No server answered at the configured address."""


def file_digest(path: Path) -> str:
    """Return ``sha256:<hex>`` of a file, reading it in chunks."""
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
    return f"sha256:{sha.hexdigest()}"


class Client:
    """One short-lived connection per request; safe to interrupt with Ctrl+C."""

    def __init__(
        self, base_url: str, *, read_timeout_s: float | None = None, api_key: str = ""
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self.base_url = base_url
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._read_timeout_s = read_timeout_s
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    @property
    def is_local(self) -> bool:
        """True when the server address is this machine (so `run` may start one)."""
        return self._host in {"127.0.0.1", "localhost", "::1"}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Client:
        """The server `$OLLAMA_HOST` names (see `power.location.connect_url`), with the API key
        in `$A3S_POWER_API_KEY` when set."""
        env = os.environ if env is None else env
        return cls(connect_url(env), api_key=env.get(API_KEY_VAR, "").strip())

    # -- plumbing ---------------------------------------------------------------------------

    def _open(
        self,
        method: str,
        path: str,
        body: bytes | Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        timeout_s: float = CONNECT_TIMEOUT_S,
        whole: bool = False,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """``timeout_s`` for the connection, then the client's read timeout; with ``whole``,
        ``timeout_s`` for every read too (a heartbeat to a listener that never answers)."""
        conn_cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = conn_cls(self._host, self._port, timeout=timeout_s, blocksize=_CHUNK)
        try:
            conn.connect()
            if conn.sock is not None and not whole:
                conn.sock.settimeout(self._read_timeout_s)
            conn.request(
                method, self._prefix + path, body=body, headers={**self._auth, **(headers or {})}
            )
            response = conn.getresponse()
        except OSError as exc:
            conn.close()
            raise ConnectError(
                f"could not connect to a Power server at {self.base_url}, "
                "run 'power serve' to start it"
            ) from exc
        except BaseException:
            conn.close()
            raise
        return conn, response

    def _request(self, method: str, path: str, payload: Any = None) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn, response = self._open(method, path, body, headers)
        try:
            data = response.read()
        finally:
            _close(conn, response)
        _raise_for_status(response.status, data, response.reason)
        return json.loads(data) if data.strip() else None

    # -- public API -------------------------------------------------------------------------

    def heartbeat(self) -> bool:
        """``HEAD /``: True when a server answers at the configured address."""
        try:
            conn, response = self._open("HEAD", "/", timeout_s=HEARTBEAT_TIMEOUT_S, whole=True)
        except ConnectError:
            return False
        try:
            response.read()
        except OSError:
            return False
        finally:
            _close(conn, response)
        return 200 <= response.status < 300

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def post(self, path: str, payload: Any) -> Any:
        return self._request("POST", path, payload)

    def delete(self, path: str, payload: Any) -> Any:
        return self._request("DELETE", path, payload)

    def stream(
        self, path: str, payload: Mapping[str, Any]
    ) -> Generator[dict[str, Any], None, None]:
        """POST ``payload`` with ``stream: true`` and yield each NDJSON object as it arrives."""
        body = json.dumps({**payload, "stream": True}).encode()
        conn, response = self._open("POST", path, body, {"Content-Type": "application/json"})
        try:
            if not 200 <= response.status < 300:
                _raise_for_status(response.status, response.read(), response.reason)
            for raw in response:
                line = raw.strip()
                if not line:
                    continue
                try:
                    item = json.loads(line)
                except ValueError as exc:
                    raise ResponseError(f"invalid response line: {line[:200]!r}") from exc
                if isinstance(item, dict) and item.get("error"):
                    raise ResponseError(str(item["error"]))
                yield item
        finally:
            _close(conn, response)

    def blob_exists(self, digest: str) -> bool:
        conn, response = self._open("HEAD", f"/api/blobs/{digest}")
        try:
            response.read()
        finally:
            _close(conn, response)
        if response.status == 404:
            return False
        _raise_for_status(response.status, b"", response.reason)
        return True

    def upload_blob(self, path: Path, digest: str | None = None) -> str:
        """Upload a file as a blob unless the server already has it; return its digest."""
        digest = digest or file_digest(path)
        if self.blob_exists(digest):
            return digest
        size = path.stat().st_size
        with path.open("rb") as f:
            conn, response = self._open(
                "POST",
                f"/api/blobs/{digest}",
                f,
                {"Content-Length": str(size), "Content-Type": "application/octet-stream"},
            )
            try:
                data = response.read()
            finally:
                _close(conn, response)
        _raise_for_status(response.status, data, response.reason)
        return digest


def _raise_for_status(status: int, data: bytes, reason: str) -> None:
    if 200 <= status < 300:
        return
    message = data.decode("utf-8", "replace").strip()
    try:
        decoded = json.loads(message)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict) and decoded.get("error"):
        error = decoded["error"]  # under /v1: OpenAI's {"error": {"message": ...}}
        message = str(error.get("message") or error) if isinstance(error, dict) else str(error)
    raise ResponseError(message or f"{status} {reason}".strip(), status)


def _close(conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
    response.close()
    conn.close()
