"""Cleaning: exact and normalized dedup, length limits, a simple quality score, a balance cap.

Dedup keeps only 8-byte digests (as ints) and a packed ``(file index, position)`` of the first copy, so memory
grows by about 40 bytes per unique row and never holds row text.
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
    """A map from 64-bit digests to pairs of ints, in flat arrays (open addressing, linear probing).

    24 bytes a slot at most 3/4 of the slots used: about 40 B an entry where a ``dict`` of ints takes about
    170 B. The table is cut into ``SHARDS`` parts by the digest's top bits, each growing by half on its own,
    so a resize copies one part: the old and new arrays never coexist for the whole table (which would
    double the peak at a million rows). Digests are uniform, so ``key % capacity`` is the slot and a part's
    capacity need not be a power of two. ``array`` rather than numpy: indexing it gives plain ints, several
    times faster per row.
    """

    SHARDS = 64
    SHIFT = 58  # 64 - log2(SHARDS): the part is the top bits

    def __init__(self, capacity: int = 1 << 12) -> None:
        part = max(8, capacity // self.SHARDS)
        self._keys: list[array] = []
        self._a: list[array] = []  # first value; -1 marks an empty slot
        self._b: list[array] = []  # second value, unsigned 64-bit (a digest)
        self._n = [0] * self.SHARDS
        for _ in range(self.SHARDS):
            self._keys.append(array("Q", bytes(8 * part)))
            self._a.append(array("q", [-1]) * part)
            self._b.append(array("Q", bytes(8 * part)))

    def _slot(self, part: int, key: int) -> int:
        keys, a = self._keys[part], self._a[part]
        cap = len(a)
        i = key % cap
        while a[i] != -1 and keys[i] != key:
            i = i + 1 if i + 1 < cap else 0
        return i

    def get(self, key: int) -> tuple[int, int] | None:
        part = key >> self.SHIFT
        i = self._slot(part, key)
        v = self._a[part][i]
        return None if v == -1 else (v, self._b[part][i])

    def put(self, key: int, a: int, b: int = 0) -> None:
        part = key >> self.SHIFT
        i = self._slot(part, key)
        if self._a[part][i] == -1:
            if 4 * (self._n[part] + 1) > 3 * len(self._a[part]):
                self._grow(part)
                i = self._slot(part, key)
            self._n[part] += 1
        self._write(part, i, key, a, b)

    def _write(self, part: int, i: int, key: int, a: int, b: int) -> None:
        self._keys[part][i], self._a[part][i], self._b[part][i] = key, a, b

    def _grow(self, part: int) -> None:
        keys, a, b = self._keys[part], self._a[part], self._b[part]
        cap = len(a) + len(a) // 2
        self._keys[part], self._a[part], self._b[part] = array("Q", bytes(8 * cap)), array("q", [-1]) * cap, \
            array("Q", bytes(8 * cap))
        for k, x, y in zip(keys, a, b, strict=True):
            if x != -1:
                self._write(part, self._slot(part, k), k, x, y)

    def __len__(self) -> int:
        return sum(self._n)


@dataclass
class Deduper:
    """Remembers digests of rows seen; :meth:`check` returns ``(kind, first_packed_source)`` for a duplicate.

    One table: rows with the same exact text have the same normalized text, so with normalized dedup on,
    the table is keyed by the normalized digest and holds the first copy's exact digest beside its source
    (an exact duplicate is a normalized match whose exact digest agrees too). 24 B a slot, not two tables' 32.
    """

    normalized: bool = True
    _seen: DigestMap = field(default_factory=DigestMap)

    def check(self, exact_key: int, norm_key: int, packed_source: int) -> tuple[str, int] | None:
        if not self.normalized:
            hit = self._seen.get(exact_key)
            if hit is not None:
                return "exact", hit[0]
            self._seen.put(exact_key, packed_source)
            return None
        hit = self._seen.get(norm_key)
        if hit is not None:
            first, first_exact = hit
            return ("exact" if first_exact == exact_key else "normalized"), first
        self._seen.put(norm_key, packed_source, exact_key)
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
