"""Chat messages and tools: normalised from Ollama JSON, then shaped for each template kind.

Go templates see Ollama's template structs (`Role`, `Content`, `ToolCalls[].Function.Name`…,
tools in `api.Tool` field order). Jinja templates see the OpenAI-style dicts that llama.cpp
hands them (`tool_calls[].function.arguments` as an object, `reasoning_content`, `name` on
tool results).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from power.errors import InvalidRequestError
from power.template.gotemplate import JSONList

__all__ = ["for_go", "for_jinja", "image_tags", "normalize", "strip_thinking", "tools_for_go"]

_PROPERTY_KEYS = ("anyOf", "type", "items", "description", "enum", "properties", "required")


def _arguments(raw: object) -> dict[str, Any]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except (json.JSONDecodeError, RecursionError):
            return {}
    return dict(raw) if isinstance(raw, Mapping) else {}


def normalize(msg: Mapping[str, Any]) -> dict[str, Any]:
    """One message in canonical Ollama shape with every field present."""
    calls = []
    for call in msg.get("tool_calls") or ():
        fn = (call.get("function") if isinstance(call, Mapping) else None) or {}
        index = (fn.get("index") or 0) if isinstance(fn, Mapping) else None
        if not isinstance(call, Mapping) or not isinstance(index, int) or isinstance(index, bool):
            raise InvalidRequestError(
                "invalid tool call: it and its 'function' must be objects, 'index' an integer"
            )
        calls.append(
            {
                "id": call.get("id") or "",
                "function": {
                    "index": index,
                    "name": fn.get("name") or "",
                    "arguments": _arguments(fn.get("arguments")),
                },
            }
        )
    return {
        "role": str(msg.get("role") or "").lower(),
        "content": msg.get("content") or "",
        "thinking": msg.get("thinking") or msg.get("reasoning_content") or "",
        "images": list(msg.get("images") or ()),
        "tool_calls": calls,
        "tool_name": msg.get("tool_name") or msg.get("name") or "",
        "tool_call_id": msg.get("tool_call_id") or "",
    }


def strip_thinking(messages: list[dict[str, Any]]) -> None:
    """Drop a leading <think>…</think> from assistant turns before the last user turn."""
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    for msg in messages[:last_user]:
        if msg["role"] != "assistant":
            continue
        text = msg["content"].lstrip()
        if not text.startswith("<think>"):
            continue
        _, found, after = text[len("<think>") :].partition("</think>")
        msg["content"] = after.lstrip() if found else ""


def image_tags(messages: list[dict[str, Any]]) -> None:
    """Number images across the conversation: `[img]` markers become `[img-N]`, else prefix."""
    count = 0
    for msg in messages:
        prefix, content = "", msg["content"]
        for _ in msg["images"]:
            tag = f"[img-{count}]"
            if "[img]" in content:
                content = content.replace("[img]", tag, 1)
            else:
                prefix += tag
            count += 1
        msg["content"] = prefix + content


def for_go(msg: Mapping[str, Any]) -> dict[str, Any]:
    """Ollama's templateMessage."""
    return {
        "Role": msg["role"],
        "Content": msg["content"],
        "Thinking": msg["thinking"],
        "Images": msg["images"],
        "ToolCalls": [
            {
                "ID": call["id"],
                "Function": {
                    "Index": call["function"]["index"],
                    "Name": call["function"]["name"],
                    "Arguments": call["function"]["arguments"],
                },
            }
            for call in msg["tool_calls"]
        ],
        "ToolName": msg["tool_name"],
        "ToolCallID": msg["tool_call_id"],
    }


def for_jinja(msg: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAI-style message llama.cpp renders chat templates with."""
    out: dict[str, Any] = {"role": msg["role"], "content": msg["content"]}
    if msg["thinking"]:
        out["thinking"] = out["reasoning_content"] = msg["thinking"]
    if msg["images"]:
        out["images"] = msg["images"]
    if msg["tool_calls"]:
        out["tool_calls"] = [
            {
                "type": "function",
                "function": {
                    "name": call["function"]["name"],
                    "arguments": call["function"]["arguments"],
                },
            }
            | ({"id": call["id"]} if call["id"] else {})
            for call in msg["tool_calls"]
        ]
    if msg["tool_name"]:
        out["tool_name"] = out["name"] = msg["tool_name"]
    if msg["tool_call_id"]:
        out["tool_call_id"] = msg["tool_call_id"]
    return out


def _property(prop: object) -> object:
    if not isinstance(prop, Mapping):
        return prop
    out: dict[str, Any] = {}
    for key in _PROPERTY_KEYS:
        value = prop.get(key)
        if key == "type" and isinstance(value, list) and len(value) == 1:
            value = value[0]
        elif key == "anyOf" and isinstance(value, list):
            value = [_property(p) for p in value]
        elif key == "properties" and isinstance(value, Mapping):
            value = {name: _property(p) for name, p in value.items()}
        if value not in (None, "", [], {}):
            out[key] = value
    return out


def _tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    fn = (tool.get("function") if isinstance(tool, Mapping) else None) or {}
    params = (fn.get("parameters") if isinstance(fn, Mapping) else None) or {}
    if not isinstance(fn, Mapping) or not isinstance(params, Mapping):
        raise InvalidRequestError("invalid tool: 'function' and its 'parameters' must be objects")
    shaped_params: dict[str, Any] = {"type": params.get("type") or ""}
    for key in ("$defs", "items", "required"):
        if params.get(key):
            shaped_params[key] = params[key]
    props = params.get("properties")
    shaped_params["properties"] = (
        {name: _property(p) for name, p in props.items()} if isinstance(props, Mapping) else None
    )
    out: dict[str, Any] = {"type": tool.get("type") or ""}
    if tool.get("items"):
        out["items"] = tool["items"]
    out["function"] = {
        "name": fn.get("name") or "",
        "description": fn.get("description") or "",
        "parameters": shaped_params,
    }
    return out


def tools_for_go(tools: Sequence[Mapping[str, Any]] | None) -> JSONList | None:
    """Ollama's templateTools: api.Tool field order, prints as JSON."""
    if tools is None:
        return None
    return JSONList(_tool(t) for t in tools)
