"""Substitution skeletons: render a chat template once per conversation shape, then only fill in contents.

Most chat templates (ChatML, Mistral, Qwen2.5 without tools, ...) only *copy* each message's content into
the text: no branch looks inside it, no filter changes it. For such a template the rendered text of a chat
is a fixed sequence of literal pieces and content slots that depends only on the chat's *shape*: its roles
and which contents are empty. Rendering that shape once with sentinel contents (through the tokenizer's own
``apply_chat_template``) gives the sequence, and also where each assistant turn starts and ends, so a row
costs one string join instead of ``1 + 2 * turns`` template renders.

:func:`template_is_pure` proves the property on the template's Jinja syntax tree with a conservative
taint check (details in :class:`_Purity`): message contents may reach the output only verbatim, by
concatenation; they may be tested for emptiness (part of the shape) or type, and nothing else. Anything
the check does not understand makes the template impure. An impure template, a shape whose sentinel
render fails, or one whose prefixes are not prefixes of the full chat gets no skeleton, and callers render
it row by row exactly as before; so the results are the same either way, only faster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes

_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use characters: the sentinels' delimiters
_SENTINEL = re.compile(f"{_OPEN}(\\d+){_CLOSE}")

Shape = tuple[tuple[str, bool], ...]  # (role, content is non-empty) per message
Boundary = tuple[int, int]  # (whole parts before it, characters into the next part)


def sentinel(i: int) -> str:
    return f"{_OPEN}{i}{_CLOSE}"


# ------------------------------------------------------------------------------------------- purity check

CLEAN, LIST, ELEM, TAINTED = "clean", "list", "elem", "tainted"  # what an expression may hold
_TYPE_TESTS = frozenset({"defined", "undefined", "none", "string", "mapping", "sequence", "iterable",
                         "boolean", "number", "integer", "float", "true", "false"})
_METHODS = frozenset(dir(dict)) | frozenset(dir(list)) | frozenset(dir(str))
_UNSAFE_CALLS = frozenset({"strftime_now", "lipsum", "cycler"})  # time, randomness, state


class _Impure(Exception):
    """The template may use message contents in a way a skeleton cannot reproduce."""


class _Purity:
    """Taint check over a Jinja AST. Kinds of values:

    - ``LIST``: ``messages`` or a slice of it; ``ELEM``: one message (a dict); ``TAINTED``: a content
      string (or text built from one); ``CLEAN``: anything that depends on the shape only.
    - Fast-path messages hold exactly ``role`` and ``content`` (and ``tools`` is None), so a message's
      other keys are undefined, i.e. clean; ``role`` is part of the shape.
    - Allowed: ``ELEM.content`` -> TAINTED; other constant keys -> CLEAN; indexing or slicing a LIST; the
      filters ``length``/``count``/``first``/``last``/``reverse``/``list`` on LIST/ELEM; type tests; any
      kind in a truth test (emptiness is in the shape); TAINTED in output, ``+`` and ``~``.
    - Everything else that touches a non-clean value, and any construct not handled below, is impure.

    Names are tracked per name, over the whole template (not per scope), until no binding changes: more
    bindings only forbid more, so the over-approximation is safe.
    """

    def __init__(self) -> None:
        self.names: dict[str, set[str]] = {"messages": {LIST}}
        self.changed = False

    def check(self, tree: nodes.Template) -> None:
        for _ in range(20):
            self.changed = False
            self.stmts(tree.body)
            if not self.changed:
                return
        raise _Impure("name bindings did not settle")

    # -- statements -------------------------------------------------------------------------------------
    def stmts(self, body: list[nodes.Node]) -> None:
        for node in body:
            self.stmt(node)

    def stmt(self, node: nodes.Node) -> None:  # noqa: C901 - one branch per statement type
        if isinstance(node, nodes.Output):
            for e in node.nodes:
                if self.expr(e) in (LIST, ELEM):
                    raise _Impure("a message or the message list is printed whole")
        elif isinstance(node, nodes.If):
            self.cond(node.test)
            self.stmts(node.body)
            self.stmts(node.elif_)
            self.stmts(node.else_)
        elif isinstance(node, nodes.For):
            self.loop(node)
        elif isinstance(node, nodes.Assign):
            self.bind(node.target, self.expr(node.node))
        elif isinstance(node, nodes.AssignBlock):
            if node.filter is not None:
                raise _Impure("filtered set block")
            self.stmts(node.body)
            self.bind(node.target, TAINTED)  # its text may hold content
        elif isinstance(node, nodes.With):
            for target, value in zip(node.targets, node.values, strict=True):
                self.bind(target, self.expr(value))
            self.stmts(node.body)
        elif isinstance(node, (nodes.Scope, nodes.ScopedEvalContextModifier)) or _is_generation_block(node):
            self.stmts(node.body)  # a {% generation %} block prints its body unchanged
        elif isinstance(node, nodes.ExprStmt):
            self.clean(node.node)
        elif not isinstance(node, (nodes.Break, nodes.Continue)):
            raise _Impure(f"unsupported statement {type(node).__name__}")

    def loop(self, node: nodes.For) -> None:
        if node.recursive:
            raise _Impure("recursive loop")
        kind = self.expr(node.iter)
        if kind == TAINTED:
            raise _Impure("a loop over the characters of a content")
        self.bind(node.target, ELEM if kind == LIST else CLEAN)  # a dict iterates over its (fixed) keys
        if node.test is not None:
            self.cond(node.test)
        self.stmts(node.body)
        self.stmts(node.else_)

    def bind(self, target: nodes.Node, kind: str) -> None:
        if isinstance(target, nodes.Name):
            if kind != CLEAN and kind not in self.names.setdefault(target.name, set()):
                self.names[target.name].add(kind)
                self.changed = True
        elif isinstance(target, nodes.Tuple):
            for item in target.items:
                self.bind(item, kind)
        elif isinstance(target, nodes.NSRef):
            if kind != CLEAN:
                raise _Impure("content stored in a namespace")
        else:
            raise _Impure(f"unsupported assignment target {type(target).__name__}")

    # -- expressions ------------------------------------------------------------------------------------
    def cond(self, node: nodes.Expr) -> None:
        """A truth test: any kind may be tested (emptiness is part of the shape); its parts must be sound."""
        if isinstance(node, (nodes.And, nodes.Or)):
            self.cond(node.left)
            self.cond(node.right)
        elif isinstance(node, nodes.Not):
            self.cond(node.node)
        else:
            self.expr(node)

    def clean(self, node: nodes.Node | None) -> None:
        if node is not None and self.expr(node) != CLEAN:
            raise _Impure(f"a message or content used in {type(node).__name__}")

    def name(self, name: str) -> str:
        kinds = self.names.get(name, set())
        if len(kinds) > 1:
            raise _Impure(f"'{name}' holds values of several kinds")
        return next(iter(kinds)) if kinds else CLEAN

    def expr(self, node: nodes.Node) -> str:  # noqa: C901 - one branch per expression type
        if isinstance(node, (nodes.Const, nodes.TemplateData)):
            return CLEAN
        if isinstance(node, nodes.Name):
            return self.name(node.name)
        if isinstance(node, nodes.Getattr):
            return _member(self.expr(node.node), node.attr)
        if isinstance(node, nodes.Getitem):
            return self.item(node)
        if isinstance(node, (nodes.Add, nodes.Concat)):
            parts = [node.left, node.right] if isinstance(node, nodes.Add) else node.nodes
            kinds = {self.expr(p) for p in parts}
            if kinds & {LIST, ELEM}:
                raise _Impure("a message or the message list joined as text")
            return TAINTED if TAINTED in kinds else CLEAN
        if isinstance(node, nodes.CondExpr):
            self.cond(node.test)
            return _join(self.expr(node.expr1), CLEAN if node.expr2 is None else self.expr(node.expr2))
        if isinstance(node, nodes.Filter):
            return self.filter(node)
        if isinstance(node, nodes.Test):
            return self.test(node)
        if isinstance(node, nodes.Call):
            return self.call(node)
        if isinstance(node, (nodes.BinExpr, nodes.UnaryExpr, nodes.Compare, nodes.Operand, nodes.Slice,
                             nodes.List, nodes.Tuple, nodes.Dict, nodes.Pair, nodes.Keyword)):
            for child in node.iter_child_nodes():
                self.clean(child)
            return CLEAN
        raise _Impure(f"unsupported expression {type(node).__name__}")

    def item(self, node: nodes.Getitem) -> str:
        base = self.expr(node.node)
        arg = node.arg
        if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
            return _member(base, arg.value)
        if isinstance(arg, nodes.Slice):
            self.clean(arg)
            if base == TAINTED:
                raise _Impure("a slice of a content")
            return base
        self.clean(arg)
        if base == LIST:
            return ELEM
        if base != CLEAN:
            raise _Impure("a computed key into a message or content")
        return CLEAN

    def filter(self, node: nodes.Filter) -> str:
        if node.node is None:
            raise _Impure("filter block")
        for child in (*node.args, *node.kwargs, node.dyn_args, node.dyn_kwargs):
            self.clean(child)
        base = self.expr(node.node)
        if base == CLEAN:
            return CLEAN
        if node.name in ("length", "count") and base in (LIST, ELEM):
            return CLEAN
        if node.name in ("first", "last") and base == LIST:
            return ELEM
        if node.name in ("reverse", "list") and base == LIST:
            return LIST
        if node.name == "string" and base == TAINTED:
            return TAINTED  # the identity on a str
        raise _Impure(f"filter '{node.name}' on a message or content")

    def test(self, node: nodes.Test) -> str:
        for child in (*node.args, *node.kwargs, node.dyn_args, node.dyn_kwargs):
            self.clean(child)
        base = self.expr(node.node)
        if base != CLEAN and node.name not in _TYPE_TESTS:
            raise _Impure(f"test '{node.name}' on a message or content")
        return CLEAN  # contents are always str, messages dicts: type tests depend on the shape only

    def call(self, node: nodes.Call) -> str:
        fn = node.node
        if isinstance(fn, nodes.Name) and fn.name == "raise_exception":
            return CLEAN  # the render fails, so the shape gets no skeleton
        if isinstance(fn, nodes.Name) and fn.name in _UNSAFE_CALLS:
            raise _Impure(f"'{fn.name}()' is not a function of the chat")
        self.clean(fn)
        for child in (*node.args, *node.kwargs, node.dyn_args, node.dyn_kwargs):
            self.clean(child)
        return CLEAN


def _member(base: str, key: str) -> str:
    """``base.key`` / ``base['key']`` for a constant key."""
    if key in ("previtem", "nextitem"):
        if base == TAINTED:
            raise _Impure("an attribute of a content")
        return ELEM  # loop.previtem may be a message
    if key.startswith("_") or key in _METHODS:
        if base != CLEAN:
            raise _Impure(f"method '{key}' of a message or content")
        return CLEAN
    if base == ELEM:
        return TAINTED if key == "content" else CLEAN
    if base == TAINTED:
        raise _Impure("an attribute of a content")
    return CLEAN  # a shape-level value, or a list attribute that is undefined


def _join(a: str, b: str) -> str:
    if a == b or b == CLEAN:
        return a
    if a == CLEAN:
        return b
    raise _Impure("a conditional that mixes kinds")


def _is_generation_block(node: nodes.Node) -> bool:
    if not isinstance(node, nodes.CallBlock):
        return False
    call = node.call
    return (isinstance(call, nodes.Call) and isinstance(call.node, nodes.ExtensionAttribute)
            and call.node.name == "_generation_support")


def template_is_pure(source: str) -> bool:
    """True when the template provably copies contents verbatim and decides nothing on them (but emptiness)."""
    if _OPEN in source or _CLOSE in source:
        return False
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template

        env = _compile_jinja_template(source).environment  # the parser with transformers' extensions
        _Purity().check(env.parse(source))
    except _Impure:
        return False
    except Exception:  # no such transformers helper, or a template that does not parse: row by row it is
        return False
    return True


# ---------------------------------------------------------------------------------------------- skeletons


@dataclass(frozen=True)
class Skeleton:
    """The rendered chat of one shape: literal text and content slots, and each assistant turn's span."""

    parts: tuple[str | int, ...]  # a literal, or the index of the message whose content goes there
    spans: tuple[tuple[Boundary, Boundary], ...]  # per assistant turn: (start, end)

    def fill(self, contents: list[str]) -> tuple[str, list[tuple[int, int]]]:
        """The text with ``contents`` filled in, and each assistant turn's ``[start, end)`` in it."""
        pieces = [p if isinstance(p, str) else contents[p] for p in self.parts]
        cum = [0]
        for piece in pieces:
            cum.append(cum[-1] + len(piece))
        spans = [(cum[a] + da, cum[b] + db) for (a, da), (b, db) in self.spans]
        return "".join(pieces), spans


