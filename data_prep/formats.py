"""Readers: one raw row of any supported format -> one canonical :class:`Conversation`.

Formats (``--format``):

- ``alpaca``: ``instruction`` / ``input`` / ``output``, optional ``system`` and ``history`` ``[[q, a], ...]``;
- ``sharegpt``: ``conversations`` of ``{"from", "value"}`` with system/human/gpt/function_call/observation,
  optional ``system`` and ``tools``; ``function_call`` turns become assistant ``tool_calls``, ``observation``
  turns become ``tool`` messages;
- ``openai``: ``messages`` of ``{"role", "content"}`` (system/user/assistant/tool, ``tool_calls``);
- ``qa``: a question and an answer field (names configurable);
- ``roleplay``: like ``openai`` but a system message (the character card) is required;
- ``react``: our JSON trajectory form (:meth:`Trajectory.from_dict`) or the plain-text form (``.txt``);
- ``dolly``: ``instruction`` / ``context`` / ``response`` (Databricks Dolly; the context joins the user turn);
- TRL's standard formats: ``text`` (language modeling, kind ``text``), ``prompt_only`` (nothing to train on:
  every row is a ``nothing_to_train`` reject), ``prompt_completion``, ``preference`` (``prompt``/``chosen``/
  ``rejected``, or an implicit prompt: the shared start of ``chosen`` and ``rejected``, also LLaMA-Factory v1's
  ``chosen_messages``/``rejected_messages``) and ``unpaired_preference`` (``prompt``/``completion``/``label``);
  each field a string (a user prompt, an assistant reply) or a list of messages.

Message contents may be OpenAI text parts or LLaMA-Factory v1 content parts (``{"type": "text"|"reasoning"|
"tool_call", "value": ...}``); v1's per-message ``loss_weight`` (0 or 1) is kept, and ``reasoning_content`` on
an assistant message is its reasoning trace. ``alpaca``/``sharegpt`` rows with LLaMA-Factory's ``chosen``/
``rejected`` or ``kto_tag`` columns become preference / unpaired-preference rows.

Column and tag names follow LLaMA-Factory's ``dataset_info.json`` (see :mod:`data_prep.llamafactory`).
Every problem in a row raises :class:`~data_prep.validate.RowError` with a fixed reason.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from data_prep.conversation import Conversation, Message
from data_prep.io import DataPrepError
from data_prep.react import Trajectory, parse_react_text
from data_prep.validate import RowError

FORMATS = ("alpaca", "sharegpt", "openai", "qa", "roleplay", "react", "dolly", "text", "prompt_only",
           "prompt_completion", "preference", "unpaired_preference")
FORMAT_CHOICES = ("auto", *FORMATS)
# Field names --columns may map (canonical=actual): TRL's, Dolly's, Alpaca's and the chat fields.
COLUMN_NAMES = ("text", "prompt", "completion", "chosen", "rejected", "label", "messages", "conversations",
                "instruction", "input", "output", "context", "response", "system", "tools", "question", "answer",
                "chosen_messages", "rejected_messages")
# What each --stage trains on (data_prep.conversation.KINDS).
STAGE_KINDS = {"sft": ("sft",), "pt": ("text",), "dpo": ("preference",), "orpo": ("preference",),
               "kto": ("unpaired_preference", "preference")}  # TRL splits a pair into two unpaired rows
STAGES = tuple(STAGE_KINDS)


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
    chosen: str | None = None  # LLaMA-Factory ranking datasets: the preferred / dispreferred reply
    rejected: str | None = None
    kto_tag: str | None = None  # LLaMA-Factory KTO datasets: the boolean feedback on the reply


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
    elif t.role_tag == "role":  # OpenAI-style tags (LLaMA-Factory's openai and v1 files): tool results too
        m.setdefault("tool", "tool")
    return MappingProxyType(m)


@dataclass(frozen=True)
class FormatOptions:
    question_field: str = "question"
    answer_field: str = "answer"
    system_prompt: str | None = None  # added to rows without a system message (not ReAct)
    columns: Columns = field(default_factory=Columns)
    tags: Tags = field(default_factory=Tags)
    rename: tuple[tuple[str, str], ...] = ()  # --columns: (canonical field, the field that holds it)
    text_field: str = "text"  # the ``text`` format's field (LLaMA-Factory pretraining: its prompt column)
    expect_kind: str | None = None  # an auto-detected file's kind: a row of another kind stops the run


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
    for key in ("images", "videos", "audios"):
        if row.get(key):
            raise RowError("unsupported_format", f"multimodal row ('{key}'): only text is supported")


# -- message contents --------------------------------------------------------------------------------------------
def _loss_weight(turn: dict[str, Any], what: str) -> float | None:
    """LLaMA-Factory v1's per-message ``loss_weight``: 0 (not trained) or 1 (the default, kept as None)."""
    w = turn.get("loss_weight")
    if w is None:
        return None
    if isinstance(w, bool) or not isinstance(w, (int, float)) or w not in (0, 1):
        raise RowError("wrong_type", f"{what} has loss_weight {w!r}; only 0 (not trained) and 1 (trained) are "
                                     "supported")
    return 0.0 if w == 0 else None


