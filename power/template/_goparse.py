"""Parser for Go's text/template: tokens from `_golex` into `_gonodes` trees.

Mirrors the structure of Go's `text/template/parse`: `{{else if}}` and `{{else with}}` are
rewritten into a nested if/with inside the else branch, variables must be declared before use
(scoped to the enclosing control structure), functions must be known at parse time, and
`{{define}}`/`{{block}}` add named templates.
"""

from __future__ import annotations

from collections.abc import Collection

from power.template._error import TemplateError
from power.template._golex import Kind, Token, lex
from power.template._goliteral import parse_number, unquote
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

__all__ = ["MAX_DEPTH", "parse"]

# Nested if/range/with/block bodies, else-if links and parentheses together. Real templates
# nest a handful of levels; the parser, the executor and the tree walkers all recurse per
# level, so a bound keeps them well inside Python's recursion limit (a clear 400, not a 500).
MAX_DEPTH = 100

_OPERAND_START = frozenset(
    {Kind.BOOL, Kind.CHAR_CONST, Kind.DOT, Kind.FIELD, Kind.IDENT, Kind.NUMBER, Kind.NIL}
    | {Kind.RAW_STRING, Kind.STRING, Kind.VARIABLE, Kind.LPAREN}
)


class _End(Node):
    pass


class _Else(Node):
    pass


