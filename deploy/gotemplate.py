"""A small emulator of Go's text/template, for the subset our Ollama TEMPLATEs use.

Go is usually not installed, so this executes a TEMPLATE the way Ollama would (``template.Execute`` with
``System`` and ``Messages`` after Ollama's ``collate``), letting tests and the Modelfile writer check that the
TEMPLATE reproduces the training chat template token for token.

Supported: text; ``{{ pipeline }}``; trim markers ``{{-`` / ``-}}``; ``if`` / ``else if`` / ``else`` / ``end``;
``range $i, $v := pipeline`` and ``range pipeline``; ``$x := pipeline`` and ``$x = pipeline``; operands
``.Field``, ``$``, ``$.Field``, ``$var``, ``$var.Field``, string / number / bool literals, parenthesised
pipelines with a trailing ``.Field``; functions ``and or not eq ne lt le gt ge len index slice print``.
Anything else raises :class:`TemplateError`, so an unsupported construct can never pass silently.

Go's semantics are kept where they differ from Python's: ``len`` / ``index`` / ``slice`` count a string's
UTF-8 bytes and check bounds; ``eq`` / ``lt`` refuse to compare different kinds (an int with a float, a bool
with an int); floats print as Go's ``%v``; ``print`` spaces non-string operands; undefined variables fail
at parse time, even in a branch never taken; the data has every field Ollama's has (``.Think``,
``.Tools`` printing ``null``, a message's ``Thinking`` / ``ToolCalls``...). Values Go would print as
pointers or Go syntax (lists, maps, structs) are refused. ``tests/test_gotemplate_go.py`` checks all of
this against the real Go engine.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from decimal import Decimal
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


_SPACE = " \t\r\n"  # Go's trim markers and trimming know only these four


def _lex(src: str) -> list[_Text | _Action]:
    """Split into text and actions, applying Go's trim markers (``{{- `` and `` -}}``)."""
    items: list[_Text | _Action] = []
    pos = 0
    trim_next = False
    while True:
        start = src.find("{{", pos)
        text = src[pos:] if start < 0 else src[pos:start]
        trim_prev = start >= 0 and src[start + 2 : start + 3] == "-" and src[start + 3 : start + 4] in _SPACE
        if trim_next:
            text = text.lstrip(_SPACE)
        if trim_prev:
            text = text.rstrip(_SPACE)
        if text:
            items.append(_Text(text))
        if start < 0:
            return items
        end = _action_end(src, start)
        body = src[start + 2 : end]
        if trim_prev:
            body = body[2:]
        trim_next = len(body) >= 2 and body[-1] == "-" and body[-2] in _SPACE
        if trim_next:
            body = body[:-2]
        pos = end + 2
        if body.startswith("/*"):
            if not body.endswith("*/"):
                raise TemplateError(f"comment ends before closing delimiter at offset {start}")
            continue
        items.append(_Action(body.strip()))


def _action_end(src: str, start: int) -> int:
    """Offset of the ``}}`` that closes the action opened at ``start``. Like Go's lexer, a quoted string or
    a comment may contain ``}}`` (``{{ "}}" }}`` is one action)."""
    i = start + 2
    while i < len(src):
        if src.startswith("}}", i):
            return i
        if src[i] == '"':
            i += 1
            while i < len(src) and src[i] != '"':
                if src[i] == "\\":
                    i += 1
                if i < len(src) and src[i] == "\n":
                    break
                i += 1
            if i >= len(src) or src[i] != '"':
                raise TemplateError(f"unterminated quoted string at offset {start}")
        elif src[i] == "`":
            i = src.find("`", i + 1)
            if i < 0:
                raise TemplateError(f"unterminated raw string at offset {start}")
        elif src.startswith("/*", i):
            i = src.find("*/", i + 2)
            if i < 0:
                raise TemplateError(f"unclosed comment at offset {start}")
            i += 1
        i += 1
    raise TemplateError(f"unclosed action at offset {start}")


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
    """``.name`` of a map (a missing key is nil: Ollama sets missingkey=zero) or of a struct (a dataclass here;
    only its declared fields, never Python attributes such as ``str.upper``)."""
    if isinstance(obj, dict):
        return obj.get(name)
    if obj is None:
        raise TemplateError(f"nil pointer evaluating .{name}")
    if not is_dataclass(obj) or name not in {f.name for f in fields(obj)}:
        raise TemplateError(f"can't evaluate field {name} in type {type(obj).__name__}")
    return getattr(obj, name)


