"""``python -m data_prep`` at scale: 100k and 1M synthetic ShareGPT rows, memory flat and throughput steady.

Each run is a fresh child (``bench/peers.run_measured``: the child's own polled ``VmHWM``; ``ru_maxrss`` would
start at this pytest process's peak and hide the child's).
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


@pytest.fixture(scope="module")
def scale_figures(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, float], dict[str, float]]:
    """One 100k-row and one 1M-row run (about 2 minutes); both tests below read the same figures."""
    tmp_path = tmp_path_factory.mktemp("scale")
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
    return figures[small], figures[large]


@pytest.mark.slow
def test_one_million_rows_steady_speed(scale_figures: tuple[dict[str, float], dict[str, float]]) -> None:
    small, large = scale_figures
    # 0.7, not 0.8: runs here measured 0.76-1.0 on a box whose 100k figure itself moves between 7k and 13k rows/s;
    # a per-row cost that grows with the rows (a dedup or split structure going quadratic) falls far below it
    assert large["rows_per_s"] >= 0.7 * small["rows_per_s"], scale_figures


@pytest.mark.slow
# Per row, pass one keeps a 24-byte dedup slot (data_prep.clean.DigestMap, grown one 64th at a time) and an
# 8-byte split hash, freed before the stats; measured 77 MB at 100k and 80 MB at 1M rows (1.05x).
def test_one_million_rows_flat_memory(scale_figures: tuple[dict[str, float], dict[str, float]]) -> None:
    small, large = scale_figures
    assert large["rss_mb"] <= 1.3 * small["rss_mb"], scale_figures
