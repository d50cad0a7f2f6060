"""One repository on one registry, over aiohttp, with the auth challenge handled.

Requests go out anonymous (or with a token already won) first; a 401 is answered once, by the
``WWW-Authenticate`` challenge: ``Bearer`` fetches a token from the realm (with basic
credentials when known), ``Basic`` resends with the credentials. A second 401 is
``unauthorized: access denied``. aiohttp and socket errors become :class:`RegistryError`.

Bodies arrive as sent: nothing is decompressed (digests are over the stored bytes, and a
compressed body can inflate without bound), so requests ask for ``identity`` encoding rather
than aiohttp's default ``gzip, deflate``, which a CDN in front of a registry honours. What is
read whole (an error's text, a token) is read up to a limit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterable, Callable, Iterator, Mapping
from urllib.parse import urlencode, urljoin

import aiohttp

from power.errors import RegistryError
from power.registry.auth import Credentials, parse_challenge
from power.registry.proxy import proxy_for
from power.store.names import ModelName

__all__ = [
    "MAX_TOKEN_BYTES",
    "USER_AGENT",
    "Body",
    "RegistryClient",
    "base_url",
    "error_text",
    "map_errors",
    "open_session",
    "read_at_most",
]

log = logging.getLogger(__name__)

USER_AGENT = "ollama/0.33.0 (amd64 linux) a3s-power/0.1.0"
CONNECT_TIMEOUT_S = 15.0
STALL_TIMEOUT_S = 30.0
MAX_TOKEN_BYTES = 1 << 20  # a realm's token response (JWTs are a few KiB)
_ERROR_TEXT_BYTES = 512

Body = bytes | Callable[[], AsyncIterable[bytes]] | None


def base_url(name: ModelName, *, insecure: bool) -> str:
    """``<scheme>://<host>``: ``insecure`` forces http; an explicit http needs ``insecure``."""
    if insecure:
        return f"http://{name.host}"
    if name.scheme == "http":
        raise RegistryError("insecure protocol http")
    return f"https://{name.host}"


def open_session(stall_timeout_s: float = STALL_TIMEOUT_S) -> aiohttp.ClientSession:
    """A session for a registry or a file host: bodies as sent (``identity``, nothing
    decompressed), a deadline for connecting and for each stall, none for a whole transfer
    (aiohttp's default would end any part that takes 5 minutes)."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT_S, sock_read=stall_timeout_s),
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        auto_decompress=False,
    )


@contextlib.contextmanager
def map_errors(what: str) -> Iterator[None]:
    """Translate aiohttp, socket and timeout errors into ``RegistryError`` (chained)."""
    try:
        yield
    except RegistryError:
        raise
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        detail = str(exc) or type(exc).__name__
        raise RegistryError(f"{what}: {detail}") from exc


class RegistryClient:
    """HTTP to ``<base>/v2/<namespace>/<model>/…``; use as ``async with`` to own the session."""

    def __init__(
        self,
        name: ModelName,
        *,
        insecure: bool = False,
        credentials: Credentials | None = None,
        base: str | None = None,
        stall_timeout_s: float = STALL_TIMEOUT_S,
    ) -> None:
        self.name = name
        self.base = base or base_url(name, insecure=insecure)
        self.repo = f"{name.namespace}/{name.model}"
        self.credentials = credentials
        self._authorization = ""
        self._session = open_session(stall_timeout_s)

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        return self._session

    def url(self, path: str) -> str:
        """An absolute URL for ``/v2/<repo>/<path>``."""
        return f"{self.base}/v2/{self.repo}/{path}"

    def resolve(self, location: str, relative_to: str) -> str:
        return urljoin(relative_to, location)

    @property
    def authorization(self) -> str:
        return self._authorization

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        allow_redirects: bool = True,
    ) -> aiohttp.ClientResponse:
        """Send with auth; the caller owns (and must release) the returned response."""
        for attempt in range(2):
            hdrs = dict(headers or {})
            if self._authorization:
                hdrs["Authorization"] = self._authorization
            data = body() if callable(body) else body
            with map_errors(f"{method} {url}"):
                resp = await self._session.request(
                    method, url, headers=hdrs, data=data, allow_redirects=allow_redirects,
                    proxy=proxy_for(url),
                )  # fmt: skip
            if resp.status != 401:
                return resp
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.release()
            if attempt or not await self._answer(challenge):
                break
        raise RegistryError("unauthorized: access denied")

    async def _answer(self, header: str) -> bool:
        """Win an Authorization header for ``header``'s challenge; False if we cannot."""
        challenge = parse_challenge(header)
        if challenge is None:
            return False
        if challenge.scheme == "basic":
            if self.credentials is None:
                return False
            self._authorization = self.credentials.basic_header()
            return True
        if not challenge.realm:
            return False
        query: list[tuple[str, str]] = [("service", challenge.service)]
        query += [("scope", scope) for scope in challenge.scope.split()]
        query += [("ts", str(int(time.time()))), ("nonce", secrets.token_urlsafe(16))]
        hdrs = {}
        if self.credentials is not None:
            hdrs["Authorization"] = self.credentials.basic_header()
        token_url = f"{challenge.realm}?{urlencode(query)}"
        with map_errors(f"GET {challenge.realm}"):
            async with self._session.get(
                token_url, headers=hdrs, proxy=proxy_for(token_url)
            ) as resp:
                if resp.status >= 400:
                    log.info("token request to %s failed: %d", challenge.realm, resp.status)
                    return False
                raw = await read_at_most(resp, MAX_TOKEN_BYTES + 1)
        try:
            if len(raw) > MAX_TOKEN_BYTES:
                raise ValueError(f"over {MAX_TOKEN_BYTES} bytes")
            data = json.loads(raw)
        except ValueError as exc:  # (UnicodeDecodeError and JSONDecodeError are ValueErrors)
            log.info("token response from %s is not a token: %s", challenge.realm, exc)
            return False
        token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            return False
        self._authorization = f"Bearer {token}"
        return True


async def read_at_most(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or its first ``limit`` bytes (``read(n)`` returns what has arrived so far)."""
    raw = bytearray()
    while len(raw) < limit and (chunk := await resp.content.read(limit - len(raw))):
        raw += chunk
    return bytes(raw)


async def error_text(resp: aiohttp.ClientResponse) -> str:
    """``"<status>: <body>"`` for an error response (Ollama's wording), body trimmed: only
    its first bytes are read, however much the server sends."""
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
        raw = await read_at_most(resp, _ERROR_TEXT_BYTES)
        body = raw.decode(errors="replace").strip()
        return f"{resp.status}: {body}" if body else str(resp.status)
    return str(resp.status)
