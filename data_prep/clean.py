"""Cleaning: exact and normalized dedup, length limits, a simple quality score, a balance cap.

Dedup keeps only 8-byte digests (as ints) and a packed ``(file index, position)`` of the first copy, so memory
grows by about 100 bytes per unique row and never holds row text.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import zlib
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from data_prep.conversation import Conversation
from data_prep.validate import RowError, content_chars

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
_POS_BITS = 40  # position (line or index) in the low bits, file index above


def exact_text(conv: Conversation, chat: list[dict[str, Any]] | None = None) -> str:
    """The canonical JSON of what is trained on (messages and tools); ``chat`` is ``conv.as_chat()`` if known."""
    if conv.kind != "sft":  # the whole row but where it came from
        row = {k: v for k, v in conv.to_dict().items() if k not in ("source", "tags", "task_type")}
        return json.dumps(row, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    chat = conv.as_chat() if chat is None else chat
    return json.dumps([chat, conv.tools], ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _fold(text: str) -> str:
    return _NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def normalized_text(conv: Conversation) -> str:
    """Roles + content with case, Unicode width forms, whitespace and punctuation folded away (each part of a
    preference row after its own marker, so a pair and its swap differ)."""
    if conv.kind == "text":
        return f"text:{_fold(conv.text)}"
    parts = []
    sides = [("", conv.messages), ("chosen|", conv.chosen), ("rejected|", conv.rejected),
             (f"completion|{conv.label}|", conv.completion)]
    for mark, msgs in sides:
        for m in msgs:
            text = (m.reasoning_content or "") + "\x1f" + m.content if m.reasoning_content else m.content
            if m.tool_calls:
                text += json.dumps(m.tool_calls, ensure_ascii=False, sort_keys=True)
            parts.append(f"{mark}{m.role}:{_fold(text)}")
    return "\x1e".join(parts)


def digest64(text: str, salt: str = "") -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8, person=salt.encode()[:16]).digest(), "big")


def pack_source(file_index: int, position: int) -> int:
    return (file_index << _POS_BITS) | position


def unpack_source(packed: int) -> tuple[int, int]:
    return packed >> _POS_BITS, packed & ((1 << _POS_BITS) - 1)


class DigestMap:
    """A map from 64-bit digests to non-negative ints in two flat arrays (open addressing, linear probing).

    16 bytes a slot and at most 2/3 of the slots used: about 24 B an entry where a ``dict`` of ints takes
    about 170 B, so dedup over a million rows stays in tens of MB. Digests are uniform, so their low bits
    are the slot. ``array`` rather than numpy: indexing it gives plain ints, several times faster per row.
    """

    def __init__(self, capacity: int = 1 << 12) -> None:
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        self._keys = array("Q", bytes(8 * capacity))
        self._vals = array("q", [-1]) * capacity  # -1 marks an empty slot
        self._mask = capacity - 1
        self._n = 0

    def _slot(self, key: int) -> int:
        i, keys, vals = key & self._mask, self._keys, self._vals
        while vals[i] != -1 and keys[i] != key:
            i = (i + 1) & self._mask
        return i

    def get(self, key: int) -> int | None:
        v = self._vals[self._slot(key)]
        return None if v == -1 else v

    def __setitem__(self, key: int, value: int) -> None:
        i = self._slot(key)
        if self._vals[i] == -1:
            if 3 * (self._n + 1) > 2 * len(self._vals):
                self._grow()
                i = self._slot(key)
            self._n += 1
        self._keys[i], self._vals[i] = key, value

    def _grow(self) -> None:
        keys, vals = self._keys, self._vals
        self._alloc(2 * len(vals))
        for k, v in zip(keys, vals, strict=True):
            if v != -1:
                self[k] = v

    def __len__(self) -> int:
        return self._n


@dataclass
class Deduper:
    """Remembers digests of rows seen; :meth:`check` returns ``(kind, first_packed_source)`` for a duplicate."""

    normalized: bool = True
    _exact: DigestMap = field(default_factory=DigestMap)
    _norm: DigestMap = field(default_factory=DigestMap)

    def check(self, exact_key: int, norm_key: int, packed_source: int) -> tuple[str, int] | None:
        first = self._exact.get(exact_key)
        if first is not None:
            return "exact", first
        if self.normalized:
            first = self._norm.get(norm_key)
            if first is not None:
                return "normalized", first
            self._norm[norm_key] = packed_source
        self._exact[exact_key] = packed_source
        return None


def check_length(conv: Conversation, min_chars: int = 1, max_chars: int | None = None) -> int:
    """Raise ``too_short`` / ``too_long`` by characters of content; returns the character count."""
    n = content_chars(conv)
    if n < min_chars:
        raise RowError("too_short", f"{n} characters of content, fewer than --min-chars {min_chars}")
    if max_chars is not None and n > max_chars:
        raise RowError("too_long", f"{n} characters of content, more than --max-chars {max_chars}")
    return n


def quality_score(conv: Conversation, won: bool | None = None) -> float:
    """A simple score in [0, 1] over the assistant text; the product of a few penalties.

    - an assistant reply that repeats the user turn before it: 0;
    - a failed ReAct episode (``won`` is False): 0;
    - assistant text of fewer than 2 letters/digits: 0.2;
    - a low share of letters/digits/whitespace (symbol soup, mojibake): share / 0.6 below 0.6;
    - strong repetition (zlib compresses the text below 15% of its size, for texts of 200+ chars): 0.2;
    - U+FFFD replacement characters (broken decoding): 0.5.
    """
    if won is False:
        return 0.0
    score = 1.0
    prev_user = ""
    texts = []
    for m in conv.messages:
        if m.role == "user":
            prev_user = m.content.strip()
        elif m.role == "assistant" and m.content.strip():
            if prev_user and m.content.strip() == prev_user:
                return 0.0
            texts.append(m.content)
    text = "\n".join(texts)
    if not text:
        return 1.0 if any(m.tool_calls for m in conv.messages) else 0.0
    alnum = sum(ch.isalnum() for ch in text)
    if alnum < 2:
        score *= 0.2
    share = (alnum + sum(ch.isspace() for ch in text)) / len(text)
    if share < 0.6:
        score *= share / 0.6
    raw = text.encode("utf-8")
    if len(text) >= 200 and len(zlib.compress(raw, 6)) < 0.15 * len(raw):
        score *= 0.2
    if "\ufffd" in text:
        score *= 0.5
    return round(score, 4)


def stratum(conv: Conversation) -> str:
    """The balance/stratification key: task type, else the first tag, else ``"(none)"``."""
    return conv.task_type or (conv.tags[0] if conv.tags else "(none)")


@dataclass
class BalanceCap:
    """Keep at most ``cap`` rows per stratum (task type or tag), the first ones in input order."""

    cap: int
    counts: Counter[str] = field(default_factory=Counter)

    def admit(self, key: str) -> None:
        if self.counts[key] >= self.cap:
            raise RowError("over_balance_cap", f"'{key}' already has {self.cap} rows (--balance-cap)")
        self.counts[key] += 1