def _part_calls(value: Any, what: str) -> list[dict[str, Any]]:
    calls = _json_arg(value, what)
    calls = calls if isinstance(calls, list) else [calls]
    return [_tool_call(x, what) for x in calls]


def _parts(content: Any, what: str) -> tuple[Any, str, list[dict[str, Any]]]:
    """A content: a string (returned as is), or OpenAI text parts / LLaMA-Factory v1 parts (``text``,
    ``reasoning``, ``tool_call``) -> ``(text, reasoning, tool calls)``."""
    if not isinstance(content, list):
        return content, "", []
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        value = part.get("text", part.get("value")) if isinstance(part, dict) else None
        if kind == "tool_call" and value is not None:
            calls += _part_calls(value, f"{what} part {j} (tool_call)")
        elif kind in ("text", "reasoning") and isinstance(value, str):
            (texts if kind == "text" else reasoning).append(value)
        else:
            raise RowError("unsupported_format", f"{what} part {j} is not a text, reasoning or tool_call part with "
                                                 "a string value; only text is supported")
    return "".join(texts), "".join(reasoning), calls


def _message(role: str, content: Any, what: str, turn: dict[str, Any] | None = None,
             calls: list[dict[str, Any]] | None = None) -> Message:
    """One canonical message from a content (string or parts) and the turn's optional extra keys."""
    text, reasoning, part_calls = _parts(content, what)
    turn = turn or {}
    calls = (calls or []) + part_calls
    if calls and role != "assistant":
        raise RowError("wrong_type", f"{what} ({role}) has tool calls; only assistant turns may")
    if text is None and calls:
        text = ""
    text = _text(text, f"{what} ({role}) content")
    extra = turn.get("reasoning_content")
    if extra is not None and not isinstance(extra, str):
        raise RowError("wrong_type", f"{what} reasoning_content is {type(extra).__name__}, expected a string")
    reasoning = reasoning or extra or ""
    if reasoning and role != "assistant":
        raise RowError("wrong_type", f"{what} ({role}) has a reasoning trace; only assistant turns may")
    weight = _loss_weight(turn, what) if role == "assistant" else None
    return Message(role, text, tool_calls=calls or None, reasoning_content=reasoning or None, loss_weight=weight)


