"""A small emulator of Go's text/template, for the subset our Ollama TEMPLATEs use.

There is no Go here, so this executes a TEMPLATE the way Ollama would (``template.Execute`` with
``System`` and ``Messages`` after Ollama's ``collate``), letting tests and the Modelfile writer check that the
TEMPLATE reproduces the training chat template token for token.

Supported: text; ``{{ pipeline }}``; trim markers ``{{-`` / ``-}}``; ``if`` / ``else if`` / ``else`` / ``end``;
``range $i, $v := pipeline`` and ``range pipeline``; ``$x := pipeline`` and ``$x = pipeline``; operands
``.Field``, ``$``, ``$.Field``, ``$var``, ``$var.Field``, string / number / bool literals, parenthesised
pipelines with a trailing ``.Field``; functions ``and or not eq ne lt le gt ge len index slice print``.
Anything else raises :class:`TemplateError`, so an unsupported construct can never pass silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


class TemplateError(ValueError):
    pass


# ---------------------------------------------------------------- lexing


@dataclass
class _Text:
    text: str


@dataclass
class _Action:
    body: str


def _lex(src: str) -> list[_Text | _Action]:
    """Split into text and actions, applying Go's trim markers (``{{- `` and `` -}}``)."""
    items: list[_Text | _Action] = []
    pos = 0
    trim_next = False
    while True:
        start = src.find("{{", pos)
        text = src[pos:] if start < 0 else src[pos:start]
        trim_prev = start >= 0 and src[start + 2 : start + 3] == "-" and src[start + 3 : start + 4].isspace()
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if trim_prev:
            text = text.rstrip(" \t\r\n")
        if text:
            items.append(_Text(text))
        if start < 0:
            return items
        end = src.find("}}", start)
        if end < 0:
            raise TemplateError(f"unclosed action at offset {start}")
        body = src[start + 2 : end]
        if trim_prev:
            body = body[1:]
        trim_next = len(body) >= 2 and body[-1] == "-" and body[-2].isspace()
        if trim_next:
            body = body[:-1]
        body = body.strip()
        pos = end + 2
        if not body.startswith("/*"):
            items.append(_Action(body))


