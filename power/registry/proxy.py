"""Which proxy registry traffic takes: ``HTTPS_PROXY``/``HTTP_PROXY`` by the URL's scheme,
none for a host ``NO_PROXY`` names (curl's rules, as Python's ``urllib`` reads them).

aiohttp's ``trust_env`` would do this too, but it also reads ``~/.netrc`` and then refuses to
send the registry's own ``Authorization`` header next to the netrc login; so the sessions keep
``trust_env`` off and every request names its proxy.
"""

from __future__ import annotations

import urllib.request
from urllib.parse import urlsplit

__all__ = ["proxy_for"]


def proxy_for(url: str) -> str | None:
    """The proxy URL for ``url`` from the environment, or None to connect directly."""
    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(url)
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # (stubs)
    if not parts.hostname or bypass(parts.hostname, proxies):
        return None
    return proxies.get(parts.scheme) or None