# -- readers ----------------------------------------------------------------------------------------------------
def _kind(row: dict[str, Any], conv: Conversation, side: Any, c: Columns) -> Conversation:
    """LLaMA-Factory's ranking (``chosen``/``rejected``) and KTO (``kto_tag``) columns on an alpaca/sharegpt row:
    ``side(value, what)`` reads one reply. Plain rows stay SFT."""
    if c.chosen and c.rejected:
        conv.kind = "preference"
        conv.chosen = side(_get(row, c.chosen, "the chosen reply"), f"field '{c.chosen}'")
        conv.rejected = side(_get(row, c.rejected, "the rejected reply"), f"field '{c.rejected}'")
    elif c.kto_tag:
        conv.kind = "unpaired_preference"
        conv.label = _get(row, c.kto_tag, "the KTO label")
        if not conv.messages or conv.messages[-1].role != "assistant":
            raise RowError("no_final_assistant", "a KTO row must end with the assistant reply its label judges")
        conv.completion = [conv.messages.pop()]
    return conv


def _alpaca(row: dict[str, Any], opts: FormatOptions) -> Conversation:
    c = opts.columns
    prompt = _text(_get(row, c.prompt, "the instruction"), f"field '{c.prompt}'")
    query = _text(row.get(c.query), f"field '{c.query}'", required=False) if c.query else ""
    ranking = bool(c.chosen and c.rejected)
    response = "" if ranking else _text(_get(row, c.response, "the response"), f"field '{c.response}'")
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
    if not ranking:
        msgs.append(Message("assistant", response))
    conv = Conversation(msgs, tools=_tools(row.get(c.tools)) if c.tools else None)
    if ranking and history:  # the prompt's earlier replies are context, not the preference
        for m in conv.messages:
            m.loss_weight = 0.0 if m.role == "assistant" else None
    return _kind(row, conv, lambda v, what: _side(v, what, "assistant", opts), c)


def _sharegpt_turns(turns: Any, field_name: str, t: Tags) -> tuple[list[Message], bool]:
    """ShareGPT turns -> messages, and whether an observation answers a call written as text."""
    if turns is None:
        raise RowError("null_content", f"field '{field_name}' is null")
    if isinstance(turns, dict):  # one reply (LLaMA-Factory's ranking columns)
        turns = [turns]
    if not isinstance(turns, list):
        raise RowError("wrong_type", f"field '{field_name}' must be a list of messages")
    roles = t.role_map()
    msgs: list[Message] = []
    free = False
    for i, turn in enumerate(turns):
        what = f"'{field_name}[{i}]'"
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
            msgs.append(_message("assistant", "", what, turn, calls=_part_calls(value, f"{what} ({tag})")))
        elif role == "tool":
            name = None
            if msgs and msgs[-1].tool_calls and len(msgs[-1].tool_calls) == 1:
                name = msgs[-1].tool_calls[0]["function"]["name"]
            # LLaMA-Factory puts observations in the user's slot: after any assistant turn, also one that
            # writes its call as text (glaive_toolcall_zh).
            free = free or bool(msgs and msgs[-1].role == "assistant" and not msgs[-1].tool_calls)
            msg = _message("tool", value, what, turn)
            msg.name = name
            msgs.append(msg)
        else:
            msgs.append(_message(role, value, what, turn))
    return msgs, free


def _sharegpt(row: dict[str, Any], opts: FormatOptions) -> Conversation:
    c, t = opts.columns, opts.tags
    msgs, free = _sharegpt_turns(_get(row, c.messages, "the conversation"), c.messages, t)
    if c.system and not (msgs and msgs[0].role == "system"):
        system = _text(row.get(c.system), f"field '{c.system}'", required=False)
        if system.strip():
            msgs.insert(0, Message("system", system))
    tools = _tools(row.get(c.tools)) if c.tools else None
    conv = Conversation(msgs, tools=tools, free_tool_calls=free)
    if c.chosen and c.rejected:  # earlier replies in a ranking prompt are context
        for m in conv.messages:
            m.loss_weight = 0.0 if m.role == "assistant" else m.loss_weight

    def side(value: Any, what: str) -> list[Message]:
        if isinstance(value, str):
            return [Message("assistant", value)]
        got, more = _sharegpt_turns(value, what.split("'")[1] if "'" in what else what, t)
        conv.free_tool_calls = conv.free_tool_calls or more
        return got

    return _kind(row, conv, side, c)


