"""Registry credentials and the ``WWW-Authenticate`` challenge.

Credentials come from Docker ``config.json``-style files: ``{"auths": {"<host>": {"auth":
"<base64 user:pass>"}}}`` (``username``/``password`` keys are accepted too). The files are
read in order: ``<home>/auth.json``, ``$DOCKER_CONFIG/config.json``, ``~/.docker/config.json``;
the first that names the host wins.

Unlike Ollama, a Bearer realm on another host is allowed (Docker Hub's ``auth.docker.io`` is
one), and ``Basic`` challenges are answered when credentials are known.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgspec

__all__ = ["Challenge", "Credentials", "credential_files", "load_credentials", "parse_challenge"]

log = logging.getLogger(__name__)

_PARAM_RE = re.compile(r'(\w+)="([^"]*)"')


class Credentials(msgspec.Struct, frozen=True):
    username: str
    password: str

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def __repr__(self) -> str:  # never log a password
        return f"Credentials(username={self.username!r}, password=***)"


class Challenge(msgspec.Struct, frozen=True):
    """A parsed ``WWW-Authenticate`` header: scheme ``bearer`` or ``basic`` plus its params."""

    scheme: str
    realm: str = ""
    service: str = ""
    scope: str = ""


def parse_challenge(header: str) -> Challenge | None:
    """``Bearer realm="…",service="…",scope="…"`` or ``Basic realm="…"``; None if neither."""
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("bearer", "basic"):
        return None
    params = dict(_PARAM_RE.findall(rest))
    return Challenge(
        scheme=scheme,
        realm=params.get("realm", ""),
        service=params.get("service", ""),
        scope=params.get("scope", ""),
    )


def credential_files(home: Path, env: Mapping[str, str]) -> list[Path]:
    files = [home / "auth.json"]
    docker_config = env.get("DOCKER_CONFIG")
    if docker_config:
        files.append(Path(docker_config).expanduser() / "config.json")
    files.append(Path("~/.docker/config.json").expanduser())
    return files


def _host_keys(host: str) -> list[str]:
    bare = host.lower()
    return [bare, f"https://{bare}", f"http://{bare}", f"https://{bare}/v2/", f"http://{bare}/v2/"]


def _entry_credentials(entry: object) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    user, password = entry.get("username"), entry.get("password")
    if isinstance(user, str) and isinstance(password, str) and user:
        return Credentials(user, password)
    auth = entry.get("auth")
    if not isinstance(auth, str) or not auth:
        return None
    try:
        decoded = base64.b64decode(auth, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return Credentials(user, password) if sep and user else None


def load_credentials(host: str, files: Sequence[Path]) -> Credentials | None:
    """The first credentials any of ``files`` holds for ``host`` (``host:port`` as written)."""
    for path in files:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable credentials file %s: %s", path, exc)
            continue
        auths = data.get("auths") if isinstance(data, dict) else None
        if not isinstance(auths, dict):
            continue
        folded = {str(k).lower().rstrip("/"): v for k, v in auths.items()}
        for key in _host_keys(host):
            creds = _entry_credentials(folded.get(key.rstrip("/")))
            if creds is not None:
                log.debug("using credentials for %s from %s", host, path)
                return creds
    return None
