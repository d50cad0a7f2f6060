"""Ollama's `template.Execute` on top of GoTemplate: messages mode, legacy mode and FIM.

* Templates that mention neither `.Messages` nor `.Response` get `{{ .Response }}` appended.
* With a prompt and a suffix the template runs once with `.Prompt`/`.Suffix`.
* Templates that use `.Messages` run once over the collated message list.
* Other ("legacy") templates run once per user/assistant turn with `.System`, `.Prompt` and
  `.Response`; the final turn runs a copy cut right after `{{ .Response }}`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from power.template._gonodes import BranchNode, FieldNode, ListNode, Node, TextNode, children
from power.template.gotemplate import GoTemplate, JSONList, field_action

__all__ = ["DEFAULT_TEMPLATE", "Values", "collate", "execute", "infer_think_tags", "load"]

DEFAULT_TEMPLATE = "{{ .Prompt }}"


@dataclass(slots=True)
class Values:
    """What Ollama passes to a template; messages are Go-shaped dicts (`Role`, `Content`…)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: JSONList | None = None
    prompt: str = ""
    suffix: str = ""
    think: bool = False
    think_level: str = ""
    is_think_set: bool = False


def load(source: str) -> GoTemplate:
    """Parse a TEMPLATE layer the way Ollama's `template.Parse` does."""
    tmpl = GoTemplate.parse(source)
    names = tmpl.identifiers()
    if "messages" not in names and "response" not in names:
        tmpl = tmpl.appended(field_action("Response"))
    return tmpl


def collate(messages: Sequence[Mapping[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Merge consecutive same-role messages (not tool ones); also join all system texts."""
    system: list[str] = []
    collated: list[dict[str, Any]] = []
    for msg in messages:
        if msg["Role"] == "system":
            system.append(msg["Content"])
        if collated and collated[-1]["Role"] == msg["Role"] and msg["Role"] != "tool":
            collated[-1]["Content"] += "\n\n" + msg["Content"]
        else:
            collated.append(dict(msg))
    return "\n\n".join(system), collated


def _think(values: Values) -> dict[str, Any]:
    return {
        "Think": values.think,
        "ThinkLevel": values.think_level,
        "IsThinkSet": values.is_think_set,
    }


def _is_response(node: Node) -> bool:
    return isinstance(node, FieldNode) and "Response" in node.idents


def execute(tmpl: GoTemplate, values: Values) -> str:
    """Render a template loaded with `load` over the given values."""
    system, messages = collate(values.messages)
    if values.prompt and values.suffix:
        fim = {"Prompt": values.prompt, "Suffix": values.suffix, "Response": ""}
        return tmpl.execute(fim | _think(values))
    if "messages" in tmpl.identifiers():
        data: dict[str, Any] = {"System": system, "Messages": messages, "Response": ""}
        data["Tools"] = values.tools
        return tmpl.execute(data | _think(values))

    out: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}

    def flush() -> None:
        out.append(tmpl.execute(turn | _think(values)))
        turn.update(System="", Prompt="", Response="")

    for msg in messages:
        role, content = msg["Role"], msg["Content"]
        if role == "system":
            if turn["Prompt"] or turn["Response"]:
                flush()
            turn["System"] = content
        elif role == "user":
            if turn["Response"]:
                flush()
            turn["Prompt"] = content
        elif role == "assistant":
            turn["Response"] = content
    out.append(tmpl.cut_after(_is_response).execute(turn | _think(values)))
    return "".join(out)


def _ranges_over_messages(node: BranchNode) -> bool:
    stack: list[Node] = [node.pipe]
    while stack:
        current = stack.pop()
        if isinstance(current, FieldNode) and current.idents[0] == "Messages":
            return True
        stack.extend(children(current))
    return False


def infer_think_tags(tmpl: GoTemplate) -> tuple[str, str]:
    """Ollama's `thinking.InferTags`: the text around `{{ .Thinking }}` in a Messages range.

    For each `.Thinking` field inside a range over `.Messages`, the nearest enclosing list's
    first and last text nodes (trimmed) become the opening and closing tags; later matches
    overwrite earlier ones. Either tag may come back empty.
    """
    tags = ["", ""]

    def visit(node: Node, ancestors: list[Node]) -> None:
        if isinstance(node, FieldNode) and node.idents and node.idents[0] == "Thinking":
            ranges = [a for a in ancestors if isinstance(a, BranchNode) and a.kind == "range"]
            if ranges and _ranges_over_messages(ranges[-1]):
                lists = [a for a in ancestors if isinstance(a, ListNode)]
                if lists and lists[-1].nodes:
                    first, last = lists[-1].nodes[0], lists[-1].nodes[-1]
                    if isinstance(first, TextNode):
                        tags[0] = first.text.strip()
                    if isinstance(last, TextNode):
                        tags[1] = last.text.strip()
        ancestors.append(node)
        for child in children(node):
            visit(child, ancestors)
        ancestors.pop()

    visit(tmpl.root, [])
    return tags[0], tags[1]