def _openai_turns(turns: Any, field_name: str) -> list[Message]:
    if turns is None:
        raise RowError("null_content", f"field '{field_name}' is null")
    if not isinstance(turns, list):
        raise RowError("wrong_type", f"field '{field_name}' must be a list of messages")
    msgs: list[Message] = []
    call_names: dict[str, str] = {}
    for i, turn in enumerate(turns):
        what = f"'{field_name}[{i}]'"
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
        msg = _message(role, content, what, turn, calls=calls)
        name = turn.get("name") if isinstance(turn.get("name"), str) else None
        if role == "tool" and name is None:
            call_id = turn.get("tool_call_id")
            name = call_names.get(call_id) if isinstance(call_id, str) else None  # a list/dict id is no key
        msg.name = name if role == "tool" else None
        msgs.append(msg)
    return msgs


def _openai(row: dict[str, Any], opts: FormatOptions) -> Conversation:
    msgs = _openai_turns(_get(row, "messages", "the conversation"), "messages")
    if not (msgs and msgs[0].role == "system") and isinstance(row.get("system"), str) and row["system"].strip():
        msgs.insert(0, Message("system", row["system"]))
    return Conversation(msgs, tools=_tools(row.get("tools")))


def _side(value: Any, what: str, role: str, opts: FormatOptions) -> list[Message]:
    """One TRL field: a string (one ``role`` message) or a list of messages (one message object also)."""
    if value is None:
        raise RowError("null_content", f"{what} is null")
    if isinstance(value, str):
        return [Message(role, value)]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise RowError("wrong_type", f"{what} is {type(value).__name__}, expected a string or a list of messages")
    name = what.split("'")[1] if "'" in what else what
    if value and isinstance(value[0], dict) and opts.tags.role_tag in value[0] and "role" not in value[0]:
        return _sharegpt_turns(value, name, opts.tags)[0]
    return _openai_turns(value, name)


def _prompt(row: dict[str, Any], opts: FormatOptions) -> list[Message]:
    msgs = _side(_get(row, "prompt", "the prompt"), "field 'prompt'", "user", opts)
    # TRL trains on the completion only: replies inside a conversational prompt are context.
    for m in msgs:
        if m.role == "assistant":
            m.loss_weight = 0.0
    return msgs


def _trl_tools(row: dict[str, Any], msgs: list[Message]) -> list[dict[str, Any]] | None:
    if not (msgs and msgs[0].role == "system") and isinstance(row.get("system"), str) and row["system"].strip():
        msgs.insert(0, Message("system", row["system"]))
    return _tools(row.get("tools"))


def _prompt_only(row: dict[str, Any], opts: FormatOptions) -> Conversation:
    _prompt(row, opts)  # a broken prompt is reported as such
    raise RowError("nothing_to_train", "a prompt-only row (TRL's format for online methods such as GRPO) has no "
                                       "completion to train on")


def _prompt_completion(row: dict[str, Any], opts: FormatOptions) -> Conversation:
    msgs = _prompt(row, opts)
    msgs += _side(_get(row, "completion", "the completion"), "field 'completion'", "assistant", opts)
    return Conversation(msgs, tools=_trl_tools(row, msgs))


def _unpaired(row: dict[str, Any], opts: FormatOptions) -> Conversation:
    msgs = _prompt(row, opts)
    completion = _side(_get(row, "completion", "the completion"), "field 'completion'", "assistant", opts)
    return Conversation(msgs, tools=_trl_tools(row, msgs), kind="unpaired_preference", completion=completion,
                        label=_get(row, "label", "the label (true: a good completion, false: a bad one)"))