def _kind(v: Any) -> str:
    """Go's basic kind of a value, which decides what ``eq`` / ``lt`` may compare."""
    for kind, types in (("nil", type(None)), ("bool", bool), ("int", int), ("float", float), ("string", str)):
        if isinstance(v, types):
            return kind
    return "other"


def _eq(a: Any, *bs: Any) -> bool:
    """Go's ``eq``: ``a`` equals any of ``bs``. Different kinds are an error unless one side is nil (then
    unequal); ints never equal floats; structs compare by identity (Ollama passes pointers)."""
    if not bs:
        raise TemplateError("missing argument for comparison")
    for b in bs:
        if isinstance(a, (list, dict)) or isinstance(b, (list, dict)):
            raise TemplateError("non-comparable type in eq")
        ka, kb = _kind(a), _kind(b)
        if ka != kb and "nil" not in (ka, kb):
            raise TemplateError(f"incompatible types for comparison: {a!r} {b!r}")
        if ka == kb and (a is b if ka == "other" else a == b):
            return True
    return False


def _less(a: Any, b: Any) -> bool:
    ka, kb = _kind(a), _kind(b)
    if ka not in ("int", "float", "string") or kb not in ("int", "float", "string"):
        raise TemplateError(f"invalid type for comparison: {a!r} {b!r}")
    if ka != kb:
        raise TemplateError(f"incompatible types for comparison: {a!r} {b!r}")
    return bool(a < b)


_ESCAPE = re.compile(r"\\(?:x[0-9A-Fa-f]{2}|u[0-9A-Fa-f]{4}|U[0-9A-Fa-f]{8}|[0-7]{3}|[abfnrtv\\\"])|\\")
_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
}


def _unquote(s: str) -> str:
    """Go's ``strconv.Unquote``: ``\\xNN`` and octal escapes are bytes, ``\\u`` / ``\\U`` code points; any
    other escape (``\\'``, ``\\q``) is a syntax error, as in Go."""
    if s.startswith("`"):
        return s[1:-1].replace("\r", "")  # Go drops carriage returns from raw strings
    out = bytearray()
    pos = 0
    body = s[1:-1]
    for m in _ESCAPE.finditer(body):
        out += body[pos : m.start()].encode("utf-8")
        out += _escape_bytes(m.group(0), s)
        pos = m.end()
    out += body[pos:].encode("utf-8")
    return out.decode("utf-8", errors="replace")


def _escape_bytes(esc: str, literal: str) -> bytes:
    kind = esc[1:2]
    code = -1
    if kind == "x":
        code = int(esc[2:], 16)
    elif kind.isdigit():
        code = int(esc[1:], 8)
    if 0 <= code <= 255:
        return bytes([code])
    if kind in ("u", "U"):
        code = int(esc[2:], 16)
        if code <= 0x10FFFF and not 0xD800 <= code < 0xE000:
            return chr(code).encode("utf-8")
    elif kind in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[kind].encode("utf-8")
    raise TemplateError(f"invalid escape {esc!r} in {literal}")


_FUNCS: dict[str, Callable[..., Any]] = {
    "not": lambda a: not _truth(a),
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _less,
    "le": lambda a, b: _less(a, b) or _eq(a, b),
    "gt": lambda a, b: not (_less(a, b) or _eq(a, b)),
    "ge": lambda a, b: not _less(a, b),
    "len": lambda a: len(_sequence(a, "len")),
    "index": lambda a, *ix: _index(a, ix),
    "slice": lambda a, *ix: _slice(a, ix),
    "print": lambda *a: _print(a),
}


