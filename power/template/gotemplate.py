"""Go text/template for Ollama's TEMPLATE layers: parse once, execute over plain Python data.

Supported: text and actions with `{{- -}}` trimming and `{{/* */}}` comments; pipelines with
`|`; variables (`$`, `$x :=`, `$x =`); fields on mappings/objects (`.Messages`,
`.Function.Name`, `$.Tools`, `(index .X 0).Name`); `if/else if/else`, `range` (with `$i, $v :=`,
`else`, `break`, `continue`), `with/else with`; `define`, `template`, `block`; the builtins
and/or/not, eq/ne/lt/le/gt/ge, len, index, slice, print/printf/println, html/js/urlquery; and
Ollama's json, currentDate, yesterdayDate and toTypeScriptType.

    >>> GoTemplate.parse("{{ range .Messages }}{{ .Role }};{{ end }}").execute(
    ...     {"Messages": [{"Role": "user"}]})
    'user;'
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator

from power.template._error import TemplateError
from power.template._goexec import execute
from power.template._gofmt import JSONList, go_json
from power.template._gofuncs import FUNCS
from power.template._gonodes import (
    ActionNode,
    BranchNode,
    CommandNode,
    FieldNode,
    ListNode,
    Node,
    PipeNode,
    VariableNode,
    children,
)
from power.template._goparse import parse

__all__ = ["GoTemplate", "JSONList", "TemplateError", "field_action", "go_json"]

log = logging.getLogger(__name__)


def _walk(node: Node) -> Iterator[Node]:
    yield node
    for child in children(node):
        yield from _walk(child)


class GoTemplate:
    """A parsed template. Instances are immutable and safe to share between requests."""

    __slots__ = ("_identifiers", "defines", "root", "source")

    def __init__(self, source: str, root: ListNode, defines: dict[str, ListNode]) -> None:
        self.source = source
        self.root = root
        self.defines = defines
        self._identifiers: frozenset[str] | None = None

    @classmethod
    def parse(cls, source: str) -> GoTemplate:
        """Parse (cached per source text); raises TemplateError on a syntax error."""
        return _parse_cached(source)

    def execute(self, data: object) -> str:
        """Render with `data` as dot and `$`; raises TemplateError on an execution error."""
        return execute(self.root, self.defines, data)

    def nodes(self) -> Iterator[Node]:
        """Every node of the main body and of the named templates, in source order."""
        yield from _walk(self.root)
        for body in self.defines.values():
            yield from _walk(body)

    def identifiers(self) -> frozenset[str]:
        """Lower-cased field and variable names used anywhere (Ollama's `Template.Vars`)."""
        if self._identifiers is None:
            names: set[str] = set()
            for node in self.nodes():
                if isinstance(node, FieldNode | VariableNode):
                    names.update(ident.lower() for ident in node.idents)
            self._identifiers = frozenset(names)
        return self._identifiers

    def with_root(self, root: ListNode) -> GoTemplate:
        """The same template set with another main body."""
        return GoTemplate(self.source, root, self.defines)

    def appended(self, node: Node) -> GoTemplate:
        """A copy whose main body ends with one more node."""
        return self.with_root(ListNode([*self.root.nodes, node]))

    def cut_after(self, predicate: Callable[[Node], bool]) -> GoTemplate:
        """A copy in which everything after the first node matching predicate is removed.

        The walk is Ollama's `deleteNode`: pre-order over list items and branch bodies (not
        branch conditions); the matching node itself is kept, later siblings and later
        nodes of enclosing lists are dropped. Lists, branches and actions on the way are
        copied (one frame per tree level, unlike copy.deepcopy); untouched subtrees are
        shared, which is safe as nodes are never changed after parsing.
        """
        cut = False

        def prune(node: Node) -> Node | None:
            nonlocal cut
            if cut:
                return None
            if predicate(node):
                cut = True
                return node
            if isinstance(node, ListNode):
                kept_nodes: list[Node] = []
                for child in node.nodes:
                    copied = prune(child)
                    if copied is not None:
                        kept_nodes.append(copied)
                return ListNode(kept_nodes)
            if isinstance(node, BranchNode):
                body = prune(node.body)
                else_body = node.else_body
                if else_body is not None:  # an else after the cut stays, emptied
                    pruned = prune(else_body)
                    else_body = pruned if isinstance(pruned, ListNode) else ListNode()
                body = body if isinstance(body, ListNode) else node.body
                return BranchNode(node.kind, node.pipe, body, else_body)
            if isinstance(node, ActionNode):
                cmds: list[CommandNode] = []
                for cmd in node.pipe.cmds:
                    kept: list[Node] = []
                    for arg in cmd.args:
                        if not cut:
                            cut = predicate(arg)
                            kept.append(arg)
                    if not kept:  # Ollama drops an action left with an empty command
                        return None
                    cmds.append(CommandNode(kept))
                pipe = node.pipe
                return ActionNode(PipeNode(list(pipe.decl), pipe.is_assign, cmds))
            return node

        root = prune(self.root)
        return self.with_root(root if isinstance(root, ListNode) else ListNode())


def field_action(*idents: str) -> ActionNode:
    """`{{ .A.B }}` as a node (Ollama appends `{{ .Response }}` to legacy templates)."""
    return ActionNode(PipeNode(cmds=[CommandNode([FieldNode(list(idents))])]))


@functools.lru_cache(maxsize=64)
def _parse_cached(source: str) -> GoTemplate:
    root, defines = parse(source, FUNCS)
    log.debug("parsed Go template (%d bytes, %d named)", len(source), len(defines))
    return GoTemplate(source, root, defines)