def _implicit(chosen: list[Message], rejected: list[Message]) -> tuple[list[Message], list[Message], list[Message]]:
    """TRL's implicit prompt: the messages ``chosen`` and ``rejected`` share from the start."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n].to_dict() == rejected[n].to_dict():
        n += 1
    if n == len(chosen) == len(rejected):
        raise RowError("same_chosen_rejected", "chosen and rejected are the same conversation: nothing to prefer")
    if n < len(chosen) and chosen[n].role != "assistant" or n < len(rejected) and rejected[n].role != "assistant":
        raise RowError("bad_role_order", f"chosen and rejected first differ at message {n}, which is not an assistant "
                                         "turn; they must share the prompt and differ in the reply")
    return chosen[:n], chosen[n:], rejected[n:]


def _preference(row: dict[str, Any], opts: FormatOptions) -> Conversation:
    if "chosen_messages" in row and "chosen" not in row:  # LLaMA-Factory v1 pairs: two whole conversations
        chosen = _openai_turns(row["chosen_messages"], "chosen_messages")
        rejected = _openai_turns(_get(row, "rejected_messages", "the rejected conversation"), "rejected_messages")
        msgs, chosen, rejected = _implicit(chosen, rejected)
    elif "prompt" in row:
        msgs = _prompt(row, opts)
        chosen = _side(_get(row, "chosen", "the chosen reply"), "field 'chosen'", "assistant", opts)
        rejected = _side(_get(row, "rejected", "the rejected reply"), "field 'rejected'", "assistant", opts)
    else:
        chosen, rejected = (_get(row, k, f"the {k} conversation") for k in ("chosen", "rejected"))
        if not isinstance(chosen, list) or not isinstance(rejected, list):
            raise RowError("missing_field", "field 'prompt' is missing; without it (an implicit prompt) chosen and "
                                            "rejected must be whole conversations (lists of messages)")
        msgs, chosen, rejected = _implicit(_side(chosen, "field 'chosen'", "assistant", opts),
                                           _side(rejected, "field 'rejected'", "assistant", opts))
    for m in msgs:  # replies in the shared prompt are context
        if m.role == "assistant":
            m.loss_weight = 0.0
    return Conversation(msgs, tools=_trl_tools(row, msgs), kind="preference", chosen=chosen, rejected=rejected)


def _dolly(row: dict[str, Any], opts: FormatOptions) -> Conversation:
    instruction = _text(_get(row, "instruction", "the instruction"), "field 'instruction'")
    context = _text(row.get("context"), "field 'context'", required=False)
    response = _text(_get(row, "response", "the response"), "field 'response'")
    user = f"{instruction}\n\n{context}" if context.strip() else instruction
    conv = Conversation([Message("user", user), Message("assistant", response)])
    category = row.get("category")
    if isinstance(category, str) and category.strip() and "tags" not in row:
        conv.tags = [category.strip()]
    return conv


def _plain_text(row: dict[str, Any], opts: FormatOptions) -> Conversation:
    f = opts.text_field
    return Conversation([], kind="text", text=_text(_get(row, f, "the text"), f"field '{f}'"))


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
    if traj.task_type is not None and not isinstance(traj.task_type, str):  # the split stratum: a dict key
        raise RowError("wrong_type", f"field 'task_type' is {type(traj.task_type).__name__}, expected a string")
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


_READERS = {"alpaca": _alpaca, "sharegpt": _sharegpt, "openai": _openai, "roleplay": _openai, "qa": _qa,
            "dolly": _dolly, "text": _plain_text, "prompt_only": _prompt_only, "prompt_completion": _prompt_completion,
            "preference": _preference, "unpaired_preference": _unpaired}
_OPENAI_TAGS = Tags(role_tag="role", content_tag="content", user_tag="user", assistant_tag="assistant",
                    observation_tag="tool", system_tag="system")


class KindMismatch(Exception):
    """A row of another kind than its file's (one kind per file): the run stops at it."""


