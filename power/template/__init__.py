"""Prompt templates: Ollama's Go TEMPLATE layers and GGUF Jinja chat templates."""

from __future__ import annotations

from power.template._error import TemplateError
from power.template.gotemplate import GoTemplate
from power.template.jinja import render_chat_template
from power.template.prompt import (
    ChatTemplateRenderer,
    GGUFInfo,
    PromptModel,
    render_chat,
    render_generate,
    template_capabilities,
    thinking_tags,
)
from power.template.sandbox import TemplateSandbox

__all__ = [
    "ChatTemplateRenderer",
    "GGUFInfo",
    "GoTemplate",
    "PromptModel",
    "TemplateError",
    "TemplateSandbox",
    "render_chat",
    "render_chat_template",
    "render_generate",
    "template_capabilities",
    "thinking_tags",
]
