"""The prompt builder the gateway calls for /api/chat and /api/generate.

Which template renders (Ollama's order, without the built-in Go renderers):
1. the model's Go TEMPLATE layer (or, for generate, a per-request `template`);
2. else the GGUF `tokenizer.chat_template` (Jinja);
3. else the fallback `{{ .Prompt }}`.

Chat assembly: the model's SYSTEM (when the request does not start with a system message),
then its stored MESSAGE list, then the request's messages. For qwen3 models, `<think>…</think>`
is stripped from assistant turns that precede the last user turn.

Images become `[img-N]` tags in their message's content, numbered across the conversation (a
message's `[img]` markers, else a prefix), with either kind of template; the runner puts image
N where its tag is.

`think` is passed as given: resolving "omitted on a thinking model means true" is the caller's
job (see `template_capabilities`).

A Jinja template is rendered by the `renderer` the caller passes: the gateway's
`TemplateSandbox` (out of process, memory-capped), or `render_chat_template` itself where the
template is trusted (tests, tools).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from power.template import _messages as msgs_
from power.template._error import TemplateError
from power.template._ollama import DEFAULT_TEMPLATE, Values, execute, infer_think_tags, load
from power.template.jinja import referenced_variables

__all__ = [
    "ChatTemplateRenderer",
    "GGUFInfo",
    "PromptModel",
    "render_chat",
    "render_generate",
    "template_capabilities",
    "thinking_tags",
]

log = logging.getLogger(__name__)

THINK_STRIP_ARCHITECTURES = frozenset({"qwen3"})
_GO_CAPABILITIES = (("tools", "tools"), ("suffix", "insert"))
_CHAT_TEMPLATE_THINK_TAGS = (
    ("<think>", "</think>"),
    ("<|channel>", "<channel|>"),
    ("<|START_THINKING|>", "<|END_THINKING|>"),
    ("<seed:think>", "</seed:think>"),
)


class GGUFInfo(Protocol):
    """The GGUF metadata the prompt builder reads."""

    @property
    def chat_template(self) -> str | None: ...
    @property
    def bos_token(self) -> str | None: ...
    @property
    def eos_token(self) -> str | None: ...
    @property
    def architecture(self) -> str | None: ...


class ChatTemplateRenderer(Protocol):
    """What renders a Jinja chat template: `render_chat_template`, or a `TemplateSandbox`."""

    def __call__(
        self,
        source: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        bos_token: str | None = None,
        eos_token: str | None = None,
        **kwargs: Any,
    ) -> str: ...


class PromptModel(Protocol):
    """What a model must offer to have prompts rendered (power.store's LocalModel does)."""

    @property
    def template(self) -> str | None: ...
    @property
    def system(self) -> str | None: ...
    @property
    def messages(self) -> Sequence[Mapping[str, Any]]: ...
    @property
    def gguf(self) -> GGUFInfo | None: ...


def _think_values(think: bool | str | None) -> dict[str, Any]:
    if think is None:
        return {"think": False, "think_level": "", "is_think_set": False}
    level = think if isinstance(think, str) else ("medium" if think else "")
    return {"think": bool(think), "think_level": level, "is_think_set": True}


def _jinja_kwargs(think: bool | str | None) -> dict[str, Any]:
    if think is None:
        return {}
    kwargs: dict[str, Any] = {"enable_thinking": bool(think)}
    if isinstance(think, str):
        kwargs["reasoning_effort"] = think
    return kwargs


def _chat_template(model: PromptModel) -> str | None:
    return model.gguf.chat_template if model.gguf is not None else None


def _render_jinja(
    renderer: ChatTemplateRenderer,
    model: PromptModel,
    source: str,
    messages: list[dict[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
    think: bool | str | None,
    add_generation_prompt: bool,
) -> str:
    gguf = model.gguf
    return renderer(
        source,
        [msgs_.for_jinja(m) for m in messages],
        tools=tools,
        add_generation_prompt=add_generation_prompt,
        bos_token=gguf.bos_token if gguf is not None else None,
        eos_token=gguf.eos_token if gguf is not None else None,
        **_jinja_kwargs(think),
    )


def render_chat(
    model: PromptModel,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    think: bool | str | None = None,
    add_generation_prompt: bool = True,
    renderer: ChatTemplateRenderer,
) -> str:
    """Render a chat request into the prompt text sent to the runner.

    `add_generation_prompt` only affects Jinja templates; Go templates decide for themselves.
    """
    conversation = [msgs_.normalize(m) for m in model.messages]
    conversation += [msgs_.normalize(m) for m in messages]
    starts_with_system = bool(messages) and str(messages[0].get("role", "")).lower() == "system"
    if model.system and not starts_with_system:
        conversation.insert(0, msgs_.normalize({"role": "system", "content": model.system}))
    gguf = model.gguf
    if gguf is not None and gguf.architecture in THINK_STRIP_ARCHITECTURES:
        msgs_.strip_thinking(conversation)

    msgs_.image_tags(conversation)
    chat_template = _chat_template(model)
    if not model.template and chat_template:
        return _render_jinja(
            renderer, model, chat_template, conversation, tools, think, add_generation_prompt
        )
    values = Values(
        messages=[msgs_.for_go(m) for m in conversation],
        tools=msgs_.tools_for_go(tools),
        **_think_values(think),
    )
    return execute(load(model.template or DEFAULT_TEMPLATE), values)


def render_generate(
    model: PromptModel,
    prompt: str,
    *,
    system: str | None = None,
    suffix: str | None = None,
    template: str | None = None,
    images: list[Any] | None = None,
    think: bool | str | None = None,
    renderer: ChatTemplateRenderer,
) -> str:
    """Render a (non-raw) generate request: system + stored messages + one user prompt.

    With a suffix, a Go template runs in fill-in-the-middle mode (`.Prompt`/`.Suffix` only).
    """
    system_text = system or model.system
    stored = [msgs_.normalize(m) for m in model.messages]
    go_source = template or model.template
    chat_template = _chat_template(model)
    if go_source or not chat_template:
        if suffix:
            values = Values(prompt=prompt, suffix=suffix, **_think_values(think))
        else:
            conversation = [msgs_.normalize({"role": "system", "content": system_text})]
            conversation = conversation if system_text else []
            conversation += stored
            for i in range(len(images or ())):
                conversation.append(msgs_.normalize({"role": "user", "content": f"[img-{i}]"}))
            conversation.append(msgs_.normalize({"role": "user", "content": prompt}))
            values = Values(
                messages=[msgs_.for_go(m) for m in conversation], **_think_values(think)
            )
        return execute(load(go_source or DEFAULT_TEMPLATE), values)

    if suffix:
        raise TemplateError("suffix needs a template that uses .Suffix (insert capability)")
    conversation = [msgs_.normalize({"role": "system", "content": system_text})]
    conversation = conversation if system_text else []
    conversation += stored
    conversation.append(msgs_.normalize({"role": "user", "content": prompt, "images": images}))
    msgs_.image_tags(conversation)
    return _render_jinja(renderer, model, chat_template, conversation, None, think, True)


def thinking_tags(template_text: str | None, chat_template: str | None) -> tuple[str, str] | None:
    """The (opening, closing) thinking tags of whichever template renders, if inferable."""
    if template_text:
        try:
            opening, closing = infer_think_tags(load(template_text))
        except TemplateError:
            log.warning("unparsable TEMPLATE; no thinking tags inferred", exc_info=True)
            return None
        return (opening, closing) if opening and closing else None
    if not chat_template:
        return None
    for opening, closing in _CHAT_TEMPLATE_THINK_TAGS:
        if opening in chat_template and closing in chat_template:
            return opening, closing
    for opening, closing in _CHAT_TEMPLATE_THINK_TAGS:
        if f"content.split('{closing}')" in chat_template:
            return opening, closing
        if f'content.split("{closing}")' in chat_template:
            return opening, closing
    return None


def template_capabilities(template_text: str | None, chat_template: str | None) -> set[str]:
    """Capabilities implied by the template that renders: "tools", "insert", "thinking"."""
    caps: set[str] = set()
    try:
        if template_text:
            names = load(template_text).identifiers()
            caps.update(cap for var, cap in _GO_CAPABILITIES if var in names)
        elif chat_template and "tools" in referenced_variables(chat_template):
            caps.add("tools")
    except TemplateError:
        log.warning("unparsable template; no capabilities inferred from it", exc_info=True)
        return caps
    if thinking_tags(template_text, chat_template) is not None:
        caps.add("thinking")
    return caps
