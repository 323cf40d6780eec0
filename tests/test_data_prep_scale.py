"""``python -m data_prep`` at scale: 100k and 1M synthetic ShareGPT rows, memory flat and throughput steady.

Each run is a fresh child (``bench/peers.run_measured``: ``ru_maxrss`` of that child alone, from ``os.wait4``).
Without a tokenizer: with SmolLM2's template the 1M run alone would take far longer than this box allows
(see bench/data_prep_throughput.py for the tokenizer figures). ``SCALE_ROWS=small,large`` changes the sizes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # the bench's row generator and measured runner, imported, not copied

from data_prep_throughput import write_rows  # noqa: E402
from peers import run_measured  # noqa: E402


def _run(src: Path, out: Path) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    run = run_measured([sys.executable, "-m", "data_prep", "--input", str(src), "--out", str(out), "--no-progress",
                        "--workers", "1"], env=env, cwd=ROOT)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr[-2000:]
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    return {"rows": stats["rows_in"], "kept": stats["rows_kept"], "rows_per_s": stats["rows_per_s"],
            "rss_mb": run.rss_mb, "wall_s": run.wall_s}


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="peak RSS grows with rows (measured: 232 MB at 100k, 568 MB at 1M without a "
                   "tokenizer; rows/s 13174 vs 12283): pass one keeps per-row state in memory; not fixed yet")
def test_one_million_rows_flat_memory_steady_speed(tmp_path: Path) -> None:
    small, large = (int(n) for n in os.environ.get("SCALE_ROWS", "100000,1000000").split(","))
    figures = {}
    for n in (small, large):
        src = tmp_path / f"rows_{n}.jsonl"
        write_rows(src, n)
        figures[n] = _run(src, tmp_path / f"out_{n}")
        src.unlink()
        for name in ("train.jsonl", "test.jsonl"):
            (tmp_path / f"out_{n}" / name).unlink()
        assert figures[n]["rows"] == n and figures[n]["kept"] == n
    print(f"\nscale figures: {json.dumps(figures)}")
    assert figures[large]["rss_mb"] <= 1.3 * figures[small]["rss_mb"], figures
    assert figures[large]["rows_per_s"] >= 0.8 * figures[small]["rows_per_s"], figures