def _sequence(a: Any, what: str) -> Any:
    """What Go's len/index/slice see: a string is its UTF-8 bytes."""
    if isinstance(a, str):
        return a.encode("utf-8")
    if isinstance(a, (list, tuple, dict)):
        return a
    raise TemplateError(f"{what} of {'nil' if a is None else type(a).__name__} is not allowed")


def _int_arg(i: Any, n: int, what: str) -> int:
    if _kind(i) != "int":
        raise TemplateError(f"cannot {what} with type {type(i).__name__}")
    if not 0 <= i <= n:
        raise TemplateError(f"index out of range: {i}")
    return int(i)


def _index(a: Any, ix: Sequence[Any]) -> Any:
    """Go's ``index``: bounds are checked (no negative indices); a string yields bytes; a missing map key nil."""
    for i in ix:
        seq = _sequence(a, "index")
        if isinstance(seq, dict):
            if not isinstance(i, str):
                raise TemplateError(f"map keys are strings, not {type(i).__name__}")
            a = seq.get(i)
            continue
        a = seq[_int_arg(i, len(seq) - 1, "index")]
    return a


def _slice(a: Any, ix: Sequence[Any]) -> Any:
    """Go's ``slice x i j``: bounds checked, ``i <= j``; a string is sliced by bytes."""
    seq = _sequence(a, "slice")
    if isinstance(seq, dict) or len(ix) > 3 or (len(ix) == 3 and isinstance(a, str)):
        raise TemplateError(f"cannot slice {type(a).__name__} with {len(ix)} indexes")
    bounds = [_int_arg(i, len(seq), "slice") for i in ix]
    if bounds != sorted(bounds):
        raise TemplateError(f"invalid slice indexes {bounds}")
    out = seq[bounds[0] if bounds else 0 : bounds[1] if len(bounds) > 1 else len(seq)]
    return out.decode("utf-8", errors="replace") if isinstance(a, str) else out


def _call(name: str, fn: Callable[..., Any], args: list[Any]) -> Any:
    """Call a template function; a wrong argument count or type fails the template, as it does in Go."""
    try:
        return fn(*args)
    except TemplateError:
        raise
    except (TypeError, ValueError, IndexError, KeyError, AttributeError) as e:
        raise TemplateError(f"error calling {name}: {e}") from None


class _Expr:
    def __init__(self, expr: str, declared: list[str]) -> None:
        self.src = expr
        self.toks = _tokens(expr)
        self.pos = 0
        self.declared = declared

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
        fn, name = _FUNCS[fname], fname
        return lambda s: _call(name, fn, [a(s) for a in args])

    def _operand(self) -> Callable[[_Scope], Any]:
        kind, text = self.toks[self.pos]
        self.pos += 1
        if kind == "str" or kind == "raw":
            value = _unquote(text)
            return lambda s: value
        if kind == "num":
            num = float(text) if "." in text else int(text)
            if isinstance(num, int) and not -(2**63) <= num < 2**63:
                raise TemplateError(f"integer overflow: {text}")
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
                if head != "$" and head not in self.declared:
                    raise TemplateError(f"undefined variable {head!r} in {{{{ {self.src} }}}}")
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
    if not args:
        raise TemplateError("wrong number of args for and: want at least 1 got 0")
    v: Any = True
    for a in args:
        v = a(s)
        if not _truth(v):
            return v
    return v


def _or(args: list[Callable[[_Scope], Any]], s: _Scope) -> Any:
    if not args:
        raise TemplateError("wrong number of args for or: want at least 1 got 0")
    v: Any = False
    for a in args:
        v = a(s)
        if _truth(v):
            return v
    return v


