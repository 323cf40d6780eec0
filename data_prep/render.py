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

Cost per row, straightforward path: one render of the chat and two batched renders of its prefixes, then one
fast-tokenizer call on the full text with offsets; character spans are mapped to tokens by their start offsets.

Fast path (:func:`render_examples`, and :func:`render_example` by default): for a template that provably
copies contents verbatim (:mod:`data_prep.skeleton`), each conversation *shape* (roles, empty contents) is
rendered once with sentinels; a row then costs a string join, and a batch is tokenized in one backend call.
Rows the fast path cannot take (tools, tool calls, extra fields, impure templates, unusual shapes) go the
straightforward way, so both paths return the same ids, labels, text and errors; ``fast=False`` forces the
straightforward one.
"""

from __future__ import annotations

import bisect
import json
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from data_prep.fast_bpe import AsciiBPE
from data_prep.skeleton import Shape, Skeleton, build_skeleton, shape_of, template_is_pure
from data_prep.token_bytes import byte_table, fast_offsets

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
        return len(self.labels) - self.labels.count(IGNORE_INDEX)


class RenderError(ValueError):
    """A conversation could not be rendered, or its assistant mask could not be derived safely."""


def render_example(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]] | None = None,
    max_length: int | None = None,
    fast: bool = True,
) -> RenderedExample:
    """Render ``messages`` with the tokenizer's chat template; label every assistant turn and its end token.

    ``max_length`` keeps the first ``max_length`` tokens (labels cut the same way) and sets ``truncated``.
    ``fast=False`` skips the skeleton cache (same result, the straightforward way).
    """
    if fast:
        result = render_examples(tokenizer, [messages], [tools], max_length=max_length)[0]
        if isinstance(result, RenderError):
            raise result
        return result
    _check_max_length(max_length)
    _check_messages(messages)
    messages, untrained = template_messages(tokenizer, messages, tools)
    assistant_idx = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if not assistant_idx:
        raise RenderError("conversation has no assistant turn: nothing to train on")
    # Only trained turns need their place in the text: an untrained one (a preference prompt's replies) may
    # render differently once more messages follow, as Qwen3's template does for earlier replies.
    trained_idx = [i for i in assistant_idx if i not in untrained]
    if not trained_idx:
        raise RenderError("every assistant turn has loss_weight 0: nothing to train on")

    text = _render(tokenizer, [messages], tools, generation_prompt=False)[0]
    spans, problem = _assistant_char_spans(tokenizer, messages, trained_idx, text, tools)
    if problem is None:
        input_ids, labels = _labels_from_spans(tokenizer, text, spans)
    elif untrained:
        raise RenderError(f"cannot derive the assistant mask: {problem}; loss_weight 0 turns need a template that "
                          "renders earlier turns the same once more messages follow")
    elif _GENERATION_TAG.search(_template_source(tokenizer, tools)):
        input_ids, labels = _labels_from_generation_tags(tokenizer, messages, tools, text)
    else:
        raise RenderError(
            f"cannot derive the assistant mask: {problem}. The chat template renders earlier turns differently "
            "once more messages follow (for example it drops reasoning from the history); add "
            "{% generation %} markers to the template or split the chat into one example per assistant turn"
        )

    return _finish(input_ids, labels, text, max_length)


def render_examples(
    tokenizer: Any,
    chats: Sequence[list[dict[str, Any]]],
    tools: Sequence[list[dict[str, Any]] | None] | None = None,
    *,
    max_length: int | None = None,
) -> list[RenderedExample | RenderError]:
    """:func:`render_example` over many chats (``tools[i]`` for chat ``i``): results in order, errors returned.

    Chats the skeleton cache can fill are tokenized together in one backend call; the others are rendered
    one by one the straightforward way. Either way each result equals ``render_example(..., fast=False)``.
    """
    _check_max_length(max_length)

    def slow(messages: list[dict[str, Any]], row_tools: Any) -> RenderedExample:
        return render_example(tokenizer, messages, tools=row_tools, max_length=max_length, fast=False)

    def fast(text: str, tokens: _Tokens, turns: list[tuple[int, int]]) -> RenderedExample:
        return _finish(tokens.ids, _labels(tokens.ids, turns), text, max_length)

    return _batch(tokenizer, chats, tools, slow, fast)


def count_examples(
    tokenizer: Any,
    chats: Sequence[list[dict[str, Any]]],
    tools: Sequence[list[dict[str, Any]] | None] | None = None,
    *,
    max_length: int | None = None,
) -> list[tuple[int, int] | RenderError]:
    """``(n_tokens, n_trained)`` of each chat without building label lists (what data_prep's stats need).

    ``n_tokens`` is the full length (before truncation); ``n_trained`` counts trained tokens among the first
    ``max_length``. Equal to those counts over ``render_example(..., fast=False)``.
    """
    _check_max_length(max_length)
    cut = max_length

    def slow(messages: list[dict[str, Any]], row_tools: Any) -> tuple[int, int]:
        ex = render_example(tokenizer, messages, tools=row_tools, fast=False)
        labels = ex.labels if cut is None else ex.labels[:cut]
        return ex.n_tokens, len(labels) - labels.count(IGNORE_INDEX)

    def fast(text: str, tokens: _Tokens, turns: list[tuple[int, int]]) -> tuple[int, int]:
        n = len(tokens.ids)
        end = n if cut is None else min(n, cut)
        prev = 0
        for t0, t1 in turns:
            if t0 < prev:  # turns that share tokens: count over the labels instead
                labels = _labels(tokens.ids, turns)[:end]
                return n, len(labels) - labels.count(IGNORE_INDEX)
            prev = t1
        return n, sum(max(0, min(t1, end) - t0) for t0, t1 in turns)

    return _batch(tokenizer, chats, tools, slow, fast)


def _batch(tokenizer: Any, chats: Sequence[list[dict[str, Any]]], tools: Any, slow: Any, fast: Any) -> list[Any]:
    """``slow(messages, tools)`` for rows off the fast path; ``fast(text, tokens, turns)`` for the others."""
    out: list[Any] = [None] * len(chats)
    plan = _plan_for(tokenizer)
    pending: list[tuple[int, str, list[tuple[int, int]]]] = []
    for i, messages in enumerate(chats):
        row_tools = tools[i] if tools is not None else None
        filled = _fill(tokenizer, plan, messages) if plan is not None and row_tools is None else None
        if filled is not None:
            pending.append((i, *filled))
            continue
        try:
            out[i] = slow(messages, row_tools)
        except RenderError as exc:
            out[i] = exc
    if pending:
        special = _special_ids(tokenizer)
        encoded = _encode_many(tokenizer, [text for _, text, _ in pending])
        for (i, text, spans), tokens in zip(pending, encoded, strict=True):
            try:
                turns = _token_spans(text, spans, tokens.ids, tokens.starts, tokens.offsets, special)
                out[i] = fast(text, tokens, turns)
            except RenderError as exc:
                out[i] = exc
    return out


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
    messages = template_messages(tokenizer, messages, tools)[0]
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


def template_messages(
    tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
) -> tuple[list[dict[str, Any]], set[int]]:
    """``messages`` as the chat template takes them, and the indices of turns not trained (``loss_weight`` 0).

    A ``reasoning_content`` trace stays a field for templates that read it (Qwen3, DeepSeek-R1 distills);
    for the others it becomes a ``<think>`` block before the content, laid out as Qwen3 lays it out, so the
    trace is in the text and trained with its turn.
    """
    native: bool | None = None
    out: list[dict[str, Any]] = []
    untrained: set[int] = set()
    for i, m in enumerate(messages):
        if "loss_weight" in m or "reasoning_content" in m:
            m = dict(m)
            if m.pop("loss_weight", None) == 0:
                untrained.add(i)
            reasoning = m.get("reasoning_content")
            if not reasoning:
                m.pop("reasoning_content", None)
            else:
                if native is None:
                    native = "reasoning_content" in _template_source(tokenizer, tools)
                if not native:
                    del m["reasoning_content"]
                    content = (m.get("content") or "").lstrip("\n")
                    m["content"] = f"<think>\n{reasoning.strip(chr(10))}\n</think>\n\n{content}"
        out.append(m)
    return out, untrained


# ---------------------------------------------------------------------------------------------- internals


def _check_max_length(max_length: int | None) -> None:
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be a positive number of tokens, got {max_length}")


def _finish(input_ids: list[int], labels: list[int], text: str, max_length: int | None) -> RenderedExample:
    truncated = max_length is not None and len(input_ids) > max_length
    if truncated:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return RenderedExample(input_ids=input_ids, labels=labels, text=text, truncated=truncated)


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
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    turns = _token_spans(text, spans, ids, [s for s, _ in offsets], offsets, _special_ids(tokenizer))
    return ids, _labels(ids, turns)


def _token_spans(
    text: str,
    spans: list[tuple[int, int]],
    input_ids: list[int],
    token_starts: Sequence[int],
    offsets: Sequence[tuple[int, int]],
    special: set[int],
) -> list[tuple[int, int]]:
    """Token ranges ``[t0, t1)`` of each assistant span, from each token's character offsets in ``text``."""
    turns = []
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
        turns.append((t0, t1))
    return turns


def _labels(input_ids: list[int], turns: list[tuple[int, int]]) -> list[int]:
    labels = [IGNORE_INDEX] * len(input_ids)
    for t0, t1 in turns:
        labels[t0:t1] = input_ids[t0:t1]
    return labels


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


# ------------------------------------------------------------------------------------- the fast path

_MAX_SHAPES = 4096  # distinct conversation shapes kept per tokenizer; more are rendered row by row


@dataclass
class _Plan:
    """Skeletons of one tokenizer's template, valid while its template and special tokens stay the same."""

    key: tuple[Any, ...]
    shapes: dict[Shape, Skeleton | None] = field(default_factory=dict)


_PLANS: weakref.WeakKeyDictionary[Any, _Plan] = weakref.WeakKeyDictionary()


@lru_cache(maxsize=64)
def _pure(source: str) -> bool:
    return template_is_pure(source)


def _plan_for(tokenizer: Any) -> _Plan | None:
    """The tokenizer's skeleton cache, or None when its template is not provably content-agnostic."""
    source = _template_source(tokenizer, None)
    if not source or not _pure(source):
        return None
    # The template also sees the special tokens (bos_token, ...); a change to either starts a new cache.
    key = (source, repr(sorted(tokenizer.special_tokens_map.items())))
    try:
        plan = _PLANS.get(tokenizer)
    except TypeError:  # an object that takes no weak reference: no cache, straightforward path
        return None
    if plan is None or plan.key != key:
        plan = _Plan(key)
        _PLANS[tokenizer] = plan
    return plan


def _skeleton(tokenizer: Any, plan: _Plan, shape: Shape) -> Skeleton | None:
    if shape in plan.shapes:
        return plan.shapes[shape]
    sk = build_skeleton(lambda chats, gp: _render(tokenizer, chats, None, generation_prompt=gp), shape)
    if len(plan.shapes) < _MAX_SHAPES:
        plan.shapes[shape] = sk
    return sk


def _fill(tokenizer: Any, plan: _Plan, messages: Any) -> tuple[str, list[tuple[int, int]]] | None:
    """Text and assistant spans from the skeleton of the chat's shape; None sends the row the slow way."""
    if not isinstance(messages, list):
        return None
    shape = shape_of(messages) if all(isinstance(m, dict) for m in messages) else None
    if shape is None:
        return None
    sk = _skeleton(tokenizer, plan, shape)
    if sk is None:
        return None
    text, spans = sk.fill([m["content"] for m in messages])
    prev_end = 0
    for a, b in spans:
        if a < prev_end or b < a:
            return None  # the straightforward path words the error
        prev_end = b
    return text, spans


def _backend(tokenizer: Any) -> Any:
    """The Rust tokenizer when calling it directly gives what ``tokenizer(text)`` gives; else None."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if not getattr(tokenizer, "is_fast", False) or backend is None:
        return None
    try:
        same = (backend.truncation is None and backend.padding is None
                and backend.encode_special_tokens == bool(getattr(tokenizer, "split_special_tokens", False)))
    except AttributeError:
        return None
    return backend if same else None


@dataclass
class _Tokens:
    """One tokenized text: ids, and each token's start and ``(start, end)`` character offsets."""

    ids: list[int]
    starts: Sequence[int]
    offsets: Sequence[tuple[int, int]]


class _LazyOffsets(Sequence):
    """A backend encoding's offsets, read one token at a time (the masks look at a few dozen of them).

    Converting every offset to Python tuples costs more than tokenizing; ``bisect`` and the glue check
    index the same values through ``token_to_chars``, so they probe and decide exactly as on the full list.
    """

    def __init__(self, enc: Any, field: int | None) -> None:
        self.enc, self.field, self.n = enc, field, len(enc)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, t: Any) -> Any:
        if not isinstance(t, int) or not 0 <= t < self.n:
            raise IndexError(t)  # bisect and the mask only index in range; anything else is a bug
        span = self.enc.token_to_chars(t)
        return span if self.field is None else span[self.field]


