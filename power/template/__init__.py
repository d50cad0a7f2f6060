"""Prompt templates: Ollama's Go TEMPLATE layers and GGUF Jinja chat templates."""

from __future__ import annotations

from power.template._error import TemplateError
from power.template.gotemplate import GoTemplate
from power.template.jinja import render_chat_template
from power.template.prompt import (
    GGUFInfo,
    PromptModel,
    render_chat,
    render_generate,
    template_capabilities,
    thinking_tags,
)

__all__ = [
    "GGUFInfo",
    "GoTemplate",
    "PromptModel",
    "TemplateError",
    "render_chat",
    "render_chat_template",
    "render_generate",
    "template_capabilities",
    "thinking_tags",
]