def _fmt(v: Any, nil: str = "<no value>") -> str:
    """How Go prints a value (``nil``: what a nil prints as: an action writes ``<no value>``, ``print`` ``<nil>``).
    Lists, maps and structs are refused: Go prints pointer addresses or Go syntax that we do not reproduce."""
    if v is None:
        return nil
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, str)):
        return str(v)
    if isinstance(v, float):
        return _go_float(v)
    go_string = getattr(v, "go_string", None)  # a Go type with a String method
    if callable(go_string):
        return str(go_string())
    raise TemplateError(f"printing a {type(v).__name__} is not supported by the emulator")


def _print(args: Sequence[Any]) -> str:
    """Go's ``fmt.Sprint``: a space between two operands when neither is a string."""
    out: list[str] = []
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(_fmt(a, nil="<nil>"))
    return "".join(out)


def _go_float(v: float) -> str:
    """Go's ``%v`` for a float64: the shortest digits, in exponent form below 1e-4 or from 1e6 (``1e+06``)."""
    if math.isnan(v) or math.isinf(v):
        return "NaN" if math.isnan(v) else ("+Inf" if v > 0 else "-Inf")
    sign, digit_tuple, exp = Decimal(repr(v)).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + int(exp)  # the decimal point sits after this many digits
    neg = "-" if sign else ""
    if digits == "0":
        return neg + "0"
    if point - 1 < -4 or point - 1 >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        e = point - 1
        return f"{neg}{mantissa}e{'-' if e < 0 else '+'}{abs(e):02d}"
    if point <= 0:
        return f"{neg}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return neg + digits + "0" * (point - len(digits))
    return f"{neg}{digits[:point]}.{digits[point:]}"


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


def _parse(
    items: list[_Text | _Action], pos: int, stop: tuple[str, ...], declared: list[str]
) -> tuple[list[_Node], int, str]:
    """Nodes from ``items[pos:]`` up to an ``{{ end }}``/``{{ else }}`` named in ``stop``; returns the nodes,
    the position of that terminator and its text ("" at the end of input). ``declared``: the variables in
    scope, checked while parsing as Go does (an undefined variable fails even in a branch never taken)."""
    nodes: list[_Node] = []
    while pos < len(items):
        it = items[pos]
        if isinstance(it, _Text):
            nodes.append(_Node("text", text=it.text))
            pos += 1
            continue
        body = it.body
        word = body.split(None, 1)[0] if body else ""
        if word == "end" and body != "end":
            raise TemplateError(f"unexpected {body[3:].strip()!r} in end")
        if word in ("end", "else") and word in stop:
            return nodes, pos, body
        if word in ("end", "else"):
            raise TemplateError(f"unexpected {{{{ {body} }}}}")
        if word == "if":
            node, pos = _parse_control(_parse_if, items, pos, body, declared)
        elif word == "range":
            node, pos = _parse_control(_parse_range, items, pos, body, declared)
        elif word in ("with", "define", "template", "block", "break", "continue"):
            raise TemplateError(f"{{{{ {word} }}}} is not supported by the emulator")
        else:
            node = _parse_simple(body, declared)
            pos += 1
        nodes.append(node)
    if stop:
        raise TemplateError("missing {{ end }}")
    return nodes, pos, ""


def _parse_control(
    parser: Callable[..., tuple[_Node, int]],
    items: list[_Text | _Action],
    pos: int,
    body: str,
    declared: list[str],
) -> tuple[_Node, int]:
    """An ``if`` / ``range``: variables declared inside it go out of scope at its ``{{ end }}``."""
    mark = len(declared)
    try:
        return parser(items, pos, body, declared)
    finally:
        del declared[mark:]