def renamed(value: Any, opts: FormatOptions) -> Any:
    """The row with ``--columns`` applied: each canonical field takes the value of the field that holds it."""
    if not opts.rename or not isinstance(value, dict):
        return value
    out = dict(value)
    for canonical, actual in opts.rename:
        if actual in out and actual != canonical:
            out[canonical] = out.pop(actual)
    return out


def kind_of(fmt: str, opts: FormatOptions) -> str:
    """The kind of row (:data:`data_prep.conversation.KINDS`) a format with these options reads."""
    if fmt in ("text", "preference", "unpaired_preference"):
        return fmt
    if fmt in ("alpaca", "sharegpt") and opts.columns.chosen and opts.columns.rejected:
        return "preference"
    if fmt in ("alpaca", "sharegpt") and opts.columns.kto_tag:
        return "unpaired_preference"
    return "sft"


def to_conversation(fmt: str, value: Any, opts: FormatOptions) -> Conversation:
    """Convert one raw row (a parsed JSON value, or a ``(line, text)`` block for ReAct text).

    With ``opts.expect_kind`` (an auto-detected file's kind) a row that is plainly of another kind raises
    :class:`KindMismatch`."""
    expect_kind = opts.expect_kind
    if fmt == "react" and isinstance(value, tuple):
        return _react_text(value)
    if not isinstance(value, dict):
        raise RowError("not_an_object", f"the row is a JSON {type(value).__name__}, expected an object")
    value = renamed(value, opts)
    if expect_kind is not None:
        other = guess_kind(value, opts)
        if other is not None and other != expect_kind:
            raise KindMismatch(f"a {other} row in a file of {expect_kind} rows (from its first row); "
                               "one kind per file: split the file")
    _reject_unsupported(value)
    if fmt == "react":
        conv = _react_json(value)
    elif fmt in _READERS:
        conv = _READERS[fmt](value, opts)
    else:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if conv.kind != "text" and fmt != "react" and opts.system_prompt and not (
            conv.messages and conv.messages[0].role == "system"):
        conv.messages.insert(0, Message("system", opts.system_prompt))
    if fmt == "roleplay" and not (conv.messages and conv.messages[0].role == "system"):
        raise RowError("missing_field", "roleplay rows need a system message (the character card); "
                                        "add one or pass --system-prompt")
    return _meta(value, conv)


def guess_kind(value: Any, opts: FormatOptions) -> str | None:
    """The kind a row's fields make it (None when they fit no format): checks a file holds one kind.

    Every row of a file runs this, so it is memoized by what :func:`detect` reads of a row (:func:`_shape`)."""
    return _kind_of_shape(_shape(value), opts) if isinstance(value, dict) else _guess_kind(value, opts)


def _shape(row: dict[str, Any]) -> tuple[Any, ...]:
    """Everything :func:`detect` looks at in a row: its keys, whether ``label`` is a bool, and the first
    turn of ``messages`` / ``conversations``: whether it is an object and holds ``from`` / ``role``."""
    turns = []
    for key in ("messages", "conversations"):
        first = _first(row[key]) if key in row else None
        turns.append(None if first is None else
                     (isinstance(first, dict), isinstance(first, dict) and "from" in first,
                      isinstance(first, dict) and "role" in first))
    return frozenset(row), isinstance(row.get("label"), bool), *turns


@functools.lru_cache(maxsize=1024)
def _kind_of_shape(shape: tuple[Any, ...], opts: FormatOptions) -> str | None:
    keys, label_is_bool, messages, conversations = shape
    row: dict[str, Any] = dict.fromkeys(keys)  # a stand-in row with the same shape
    if label_is_bool:
        row["label"] = True
    for key, turn in (("messages", messages), ("conversations", conversations)):
        if turn is not None:
            is_dict, has_from, has_role = turn
            row[key] = [({"from": ""} if has_from else {}) | ({"role": ""} if has_role else {})] if is_dict else [0]
    return _guess_kind(row, opts)


