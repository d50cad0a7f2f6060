"""``RegistryService``: what pulls and pushes share — the store, transfers, credentials, seams.

One lives on the app (created on first use). Its constructor arguments are the seams tests use:
``hosts`` maps a registry host to another base URL (a local server standing in for ``hf.co``),
``catalog`` replaces the built-in offline catalog, and the part size and retry backoff shrink
so small blobs still download in several parts and failures fail fast.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from power.errors import RegistryError
from power.registry.auth import credential_files, load_credentials
from power.registry.catalog import load_catalog
from power.registry.client import RegistryClient, error_text, map_errors
from power.registry.download import MAX_TRIES, Downloads
from power.registry.parts import PART_MIN
from power.registry.proxy import proxy_for
from power.store.names import ModelName
from power.store.store import ModelStore

__all__ = ["RegistryBlob", "RegistryService", "UrlSource"]

log = logging.getLogger(__name__)

_MAX_REDIRECTS = 10


class RegistryService:
    def __init__(
        self,
        store: ModelStore,
        *,
        home: Path,
        env: Mapping[str, str],
        hosts: Mapping[str, str] | None = None,
        catalog: Mapping[str, list[str]] | None = None,
        part_min: int = PART_MIN,
        max_tries: int = MAX_TRIES,
        backoff_s: float = 1.0,
    ) -> None:
        self.store = store
        self.downloads = Downloads()
        self.credential_files = credential_files(home, env)
        self.hosts = {k.lower(): v.rstrip("/") for k, v in (hosts or {}).items()}
        self.catalog = dict(catalog) if catalog is not None else load_catalog()
        self.part_min = part_min
        self.max_tries = max_tries
        self.backoff_s = backoff_s

    async def aclose(self) -> None:
        """Wait for the background fsyncs of pulled blobs."""
        await self.downloads.aclose()

    def client(self, name: ModelName, *, insecure: bool) -> RegistryClient:
        creds = load_credentials(name.host, self.credential_files)
        base = self.hosts.get(name.host.lower())
        return RegistryClient(name, insecure=insecure, credentials=creds, base=base)


class RegistryBlob:
    """A registry blob: redirects to blob storage are followed, a direct 200 is accepted too.

    The ``Authorization`` header goes only to the registry's own host, never to the storage
    a redirect points at (presigned URLs reject it).
    """

    def __init__(self, client: RegistryClient, digest: str) -> None:
        self.client = client
        self.url = client.url(f"blobs/{digest}")
        self._direct = ""

    async def resolve(self) -> None:
        url = self.url
        origin = urlsplit(url).netloc.lower()
        for _ in range(_MAX_REDIRECTS):
            resp = await self.client.send(
                "GET", url, headers={"Range": "bytes=0-0"}, allow_redirects=False
            )
            async with resp:
                if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                    url = self.client.resolve(resp.headers["Location"], url)
                    if urlsplit(url).netloc.lower() != origin:
                        self._direct = url
                        return
                    continue
                if resp.status in (200, 206):
                    self.url = url
                    return
                raise RegistryError(f"pull blob: {await error_text(resp)}")
        raise RegistryError("pull blob: too many redirects")

    async def get_range(self, start: int, end: int) -> aiohttp.ClientResponse:
        headers = {"Range": f"bytes={start}-{end}"}
        if self._direct:
            with map_errors(f"GET {urlsplit(self._direct).netloc}"):
                return await self.client.session.get(
                    self._direct, headers=headers, proxy=proxy_for(self._direct)
                )
        return await self.client.send("GET", self.url, headers=headers)


class UrlSource:
    """A plain ``https://…/file.gguf``: HEAD for the size (redirects followed), ranged GETs."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.total = 0

    async def resolve(self) -> None:
        with map_errors(f"HEAD {self.url}"):
            async with self.session.head(
                self.url, allow_redirects=True, proxy=proxy_for(self.url)
            ) as resp:
                if resp.status >= 400:
                    if resp.status == 404:
                        raise RegistryError(f"pull {self.url}: file does not exist")
                    raise RegistryError(f"pull {self.url}: {resp.status}")
                self.url = str(resp.url)
                length = resp.headers.get("Content-Length", "")
        if not length.isdigit() or int(length) == 0:
            raise RegistryError(f"pull {self.url}: the server did not say how large the file is")
        self.total = int(length)

    async def get_range(self, start: int, end: int) -> aiohttp.ClientResponse:
        with map_errors(f"GET {self.url}"):
            return await self.session.get(
                self.url, headers={"Range": f"bytes={start}-{end}"}, proxy=proxy_for(self.url)
            )