def _parse_if(items: list[_Text | _Action], pos: int, body: str, declared: list[str]) -> tuple[_Node, int]:
    """``{{ if }}`` at ``items[pos]`` with its ``else if`` / ``else`` branches; returns the node and the
    position just past its ``{{ end }}``."""
    node = _Node("if")
    cond = _Expr(body[2:], declared).parse()
    pos += 1
    while True:
        sub, pos, term = _parse(items, pos, ("end", "else"), declared)
        node.branches.append((cond, sub))
        pos += 1
        if term == "end":
            break
        rest = term[4:].strip()
        if rest.startswith("if "):
            cond = _Expr(rest[3:], declared).parse()
        elif rest == "":
            sub, pos, term = _parse(items, pos, ("end",), declared)
            node.branches.append((None, sub))
            pos += 1
            break
        else:
            raise TemplateError(f"unsupported {{{{ {term} }}}}")
    return node, pos


def _parse_range(items: list[_Text | _Action], pos: int, body: str, declared: list[str]) -> tuple[_Node, int]:
    """``{{ range }}`` at ``items[pos]`` (optional ``$i, $v :=`` and ``else``); returns the node and the
    position just past its ``{{ end }}``."""
    m = _RANGE.match(body)
    if not m:
        raise TemplateError(f"unsupported {{{{ {body} }}}}")
    names = tuple(v for v in (m.group(1), m.group(2)) if v)
    declared.extend(names)
    node = _Node("range", expr=_Expr(m.group(3), declared).parse(), vars=names)
    node.body, pos, term = _parse(items, pos + 1, ("end", "else"), declared)
    if term != "end" and term != "else":  # Go has no "else if" in a range
        raise TemplateError(f"unsupported {{{{ {term} }}}} in a range")
    if term == "else":
        node.else_body, pos, term = _parse(items, pos + 1, ("end",), declared)
    return node, pos + 1


def _parse_simple(body: str, declared: list[str]) -> _Node:
    """A variable declaration (``$x := e``), assignment (``$x = e``) or output action."""
    m = _DECL.match(body)
    if m:
        declared.append(m.group(1))
        return _Node(
            "decl" if m.group(2) == ":=" else "set",
            vars=(m.group(1),),
            expr=_Expr(m.group(3), declared).parse(),
        )
    return _Node("out", expr=_Expr(body, declared).parse())


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
                items = _range_items(seq)
                if not items:  # Go binds the range variables to the (empty) collection here
                    s.vars.append(dict.fromkeys(n.vars, seq))
                    try:
                        _exec(n.else_body, s, out)
                    finally:
                        s.vars.pop()
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


def _range_items(seq: Any) -> list[tuple[Any, Any]]:
    """(key, element) pairs as Go ranges them: a nil is empty, map keys come sorted."""
    if seq is None:
        return []
    if isinstance(seq, dict):
        return sorted(seq.items())
    if isinstance(seq, (list, tuple)):
        return list(enumerate(seq))
    raise TemplateError(f"range can't iterate over {seq!r}")


@dataclass
class ToolCallFunction:
    Index: int
    Name: str
    Arguments: dict[str, Any]


@dataclass
class ToolCall:
    ID: str
    Function: ToolCallFunction


@dataclass
class Message:
    """One of Ollama's ``.Messages`` (its templateMessage): every field a template may name exists."""

    Role: str
    Content: str
    Thinking: str = ""
    Images: list[bytes] = field(default_factory=list)
    ToolCalls: list[ToolCall] = field(default_factory=list)
    ToolName: str = ""
    ToolCallID: str = ""


class _NilTools(list[Any]):
    """Ollama's ``.Tools`` when a request has none: a nil slice whose String method writes JSON ``null``."""

    def go_string(self) -> str:
        return "null"


class GoTemplate:
    def __init__(self, src: str) -> None:
        self.src = src
        self.nodes, _, _ = _parse(_lex(src), 0, (), ["$"])

    def execute(self, data: dict[str, Any]) -> str:
        out: list[str] = []
        _exec(self.nodes, _Scope(dot=data, root=data), out)
        return "".join(out)


