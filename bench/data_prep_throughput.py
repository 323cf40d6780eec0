"""data_prep throughput and memory: synthetic ShareGPT rows through ``python -m data_prep`` with a tokenizer.

For each size (default 10k and 100k rows) a JSONL file is generated in a temp dir and the pipeline runs in a
fresh child process, so peak RSS (``ru_maxrss`` from ``os.wait4``) is that run's alone. Rendering with the
SmolLM2 chat template (and label masks) is included. The last line is::

    rows_per_s=<rows/s of the largest run> rss_growth_10x=<peak RSS largest / peak RSS smallest>

Usage: ``python bench/data_prep_throughput.py [--rows 10000 100000] [--tokenizer NAME]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_VOCAB = ("tank filter water fish neon tetra guppy plant light heater gravel snail shrimp ammonia nitrite nitrate "
          "cycle test kit change weekly food flake pellet algae glass pump oxygen temperature degrees soft hard "
          "acidic stable gentle school tropical cold betta goldfish cichlid community bubble root leaf sand")
WORDS = tuple(_VOCAB.split())


def _sentence(rng: random.Random, n: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def write_rows(path: Path, n: int, seed: int = 0) -> None:
    """``n`` distinct ShareGPT rows (system + two exchanges, about 150 tokens each)."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            row = {
                "system": "You are a helpful fish-keeping assistant.",
                "conversations": [
                    {"from": "human", "value": f"Question {i}: {_sentence(rng, 12)}"},
                    {"from": "gpt", "value": f"{_sentence(rng, 25)} {_sentence(rng, 15)}"},
                    {"from": "human", "value": _sentence(rng, 10).replace(".", "?")},
                    {"from": "gpt", "value": _sentence(rng, 30)},
                ],
            }
            f.write(json.dumps(row) + "\n")


def run_one(path: Path, out: Path, tokenizer: str) -> dict[str, float]:
    """Run the CLI in a child; returns wall seconds, rows/s (from stats.json) and the child's peak RSS in MB."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "data_prep", "--input", str(path), "--out", str(out), "--tokenizer", tokenizer,
           "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"data_prep failed ({proc.returncode}): {stderr.decode(errors='replace').strip()}")
    stats = json.loads((out / "stats.json").read_text())
    return {"rows": stats["rows_in"], "kept": stats["rows_kept"], "wall_s": wall, "rows_per_s": stats["rows_per_s"],
            "rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000], help="row counts (smallest first)")
    p.add_argument("--tokenizer", default="smollm2-135m-instruct")
    args = p.parse_args()
    sizes = sorted(args.rows)
    results = []
    with tempfile.TemporaryDirectory(prefix="dp-bench-") as tmp:
        for n in sizes:
            src = Path(tmp) / f"sharegpt_{n}.jsonl"
            write_rows(src, n)
            r = run_one(src, Path(tmp) / f"out_{n}", args.tokenizer)
            mb = src.stat().st_size / 1e6
            print(f"{n:>8} rows ({mb:.1f} MB): {r['rows_per_s']:.0f} rows/s, wall {r['wall_s']:.1f} s, "
                  f"peak RSS {r['rss_mb']:.0f} MB, kept {r['kept']}", flush=True)
            results.append(r)
            src.unlink()
    growth = results[-1]["rss_mb"] / results[0]["rss_mb"]
    print(f"rows_per_s={results[-1]['rows_per_s']:.0f} rss_growth_10x={growth:.2f}")


if __name__ == "__main__":
    main()
