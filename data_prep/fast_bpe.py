"""Byte-level BPE ids for plain ASCII text without the tokenizer's per-call machinery, where provably equal.

For a byte-level BPE tokenizer (GPT-2's scheme: SmolLM2, Qwen2.5, Llama 3) a text's ids are: split at the
added tokens, split the rest with the pre-tokenizer's regex, then BPE each piece on its own. The Rust encode
call spends most of its time building an ``Encoding`` (token strings, masks, offsets) per text; the BPE of a
given piece never changes, so a piece -> ids cache makes the whole text a regex split and dict look-ups.

That is exact only where our split is the tokenizer's, so :meth:`AsciiBPE.build` accepts only this shape
(anything else returns None and the caller keeps the tokenizer):

- model BPE, no dropout; a normalizer that leaves ASCII as it is (none, or Unicode normal forms);
- pre-tokenizer exactly ``ByteLevel`` with ``use_regex`` (SmolLM2), or a ``Split`` (Isolated) with Qwen2/2.5/3's
  or Llama 3's pattern before ``ByteLevel`` without it; no prefix space;
- added tokens without ``lstrip`` / ``rstrip`` / ``single_word``, all ``normalized`` or none (the tokenizer
  splits the two kinds in two passes), and special tokens not split as text (``encode_special_tokens``);

and :meth:`AsciiBPE.encode` handles only texts of printable ASCII plus tab, newline and carriage return,
where the regexes' Unicode classes reduce to the ASCII ones written below (Python's ``\\s`` would also take \\x1c-\\x1f, so the
classes are spelled out). Each piece's BPE comes from the tokenizer's own model (``model.tokenize``). As a
run-time guard, the first texts and one in :data:`CHECK_EVERY` afterwards are compared with the tokenizer;
a difference raises, since rows already written would have been tokenized the same way.
"""

from __future__ import annotations

import json
import re
from itertools import chain
from typing import Any

from data_prep.token_bytes import byte_decoder, keeps_ascii

# Each accepted split, written for the ASCII this module accepts (\p{L} = A-Za-z, \p{N} = 0-9, \s = space,
# tab, LF, CR): tokenizers' ByteLevel regex (GPT-2's, SmolLM2), and the Split patterns of Qwen2/2.5 and
# Llama 3 as their tokenizer.json files spell them (before ByteLevel without its regex).
_GPT2_ASCII = re.compile(
    r"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^ \t\n\rA-Za-z0-9]+|[ \t\n\r]+(?![^ \t\n\r])|[ \t\n\r]+")
_SPLIT_TAIL = r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}%s| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_ASCII_TAIL = r"|[^\r\nA-Za-z0-9]?[A-Za-z]+|[0-9]%s| ?[^ \t\n\rA-Za-z0-9]+[\r\n]*|[ \t\n\r]*[\r\n]+|[ \t\n\r]+(?![^ \t\n\r])|[ \t\n\r]+"
_CONTRACTIONS = "(?i:'s|'t|'re|'ve|'m|'ll|'d)"
_SPLITS = {_CONTRACTIONS + _SPLIT_TAIL % digits: re.compile(_CONTRACTIONS + _ASCII_TAIL % digits)
           for digits in ("", "{1,3}")}  # Qwen2 / Qwen2.5 / Qwen3: one digit a piece; Llama 3: up to three
_SAFE = re.compile(r"[\t\n\r\x20-\x7e]*")
CHECK_FIRST = 64  # texts compared with the tokenizer before trusting the fast path
CHECK_EVERY = 997  # then one text in this many
CACHE_MAX = 200_000  # pieces kept (a few tens of MB); the cache starts afresh when full


class FastBPEMismatch(RuntimeError):
    """The fast path disagreed with the tokenizer: a bug here, never a property of the data."""