def collate(messages: Sequence[dict[str, Any]]) -> tuple[str, list[Message]]:
    """Ollama's ``collate``: system texts joined by blank lines; consecutive same-role messages merged (their
    contents only, as Ollama does); roles lower-cased as Ollama's JSON decoding does. Optional message keys
    (Ollama's JSON names): ``thinking``, ``tool_calls``, ``tool_name``, ``tool_call_id``."""
    system: list[str] = []
    out: list[Message] = []
    for m in messages:
        role = m["role"].lower()
        if role == "system":
            system.append(m["content"])
        if out and out[-1].Role == role and role != "tool":
            out[-1].Content += "\n\n" + m["content"]
        else:
            out.append(_message(role, m))
    return "\n\n".join(system), out


def _message(role: str, m: dict[str, Any]) -> Message:
    calls = [
        ToolCall(
            ID=c.get("id", ""),
            Function=ToolCallFunction(
                Index=c["function"].get("index", 0),
                Name=c["function"]["name"],
                Arguments=TemplateArgs(_json_numbers_as_floats(c["function"].get("arguments") or {})),
            ),
        )
        for c in m.get("tool_calls") or []
    ]
    return Message(
        role,
        m["content"],
        Thinking=m.get("thinking", ""),
        ToolCalls=calls,
        ToolName=m.get("tool_name", ""),
        ToolCallID=m.get("tool_call_id", ""),
    )


def _json_numbers_as_floats(v: Any) -> Any:
    """Ollama decodes tool-call arguments into Go ``any``: every JSON number becomes a float64."""
    if isinstance(v, dict):
        return {k: _json_numbers_as_floats(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_numbers_as_floats(x) for x in v]
    return float(v) if _kind(v) == "int" else v


class TemplateArgs(dict):  # type: ignore[type-arg]
    """Ollama's templateArgs: tool-call arguments, a map whose String method writes its JSON."""

    def go_string(self) -> str:
        return go_json(self)


def go_json(v: Any) -> str:
    """Go's ``json.Marshal``: map keys sorted, no spaces, ``<>&`` escaped, float64s written as Go does."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "{" + ",".join(go_json(str(k)) + ":" + go_json(x) for k, x in sorted(v.items())) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(go_json(x) for x in v) + "]"
    if isinstance(v, float):
        return _go_json_float(v)
    if isinstance(v, int):
        return str(v)
    text = json.dumps(str(v), ensure_ascii=False)
    for c in "<>&\u2028\u2029":  # escaped by json.Marshal (HTML safety, JavaScript line separators)
        text = text.replace(c, f"\\u{ord(c):04x}")
    return text


def _go_json_float(v: float) -> str:
    """encoding/json's float64: plain digits, exponent form below 1e-6 or from 1e21 (``1e+21``, ``1e-7``)."""
    if v != 0 and (abs(v) < 1e-6 or abs(v) >= 1e21):
        mantissa, _, exp = repr(v).partition("e")
        sign, digits = exp[0], exp[1:].lstrip("0") or "0"
        return f"{mantissa.removesuffix('.0')}e{sign}{digits}"
    return format(Decimal(repr(v)).normalize(), "f")


def ollama_values(system: str, messages: list[Message]) -> dict[str, Any]:
    """The data Ollama executes a ``.Messages`` TEMPLATE with (a chat request without tools or ``think``)."""
    return {
        "System": system,
        "Messages": messages,
        "Tools": _NilTools(),
        "Response": "",
        "Think": False,
        "ThinkLevel": "",
        "IsThinkSet": False,
    }


def render_ollama(template: str, messages: Sequence[dict[str, Any]], system: str = "") -> str:
    """What Ollama's chat endpoint feeds the model: the Modelfile SYSTEM is prepended when the request has none."""
    msgs = list(messages)
    if system and (not msgs or msgs[0]["role"] != "system"):
        msgs = [{"role": "system", "content": system}, *msgs]
    sys_text, collated = collate(msgs)
    return GoTemplate(template).execute(ollama_values(sys_text, collated))
