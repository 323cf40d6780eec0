"""Continued pretraining rows (stage ``pt``): plain text, loss on every token, packed to ``max_seq_length``.

Each text row (``{"kind": "text", "text": ..., "source": ...}`` in ``run/data/train.jsonl``) is tokenized as
the model reads plain text (the tokenizer's own special tokens, then the end-of-text token, so the model learns
where a document stops). All documents are concatenated in order and cut into blocks of ``max_length`` tokens
(the last block may be shorter): no token is padded or dropped, and every token is a label.
"""

from __future__ import annotations

from typing import Any

from train.data import TokenStats, TrainDataError


def texts_of(rows: list[dict[str, Any]], path: str) -> list[str]:
    """The text of each row; TrainDataError names the first row that is not a text row."""
    out = []
    for n, row in enumerate(rows, 1):
        text = row.get("text")
        if row.get("kind", "text") != "text" or not isinstance(text, str):
            kind = row.get("kind") or ("sft" if "messages" in row else "unknown")
            raise TrainDataError(
                f"{path}:{n}: stage pt trains on text rows ({{\"kind\": \"text\", \"text\": ...}}); this row is "
                f"'{kind}'. Prepare the data with --stage pt"
            )
        if text.strip():
            out.append(text)
    return out


def document_ids(tokenizer: Any, text: str) -> list[int]:
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    end = tokenizer.eos_token_id
    return ids + [end] if end is not None and (not ids or ids[-1] != end) else ids


def pack_texts(texts: list[str], tokenizer: Any, max_length: int) -> tuple[Any, TokenStats]:
    """A Dataset of ``input_ids`` = ``labels`` blocks of ``max_length`` tokens, and its token counts."""
    from datasets import Dataset

    if max_length < 2:
        raise TrainDataError(f"model.max_seq_length must be at least 2 tokens for stage pt, got {max_length}")
    stream: list[int] = []
    for text in texts:
        stream += document_ids(tokenizer, text)
    blocks = [stream[i : i + max_length] for i in range(0, len(stream), max_length)]
    blocks = [b for b in blocks if len(b) > 1]  # one token has nothing to predict
    stats = TokenStats(examples=len(blocks), tokens=sum(map(len, blocks)))
    stats.supervised = stats.tokens
    return Dataset.from_dict({"input_ids": blocks, "labels": [list(b) for b in blocks]}), stats
