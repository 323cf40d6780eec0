"""The structure of a chat template, read by rendering probe conversations with it (never from a model name).

A chat template is treated as a black box: ``apply_chat_template`` renders conversations whose contents are
unique markers (``«U1»``, ``«A1»``, ``«S»``...), and the text between the markers is the structure:

- ``lead``: everything before the first user message's content when there is no system message (BOS, a
  default system block, the user opener);
- ``assistant_after_user`` / ``user_after_assistant``: the text between a user's content and the next
  assistant's content, and back (end-of-turn, next opener, a BOS per turn as Llama-2 has);
- ``assistant_open``: that text when the assistant message is the last one (Ollama continues it; Qwen3 puts
  an empty ``<think>`` block there), and ``generation``: what follows the last user message;
- the system prompt's place: its own block or merged into the first user turn (both are text around the
  system content before the first user content), before the *last* user message (Mistral v3), or nowhere:
  a template that raises on a system message or drops it gets "unsupported", and the system prompt is then
  merged into the first user message as ``system + "\\n\\n" + user`` (what Gemma 3's own template does);
- fixed text around the system prompt (Llama 3.1's "Cutting Knowledge Date" header) is simply part of that
  text, rendered exactly as training did; a date in it is noted (the template's default, or the export date
  when the template reads ``strftime_now``);
- the generation prompt with ``enable_thinking=False`` (Qwen3), whether content is trimmed, and the tool-call
  format when it has the ChatML/Qwen ``<tool_call>`` shape (:func:`derive_tool_format`).

A template that raises on a probe (strict alternation, no system role) is information, not a crash. What the
structure cannot describe raises :class:`ChatStructureError` with a one-line reason.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass, field
from typing import Any

S, U1, U2, U3, A1, A2 = (f"\u00ab{n}\u00bb" for n in ("S", "U1", "U2", "U3", "A1", "A2"))
MERGED_SYSTEM_SEPARATOR = (
    "\n\n"  # how a system prompt joins the first user message when there is no system role
)
DATE_PATTERN = re.compile(r"\b\d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\w* \d{4}\b")


class ChatStructureError(ValueError):
    """The template's structure cannot be expressed as an Ollama TEMPLATE (one-line reason)."""


class ProbeFailed(ChatStructureError):
    """The template raised on a probe conversation (callers that expect it turn it into information)."""


