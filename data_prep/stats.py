"""``stats.json`` and ``length_hist.png``: what went in, what came out, and how long it is.

Lengths per split are kept as one 4-byte integer per row (``array('I')``): token counts when a tokenizer was
given, else character counts. Percentiles use the nearest-rank method.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, Any

SPLITS = ("train", "test")


def percentiles(values: array | list[int]) -> dict[str, int] | None:
    """p50/p90/p95/p99/max (nearest rank), mean and total; ``None`` for no values."""
    if not len(values):
        return None
    import numpy as np

    # numpy over the array's own buffer: sorted() would make a Python int per row (36 MB at a million rows)
    s = np.sort(np.frombuffer(values, dtype=np.uint32) if isinstance(values, array) else np.asarray(values))
    n = len(s)
    total = int(s.sum(dtype=np.int64))

    def rank(p: float) -> int:
        return int(s[max(0, math.ceil(p / 100 * n) - 1)])

    return {"p50": rank(50), "p90": rank(90), "p95": rank(95), "p99": rank(99), "max": int(s[-1]),
            "mean": round(total / n, 1), "total": total}


@dataclass
class SplitStats:
    lengths: array = field(default_factory=lambda: array("I"))
    task_types: Counter[str] = field(default_factory=Counter)
    rows: int = 0

    def add(self, length: int, task_type: str | None) -> None:
        self.rows += 1
        self.lengths.append(length)
        if task_type:
            self.task_types[task_type] += 1


@dataclass
class Stats:
    """Counters filled by the pipeline; :meth:`to_dict` is ``stats.json``."""

    rows_in: int = 0
    rows_kept: int = 0
    rows_deduplicated: int = 0
    dedup: Counter[str] = field(default_factory=Counter)
    rejects_by_reason: Counter[str] = field(default_factory=Counter)
    rows_over_max_length: int = 0
    rows_truncated: int = 0
    tokens_total: int = 0
    tokens_trained: int = 0
    splits: dict[str, SplitStats] = field(default_factory=lambda: {s: SplitStats() for s in SPLITS})
    inputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejects_by_reason.values())

    def reject(self, reason: str) -> None:
        self.rejects_by_reason[reason] += 1

    def check_balance(self) -> None:
        total = self.rows_kept + self.rows_rejected + self.rows_deduplicated
        if self.rows_in != total:
            raise AssertionError(f"row accounting is off: rows_in {self.rows_in} != kept {self.rows_kept} + "
                                 f"rejected {self.rows_rejected} + deduplicated {self.rows_deduplicated}")

    def to_dict(self, *, length_unit: str, config: dict[str, Any], elapsed_s: float, rows_s: float,
                cpu_s: float | None = None) -> dict[str, Any]:
        """``elapsed_s`` is the whole run; ``rows_s`` the row processing part (without loading the tokenizer);
        ``cpu_s`` the CPU seconds of that part, worker processes included."""
        self.check_balance()
        tokens = length_unit == "tokens"
        return {
            "rows_in": self.rows_in,
            "rows_kept": self.rows_kept,
            "rows_rejected": self.rows_rejected,
            "rows_deduplicated": self.rows_deduplicated,
            "dedup_exact": self.dedup["exact"],
            "dedup_normalized": self.dedup["normalized"],
            "rejects_by_reason": dict(sorted(self.rejects_by_reason.items())),
            "rows_train": self.splits["train"].rows,
            "rows_test": self.splits["test"].rows,
            "length_unit": length_unit,
            "token_lengths": {s: percentiles(v.lengths) for s, v in self.splits.items()} if tokens else None,
            "char_lengths": None if tokens else {s: percentiles(v.lengths) for s, v in self.splits.items()},
            "rows_over_max_length": self.rows_over_max_length if tokens else None,
            "rows_truncated": self.rows_truncated if tokens else None,
            "tokens_total": self.tokens_total if tokens else None,
            "tokens_trained": self.tokens_trained if tokens else None,
            "trained_token_share": (round(self.tokens_trained / self.tokens_total, 4) if self.tokens_total else 0.0)
            if tokens else None,
            "task_types": {s: dict(sorted(v.task_types.items())) for s, v in self.splits.items()},
            "inputs": self.inputs,
            "config": config,
            "elapsed_s": round(elapsed_s, 2),
            "rows_per_s": round(self.rows_in / rows_s, 1) if rows_s > 0 else None,
            "row_cpu_s": None if cpu_s is None else round(cpu_s, 2),
        }


def plot_lengths(dest: IO[bytes], stats: Stats, *, length_unit: str, max_length: int | None) -> None:
    """Histogram of lengths per split, with the max-length line, as PNG into ``dest`` (an atomic file's)."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    drawn = False
    all_max = max((max(v.lengths) for v in stats.splits.values() if len(v.lengths)), default=1)
    top = max(all_max, max_length or 0) if length_unit == "tokens" else all_max
    bins = [top * i / 40 for i in range(41)] if top > 0 else 10
    for name, color in zip(SPLITS, ("tab:blue", "tab:orange"), strict=True):
        lengths = stats.splits[name].lengths
        if len(lengths):
            ax.hist(np.frombuffer(lengths, dtype=np.uint32), bins=bins, alpha=0.6, color=color, label=f"{name} ({len(lengths)} rows)")
            drawn = True
    if length_unit == "tokens" and max_length:
        ax.axvline(max_length, color="red", linestyle="--", label=f"max_length {max_length}")
        drawn = True
    if not drawn:
        ax.text(0.5, 0.5, "no rows kept", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"length ({length_unit}, before truncation)" if length_unit == "tokens" else "length (characters)")
    ax.set_ylabel("rows")
    ax.set_title("Length per row by split")
    if drawn:
        ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(dest, format="png")
    finally:
        plt.close(fig)


def print_summary(stats: dict[str, Any], out: str, console: Any = None) -> None:
    """The stats of one data_prep run as a rich table (on ``console``, default stdout)."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"data_prep -> {out}", show_header=True)
    t.add_column("")
    t.add_column("value", justify="right")
    t.add_row("rows in", str(stats["rows_in"]))
    t.add_row("kept (train / test)", f"{stats['rows_kept']} ({stats['rows_train']} / {stats['rows_test']})")
    t.add_row("rejected", str(stats["rows_rejected"]))
    for reason, n in stats["rejects_by_reason"].items():
        t.add_row(f"  {reason}", str(n))
    t.add_row("deduplicated", f"{stats['rows_deduplicated']} "
                              f"(exact {stats['dedup_exact']}, normalized {stats['dedup_normalized']})")
    lengths = stats["token_lengths"] or stats["char_lengths"]
    unit = stats["length_unit"]
    for split in ("train", "test"):
        pc = lengths.get(split)
        if pc:
            t.add_row(f"{split} {unit} p50/p95/max", f"{pc['p50']} / {pc['p95']} / {pc['max']}")
    if stats["token_lengths"] is not None:
        t.add_row("over max length (truncated)", f"{stats['rows_over_max_length']} ({stats['rows_truncated']})")
        t.add_row("trained token share", f"{stats['trained_token_share']:.1%}")
    for item in stats["inputs"]:
        t.add_row(f"input {item['path']}", f"{item['format']}: {item['rows_kept']}/{item['rows_in']} kept")
    t.add_row("rows/s", str(stats["rows_per_s"]))
    (console or Console()).print(t)