class _Parser:
    def __init__(self, text: str, funcs: Collection[str]) -> None:
        self.tokens = lex(text)
        self.i = 0
        self.funcs = funcs
        self.vars: list[str] = ["$"]
        self.range_depth = 0
        self.depth = 0
        self.defines: dict[str, ListNode] = {}

    # token helpers -----------------------------------------------------------------------
    def error(self, msg: str, tok: Token | None = None) -> TemplateError:
        line = (tok or self.tokens[min(self.i, len(self.tokens) - 1)]).line
        return TemplateError(f"{line}: {msg}")

    def next(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind is not Kind.EOF:
            self.i += 1
        return tok

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next_non_space(self) -> Token:
        tok = self.next()
        while tok.kind is Kind.SPACE:
            tok = self.next()
        return tok

    def peek_non_space(self) -> Token:
        while self.tokens[self.i].kind is Kind.SPACE:
            self.i += 1
        return self.tokens[self.i]

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"template nests too deeply (more than {MAX_DEPTH} levels)")

    def expect(self, kind: Kind, context: str) -> Token:
        tok = self.next_non_space()
        if tok.kind is not kind:
            raise self.error(f"unexpected {tok.val!r} in {context}", tok)
        return tok

    # structure ---------------------------------------------------------------------------
    def parse(self) -> tuple[ListNode, dict[str, ListNode]]:
        root = ListNode()
        while self.peek().kind is not Kind.EOF:
            if self.peek().kind is Kind.LEFT:
                mark = self.i
                self.next()
                tok = self.next_non_space()
                if tok.kind is Kind.KEYWORD and tok.val == "define":
                    self.definition()
                    continue
                self.i = mark
            node = self.text_or_action()
            if isinstance(node, _End | _Else):
                word = "end" if isinstance(node, _End) else "else"
                raise self.error(f"unexpected {{{{{word}}}}}")
            root.nodes.append(node)
        return root, self.defines

    def definition(self) -> None:
        name = self.expect_name("define clause")
        self.expect(Kind.RIGHT, "define clause")
        saved, self.vars = self.vars, ["$"]
        body, end = self.item_list()
        self.vars = saved
        if not isinstance(end, _End):
            raise self.error("unexpected {{else}} in define clause")
        self.add_define(name, body)

    def add_define(self, name: str, body: ListNode) -> None:
        blank = all(isinstance(n, TextNode) and not n.text.strip() for n in body.nodes)
        if name in self.defines and blank:
            return
        self.defines[name] = body

    def expect_name(self, context: str) -> str:
        tok = self.next_non_space()
        if tok.kind not in (Kind.STRING, Kind.RAW_STRING):
            raise self.error(f"unexpected {tok.val!r} in {context}", tok)
        return unquote(tok.val)

    def item_list(self) -> tuple[ListNode, Node]:
        body = ListNode()
        while self.peek_non_space().kind is not Kind.EOF:
            node = self.text_or_action()
            if isinstance(node, _End | _Else):
                return body, node
            body.nodes.append(node)
        raise self.error("unexpected EOF")

    def text_or_action(self) -> Node:
        tok = self.next_non_space()
        if tok.kind is Kind.TEXT:
            return TextNode(tok.val)
        if tok.kind is Kind.LEFT:
            return self.action()
        raise self.error(f"unexpected {tok.val!r} in input", tok)

    def action(self) -> Node:
        tok = self.next_non_space()
        if tok.kind is Kind.KEYWORD:
            if tok.val in ("if", "range", "with"):
                return self.control(tok.val)
            if tok.val == "end":
                self.expect(Kind.RIGHT, "end")
                return _End()
            if tok.val == "else":
                if self.peek_non_space().val not in ("if", "with"):
                    self.expect(Kind.RIGHT, "else")
                return _Else()
            if tok.val in ("break", "continue"):
                if self.range_depth == 0:
                    raise self.error(f"{{{{{tok.val}}}}} outside {{{{range}}}}", tok)
                self.expect(Kind.RIGHT, tok.val)
                return BreakNode() if tok.val == "break" else ContinueNode()
            if tok.val in ("template", "block"):
                return self.template_call(tok.val)
            raise self.error(f"unexpected {tok.val!r}", tok)
        self.i -= 1
        return ActionNode(self.pipeline("command", Kind.RIGHT))

    def control(self, kind: str) -> BranchNode:
        self.nest()
        depth = len(self.vars)
        pipe = self.pipeline(kind, Kind.RIGHT)
        if kind == "range":
            self.range_depth += 1
        body, end = self.item_list()
        if kind == "range":
            self.range_depth -= 1
        else_body: ListNode | None = None
        if isinstance(end, _Else):
            nxt = self.peek_non_space()
            if kind in ("if", "with") and nxt.kind is Kind.KEYWORD and nxt.val == kind:
                self.next()
                else_body = ListNode([self.control(kind)])
            else:
                else_body, end = self.item_list()
                if not isinstance(end, _End):
                    raise self.error("expected end; found {{else}}")
        del self.vars[depth:]
        self.depth -= 1
        return BranchNode(kind, pipe, body, else_body)

    def template_call(self, keyword: str) -> Node:
        name = self.expect_name(f"{keyword} clause")
        pipe: PipeNode | None = None
        if self.peek_non_space().kind is not Kind.RIGHT:
            pipe = self.pipeline(keyword, Kind.RIGHT)
        else:
            self.next()
        if keyword == "block":
            if pipe is None:
                raise self.error("missing pipeline in block clause")
            saved, self.vars = self.vars, ["$"]
            self.nest()
            body, end = self.item_list()
            self.depth -= 1
            self.vars = saved
            if not isinstance(end, _End):
                raise self.error("unexpected {{else}} in block clause")
            self.add_define(name, body)
        return TemplateNode(name, pipe)

    # pipelines ---------------------------------------------------------------------------
    def pipeline(self, context: str, end: Kind) -> PipeNode:
        pipe = PipeNode()
        self.declarations(pipe, context)
        while True:
            tok = self.next_non_space()
            if tok.kind is end:
                break
            if tok.kind in _OPERAND_START:
                self.i -= 1
                pipe.cmds.append(self.command())
            else:
                raise self.error(f"unexpected {tok.val!r} in {context}", tok)
        if not pipe.cmds:
            raise self.error(f"missing value for {context}")
        for n, cmd in enumerate(pipe.cmds[1:], start=1):
            if isinstance(cmd.args[0], BoolNode | DotNode | NilNode | NumberNode | StringNode):
                raise self.error(f"non executable command in pipeline stage {n + 1}")
        return pipe

    def declarations(self, pipe: PipeNode, context: str) -> None:
        while self.peek_non_space().kind is Kind.VARIABLE:
            mark = self.i
            var = self.next()
            nxt = self.peek_non_space()
            if nxt.kind in (Kind.DECLARE, Kind.ASSIGN):
                self.next()
                pipe.is_assign = nxt.kind is Kind.ASSIGN
                if pipe.is_assign and var.val not in self.vars:
                    raise self.error(f"undefined variable {var.val!r}", var)
                pipe.decl.append(var.val)
                self.vars.append(var.val)
                return
            if nxt.kind is Kind.CHAR and nxt.val == ",":
                self.next()
                pipe.decl.append(var.val)
                self.vars.append(var.val)
                if context != "range" or len(pipe.decl) >= 2:
                    raise self.error(f"too many declarations in {context}", nxt)
                if self.peek_non_space().kind is not Kind.VARIABLE:
                    raise self.error("range can only initialize variables", nxt)
                continue
            self.i = mark
            return

    def command(self) -> CommandNode:
        cmd = CommandNode()
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            tok = self.next()
            if tok.kind is Kind.SPACE:
                continue
            if tok.kind in (Kind.RIGHT, Kind.RPAREN):
                self.i -= 1
            elif tok.kind is not Kind.PIPE:
                raise self.error(f"unexpected {tok.val!r} in operand", tok)
            break
        if not cmd.args:
            raise self.error("empty command")
        return cmd

    def operand(self) -> Node | None:
        node = self.term()
        if node is None or self.peek().kind is not Kind.FIELD:
            return node
        fields: list[str] = []
        while self.peek().kind is Kind.FIELD:
            fields.append(self.next().val[1:])
        if isinstance(node, FieldNode):
            return FieldNode(node.idents + fields)
        if isinstance(node, VariableNode):
            return VariableNode(node.idents + fields)
        if isinstance(node, BoolNode | StringNode | NumberNode | NilNode | DotNode):
            raise self.error("unexpected . after term")
        return ChainNode(node, fields)

    def term(self) -> Node | None:
        tok = self.next_non_space()
        kind = tok.kind
        if kind is Kind.IDENT:
            if tok.val not in self.funcs:
                raise self.error(f"function {tok.val!r} not defined", tok)
            return IdentifierNode(tok.val)
        if kind is Kind.DOT:
            return DotNode()
        if kind is Kind.NIL:
            return NilNode()
        if kind is Kind.VARIABLE:
            if tok.val not in self.vars:
                raise self.error(f"undefined variable {tok.val!r}", tok)
            return VariableNode([tok.val])
        if kind is Kind.FIELD:
            return FieldNode([tok.val[1:]])
        if kind is Kind.BOOL:
            return BoolNode(tok.val == "true")
        if kind is Kind.NUMBER:
            return NumberNode(parse_number(tok.val), tok.val)
        if kind is Kind.CHAR_CONST:
            text = unquote(tok.val)
            if len(text) != 1:
                raise self.error(f"malformed character constant: {tok.val}", tok)
            return NumberNode(ord(text), tok.val)
        if kind is Kind.LPAREN:
            self.nest()
            pipe = self.pipeline("parenthesized pipeline", Kind.RPAREN)
            self.depth -= 1
            return pipe
        if kind in (Kind.STRING, Kind.RAW_STRING):
            return StringNode(unquote(tok.val))
        self.i -= 1
        return None


def parse(text: str, funcs: Collection[str]) -> tuple[ListNode, dict[str, ListNode]]:
    """Parse a template: (main body, named templates from define/block)."""
    return _Parser(text, funcs).parse()