def _guess_kind(value: Any, opts: FormatOptions) -> str | None:
    try:
        return kind_of(*detect(value, "", replace(opts, rename=())))
    except DataPrepError:
        return None


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else {}


def _trl(keys: set[str]) -> str | None:
    """TRL's standard formats, by their fields."""
    if {"chosen_messages", "rejected_messages"} <= keys:
        return "preference"
    if {"chosen", "rejected"} <= keys and not keys & {"instruction", "conversations", "messages"}:
        return "preference"
    if "prompt" in keys and "completion" in keys:
        return "unpaired_preference" if "label" in keys else "prompt_completion"
    if "prompt" in keys and not keys & {"chosen", "rejected", "instruction", "messages", "conversations"}:
        return "prompt_only"
    return None


def detect(value: Any, source: str, opts: FormatOptions) -> tuple[str, FormatOptions]:
    """The format of a file and the options to read it with, from its first record's keys (after
    ``--columns``). Raises :class:`DataPrepError` when unclear."""
    choices = f"pass --format with one of: {', '.join(FORMATS)} (or --columns canonical=field)"
    if isinstance(value, tuple):
        return "react", opts
    if not isinstance(value, dict):
        raise DataPrepError(f"{source}: first record is a JSON {type(value).__name__}, not an object; {choices}")
    value = renamed(value, opts)
    keys = set(value)
    trl = _trl(keys)
    if trl is not None:
        return trl, opts
    c = opts.columns
    lf: dict[str, Any] = {}
    if {"chosen", "rejected"} <= keys:  # LLaMA-Factory ranking rows
        lf = {"chosen": "chosen", "rejected": "rejected"}
    elif "kto_tag" in keys or ("label" in keys and isinstance(value.get("label"), bool)):
        lf = {"kto_tag": "kto_tag" if "kto_tag" in keys else "label"}
    found = []
    if "conversations" in keys:
        found.append("sharegpt")
    if "messages" in keys:
        first = _first(value["messages"])
        found.append("sharegpt" if isinstance(first, dict) and "from" in first or lf else "openai")
    if "instruction" in keys and "context" in keys and "response" in keys:
        found.append("dolly")
    elif "instruction" in keys and ("output" in keys or lf.get("chosen")):
        found.append("alpaca")
    if "observation" in keys and "steps" in keys:
        found.append("react")
    if opts.question_field in keys and opts.answer_field in keys:
        found.append("qa")
    if not found and opts.text_field in keys:
        found.append("text")
    found = sorted(set(found))
    shown = ", ".join(sorted(map(str, keys))) or "none"
    if not found:
        raise DataPrepError(f"{source}: cannot tell the format from the fields ({shown}); {choices}")
    if len(found) > 1:
        raise DataPrepError(f"{source}: ambiguous format, the fields ({shown}) fit {' and '.join(found)}; {choices}")
    fmt = found[0]
    if fmt == "sharegpt":
        messages = "conversations" if "conversations" in keys else "messages"
        first = _first(value[messages])
        tags = _OPENAI_TAGS if isinstance(first, dict) and "role" in first and "from" not in first else opts.tags
        opts = replace(opts, columns=replace(c, messages=messages, **lf), tags=tags)
    elif fmt == "alpaca" and lf:
        opts = replace(opts, columns=replace(c, **lf))
    return fmt, opts


def detect_format(value: Any, source: str, opts: FormatOptions) -> str:
    """The format name :func:`detect` finds."""
    return detect(value, source, opts)[0]


def options_for_sharegpt_messages(opts: FormatOptions) -> FormatOptions:
    """Options for ShareGPT-style turns stored under ``messages`` (auto-detected)."""
    return replace(opts, columns=replace(opts.columns, messages="messages"))
