"""Parse-tree nodes of a Go text/template (a subset of `text/template/parse`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ActionNode",
    "BoolNode",
    "BranchNode",
    "BreakNode",
    "ChainNode",
    "CommandNode",
    "ContinueNode",
    "DotNode",
    "FieldNode",
    "IdentifierNode",
    "ListNode",
    "NilNode",
    "Node",
    "NumberNode",
    "PipeNode",
    "StringNode",
    "TemplateNode",
    "TextNode",
    "VariableNode",
    "children",
]


class Node:
    """Base class of every parse-tree node."""


@dataclass(slots=True)
class ListNode(Node):
    nodes: list[Node] = field(default_factory=list)


@dataclass(slots=True)
class TextNode(Node):
    text: str


@dataclass(slots=True)
class CommandNode(Node):
    args: list[Node] = field(default_factory=list)


@dataclass(slots=True)
class PipeNode(Node):
    decl: list[str] = field(default_factory=list)
    is_assign: bool = False
    cmds: list[CommandNode] = field(default_factory=list)


@dataclass(slots=True)
class ActionNode(Node):
    pipe: PipeNode


@dataclass(slots=True)
class BranchNode(Node):
    """`if`, `range` and `with`: kind says which."""

    kind: str
    pipe: PipeNode
    body: ListNode
    else_body: ListNode | None = None


@dataclass(slots=True)
class TemplateNode(Node):
    name: str
    pipe: PipeNode | None


@dataclass(slots=True)
class BreakNode(Node):
    pass


@dataclass(slots=True)
class ContinueNode(Node):
    pass


@dataclass(slots=True)
class FieldNode(Node):
    idents: list[str]


@dataclass(slots=True)
class VariableNode(Node):
    idents: list[str]  # idents[0] is the variable name including "$"


@dataclass(slots=True)
class ChainNode(Node):
    node: Node
    fields: list[str]


@dataclass(slots=True)
class IdentifierNode(Node):
    name: str


@dataclass(slots=True)
class DotNode(Node):
    pass


@dataclass(slots=True)
class NilNode(Node):
    pass


@dataclass(slots=True)
class BoolNode(Node):
    value: bool


@dataclass(slots=True)
class NumberNode(Node):
    value: Any  # int or float
    text: str


@dataclass(slots=True)
class StringNode(Node):
    value: str


def children(node: Node) -> Iterator[Node]:
    """The direct children of a node, in source order (pipelines before bodies)."""
    if isinstance(node, ListNode):
        yield from node.nodes
    elif isinstance(node, ActionNode):
        yield node.pipe
    elif isinstance(node, BranchNode):
        yield node.pipe
        yield node.body
        if node.else_body is not None:
            yield node.else_body
    elif isinstance(node, TemplateNode):
        if node.pipe is not None:
            yield node.pipe
    elif isinstance(node, PipeNode):
        yield from node.cmds
    elif isinstance(node, CommandNode):
        yield from node.args
    elif isinstance(node, ChainNode):
        yield node.node