@dataclass
class ChatStructure:
    bos_text: str  # the BOS token text the template renders first ("" if none)
    lead: str  # before the first user content, without a system message (includes bos_text)
    assistant_after_user: str
    user_after_assistant: str
    assistant_open: str  # before the content of an assistant message that is the last one
    generation: str  # after the last user message (add_generation_prompt=True)
    system: str  # "block" | "first_user" | "last_user" | "unsupported"
    system_open: str = ""  # before the system content ("block"/"first_user": includes bos_text)
    system_close: str = ""  # between the system content and the user content that follows it
    system_last_open: str = ""  # "last_user", when that user is not the first: after the assistant, before S
    system_last_close: str = ""  # "last_user": between the system content and the last user content
    default_system: str | None = None
    generation_no_think: str | None = None  # the generation prompt with enable_thinking=False
    trims_content: bool = False
    tools: ToolFormat | None = None  # when the TEMPLATE can render the template's tool format
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the Modelfile comment and the corpus table."""
        where = {
            "block": "system block",
            "first_user": f"system merged into the first user turn (then {self.system_close!r})",
            "last_user": "system merged into the last user turn",
            "unsupported": "no system role (system merged into the first user message)",
        }[self.system]
        parts = [where, f"after the last user turn {self.generation!r}"]
        if self.default_system:
            short = (
                self.default_system if len(self.default_system) <= 60 else self.default_system[:57] + "..."
            )
            parts.append(f"default system prompt {short!r}")
        return "; ".join(parts)


def render(tok: Any, msgs: list[dict[str, Any]], gen: bool, **kwargs: Any) -> str:
    """``apply_chat_template`` as text; a template error (``raise_exception``, a bad index...) is ProbeFailed."""
    try:
        out = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen, **kwargs)
    except Exception as e:  # jinja2 TemplateError, raise_exception(), TypeError from a template: all probes
        raise ProbeFailed(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(out, str):
        raise ChatStructureError(f"apply_chat_template returned {type(out).__name__}, not text")
    return out


def split_markers(text: str, markers: list[str]) -> list[str] | None:
    """The text before, between and after ``markers`` (each exactly once, in order); None otherwise."""
    pieces: list[str] = []
    pos = 0
    for m in markers:
        i = text.find(m, pos)
        if i < 0 or text.count(m) != 1:
            return None
        pieces.append(text[pos:i])
        pos = i + len(m)
    pieces.append(text[pos:])
    return pieces


def _msgs(*spec: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"role": r, "content": c} for r, c in spec]


CHAT5 = _msgs(("user", U1), ("assistant", A1), ("user", U2), ("assistant", A2), ("user", U3))


def _turns(tok: Any) -> tuple[str, str, str, str]:
    """(lead, assistant_after_user, user_after_assistant, generation) from a five-message chat."""
    try:
        text = render(tok, CHAT5, True)
    except ProbeFailed as e:
        raise ChatStructureError(f"the template fails on a plain user/assistant chat ({e})") from None
    p = split_markers(text, [U1, A1, U2, A2, U3])
    if p is None:
        raise ChatStructureError("the template drops, repeats or reorders message contents")
    lead, j_ua, j_au, j_ua2, j_au2, gen = p
    if j_ua != j_ua2 or j_au != j_au2:
        raise ChatStructureError(
            f"turns render differently by position ({j_ua!r} vs {j_ua2!r}, {j_au!r} vs {j_au2!r})"
        )
    return lead, j_ua, j_au, gen


def _assistant_open(tok: Any, lead: str, j_ua: str, j_au: str) -> str:
    """The text before a final assistant message's content."""
    text = render(tok, CHAT5[:4], False)
    p = split_markers(text, [U1, A1, U2, A2])
    if p is None or p[:3] != [lead, j_ua, j_au]:
        raise ChatStructureError(
            "a chat ending with an assistant message renders its earlier turns differently"
        )
    return p[3]


def derive_structure(tok: Any) -> ChatStructure:
    """Read the structure of ``tok.chat_template`` (see the module docstring)."""
    template = getattr(tok, "chat_template", None)
    if not isinstance(template, str) or not template:
        raise ChatStructureError(
            "the tokenizer has no chat_template; the Modelfile TEMPLATE must match training"
        )
    lead, j_ua, j_au, gen = _turns(tok)
    single = render(tok, CHAT5[:1], True)
    if single != lead + U1 + gen:
        raise ChatStructureError(f"a single-turn chat renders differently: {single[:120]!r}")
    bos = tok.bos_token or ""
    bos_text = bos if bos and "bos_token" in template and lead.startswith(bos) else ""
    st = ChatStructure(bos_text, lead, j_ua, j_au, _assistant_open(tok, lead, j_ua, j_au), gen, "unsupported")
    _read_system(tok, st)
    _read_thinking(tok, st)
    st.trims_content = _trims(tok)
    _note_dates(template, st)
    st.tools, tool_note = derive_tool_format(tok, st)
    if tool_note:
        st.notes.append(tool_note)
    return st