# ---------------------------------------------------------------- expressions

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<num>-?\d+(?:\.\d+)?)
  | (?P<lp>\() | (?P<rp>\))
  | (?P<field>\$\w*(?:\.[A-Za-z_]\w*)*|(?:\.[A-Za-z_]\w*)+|\.|[A-Za-z_]\w*)
)""",
    re.X,
)


def _tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"cannot parse {expr[pos:]!r} in {{{{ {expr} }}}}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(expr) and expr[pos].isspace():
            pos += 1
    return out


@dataclass
class _Scope:
    dot: Any
    root: Any
    vars: list[dict[str, Any]] = field(default_factory=list)

    def lookup(self, name: str) -> Any:
        if name == "$":
            return self.root
        for frame in reversed(self.vars):
            if name in frame:
                return frame[name]
        raise TemplateError(f"undefined variable {name}")

    def assign(self, name: str, value: Any) -> None:
        for frame in reversed(self.vars):
            if name in frame:
                frame[name] = value
                return
        raise TemplateError(f"assignment to undeclared variable {name}")


def _truth(v: Any) -> bool:
    if v is None:
        return False
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return v != 0
    if isinstance(v, (str, list, tuple, dict)):
        return len(v) > 0
    return True


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(name)
    if obj is None:
        raise TemplateError(f"nil pointer evaluating .{name}")
    if not hasattr(obj, name):
        raise TemplateError(f"can't evaluate field {name} in {type(obj).__name__}")
    return getattr(obj, name)


def _eq(a: Any, *bs: Any) -> bool:
    for b in bs:
        if type(a) is not type(b) and not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
            raise TemplateError(f"incompatible types for comparison: {a!r} {b!r}")
        if a == b:
            return True
    return False


def _unquote(s: str) -> str:
    if s.startswith("`"):
        return s[1:-1]
    return bytes(s[1:-1], "utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8")


_FUNCS: dict[str, Callable[..., Any]] = {
    "not": lambda a: not _truth(a),
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "len": lambda a: len(a),
    "index": lambda a, *ix: _index(a, ix),
    "slice": lambda a, *ix: a[ix[0] :] if len(ix) == 1 else a[ix[0] : ix[1]] if ix else a,
    "print": lambda *a: "".join(_fmt(x) for x in a),
}


def _index(a: Any, ix: Sequence[Any]) -> Any:
    for i in ix:
        a = a[i]
    return a


class _Expr:
    def __init__(self, expr: str) -> None:
        self.src = expr
        self.toks = _tokens(expr)
        self.pos = 0

    def parse(self) -> Callable[[_Scope], Any]:
        node = self._command()
        if self.pos != len(self.toks):
            raise TemplateError(f"unexpected {self.toks[self.pos][1]!r} in {{{{ {self.src} }}}}")
        return node

    def _command(self) -> Callable[[_Scope], Any]:
        args: list[Callable[[_Scope], Any]] = []
        fname: str | None = None
        if (
            self.pos < len(self.toks)
            and self.toks[self.pos][0] == "field"
            and (self.toks[self.pos][1] in _FUNCS or self.toks[self.pos][1] in ("and", "or"))
        ):
            fname = self.toks[self.pos][1]
            self.pos += 1
        while self.pos < len(self.toks) and self.toks[self.pos][0] != "rp":
            args.append(self._operand())
        if fname is None:
            if len(args) != 1:
                raise TemplateError(f"expected one operand in {{{{ {self.src} }}}}")
            return args[0]
        if fname == "and":
            return lambda s: _and(args, s)
        if fname == "or":
            return lambda s: _or(args, s)
        fn = _FUNCS[fname]
        return lambda s: fn(*(a(s) for a in args))

    def _operand(self) -> Callable[[_Scope], Any]:
        kind, text = self.toks[self.pos]
        self.pos += 1
        if kind == "str" or kind == "raw":
            value = _unquote(text)
            return lambda s: value
        if kind == "num":
            num = float(text) if "." in text else int(text)
            return lambda s: num
        if kind == "lp":
            inner = self._command()
            if self.pos >= len(self.toks) or self.toks[self.pos][0] != "rp":
                raise TemplateError(f"missing ) in {{{{ {self.src} }}}}")
            self.pos += 1
            chain: list[str] = []
            if (
                self.pos < len(self.toks)
                and self.toks[self.pos][0] == "field"
                and self.toks[self.pos][1].startswith(".")
            ):
                chain = [p for p in self.toks[self.pos][1].split(".") if p]
                self.pos += 1
            return lambda s: _chain(inner(s), chain)
        if kind == "field":
            if text in ("true", "false"):
                return lambda s: text == "true"
            if text.startswith("$"):
                head, _, rest = text.partition(".")
                chain = [p for p in rest.split(".") if p]
                return lambda s: _chain(s.lookup(head), chain)
            if text == ".":
                return lambda s: s.dot
            if text.startswith("."):
                chain = [p for p in text.split(".") if p]
                return lambda s: _chain(s.dot, chain)
            raise TemplateError(f"function {text!r} is not supported by the emulator")
        raise TemplateError(f"unexpected {text!r} in {{{{ {self.src} }}}}")


def _chain(v: Any, names: list[str]) -> Any:
    for n in names:
        v = _field(v, n)
    return v


def _and(args: list[Callable[[_Scope], Any]], s: _Scope) -> Any:
    v: Any = True
    for a in args:
        v = a(s)
        if not _truth(v):
            return v
    return v


def _or(args: list[Callable[[_Scope], Any]], s: _Scope) -> Any:
    v: Any = False
    for a in args:
        v = a(s)
        if _truth(v):
            return v
    return v


def _fmt(v: Any) -> str:
    if v is None:
        return "<no value>"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


# ---------------------------------------------------------------- tree


@dataclass
class _Node:
    kind: str  # text | out | if | range | set | decl
    text: str = ""
    expr: Callable[[_Scope], Any] | None = None
    branches: list[tuple[Callable[[_Scope], Any] | None, list[_Node]]] = field(default_factory=list)
    vars: tuple[str, ...] = ()
    body: list[_Node] = field(default_factory=list)
    else_body: list[_Node] = field(default_factory=list)


_DECL = re.compile(r"^(\$[A-Za-z0-9_]*)\s*(:=|=)\s*(.+)$", re.S)
_RANGE = re.compile(r"^range\s+(?:(\$[A-Za-z0-9_]*)\s*(?:,\s*(\$[A-Za-z0-9_]*))?\s*:=\s*)?(.+)$", re.S)


def _parse(items: list[_Text | _Action], pos: int, stop: tuple[str, ...]) -> tuple[list[_Node], int, str]:
    """Nodes from ``items[pos:]`` up to an ``{{ end }}``/``{{ else }}`` named in ``stop``; returns the nodes,
    the position of that terminator and its text ("" at the end of input)."""
    nodes: list[_Node] = []
    while pos < len(items):
        it = items[pos]
        if isinstance(it, _Text):
            nodes.append(_Node("text", text=it.text))
            pos += 1
            continue
        body = it.body
        word = body.split(None, 1)[0] if body else ""
        if word in ("end", "else") and word in stop:
            return nodes, pos, body
        if word in ("end", "else"):
            raise TemplateError(f"unexpected {{{{ {body} }}}}")
        if word == "if":
            node, pos = _parse_if(items, pos, body)
        elif word == "range":
            node, pos = _parse_range(items, pos, body)
        elif word in ("with", "define", "template", "block", "break", "continue"):
            raise TemplateError(f"{{{{ {word} }}}} is not supported by the emulator")
        else:
            node = _parse_simple(body)
            pos += 1
        nodes.append(node)
    if stop:
        raise TemplateError("missing {{ end }}")
    return nodes, pos, ""


def _parse_if(items: list[_Text | _Action], pos: int, body: str) -> tuple[_Node, int]:
    """``{{ if }}`` at ``items[pos]`` with its ``else if`` / ``else`` branches; returns the node and the
    position just past its ``{{ end }}``."""
    node = _Node("if")
    cond = _Expr(body[2:]).parse()
    pos += 1
    while True:
        sub, pos, term = _parse(items, pos, ("end", "else"))
        node.branches.append((cond, sub))
        pos += 1
        if term == "end":
            break
        rest = term[4:].strip()
        if rest.startswith("if "):
            cond = _Expr(rest[3:]).parse()
        elif rest == "":
            sub, pos, term = _parse(items, pos, ("end",))
            node.branches.append((None, sub))
            pos += 1
            break
        else:
            raise TemplateError(f"unsupported {{{{ {term} }}}}")
    return node, pos


def _parse_range(items: list[_Text | _Action], pos: int, body: str) -> tuple[_Node, int]:
    """``{{ range }}`` at ``items[pos]`` (optional ``$i, $v :=`` and ``else``); returns the node and the
    position just past its ``{{ end }}``."""
    m = _RANGE.match(body)
    if not m:
        raise TemplateError(f"unsupported {{{{ {body} }}}}")
    names = tuple(v for v in (m.group(1), m.group(2)) if v)
    node = _Node("range", expr=_Expr(m.group(3)).parse(), vars=names)
    node.body, pos, term = _parse(items, pos + 1, ("end", "else"))
    if term.startswith("else"):
        node.else_body, pos, term = _parse(items, pos + 1, ("end",))
    return node, pos + 1


def _parse_simple(body: str) -> _Node:
    """A variable declaration (``$x := e``), assignment (``$x = e``) or output action."""
    m = _DECL.match(body)
    if m:
        return _Node(
            "decl" if m.group(2) == ":=" else "set",
            vars=(m.group(1),),
            expr=_Expr(m.group(3)).parse(),
        )
    return _Node("out", expr=_Expr(body).parse())


def _exec(nodes: list[_Node], s: _Scope, out: list[str]) -> None:
    s.vars.append({})
    try:
        for n in nodes:
            if n.kind == "text":
                out.append(n.text)
            elif n.kind == "out":
                out.append(_fmt(n.expr(s)))  # type: ignore[misc]
            elif n.kind == "decl":
                s.vars[-1][n.vars[0]] = n.expr(s)  # type: ignore[misc]
            elif n.kind == "set":
                s.assign(n.vars[0], n.expr(s))  # type: ignore[misc]
            elif n.kind == "if":
                for cond, body in n.branches:
                    if cond is None or _truth(cond(s)):
                        _exec(body, s, out)
                        break
            elif n.kind == "range":
                seq = n.expr(s)  # type: ignore[misc]
                items = list(seq.items()) if isinstance(seq, dict) else list(enumerate(seq or []))
                if not items:
                    _exec(n.else_body, s, out)
                for i, v in items:
                    saved = s.dot
                    s.dot = v
                    frame: dict[str, Any] = {}
                    if len(n.vars) == 1:
                        frame[n.vars[0]] = v
                    elif len(n.vars) == 2:
                        frame[n.vars[0]], frame[n.vars[1]] = i, v
                    s.vars.append(frame)
                    try:
                        _exec(n.body, s, out)
                    finally:
                        s.vars.pop()
                        s.dot = saved
    finally:
        s.vars.pop()


@dataclass
class Message:
    Role: str
    Content: str


class GoTemplate:
    def __init__(self, src: str) -> None:
        self.src = src
        self.nodes, _, _ = _parse(_lex(src), 0, ())

    def execute(self, data: dict[str, Any]) -> str:
        out: list[str] = []
        _exec(self.nodes, _Scope(dot=data, root=data), out)
        return "".join(out)


def collate(messages: Sequence[dict[str, str]]) -> tuple[str, list[Message]]:
    """Ollama's ``collate``: system texts joined by blank lines; consecutive same-role messages merged."""
    system: list[str] = []
    out: list[Message] = []
    for m in messages:
        if m["role"] == "system":
            system.append(m["content"])
        if out and out[-1].Role == m["role"] and m["role"] != "tool":
            out[-1].Content += "\n\n" + m["content"]
        else:
            out.append(Message(m["role"], m["content"]))
    return "\n\n".join(system), out


def render_ollama(template: str, messages: Sequence[dict[str, str]], system: str = "") -> str:
    """What Ollama's chat endpoint feeds the model: the Modelfile SYSTEM is prepended when the request has none."""
    msgs = list(messages)
    if system and (not msgs or msgs[0]["role"] != "system"):
        msgs = [{"role": "system", "content": system}, *msgs]
    sys_text, collated = collate(msgs)
    return GoTemplate(template).execute(
        {"System": sys_text, "Messages": collated, "Tools": None, "Response": ""}
    )
