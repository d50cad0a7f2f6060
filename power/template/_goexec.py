"""Executor for parsed Go templates, following the semantics of Go's `text/template/exec.go`.

Data is plain Python: fields are looked up on mappings (exact key first, then a key that
matches ignoring case, `_` and `$`, so `.ToolCalls` finds `tool_calls` and `.Defs` finds
`$defs`) or as attributes of other objects. A field missing from a mapping is the zero value,
which prints as "" (Ollama runs templates with missingkey=zero over typed structs).

Rendering is bounded, like minijinja's fuel: at most ``MAX_STEPS`` nodes are walked and
``MAX_OUTPUT`` characters written (no prompt larger than a runner frame can be sent), so a
template such as ``{{range $i := 100000000}}x{{end}}`` fails fast with a ``TemplateError``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from power.template._error import TemplateError
from power.template._gofmt import go_type, to_str
from power.template._gofuncs import FUNCS, LAZY_FUNCS, truth
from power.template._gonodes import (
    ActionNode,
    BoolNode,
    BranchNode,
    BreakNode,
    ChainNode,
    CommandNode,
    ContinueNode,
    DotNode,
    FieldNode,
    IdentifierNode,
    ListNode,
    NilNode,
    Node,
    NumberNode,
    PipeNode,
    StringNode,
    TemplateNode,
    TextNode,
    VariableNode,
)
from proto import MAX_FRAME

__all__ = ["execute"]

_MAX_DEPTH = 1000
MAX_STEPS = 2_000_000  # nodes walked: about a second of rendering
MAX_OUTPUT = MAX_FRAME  # characters
_SIGNATURES = {name: inspect.signature(fn) for name, fn in FUNCS.items()}


class _Missing:
    """No value was piped into a command."""


_MISSING = _Missing()


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


def _norm(name: str) -> str:
    return name.replace("_", "").replace("$", "").lower()


def _field(receiver: object, name: str, has_args: bool) -> object:
    if receiver is None:
        return None
    if has_args:
        raise TemplateError(f"{name} is not a method but has arguments")
    if isinstance(receiver, Mapping):
        if name in receiver:
            return receiver[name]
        wanted = _norm(name)
        for key, value in receiver.items():
            if isinstance(key, str) and _norm(key) == wanted:
                return value
        return None
    if not isinstance(receiver, str | int | float | Sequence):
        for attr in (name, _norm(name)):
            if not attr.startswith("_") and hasattr(receiver, attr):
                return getattr(receiver, attr)
        return None
    raise TemplateError(f"can't evaluate field {name} in type {go_type(receiver)}")


def _range_items(value: object) -> Iterator[tuple[object, object]]:
    if value is None:
        return iter(())
    if isinstance(value, Mapping):
        keys = sorted(value, key=lambda k: (not isinstance(k, int | float), k))
        return ((k, value[k]) for k in keys)
    if isinstance(value, int) and not isinstance(value, bool):
        return ((i, i) for i in range(value))
    if isinstance(value, Sequence) and not isinstance(value, str):
        return iter(enumerate(value))
    raise TemplateError(f"range can't iterate over {to_str(value, top=False)}")


class _Budget:
    """What one rendering may still spend, shared by the executors of nested templates."""

    __slots__ = ("chars", "steps")

    def __init__(self) -> None:
        self.steps = MAX_STEPS
        self.chars = MAX_OUTPUT


class _Exec:
    def __init__(
        self, defines: Mapping[str, ListNode], out: list[str], depth: int, budget: _Budget
    ) -> None:
        self.defines = defines
        self.out = out
        self.depth = depth
        self.budget = budget
        self.vars: list[list[Any]] = []

    def emit(self, text: str) -> None:
        self.budget.chars -= len(text)
        if self.budget.chars < 0:
            raise TemplateError(f"template output exceeds {MAX_OUTPUT} characters")
        self.out.append(text)

    # variables ---------------------------------------------------------------------------
    def lookup(self, name: str) -> object:
        for var in reversed(self.vars):
            if var[0] == name:
                return var[1]
        raise TemplateError(f"undefined variable: {name}")

    def set_var(self, name: str, value: object) -> None:
        for var in reversed(self.vars):
            if var[0] == name:
                var[1] = value
                return
        raise TemplateError(f"undefined variable: {name}")

    # walking -----------------------------------------------------------------------------
    def walk(self, dot: object, node: Node) -> None:
        self.budget.steps -= 1
        if self.budget.steps < 0:
            raise TemplateError(f"template rendering exceeds {MAX_STEPS} steps")
        if isinstance(node, TextNode):
            self.emit(node.text)
        elif isinstance(node, ListNode):
            for child in node.nodes:
                self.walk(dot, child)
        elif isinstance(node, ActionNode):
            value = self.pipeline(dot, node.pipe)
            if not node.pipe.decl:
                self.emit(to_str(value))
        elif isinstance(node, BranchNode):
            mark = len(self.vars)
            try:
                if node.kind == "range":
                    self.walk_range(dot, node)
                else:
                    self.walk_if_or_with(dot, node)
            finally:
                del self.vars[mark:]
        elif isinstance(node, TemplateNode):
            self.walk_template(dot, node)
        elif isinstance(node, BreakNode):
            raise _Break
        elif isinstance(node, ContinueNode):
            raise _Continue
        else:  # pragma: no cover - the parser produces no other statement nodes
            raise TemplateError(f"unknown node: {node!r}")

    def walk_if_or_with(self, dot: object, node: BranchNode) -> None:
        value = self.pipeline(dot, node.pipe)
        if truth(value):
            self.walk(value if node.kind == "with" else dot, node.body)
        elif node.else_body is not None:
            self.walk(dot, node.else_body)

    def walk_range(self, dot: object, node: BranchNode) -> None:
        value = self.pipeline(dot, node.pipe)
        decl, is_assign = node.pipe.decl, node.pipe.is_assign
        if isinstance(value, int) and not isinstance(value, bool) and len(decl) > 1:
            raise TemplateError("can't use int to iterate over more than one variable")
        mark = len(self.vars)
        ran = False
        try:
            for index, elem in _range_items(value):
                ran = True
                if decl:
                    if is_assign:
                        self.set_var(decl[0], index if len(decl) > 1 else elem)
                        if len(decl) > 1:
                            self.set_var(decl[1], elem)
                    else:
                        self.vars[-1][1] = elem
                        if len(decl) > 1:
                            self.vars[-2][1] = index
                try:
                    self.walk(elem, node.body)
                except _Continue:
                    pass
                finally:
                    del self.vars[mark:]
        except _Break:
            pass
        if not ran and node.else_body is not None:
            self.walk(dot, node.else_body)

    def walk_template(self, dot: object, node: TemplateNode) -> None:
        body = self.defines.get(node.name)
        if body is None:
            raise TemplateError(f'no such template "{node.name}"')
        if self.depth >= _MAX_DEPTH:
            raise TemplateError(f"exceeded maximum template depth ({_MAX_DEPTH})")
        value = None if node.pipe is None else self.pipeline(dot, node.pipe)
        sub = _Exec(self.defines, self.out, self.depth + 1, self.budget)
        sub.vars = [["$", value]]
        sub.walk(value, body)

    # evaluation --------------------------------------------------------------------------
    def pipeline(self, dot: object, pipe: PipeNode) -> object:
        value: object = _MISSING
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, value)
        for name in pipe.decl:
            if pipe.is_assign:
                self.set_var(name, value)
            else:
                self.vars.append([name, value])
        return value

    def command(self, dot: object, cmd: CommandNode, final: object) -> object:
        first = cmd.args[0]
        if isinstance(first, FieldNode):
            return self.field_chain(dot, first.idents, cmd.args, final)
        if isinstance(first, ChainNode):
            return self.chain(dot, first, cmd.args, final)
        if isinstance(first, IdentifierNode):
            return self.call(dot, first.name, cmd.args, final)
        if isinstance(first, VariableNode):
            return self.variable(dot, first, cmd.args, final)
        self.not_a_function(cmd.args, final)
        if isinstance(first, PipeNode):
            return self.pipeline(dot, first)
        if isinstance(first, NilNode):
            raise TemplateError("nil is not a command")
        return self.arg(dot, first)

    @staticmethod
    def not_a_function(args: Sequence[Node], final: object) -> None:
        if len(args) > 1 or final is not _MISSING:
            raise TemplateError(f"can't give argument to non-function {args[0]!r}")

    def field_chain(
        self, dot: object, idents: Sequence[str], args: Sequence[Node], final: object
    ) -> object:
        return self.fields(dot, idents, len(args) > 1 or final is not _MISSING)

    @staticmethod
    def fields(receiver: object, idents: Sequence[str], has_args: bool) -> object:
        for name in idents[:-1]:
            receiver = _field(receiver, name, False)
        return _field(receiver, idents[-1], has_args)

    def variable(
        self, dot: object, node: VariableNode, args: Sequence[Node], final: object
    ) -> object:
        value = self.lookup(node.idents[0])
        if len(node.idents) == 1:
            self.not_a_function(args, final)
            return value
        return self.fields(value, node.idents[1:], len(args) > 1 or final is not _MISSING)

    def chain(self, dot: object, node: ChainNode, args: Sequence[Node], final: object) -> object:
        if len(args) > 1:
            raise TemplateError("can't give argument to non-function")
        receiver = self.arg(dot, node.node)
        return self.fields(receiver, node.fields, final is not _MISSING)

    def call(self, dot: object, name: str, args: Sequence[Node], final: object) -> object:
        operands = list(args[1:])
        if name in LAZY_FUNCS:
            if not operands and final is _MISSING:
                raise TemplateError(f"wrong number of args for {name}: want at least 1 got 0")
            value: object = None
            for operand in operands:
                value = self.arg(dot, operand)
                if truth(value) == (name == "or"):
                    return value
            return value if final is _MISSING else final
        argv = [self.arg(dot, operand) for operand in operands]
        if final is not _MISSING:
            argv.append(final)
        try:
            _SIGNATURES[name].bind(*argv)
        except TypeError:
            raise TemplateError(f"wrong number of args for {name}: got {len(argv)}") from None
        fn: Callable[..., Any] = FUNCS[name]
        return fn(*argv)

    def arg(self, dot: object, node: Node) -> object:
        if isinstance(node, DotNode):
            return dot
        if isinstance(node, NilNode):
            return None
        if isinstance(node, FieldNode):
            return self.fields(dot, node.idents, False)
        if isinstance(node, VariableNode):
            return self.variable(dot, node, [node], _MISSING)
        if isinstance(node, PipeNode):
            return self.pipeline(dot, node)
        if isinstance(node, IdentifierNode):
            return self.call(dot, node.name, [node], _MISSING)
        if isinstance(node, ChainNode):
            return self.chain(dot, node, [node], _MISSING)
        if isinstance(node, BoolNode | NumberNode):
            return node.value
        if isinstance(node, StringNode):
            return node.value
        raise TemplateError(f"can't handle {node!r} as an argument")


def execute(root: ListNode, defines: Mapping[str, ListNode], data: object) -> str:
    """Run a parsed template over data and return the output."""
    out: list[str] = []
    ex = _Exec(defines, out, 0, _Budget())
    ex.vars = [["$", data]]
    try:
        ex.walk(data, root)
    except RecursionError:
        raise TemplateError("template nesting too deep") from None
    return "".join(out)
