"""Every OpenAI- and Anthropic-compatible route under ``/v1``, for ``create_app``."""

from __future__ import annotations

from power.api import anthropic, openai_chat, openai_misc, responses

__all__ = ["routes"]

routes = [
    *openai_chat.routes,
    *openai_misc.routes,
    *responses.routes,
    *anthropic.routes,
]