def _encode_many(tokenizer: Any, texts: list[str]) -> list[_Tokens]:
    """Each text tokenized (no special tokens added): one backend call for the whole batch."""
    backend = _backend(tokenizer)
    if backend is None:
        out = []
        for text in texts:
            enc = _encode(tokenizer, text, offsets=True)
            offsets = enc["offset_mapping"]
            out.append(_Tokens(list(enc["input_ids"]), [s for s, _ in offsets], offsets))
        return out
    table, fast = _byte_path(tokenizer, backend)
    out: list[_Tokens | None] = [None] * len(texts)
    if table is not None:  # offsets from the tokens' bytes where provably exact (data_prep.token_bytes)
        slow = []
        for i, text in enumerate(texts):
            ids = fast.encode(text) if fast is not None else None  # data_prep.fast_bpe: plain ASCII only
            if ids is None:
                slow.append(i)
            else:
                out[i] = _from_bytes(text, ids, table)
        ascii_rows = [i for i in slow if texts[i].isascii()]
        for i, e in zip(ascii_rows, backend.encode_batch_fast([texts[i] for i in ascii_rows],
                                                              add_special_tokens=False), strict=True):
            out[i] = _from_bytes(texts[i], e.ids, table)
    rest = [i for i, tokens in enumerate(out) if tokens is None]
    for i, e in zip(rest, backend.encode_batch([texts[i] for i in rest], add_special_tokens=False), strict=True):
        out[i] = _Tokens(e.ids, _LazyOffsets(e, 0), _LazyOffsets(e, None))
    return out  # type: ignore[return-value]


