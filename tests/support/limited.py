"""The limited server of the e2e HTTP tests: fake ``echo`` runners, a 1 MiB body limit and the
model ``fuzz``; and every JSON endpoint with a valid body for it."""

from __future__ import annotations

from typing import Any

__all__ = ["BODY_LIMIT", "BODY_TIMEOUT_S", "ENDPOINTS", "MODEL", "PLAIN"]

MODEL = "fuzz"  # the limited server's model: smollm2's weights, a plain Go template
BODY_LIMIT = 1 << 20  # the limited server's A3S_POWER_MAX_BODY_SIZE
BODY_TIMEOUT_S = 2  # its A3S_POWER_BODY_TIMEOUT
PLAIN = "{{ if .System }}{{ .System }} {{ end }}{{ range .Messages }}{{ .Content }} {{ end }}"

ENDPOINTS: dict[str, tuple[str, dict[str, Any]]] = {
    # path: (method, a valid body that the mutations start from)
    "/api/generate": ("POST", {"model": MODEL, "prompt": "hi there", "stream": False}),
    "/api/chat": (
        "POST",
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False},
    ),
    "/api/embed": ("POST", {"model": MODEL, "input": ["a", "b"]}),
    "/api/embeddings": ("POST", {"model": MODEL, "prompt": "a"}),
    "/api/show": ("POST", {"model": MODEL}),
    "/api/copy": ("POST", {"source": MODEL, "destination": "scratch"}),
    "/api/delete": ("DELETE", {"model": "scratch"}),
    "/api/create": ("POST", {"model": "scratch", "from": MODEL, "stream": False}),
    "/api/pull": ("POST", {"model": "not a valid name", "stream": False}),
    "/api/push": ("POST", {"model": "not a valid name", "stream": False}),
    "/v1/chat/completions": (
        "POST",
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
    ),
    "/v1/completions": ("POST", {"model": MODEL, "prompt": "hi"}),
    "/v1/embeddings": ("POST", {"model": MODEL, "input": "hi"}),
    "/v1/responses": ("POST", {"model": MODEL, "input": "hi"}),
    "/v1/messages": (
        "POST",
        {"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
    ),
    "/v1/messages/count_tokens": (
        "POST",
        {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
    ),
}
