"""``bench/peers.run_measured`` reports the child's own peak RSS, not its parent's.

Linux starts a child's ``ru_maxrss`` at its parent's peak, so a test or bench process that has imported torch
would hide the figure of the child it measures; the scale test and the benches read this number.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from peers import run_measured  # noqa: E402

WORKER = """
import multiprocessing as mp, sys, time
def grow(mb):
    block = b"x" * (mb << 20)  # touched pages: resident
    time.sleep(0.3)
if __name__ == "__main__":
    p = mp.get_context("spawn").Process(target=grow, args=(int(sys.argv[1]),))
    p.start(); p.join(); sys.exit(p.exitcode)
"""


def test_peak_rss_is_the_childs_own_not_the_parents(tmp_path: Path) -> None:
    ballast = b"p" * (400 << 20)  # this process holds 400 MB resident while it measures
    small = run_measured([sys.executable, "-c", "import time; x = b'c' * (30 << 20); time.sleep(0.3)"])
    assert small.returncode == 0, small.stderr
    assert 30 <= small.rss_mb < 150, small.rss_mb  # about 30 MB plus an interpreter, never the parent's 400+
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    worker = run_measured([sys.executable, str(script), "120"])
    assert worker.returncode == 0, worker.stderr
    assert 120 <= worker.rss_mb < 250, worker.rss_mb  # the worker's peak counts, as ru_maxrss's did
    assert len(ballast) == 400 << 20