def _read_system(tok: Any, st: ChatStructure) -> None:
    """Where the system prompt goes; "unsupported" when the template raises on it or drops it."""
    try:
        one = render(tok, _msgs(("system", S), ("user", U1)), True)
        five = render(tok, [{"role": "system", "content": S}, *CHAT5], True)
    except ProbeFailed as e:
        st.notes.append(f"the template rejects a system message ({e})")
        _merge_fallback(st)
        return
    p1 = split_markers(one, [S, U1])
    if p1 is None:
        st.notes.append("the template drops the system message")
        _merge_fallback(st)
        return
    if p1[2] != st.generation:
        raise ChatStructureError("a system message changes the generation prompt")
    st.system_open, st.system_close = p1[0], p1[1]
    body = [A1, U2, A2]
    first = split_markers(five, [S, U1, *body, U3])
    j = [st.assistant_after_user, st.user_after_assistant]
    if first is not None and first[2:] == [*j, *j, st.generation]:
        st.system = "first_user" if st.system_open.startswith(st.lead) and st.lead else "block"
        _read_default_system(st)
        return
    last = split_markers(five, [U1, A1, U2, A2, S, U3])
    if last is not None and last[:4] == [st.lead, *j, j[0]] and last[6] == st.generation:
        st.system, st.system_last_open, st.system_last_close = "last_user", last[4], last[5]
        return
    raise ChatStructureError(
        "a system message changes how later turns render, or sits in an unsupported place"
    )


def _merge_fallback(st: ChatStructure) -> None:
    st.system = "unsupported"
    st.system_open, st.system_close = st.lead, MERGED_SYSTEM_SEPARATOR


def _read_default_system(st: ChatStructure) -> None:
    """The system content the template uses without a system message, when its lead is a system block."""
    a, b = st.system_open, st.system_close
    if (
        st.system == "block"
        and len(st.lead) >= len(a) + len(b)
        and st.lead.startswith(a)
        and st.lead.endswith(b)
    ):
        st.default_system = st.lead[len(a) : len(st.lead) - len(b)]


def _read_thinking(tok: Any, st: ChatStructure) -> None:
    """The generation prompt with ``enable_thinking=False`` when that switch changes only the prompt's end."""
    try:
        text = render(tok, CHAT5, True, enable_thinking=False)
    except ProbeFailed:
        return
    p = split_markers(text, [U1, A1, U2, A2, U3])
    if p is None or p[-1] == st.generation:
        return
    j = [st.assistant_after_user, st.user_after_assistant]
    if p[:-1] != [st.lead, *j, *j]:
        st.notes.append(
            "enable_thinking=False changes more than the generation prompt; the TEMPLATE ignores it"
        )
        return
    st.generation_no_think = p[-1]


def _trims(tok: Any) -> bool:
    try:
        text = render(tok, _msgs(("user", f"  {U1}  ")), True)
    except ProbeFailed:
        return False
    return f"  {U1}  " not in text and U1 in text


def _note_dates(template: str, st: ChatStructure) -> None:
    """Record a date the template writes into the prompt, and where it came from."""
    texts = st.lead + st.system_open + st.system_close
    today = datetime.date.today()
    todays = {today.strftime(f) for f in ("%d %b %Y", "%d %B %Y", "%B %d, %Y", "%Y-%m-%d")}
    seen = sorted(d for d in todays if d in texts)
    if "strftime_now" in template and seen:
        st.notes.append(
            f"the template writes today's date ({seen[0]}, via strftime_now); the TEMPLATE keeps the export date"
        )
        return
    dates = sorted(set(DATE_PATTERN.findall(texts)))
    if dates:
        st.notes.append(
            f"the template writes the fixed date {', '.join(dates)}; the TEMPLATE writes the same"
        )


# ---------------------------------------------------------------- tools (the ChatML/Qwen <tool_call> form)