class AsciiBPE:
    """Ids of ASCII texts for one accepted tokenizer (see the module docstring); :meth:`encode` or None."""

    def __init__(self, backend: Any, added: list[str], split: re.Pattern[str]) -> None:
        self.backend, self.split = backend, split
        self.model = backend.model
        self.added = {content: backend.token_to_id(content) for content in added}
        # leftmost-longest, as the tokenizer matches added tokens
        alternatives = "|".join(re.escape(a) for a in sorted(added, key=len, reverse=True))
        self.split_added = re.compile(f"({alternatives})") if added else None
        unicode_of = {b: ch for ch, b in byte_decoder().items()}
        self.to_unicode = {i: unicode_of[i] for i in range(128)}  # str.translate table, ASCII -> byte alphabet
        self.cache: dict[str, list[int]] = {}
        self.seen = 0

    @classmethod
    def build(cls, backend: Any, spec: dict[str, Any] | None = None) -> AsciiBPE | None:
        """The fast path for ``backend`` (``spec``: its parsed JSON, if the caller has it), or None."""
        spec = spec if spec is not None else json.loads(backend.to_str())
        model = spec.get("model") or {}
        split = _split_of(spec.get("pre_tokenizer") or {})
        if model.get("type") != "BPE" or model.get("dropout") or not keeps_ascii(spec.get("normalizer")) or not split:
            return None
        added = spec.get("added_tokens") or []
        if (any(a.get("lstrip") or a.get("rstrip") or a.get("single_word") for a in added)
                or len({bool(a.get("normalized")) for a in added}) > 1  # two passes in the tokenizer, one here
                or getattr(backend, "encode_special_tokens", True)):  # special tokens read as text
            return None
        return cls(backend, [a["content"] for a in added], split)

    def encode(self, text: str) -> list[int] | None:
        """The text's ids (no special tokens added), or None when it is not plain ASCII."""
        if not text.isascii() or _SAFE.fullmatch(text) is None:
            return None
        ids = self._ids(text)
        self.seen += 1
        if self.seen <= CHECK_FIRST or self.seen % CHECK_EVERY == 0:
            expected = self.backend.encode(text, add_special_tokens=False).ids
            if ids != expected:
                raise FastBPEMismatch(f"fast BPE differs from the tokenizer on {text[:80]!r}")
        return ids

    def _ids(self, text: str) -> list[int]:
        parts = self.split_added.split(text) if self.split_added else [text]
        ids: list[int] = []
        for k, part in enumerate(parts):
            if k % 2:  # re.split puts the captured added tokens at odd positions
                ids.append(self.added[part])
            elif part:
                pieces = self.split.findall(part)
                hits = list(map(self.cache.get, pieces))  # one C-level pass; misses are rare after warm-up
                if None in hits:
                    hits = [hit if hit is not None else self._piece(piece) for piece, hit in zip(pieces, hits, strict=True)]
                ids.extend(chain.from_iterable(hits))
        return ids

    def _piece(self, piece: str) -> list[int]:
        if len(self.cache) >= CACHE_MAX:
            self.cache.clear()  # bounded memory over a million-row file; hits come back within a batch
        ids = [t.id for t in self.model.tokenize(piece.translate(self.to_unicode))]
        self.cache[piece] = ids
        return ids


def _split_of(pre: dict[str, Any]) -> re.Pattern[str] | None:
    """Our ASCII form of a pre-tokenizer's split, for the accepted shapes only."""
    if pre.get("type") == "ByteLevel":
        return _GPT2_ASCII if pre.get("use_regex", True) and not pre.get("add_prefix_space") else None
    steps = pre.get("pretokenizers") or []
    if pre.get("type") != "Sequence" or len(steps) != 2:
        return None
    split, byte_level = steps
    if (split.get("type") != "Split" or split.get("behavior") != "Isolated" or split.get("invert")
            or byte_level.get("type") != "ByteLevel" or byte_level.get("use_regex", True)
            or byte_level.get("add_prefix_space")):
        return None
    return _SPLITS.get((split.get("pattern") or {}).get("Regex", ""))
