"""Chat-template rendering with assistant-only label masks, derived from the template itself.

The text always comes from ``tokenizer.apply_chat_template``. Which characters belong to an assistant turn
is found by rendering message prefixes, never from hand-written marker strings:

- ``render(messages[:i], add_generation_prompt=True)`` ends exactly where assistant turn ``i`` starts, so the
  assistant header (``<|im_start|>assistant\\n``, ``[/INST]`` ...) is never trained;
- ``render(messages[:i + 1])`` ends exactly where that turn ends, so its end-of-turn token is trained.
  Whitespace the template puts *after* the last special token of the turn (ChatML's ``"\\n"`` after
  ``<|im_end|>``) is not: the model never has to produce it.

Spans map to tokens by start offset: a token is trained when it starts inside an assistant span. A token
that straddles the start (ChatML ``"assistant\\n"`` + an answer starting with ``"\\n"`` gives one ``"\\n\\n"``
token) belongs to the prompt, which the model is given at inference, so it is not trained.

Both prefixes must be prefixes of the full text. Templates that render earlier turns differently once more
messages follow are not prefix-consistent; for them the template's own ``{% generation %}`` markers are used
when it has them, otherwise :class:`RenderError` says so. A wrong mask is never returned silently.

Cost per row: two batched template renders of the prefixes (plain string work) and one fast-tokenizer call
on the full text with offsets; character spans are mapped to tokens by their start offsets.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100

_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
_ASSISTANT_FIRST = "the chat starts with an assistant turn, which this template cannot place; start it with a user turn"
_PROBE = "A"  # stands in for the first character of an answer when tokenizing a generation prompt


@dataclass
class RenderedExample:
    input_ids: list[int]
    labels: list[int]  # the token id where trained, IGNORE_INDEX (-100) where not
    text: str  # the full rendered text (before any truncation)
    truncated: bool = False

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def n_trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


class RenderError(ValueError):
    """A conversation could not be rendered, or its assistant mask could not be derived safely."""


def render_example(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    max_length: int | None = None,
) -> RenderedExample:
    """Render ``messages`` with the tokenizer's chat template; label every assistant turn and its end token.

    ``max_length`` keeps the first ``max_length`` tokens (labels cut the same way) and sets ``truncated``.
    """
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be a positive number of tokens, got {max_length}")
    _check_messages(messages)
    assistant_idx = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if not assistant_idx:
        raise RenderError("conversation has no assistant turn: nothing to train on")

    text = _render(tokenizer, [messages], tools, generation_prompt=False)[0]
    spans, problem = _assistant_char_spans(tokenizer, messages, assistant_idx, text, tools)
    if problem is None:
        input_ids, labels = _labels_from_spans(tokenizer, text, spans)
    elif _GENERATION_TAG.search(_template_source(tokenizer, tools)):
        input_ids, labels = _labels_from_generation_tags(tokenizer, messages, tools, text)
    else:
        raise RenderError(
            f"cannot derive the assistant mask: {problem}. The chat template renders earlier turns differently "
            "once more messages follow (for example it drops reasoning from the history); add "
            "{% generation %} markers to the template or split the chat into one example per assistant turn"
        )

    truncated = max_length is not None and len(input_ids) > max_length
    if truncated:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return RenderedExample(input_ids=input_ids, labels=labels, text=text, truncated=truncated)


def render_prompt(
    tokenizer: Any, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None
) -> list[int]:
    """Token ids of the generation prompt for ``messages`` (``add_generation_prompt=True``).

    The chat must end on a user, tool or system turn. The prompt text is tokenized as it is in training,
    where an answer follows it, so these ids are the first tokens of ``render_example`` of the same chat
    continued by an assistant turn that starts with a letter (Llama-3's ``"\\n\\n"`` header end is two
    tokens before text but one at the end of a string).
    """
    _check_messages(messages)
    if not messages:
        raise RenderError("cannot build a generation prompt from an empty conversation")
    if messages[-1].get("role") == "assistant":
        raise RenderError(
            "the conversation ends on an assistant turn; drop it (or use render_example) before asking for a prompt"
        )
    text = _render(tokenizer, [messages], tools, generation_prompt=True)[0]
    probe = text + _PROBE
    enc = _encode(tokenizer, probe, offsets=True)
    cut = bisect.bisect_left([s for s, _ in enc["offset_mapping"]], len(text))
    ids = list(enc["input_ids"][:cut])
    if cut and enc["offset_mapping"][cut - 1][1] == len(text):
        return ids
    return list(_encode(tokenizer, text, offsets=False)["input_ids"])


# ---------------------------------------------------------------------------------------------- internals


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list):
        raise RenderError(f"messages must be a list of dicts, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise RenderError(f"message {i} must be a dict with a string 'role'")


def _template_source(tokenizer: Any, tools: list[dict[str, Any]] | None) -> str:
    try:
        return tokenizer.get_chat_template(None, tools) or ""
    except (ValueError, TypeError):
        return ""


def _render(
    tokenizer: Any,
    conversations: list[list[dict[str, Any]]],
    tools: list[dict[str, Any]] | None,
    *,
    generation_prompt: bool,
) -> list[str]:
    """Render a batch of conversations to text; any template failure becomes a RenderError."""
    try:
        out = tokenizer.apply_chat_template(
            conversations, tools=tools, add_generation_prompt=generation_prompt, tokenize=False
        )
    except Exception as exc:  # jinja2 errors, raise_exception(), missing template: all are template problems
        what = "with a generation prompt " if generation_prompt else ""
        raise RenderError(f"chat template failed to render {what}({type(exc).__name__}: {exc})") from exc
    if not isinstance(out, list) or not all(isinstance(s, str) for s in out):
        raise RenderError(f"chat template returned {type(out).__name__}, expected text")
    return out


def _assistant_char_spans(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    assistant_idx: Sequence[int],
    text: str,
    tools: list[dict[str, Any]] | None,
) -> tuple[list[tuple[int, int]], str | None]:
    """Character spans ``[start, end)`` of each assistant turn in ``text``, or the reason they are unsafe."""
    try:
        starts = _render(tokenizer, [messages[:i] for i in assistant_idx], tools, generation_prompt=True)
    except RenderError as exc:
        if assistant_idx[0] == 0:
            raise RenderError(f"{_ASSISTANT_FIRST}: {exc}") from exc
        raise
    if assistant_idx[0] == 0 and not text.startswith(starts[0]):
        raise RenderError(f"{_ASSISTANT_FIRST}: it renders the empty chat differently")
    ends = _render(tokenizer, [messages[: i + 1] for i in assistant_idx], tools, generation_prompt=False)
    spans: list[tuple[int, int]] = []
    prev_end = 0
    for i, head, upto in zip(assistant_idx, starts, ends, strict=True):
        if not text.startswith(head):
            return [], f"rendering messages[:{i}] with the generation prompt is not a prefix of the full chat"
        if not text.startswith(upto):
            return [], f"rendering messages[:{i + 1}] is not a prefix of the full chat"
        a, b = len(head), len(upto)
        if a < prev_end or b < a:
            return [], f"assistant turn at message {i} renders outside its place (chars {a}..{b}, previous end {prev_end})"
        spans.append((a, b))
        prev_end = b
    return spans, None


def _encode(tokenizer: Any, text: str, *, offsets: bool) -> Any:
    try:
        return tokenizer(text, add_special_tokens=False, return_offsets_mapping=offsets)
    except NotImplementedError as exc:
        raise RenderError(
            f"{type(tokenizer).__name__} gives no character offsets; load a fast tokenizer (use_fast=True)"
        ) from exc


def _special_ids(tokenizer: Any) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    ids.update(i for i, tok in tokenizer.added_tokens_decoder.items() if getattr(tok, "special", False))
    return ids


def _labels_from_spans(
    tokenizer: Any, text: str, spans: list[tuple[int, int]]
) -> tuple[list[int], list[int]]:
    enc = _encode(tokenizer, text, offsets=True)
    input_ids: list[int] = list(enc["input_ids"])
    offsets = enc["offset_mapping"]
    token_starts = [s for s, _ in offsets]
    special = _special_ids(tokenizer)
    labels = [IGNORE_INDEX] * len(input_ids)
    for turn, (a, b) in enumerate(spans):
        # A token belongs to the turn when it starts inside it. A token that straddles the start began in
        # the prompt, which the model is given at inference, so it is not the model's to produce.
        t0 = bisect.bisect_left(token_starts, a)
        t1 = bisect.bisect_left(token_starts, b)
        # Whitespace after the turn's last special token (ChatML's "\n" after <|im_end|>) is template glue.
        last_special = next((t for t in range(t1 - 1, t0 - 1, -1) if input_ids[t] in special), None)
        if last_special is not None and all(
            not text[offsets[t][0] : offsets[t][1]].strip() for t in range(last_special + 1, t1)
        ):
            t1 = last_special + 1
        if t1 <= t0:
            raise RenderError(f"mask derivation failed: assistant turn {turn + 1} (chars {a}..{b}) has no tokens")
        labels[t0:t1] = input_ids[t0:t1]
    return input_ids, labels


def _labels_from_generation_tags(
    tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, text: str
) -> tuple[list[int], list[int]]:
    """Fallback for templates that are not prefix-consistent but mark assistant text with {% generation %}."""
    try:
        out = tokenizer.apply_chat_template(
            messages, tools=tools, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
    except Exception as exc:
        raise RenderError(f"chat template failed to render with generation markers ({exc})") from exc
    input_ids = list(out["input_ids"])
    mask = list(out["assistant_masks"])
    if list(_encode(tokenizer, text, offsets=False)["input_ids"]) != input_ids:
        raise RenderError("mask derivation failed: generation-marker rendering differs from the plain rendering")
    if not any(mask):
        raise RenderError("mask derivation failed: the template's {% generation %} blocks cover no tokens")
    labels = [t if m else IGNORE_INDEX for t, m in zip(input_ids, mask, strict=True)]
    return input_ids, labels
