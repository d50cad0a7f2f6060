"""A token service for ``docker-registry``'s ``auth: token`` (the Docker Bearer token flow).

A self-signed RSA certificate, made with the ``openssl`` CLI, is the registry's
``rootcertbundle``. Tokens are RS256 JWTs signed by ``openssl dgst`` that carry the certificate
in their ``x5c`` header, which is how the registry checks them. :func:`serve_tokens` runs the
realm on loopback: it checks basic credentials, grants what ``allowed`` permits of each scope
asked for, and records every request.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

SERVICE = "power-test-registry"
ISSUER = "power-test-issuer"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenIssuer:
    key: Path
    cert: Path
    port: int  # where the realm listens
    users: dict[str, str] = field(default_factory=dict)
    allowed: dict[str, set[str]] = field(default_factory=dict)  # repository -> actions
    requests: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def create(cls, folder: Path, port: int) -> TokenIssuer:
        folder.mkdir(parents=True, exist_ok=True)
        key, cert = folder / "token.key", folder / "token.crt"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=power-test-token", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        return cls(key, cert, port)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def registry_config(self) -> list[str]:
        return [
            "auth:",
            "  token:",
            f"    realm: {self.realm}",
            f"    service: {SERVICE}",
            f"    issuer: {ISSUER}",
            f"    rootcertbundle: {self.cert}",
        ]

    def mint(self, subject: str, access: list[dict[str, object]]) -> str:
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
            check=True, capture_output=True,
        ).stdout  # fmt: skip
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "iat": now,
            "nbf": now - 10,
            "exp": now + 300,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(), check=True, capture_output=True,
        ).stdout  # fmt: skip
        return f"{signing_input}.{_b64url(signature)}"

    def full_access(self, repository: str) -> str:
        """A token for the test's own setup (publishing), without a round trip to the realm."""
        return self.mint("setup", [{"type": "repository", "name": repository, "actions": ["*"]}])

    def _grant(self, scopes: list[str]) -> list[dict[str, object]]:
        access: list[dict[str, object]] = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if a in self.allowed.get(name, set())]
            if kind == "repository" and granted:
                access.append({"type": kind, "name": name, "actions": granted})
        return access

    async def _token(self, request: web.Request) -> web.Response:
        scopes = request.query.getall("scope", [])
        self.requests.append(
            dict(request.query)
            | {"scope": " ".join(scopes), "authorization": request.headers.get("Authorization", "")}
        )
        user = ""
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            if self.users.get(user) != password:
                raise web.HTTPUnauthorized()
        elif self.users:
            raise web.HTTPUnauthorized()
        token = self.mint(user or "anonymous", self._grant(scopes))
        return web.json_response({"token": token, "access_token": token, "expires_in": 300})


@contextlib.asynccontextmanager
async def serve_tokens(issuer: TokenIssuer) -> AsyncIterator[TokenIssuer]:
    app = web.Application()
    app.router.add_get("/token", issuer._token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", issuer.port).start()
        yield issuer
    finally:
        await runner.cleanup()