def shape_of(messages: list[dict[str, Any]]) -> Shape | None:
    """The shape of a chat the fast path can take: only ``role``/``content`` str fields; else None."""
    shape = []
    for m in messages:
        content = m.get("content")
        if len(m) != 2 or type(content) is not str or type(m.get("role")) is not str:
            return None
        shape.append((m["role"], content != ""))
    return tuple(shape)


def _parse(text: str) -> tuple[str | int, ...] | None:
    """Split rendered text at the sentinels; None when a delimiter is left in a literal."""
    out: list[str | int] = []
    for i, piece in enumerate(_SENTINEL.split(text)):
        if i % 2:
            out.append(int(piece))
        elif piece:
            if _OPEN in piece or _CLOSE in piece:
                return None
            out.append(piece)
    return tuple(out)


def _boundary(prefix: tuple[str | int, ...], full: tuple[str | int, ...]) -> Boundary | None:
    """Where ``prefix`` ends in ``full`` when it is a prefix for *every* content; else None."""
    if not prefix:
        return (0, 0)
    n = len(prefix)
    if n > len(full) or prefix[:-1] != full[: n - 1]:
        return None
    last, there = prefix[-1], full[n - 1]
    if isinstance(last, int):
        return (n, 0) if last == there else None
    if isinstance(there, str) and there.startswith(last):
        return (n - 1, len(last))
    return None


def build_skeleton(render: Any, shape: Shape) -> Skeleton | None:
    """Render ``shape`` with sentinels through ``render(chats, generation_prompt)`` -> texts; None if unusable.

    ``render`` raises for a shape the template refuses. No assistant turn, a chat that opens with one, or
    prefixes that are not structural prefixes of the full chat: None (the row-by-row path decides).
    """
    msgs = [{"role": role, "content": sentinel(i) if filled else ""} for i, (role, filled) in enumerate(shape)]
    turns = [i for i, (role, _) in enumerate(shape) if role == "assistant"]
    if not turns or turns[0] == 0:
        return None
    try:
        full_text = render([msgs], False)[0]
        starts = render([msgs[:i] for i in turns], True)
        ends = render([msgs[: i + 1] for i in turns], False)
    except Exception:  # the row-by-row path reports the template's own error
        return None
    full = _parse(full_text)
    if full is None:
        return None
    spans = []
    for head, upto in zip(starts, ends, strict=True):
        a, b = _parse(head), _parse(upto)
        ba = _boundary(a, full) if a is not None else None
        bb = _boundary(b, full) if b is not None else None
        if ba is None or bb is None:
            return None
        spans.append((ba, bb))
    return Skeleton(full, tuple(spans))
