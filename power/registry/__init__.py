"""Registry traffic over aiohttp: pull (with resume and shared transfers), push, auth, catalog."""

from __future__ import annotations

from power.registry.auth import Credentials, load_credentials, parse_challenge
from power.registry.client import RegistryClient
from power.registry.download import Downloads
from power.registry.pull import is_url, pull, url_model_name
from power.registry.push import push
from power.registry.service import RegistryService

__all__ = [
    "Credentials",
    "Downloads",
    "RegistryClient",
    "RegistryService",
    "is_url",
    "load_credentials",
    "parse_challenge",
    "pull",
    "push",
    "url_model_name",
]
