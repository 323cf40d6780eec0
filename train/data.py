"""A run's data: data_prep on the raw inputs into ``run/data``, then its rows (train.jsonl / test.jsonl) as
tokenized datasets with assistant-only labels.

Rendering and masking belong to ``data_prep.render``; this module only turns its output into a
``datasets.Dataset`` of ``input_ids`` + ``labels`` (``-100`` = not trained), drops rows with nothing to train,
and counts tokens so the run can report the trained-token share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from data_prep.render import IGNORE_INDEX
from train.config import ConfigError, TrainConfig


class TrainDataError(ValueError):
    """Training data that cannot be used; the message names the file and row."""


@dataclass
class TokenStats:
    examples: int = 0
    tokens: int = 0
    supervised: int = 0  # tokens with a label (assistant tokens)
    truncated: int = 0
    dropped_unsupervised: list[str] = field(
        default_factory=list
    )  # sources of rows with no assistant token left

    @property
    def share(self) -> float:
        return self.supervised / self.tokens if self.tokens else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "tokens": self.tokens,
            "supervised_tokens": self.supervised,
            "supervised_share": round(self.share, 4),
            "truncated": self.truncated,
            "dropped_unsupervised": len(self.dropped_unsupervised),
        }


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    p = Path(path)
    with p.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise TrainDataError(f"{p}:{i}: not valid JSON ({e.msg})") from None
    return rows


def tokenize_rows(rows: list[dict[str, Any]], tokenizer: Any, max_length: int) -> tuple[Any, TokenStats]:
    """A Dataset with ``input_ids`` and ``labels`` for prepared rows, plus token counts."""
    from datasets import Dataset

    from data_prep.conversation import Conversation
    from data_prep.render import RenderError, render_example

    ids, labels = [], []
    stats = TokenStats()
    for n, row in enumerate(rows, 1):
        conv = Conversation.from_dict(row)
        try:
            ex = render_example(tokenizer, conv.as_chat(), tools=conv.tools, max_length=max_length)
        except RenderError:
            stats.dropped_unsupervised.append(conv.source or f"row {n}")
            continue
        sup = sum(1 for x in ex.labels if x != IGNORE_INDEX)
        if sup == 0:
            stats.dropped_unsupervised.append(conv.source or f"row {n}")
            continue
        ids.append(list(ex.input_ids))
        labels.append(list(ex.labels))
        stats.examples += 1
        stats.tokens += len(ex.input_ids)
        stats.supervised += sup
        stats.truncated += int(bool(ex.truncated))
    return Dataset.from_dict({"input_ids": ids, "labels": labels}), stats


def check_trainable(stats: TokenStats, split: str) -> None:
    """Refuse to train when no row has an assistant token to learn from."""
    if stats.examples == 0:
        first = stats.dropped_unsupervised[0] if stats.dropped_unsupervised else "(no rows)"
        raise TrainDataError(
            f"{split}: no example has an assistant token left to train on (first: {first}); "
            "check that rows end with an assistant reply, or raise --model.max_seq_length"
        )


def prompt_and_reference(row: dict[str, Any]) -> tuple[list[dict[str, Any]], str] | None:
    """The messages before the last assistant turn, and that turn's text (None if there is none)."""
    msgs = row.get("messages") or []
    for i in range(len(msgs) - 1, -1, -1):
        if msgs[i].get("role") == "assistant":
            return [dict(m) for m in msgs[:i]], msgs[i].get("content") or ""
    return None


def prepare_data(
    cfg: TrainConfig, run_dir: Path, model_name: str, reuse: bool, console: Console | None = None
) -> Path:
    """data_prep on the raw inputs into run/data (kept as is when resuming); its stats go to ``console``."""
    out = run_dir / "data"
    if reuse and (out / "train.jsonl").is_file():
        return out
    if not cfg.data.inputs and not cfg.data.dataset_info:
        raise ConfigError("no training data: set data.inputs (--data FILE) or data.dataset_info")
    from data_prep.pipeline import PrepConfig, prepare

    d = cfg.data
    root = Path(__file__).resolve().parents[1]

    def locate(p: str) -> str:  # bundled data paths also work from outside the repository
        return p if Path(p).exists() or not (root / p).exists() else str(root / p)

    kwargs: dict[str, Any] = dict(
        inputs=[locate(p) for p in d.inputs],
        out=str(out),
        format=d.format,
        tokenizer=model_name,
        max_length=cfg.model.max_seq_length,
        overlong=d.overlong,
        test_size=d.test_size,
        seed=int(cfg.sft.get("seed", 42)),
        system_prompt=d.system_prompt,
    )
    for key in ("question_field", "answer_field", "dataset_info", "dataset"):
        if getattr(d, key) is not None:
            kwargs[key] = locate(getattr(d, key)) if key == "dataset_info" else getattr(d, key)
    kwargs["stage"] = cfg.run.stage  # rows by stage: chats, text, preference pairs
    stats = prepare(PrepConfig(**kwargs))
    if console is not None:
        from data_prep.stats import print_summary

        print_summary(stats, str(out), console)
    return out