class _SpanOffsets(Sequence):
    """``(start, end)`` of token t from the running byte lengths ``cum`` (as the tokenizer's own offsets)."""

    def __init__(self, cum: list[int]) -> None:
        self.cum = cum

    def __len__(self) -> int:
        return len(self.cum) - 1

    def __getitem__(self, t: Any) -> Any:
        if not isinstance(t, int) or not 0 <= t < len(self.cum) - 1:
            raise IndexError(t)
        return self.cum[t], self.cum[t + 1]


def _from_bytes(text: str, ids: list[int], table: list[bytes]) -> _Tokens | None:
    cum = fast_offsets(text, ids, table)
    return None if cum is None else _Tokens(ids, cum[:-1], _SpanOffsets(cum))


_BytePath = tuple[list[bytes] | None, AsciiBPE | None]
_BYTE_PATHS: weakref.WeakKeyDictionary[Any, tuple[Any, _BytePath]] = weakref.WeakKeyDictionary()


def _byte_path(tokenizer: Any, backend: Any) -> _BytePath:
    """:func:`data_prep.token_bytes.byte_table` and :class:`data_prep.fast_bpe.AsciiBPE`, once per tokenizer
    (again if its vocabulary or added tokens change)."""
    # what either is built from: the vocabulary, the added tokens (adding one already in the vocabulary keeps
    # the size) and whether special tokens are read as text
    added = tuple(sorted((i, token.content) for i, token in backend.get_added_tokens_decoder().items()))
    state = (backend.get_vocab_size(with_added_tokens=True), added, getattr(backend, "encode_special_tokens", None))
    try:
        cached = _BYTE_PATHS.get(tokenizer)
    except TypeError:  # takes no weak reference
        return None, None
    if cached is None or cached[0] != state:
        spec = json.loads(backend.to_str())  # a few MB of JSON: parsed once for both
        table = byte_table(backend, spec)
        cached = (state, (table, AsciiBPE.build(backend, spec) if table is not None else None))
        _BYTE_PATHS[tokenizer] = cached
    return cached[1]
