"""Token offsets without the tokenizer computing them, where that is provably exact.

``encode_batch_fast`` (no offsets) costs about a third less than ``encode_batch``. For a byte-level BPE
tokenizer that does not rewrite the text (no normalizer that changes ASCII, no prefix space, no offset
trimming), each token's offsets in an ASCII text are the running sum of its tokens' byte lengths. That holds
for a row only if its tokens' bytes, joined, are the text's bytes: :func:`fast_offsets` checks exactly that
and returns None otherwise, so the caller falls back to the tokenizer's own offsets.
"""

from __future__ import annotations

import json
from itertools import accumulate
from typing import Any

_ASCII_SAFE = {"NFC", "NFKC", "NFD", "NFKD"}  # Unicode normal forms leave ASCII as it is


def byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: printable Latin-1 bytes stand for themselves, the rest shift to 256+."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[chr(b)] = b
        else:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def keeps_ascii(spec: dict[str, Any] | None) -> bool:
    if spec is None:
        return True
    if spec.get("type") == "Sequence":
        return all(keeps_ascii(s) for s in spec.get("normalizers", []))
    return spec.get("type") in _ASCII_SAFE


def _trims(spec: dict[str, Any] | None) -> bool:
    """Whether a post-processor moves offsets (ByteLevel's ``trim_offsets``)."""
    if spec is None:
        return False
    if spec.get("type") == "Sequence":
        return any(_trims(s) for s in spec.get("processors", []))
    if spec.get("type") in ("ByteLevel", "RobertaProcessing"):
        return bool(spec.get("trim_offsets", True))
    return spec.get("type") not in ("TemplateProcessing", "BertProcessing")  # an unknown one: assume it may


def byte_table(backend: Any, spec: dict[str, Any] | None = None) -> list[bytes] | None:
    """Each token id's bytes, for a tokenizer whose ASCII offsets follow from them; else None.

    ``spec`` is the backend's parsed JSON, when the caller has it already."""
    spec = spec if spec is not None else json.loads(backend.to_str())
    pre = spec.get("pre_tokenizer") or {}
    levels = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    byte_level = [p for p in levels if p.get("type") == "ByteLevel"]
    if (spec.get("model", {}).get("type") != "BPE" or not byte_level
            or any(p.get("add_prefix_space") for p in byte_level)
            or not keeps_ascii(spec.get("normalizer")) or _trims(spec.get("post_processor"))):
        return None
    decode = byte_decoder()
    vocab = backend.get_vocab(with_added_tokens=True)
    added = {t["content"] for t in spec.get("added_tokens", [])}
    table = [b""] * (max(vocab.values()) + 1)
    for token, i in vocab.items():
        if token in added:
            table[i] = token.encode("utf-8")
        elif all(ch in decode for ch in token):
            table[i] = bytes(decode[ch] for ch in token)
        else:
            table[i] = b"\xff"  # not a byte-level token: any row holding it fails the check below
    return table


def fast_offsets(text: str, ids: list[int], table: list[bytes]) -> list[int] | None:
    """Token boundaries ``[0, end_0, end_1, ...]`` in ``text`` (character = byte for ASCII), or None when
    the tokens' bytes are not exactly the text's."""
    if not text.isascii():
        return None
    try:
        pieces = list(map(table.__getitem__, ids))
    except IndexError:
        return None
    if b"".join(pieces) != text.encode("ascii"):
        return None
    return list(accumulate(map(len, pieces), initial=0))