R1, R2 = "\u00abR1\u00bb", "\u00abR2\u00bb"
_PARAMS = {
    "type": "object",
    "required": ["city"],
    "properties": {"city": {"type": "string", "description": "City"}},
}
# Key order as Ollama's Go structs print them, so that only JSON spacing can differ from HF's ``tojson``.
TOOLS = [
    {"type": "function", "function": {"name": f, "description": f"Get the {f[4:]}", "parameters": _PARAMS}}
    for f in ("get_weather", "get_time")
]
CALLS = [
    {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
    {"type": "function", "function": {"name": "get_time", "arguments": {"city": "Rome"}}},
]


def _a(content: str, *calls: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": content, "tool_calls": list(calls)}


def _t(content: str) -> dict[str, Any]:
    return {"role": "tool", "content": content}


def _u(content: str) -> dict[str, Any]:
    return {"role": "user", "content": content}


@dataclass
class ToolFormat:
    """Texts around the tool list, the calls (``{"name": ..., "<args_key>": ...}`` JSON) and the results."""

    lead: str  # before the first tool, without a system message
    lead_system: tuple[str, str]  # (before, after) the system content, then the first tool
    separator: str  # between two tools
    after_tools: str  # after the last tool, up to the first user content
    args_key: str  # "arguments" or "parameters"
    calls_after_user: str  # an assistant without content: after the user content, before the first call
    calls_after_tool: str  # the same after a tool result
    calls_after_content: str  # an assistant with content: after its content, before the first call
    call_separator: str
    tool_after_calls: str  # after the last call, before the first tool result
    tool_after_tool: str
    assistant_after_tool: str
    assistant_open_after_tool: str  # before the content of a last (open) assistant message after a tool
    user_after_tool: str
    generation_after_tool: str
    generation_after_tool_no_think: str | None = None


def json_spans(text: str) -> list[tuple[int, int, Any]]:
    """The JSON objects written in ``text``: (start, end, value), outermost first, left to right."""
    dec, out, i = json.JSONDecoder(), [], text.find("{")
    while i >= 0:
        try:
            value, end = dec.raw_decode(text, i)
        except ValueError:
            i = text.find("{", i + 1)
            continue
        out.append((i, end, value))
        i = text.find("{", end)
    return out


def _cut(text: str, spans: list[tuple[int, int, Any]]) -> list[str]:
    """``text`` without the ``spans``: the pieces before, between and after them."""
    pieces, pos = [], 0
    for start, end, _ in spans:
        pieces.append(text[pos:start])
        pos = end
    return [*pieces, text[pos:]]


def _cut_tools(text: str) -> list[str]:
    """``text`` split around the probe tools' JSON (each once, in order)."""
    spans = [s for s in json_spans(text) if s[2] in TOOLS]
    if [s[2] for s in spans] != TOOLS:
        raise ChatStructureError("the tools are not listed as one JSON object each")
    return _cut(text, spans)


def _tool_lead(tok: Any, st: ChatStructure) -> tuple[str, tuple[str, str], str, str]:
    """(lead, (before, after) system, separator, after_tools) of a chat with tools."""
    plain = render(tok, [_u(U1)], True, tools=TOOLS)
    with_sys = render(tok, _msgs(("system", S), ("user", U1)), True, tools=TOOLS)
    if plain.count(U1) != 1 or with_sys.count(S) != 1 or with_sys.count(U1) != 1:
        raise ChatStructureError("tools move or repeat the messages")
    head, tail = plain.split(U1)
    if tail != st.generation:
        raise ChatStructureError("tools change more than the text before the first user message")
    lead, sep, after = _cut_tools(head)
    before, rest = with_sys[: with_sys.index(U1)].split(S)
    pieces = _cut_tools(rest)
    if pieces[1:] != [sep, after]:
        raise ChatStructureError("a system message changes how the tools are listed")
    return lead, (before, pieces[0]), sep, after


def _call_texts(text: str, n: int) -> list[str]:
    """[args_key, *pieces]: ``text`` split around ``n`` calls written as ``{"name": "<name>", "<key>": <JSON>}``."""
    calls = [c["function"] for c in CALLS[:n]]
    names = [c["name"] for c in calls]
    spans = [s for s in json_spans(text) if isinstance(s[2], dict) and s[2].get("name") in names]
    keys = [list(v) for _, _, v in spans]
    args_key = keys[0][1] if keys and len(keys[0]) == 2 else ""
    want = [{"name": c["name"], args_key: c["arguments"]} for c in calls]
    if [v for _, _, v in spans] != want or args_key not in ("arguments", "parameters"):
        raise ChatStructureError('tool calls are not written as {"name": ..., "arguments": ...} JSON')
    for (start, end, _), c in zip(spans, calls, strict=True):
        exact = '{"name": "' + c["name"] + '", "' + args_key + '": ' + json.dumps(c["arguments"]) + "}"
        if text[start:end] != exact:
            raise ChatStructureError(f"tool calls are written as {text[start:end]!r}, not {exact!r}")
    return [args_key, *_cut(text, spans)]


def _split_results(text: str, markers: list[str]) -> list[str]:
    p = split_markers(text, markers)
    if p is None:
        raise ChatStructureError("the template drops or reorders tool results")
    return p


def _probe_tools(tok: Any, st: ChatStructure) -> ToolFormat:
    if st.system not in ("block", "first_user"):
        raise ChatStructureError("the system prompt is not at the start")
    lead, lead_system, sep, after = _tool_lead(tok, st)
    head = render(tok, [_u(U1)], True, tools=TOOLS).split(U1)[0] + U1

    def rest(msgs: list[dict[str, Any]], gen: bool, **kw: Any) -> str:
        text = render(tok, msgs, gen, tools=TOOLS, **kw)
        if not text.startswith(head):
            raise ChatStructureError("tool calls change the text before the first user message")
        return text[len(head) :]

    two = [_u(U1), _a("", *CALLS), _t(R1), _t(R2)]
    key, lead0, csep, tail = _call_texts(rest(two, True), 2)
    y, tt, gen_t = _split_results(tail, [R1, R2])
    j, after_a1 = rest(
        [_u(U1), _a(A1, CALLS[0]), _t(R1), {"role": "assistant", "content": A2}, _u(U2)], True
    ).split(A1)
    _, lead1, tail = _call_texts(after_a1, 1)
    y2, ta, j_au, gen = _split_results(tail, [R1, A2, U2])
    if (j, y2, j_au, gen) != (st.assistant_after_user, y, st.user_after_assistant, st.generation):
        raise ChatStructureError("tool calls change how the other turns render")
    _, first, between, last = _call_texts(
        rest([_u(U1), _a("", CALLS[0]), _t(R1), _a("", CALLS[1]), _t(R2)], True), 2
    )
    y3, x_tool = _split_results(between, [R1])
    if (first, y3, last) != (lead0, y, y + R2 + gen_t):
        raise ChatStructureError("a second round of tool calls renders differently")
    tu = _split_results(rest([_u(U1), _a("", CALLS[0]), _t(R1), _u(U2)], True), [R1, U2])[1]
    ta_open = _split_results(
        rest([_u(U1), _a("", CALLS[0]), _t(R1), {"role": "assistant", "content": A2}], False), [R1, A2]
    )[1]
    fmt = ToolFormat(
        lead, lead_system, sep, after, key, lead0, x_tool, lead1, csep, y, tt, ta, ta_open, tu, gen_t
    )
    if st.generation_no_think is not None:
        fmt.generation_after_tool_no_think = _split_results(rest(two, True, enable_thinking=False), [R2])[-1]
    return fmt


def derive_tool_format(tok: Any, st: ChatStructure) -> tuple[ToolFormat | None, str | None]:
    """(tool format, note): the format when the template's tool calls can be rendered by the TEMPLATE."""
    if "tool" not in tok.chat_template:
        return None, None
    try:
        return _probe_tools(
            tok, st
        ), "tools, tool calls and results follow the template (tool JSON is compact)"
    except (ChatStructureError, ProbeFailed, ValueError) as e:
        return None, f"tool use needs the GGUF's own template ({e}); this TEMPLATE renders plain chat"
