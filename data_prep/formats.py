"""Readers: one raw row of any supported format -> one canonical :class:`Conversation`.

Formats (``--format``):

- ``alpaca``: ``instruction`` / ``input`` / ``output``, optional ``system`` and ``history`` ``[[q, a], ...]``;
- ``sharegpt``: ``conversations`` of ``{"from", "value"}`` with system/human/gpt/function_call/observation,
  optional ``system`` and ``tools``; ``function_call`` turns become assistant ``tool_calls``, ``observation``
  turns become ``tool`` messages;
- ``openai``: ``messages`` of ``{"role", "content"}`` (system/user/assistant/tool, ``tool_calls``);
- ``qa``: a question and an answer field (names configurable);
- ``roleplay``: like ``openai`` but a system message (the character card) is required;
- ``react``: our JSON trajectory form (:meth:`Trajectory.from_dict`) or the plain-text form (``.txt``).

Column and tag names follow LLaMA-Factory's ``dataset_info.json`` (see :mod:`data_prep.llamafactory`).
Every problem in a row raises :class:`~data_prep.validate.RowError` with a fixed reason.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from data_prep.conversation import Conversation, Message
from data_prep.io import DataPrepError
from data_prep.react import Trajectory, parse_react_text
from data_prep.validate import RowError

FORMATS = ("alpaca", "sharegpt", "openai", "qa", "roleplay", "react")
FORMAT_CHOICES = ("auto", *FORMATS)


@dataclass(frozen=True)
class Columns:
    """Where each part of a row lives (LLaMA-Factory ``columns``). ``None`` means: not used."""

    prompt: str = "instruction"
    query: str | None = "input"
    response: str = "output"
    history: str | None = "history"
    messages: str = "conversations"
    system: str | None = "system"
    tools: str | None = "tools"


@dataclass(frozen=True)
class Tags:
    """ShareGPT message keys and role values (LLaMA-Factory ``tags``)."""

    role_tag: str = "from"
    content_tag: str = "value"
    user_tag: str = "human"
    assistant_tag: str = "gpt"
    observation_tag: str = "observation"
    function_tag: str = "function_call"
    system_tag: str = "system"

    def role_map(self) -> Mapping[str, str]:
        """Tag -> canonical role (read-only, built once per set of tags: every row asks)."""
        return _role_map(self)


@functools.lru_cache(maxsize=64)
def _role_map(t: Tags) -> Mapping[str, str]:
    m = {
        t.user_tag: "user",
        t.assistant_tag: "assistant",
        t.observation_tag: "tool",
        t.function_tag: "function_call",
        t.system_tag: "system",
    }
    if t == Tags():  # plain ShareGPT files: also take the OpenAI role names
        m.update({"user": "user", "assistant": "assistant", "tool": "tool"})
    return MappingProxyType(m)


@dataclass(frozen=True)
class FormatOptions:
    question_field: str = "question"
    answer_field: str = "answer"
    system_prompt: str | None = None  # added to rows without a system message (not ReAct)
    columns: Columns = field(default_factory=Columns)
    tags: Tags = field(default_factory=Tags)


# -- small field helpers ---------------------------------------------------------------------------------------
def _text(value: Any, what: str, *, required: bool = True) -> str:
    if value is None:
        if not required:
            return ""
        raise RowError("null_content", f"{what} is null")
    if isinstance(value, str):
        return value
    raise RowError("wrong_type", f"{what} is {type(value).__name__}, expected a string")


def _get(row: dict[str, Any], key: str, what: str | None = None) -> Any:
    if key not in row:
        raise RowError("missing_field", f"field '{key}' is missing{f' ({what})' if what else ''}; "
                                        f"the row has: {', '.join(map(str, row)) or 'no fields'}")
    return row[key]


def _json_arg(value: Any, what: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise RowError("wrong_type", f"{what} is a string but not JSON ({e.msg})") from None
    return value


def _tool_call(call: Any, what: str) -> dict[str, Any]:
    """OpenAI ``{"id", "type", "function": {"name", "arguments"}}`` or flat ``{"name", "arguments"}`` ->
    ``{"type": "function", "function": {"name": str, "arguments": dict}}`` (+ ``id``)."""
    if not isinstance(call, dict):
        raise RowError("wrong_type", f"{what} is {type(call).__name__}, expected an object")
    fn = call.get("function", call)
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"].strip():
        raise RowError("missing_field", f"{what} needs a function 'name'")
    args = _json_arg(fn.get("arguments", fn.get("parameters", {})), f"{what} arguments")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise RowError("wrong_type", f"{what} arguments must be a JSON object")
    out: dict[str, Any] = {"type": "function", "function": {"name": fn["name"], "arguments": args}}
    if isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def _tools(value: Any) -> list[dict[str, Any]] | None:
    """A ``tools`` field (list, one object, or a JSON string of either) -> OpenAI tool schemas."""
    if value is None or value == "" or value == []:
        return None
    value = _json_arg(value, "field 'tools'")
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise RowError("wrong_type", "field 'tools' must be a list of function schemas")
    out = []
    for t in value:
        if "type" not in t and "name" in t:
            t = {"type": "function", "function": t}
        out.append(t)
    return out


def _meta(row: dict[str, Any], conv: Conversation) -> Conversation:
    """Copy ``task_type`` and ``tags`` (list or one string) from the row."""
    tt = row.get("task_type")
    if isinstance(tt, str) and tt.strip() and conv.task_type is None:
        conv.task_type = tt.strip()
    tags = row.get("tags", row.get("tag"))
    if isinstance(tags, str) and tags.strip():
        conv.tags = [tags.strip()]
    elif isinstance(tags, list):
        conv.tags = [str(t) for t in tags if isinstance(t, (str, int)) and str(t).strip()]
    return conv


def _reject_unsupported(row: dict[str, Any]) -> None:
    if "chosen" in row and "rejected" in row:
        raise RowError("unsupported_format", "preference row (chosen/rejected): only SFT data is supported yet")
    if "kto_tag" in row:
        raise RowError("unsupported_format", "KTO row (kto_tag): only SFT data is supported yet")
    for key in ("images", "videos", "audios"):
        if row.get(key):
            raise RowError("unsupported_format", f"multimodal row ('{key}'): only text is supported")


# -- readers ----------------------------------------------------------------------------------------------------
def _alpaca(row: dict[str, Any], opts: FormatOptions) -> Conversation:
    c = opts.columns
    prompt = _text(_get(row, c.prompt, "the instruction"), f"field '{c.prompt}'")
    query = _text(row.get(c.query), f"field '{c.query}'", required=False) if c.query else ""
    response = _text(_get(row, c.response, "the response"), f"field '{c.response}'")
    msgs: list[Message] = []
    system = _text(row.get(c.system), f"field '{c.system}'", required=False) if c.system else ""
    if system.strip():
        msgs.append(Message("system", system))
    history = row.get(c.history) if c.history else None
    if history is not None:
        if not isinstance(history, list):
            raise RowError("wrong_type", f"field '{c.history}' must be a list of [prompt, response] pairs")
        for i, pair in enumerate(history):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise RowError("wrong_type", f"field '{c.history}[{i}]' must be a [prompt, response] pair")
            msgs.append(Message("user", _text(pair[0], f"'{c.history}[{i}][0]'")))
            msgs.append(Message("assistant", _text(pair[1], f"'{c.history}[{i}][1]'")))
    user = "\n".join(p for p in (prompt, query) if p)
    msgs.append(Message("user", user))
    msgs.append(Message("assistant", response))
    return Conversation(msgs, tools=_tools(row.get(c.tools)) if c.tools else None)


def _sharegpt(row: dict[str, Any], opts: FormatOptions) -> Conversation:
    c, t = opts.columns, opts.tags
    turns = _get(row, c.messages, "the conversation")
    if turns is None:
        raise RowError("null_content", f"field '{c.messages}' is null")
    if not isinstance(turns, list):
        raise RowError("wrong_type", f"field '{c.messages}' must be a list of messages")
    roles = t.role_map()
    msgs: list[Message] = []
    for i, turn in enumerate(turns):
        what = f"'{c.messages}[{i}]'"
        if not isinstance(turn, dict):
            raise RowError("wrong_type", f"{what} is {type(turn).__name__}, expected an object")
        tag = _get(turn, t.role_tag, f"in {what}")
        if not isinstance(tag, str) or tag not in roles:
            raise RowError("unknown_role", f"{what} has {t.role_tag}={tag!r}; expected one of {', '.join(roles)}")
        value = _get(turn, t.content_tag, f"in {what}")
        role = roles[tag]
        if role == "function_call":
            if value is None:
                raise RowError("null_content", f"{what} ({tag}) is null")
            calls = _json_arg(value, f"{what} ({tag})")
            calls = calls if isinstance(calls, list) else [calls]
            msgs.append(Message("assistant", "", tool_calls=[_tool_call(x, f"{what} ({tag})") for x in calls]))
        elif role == "tool":
            name = None
            if msgs and msgs[-1].tool_calls and len(msgs[-1].tool_calls) == 1:
                name = msgs[-1].tool_calls[0]["function"]["name"]
            msgs.append(Message("tool", _text(value, f"{what} content"), name=name))
        else:
            msgs.append(Message(role, _text(value, f"{what} content")))
    if c.system and not (msgs and msgs[0].role == "system"):
        system = _text(row.get(c.system), f"field '{c.system}'", required=False)
        if system.strip():
            msgs.insert(0, Message("system", system))
    tools = _tools(row.get(c.tools)) if c.tools else None
    return Conversation(msgs, tools=tools)


def _openai(row: dict[str, Any], opts: FormatOptions) -> Conversation:
    turns = _get(row, "messages", "the conversation")
    if turns is None:
        raise RowError("null_content", "field 'messages' is null")
    if not isinstance(turns, list):
        raise RowError("wrong_type", "field 'messages' must be a list of messages")
    msgs: list[Message] = []
    call_names: dict[str, str] = {}
    for i, turn in enumerate(turns):
        what = f"'messages[{i}]'"
        if not isinstance(turn, dict):
            raise RowError("wrong_type", f"{what} is {type(turn).__name__}, expected an object")
        role = _get(turn, "role", f"in {what}")
        if role not in ("system", "user", "assistant", "tool"):
            raise RowError("unknown_role", f"{what} has role {role!r}; expected system, user, assistant or tool")
        content = _get(turn, "content", f"in {what}") if role != "assistant" or "tool_calls" not in turn else turn.get("content")
        calls = None
        if role == "assistant" and turn.get("tool_calls"):
            if not isinstance(turn["tool_calls"], list):
                raise RowError("wrong_type", f"{what} tool_calls must be a list")
            calls = [_tool_call(x, f"{what} tool_calls[{j}]") for j, x in enumerate(turn["tool_calls"])]
            for x, norm in zip(turn["tool_calls"], calls, strict=True):
                if isinstance(x, dict) and isinstance(x.get("id"), str):
                    call_names[x["id"]] = norm["function"]["name"]
            content = "" if content is None else content
        if isinstance(content, list):  # OpenAI content parts
            parts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise RowError("unsupported_format", f"{what} has a non-text content part; only text is supported")
                parts.append(part["text"])
            content = "".join(parts)
        text = _text(content, f"{what} ({role}) content")
        name = turn.get("name") if isinstance(turn.get("name"), str) else None
        if role == "tool" and name is None:
            name = call_names.get(turn.get("tool_call_id") or "")
        msgs.append(Message(role, text, tool_calls=calls, name=name if role == "tool" else None))
    if not (msgs and msgs[0].role == "system") and isinstance(row.get("system"), str) and row["system"].strip():
        msgs.insert(0, Message("system", row["system"]))
    return Conversation(msgs, tools=_tools(row.get("tools")))


def _qa(row: dict[str, Any], opts: FormatOptions) -> Conversation:
    q = _text(_get(row, opts.question_field, "the question"), f"field '{opts.question_field}'")
    a = _text(_get(row, opts.answer_field, "the answer"), f"field '{opts.answer_field}'")
    msgs = [Message("user", q), Message("assistant", a)]
    if isinstance(row.get("system"), str) and row["system"].strip():
        msgs.insert(0, Message("system", row["system"]))
    return Conversation(msgs)


def _react_json(row: dict[str, Any]) -> Conversation:
    obs = _text(_get(row, "observation", "the first observation"), "field 'observation'")
    if not obs.strip():
        raise RowError("empty_content", "field 'observation' is empty")
    steps = _get(row, "steps", "the (action, observation) steps")
    if not isinstance(steps, list):
        raise RowError("wrong_type", "field 'steps' must be a list of {action, observation}")
    for i, s in enumerate(steps):
        if not isinstance(s, dict):
            raise RowError("wrong_type", f"'steps[{i}]' must be an object with action and observation")
        for key in ("action", "observation"):
            _text(_get(s, key, f"in steps[{i}]"), f"'steps[{i}].{key}'")
    try:
        traj = Trajectory.from_dict(row)
    except (KeyError, TypeError, ValueError) as e:
        raise RowError("wrong_type", str(e)) from None
    return Conversation([Message.from_dict(m) for m in traj.messages()], task_type=traj.task_type)


def _react_text(value: tuple[int, str]) -> Conversation:
    start, text = value
    try:
        parsed = parse_react_text(text)
    except ValueError as e:
        msg = str(e)
        if msg.startswith("line "):  # make the line number absolute in the file
            num, _, rest = msg[5:].partition(":")
            if num.isdigit():
                msg = f"line {start + int(num) - 1}:{rest}"
        raise RowError("missing_field", msg) from None
    if len(parsed) != 1:
        raise RowError("wrong_type", f"expected one trajectory in the block, found {len(parsed)}")
    traj = parsed[0][1]
    return Conversation([Message.from_dict(m) for m in traj.messages()], task_type=traj.task_type)


_READERS = {"alpaca": _alpaca, "sharegpt": _sharegpt, "openai": _openai, "roleplay": _openai, "qa": _qa}


def to_conversation(fmt: str, value: Any, opts: FormatOptions) -> Conversation:
    """Convert one raw row (a parsed JSON value, or a ``(line, text)`` block for ReAct text)."""
    if fmt == "react" and isinstance(value, tuple):
        return _react_text(value)
    if not isinstance(value, dict):
        raise RowError("not_an_object", f"the row is a JSON {type(value).__name__}, expected an object")
    _reject_unsupported(value)
    if fmt == "react":
        conv = _react_json(value)
    elif fmt in _READERS:
        conv = _READERS[fmt](value, opts)
    else:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt != "react" and opts.system_prompt and not (conv.messages and conv.messages[0].role == "system"):
        conv.messages.insert(0, Message("system", opts.system_prompt))
    if fmt == "roleplay" and not (conv.messages and conv.messages[0].role == "system"):
        raise RowError("missing_field", "roleplay rows need a system message (the character card); "
                                        "add one or pass --system-prompt")
    return _meta(value, conv)


def detect_format(value: Any, source: str, opts: FormatOptions) -> str:
    """The format of a file, from its first record's keys. Raises :class:`DataPrepError` when unclear."""
    choices = f"pass --format with one of: {', '.join(FORMATS)}"
    if isinstance(value, tuple):
        return "react"
    if not isinstance(value, dict):
        raise DataPrepError(f"{source}: first record is a JSON {type(value).__name__}, not an object; {choices}")
    keys = set(value)
    if {"chosen", "rejected"} <= keys or "kto_tag" in keys:
        raise DataPrepError(f"{source}: preference/KTO data (chosen/rejected or kto_tag) is not supported yet; "
                        "only SFT data can be prepared")
    found = []
    if "conversations" in keys:
        found.append("sharegpt")
    if "messages" in keys:
        first = value["messages"][0] if isinstance(value["messages"], list) and value["messages"] else {}
        found.append("sharegpt" if isinstance(first, dict) and "from" in first else "openai")
    if "instruction" in keys and "output" in keys:
        found.append("alpaca")
    if "observation" in keys and "steps" in keys:
        found.append("react")
    if opts.question_field in keys and opts.answer_field in keys:
        found.append("qa")
    found = sorted(set(found))
    if len(found) == 1:
        return found[0]
    shown = ", ".join(sorted(map(str, keys))) or "none"
    if not found:
        raise DataPrepError(f"{source}: cannot tell the format from the fields ({shown}); {choices}")
    raise DataPrepError(f"{source}: ambiguous format, the fields ({shown}) fit {' and '.join(found)}; {choices}")


def options_for_sharegpt_messages(opts: FormatOptions) -> FormatOptions:
    """Options for ShareGPT-style turns stored under ``messages`` (auto-detected)."""
    return FormatOptions(opts.question_field, opts.answer_field, opts.system_prompt,
                         Columns(**{**opts.columns.__dict__, "messages": "messages"}), opts.tags)
