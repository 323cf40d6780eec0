"""data_prep throughput and memory, side by side with LLaMA-Factory's own preprocessing on the same rows.

For each size (default 10k and 100k rows) a ShareGPT JSONL file (system + two exchanges, about 150 tokens a
row) is generated in a temp dir, then both sides run on it, each in a fresh child process (so peak RSS,
polled ``VmHWM``, see ``peers.run_measured``, is that run's alone: the largest of the process and its workers):

- ours: ``python -m data_prep --tokenizer smollm2-135m-instruct --workers N`` (read, validate, dedup, render
  with SmolLM2's ChatML template and assistant masks, split, write). Rows/s is ``stats.json``'s
  ``rows_per_s`` (the row work, without loading the tokenizer);
- LLaMA-Factory 0.9.5: ``bench/lf_data_prep.py`` in ``bench/.venvs/llamafactory`` (created on first use by
  ``bench/peers.py``; several GB, 20+ minutes): its ``get_dataset`` for SFT with template ``smollm2``, the
  same tokenizer folder (our dequantized SmolLM2 cache), ``cutoff_len`` = our ``--max-length`` (2048),
  ``val_size`` 0.1 (our test split), ``preprocessing_num_workers`` N. Rows/s is rows / ``get_dataset`` time.

CPU per row (all processes, the same parts as rows/s; ``stats.json``'s ``row_cpu_s`` for ours, the driver's
rusage for LF) is printed too: on a shared box it moves much less than wall time.

Both sides get the same N (``--workers``, default 1: one process each, which a busy shared box disturbs
least; ``--workers 2`` compares the two parallel paths) and the same environment (one BLAS thread, tokenizer
parallelism off, offline). The bench stops if LF's rendering of row 0 differs from ours. Each size runs
``--repeat`` times per side (default 3), alternating ours and LF, and the fastest run of each side counts:
on a shared box the slowest runs measure the neighbours. The last line::

    rows_per_s=<ours, largest run> rss_growth_10x=<our peak RSS largest / smallest> rows_over_lf=<ours / LF, largest>

Usage: ``python bench/data_prep_throughput.py [--rows 10000 100000] [--workers 1] [--repeat 3] [--no-peer]``
(about 10 minutes with the defaults on this 2-core box).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from peers import LLAMAFACTORY, ensure_venv, run_measured  # bench/ is on sys.path when run as a script

from models.registry import resolve_source

ROOT = Path(__file__).resolve().parents[1]

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


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1"}


def run_ours(path: Path, out: Path, tokenizer: str, workers: int) -> dict[str, float]:
    """Our CLI in a child; wall seconds, rows/s (from stats.json), peak RSS in MB, tokens."""
    cmd = [sys.executable, "-m", "data_prep", "--input", str(path), "--out", str(out), "--tokenizer", tokenizer,
           "--no-progress", "--workers", str(workers)]
    run = run_measured(cmd, env=_env(), cwd=ROOT)
    if run.returncode != 0:
        raise SystemExit(f"data_prep failed ({run.returncode}): {run.stderr.strip()}")
    stats = json.loads((out / "stats.json").read_text())
    return {"rows": stats["rows_in"], "kept": stats["rows_kept"], "wall_s": run.wall_s,
            "rows_per_s": stats["rows_per_s"], "rss_mb": run.rss_mb, "tokens": stats["tokens_total"],
            "cpu_us": stats["row_cpu_s"] / stats["rows_in"] * 1e6}


def run_lf(python: Path, path: Path, tok_dir: str, workers: int, max_length: int) -> dict[str, Any]:
    """LLaMA-Factory's get_dataset through our driver, in its venv; the driver's JSON plus wall and RSS."""
    cmd = [str(python), str(ROOT / "bench" / "lf_data_prep.py"), "--data", str(path), "--tokenizer", tok_dir,
           "--workers", str(workers), "--cutoff-len", str(max_length), "--val-size", "0.1"]
    run = run_measured(cmd, env=_env(), cwd=ROOT)
    if run.returncode != 0:
        tail = "\n".join(run.stderr.strip().splitlines()[-5:])
        raise SystemExit(f"LLaMA-Factory driver failed ({run.returncode}):\n{tail}")
    out = json.loads(run.stdout.strip().splitlines()[-1])  # LF prints examples before our line
    return {**out, "rows_per_s": out["rows"] / out["seconds"], "wall_s": run.wall_s, "rss_mb": run.rss_mb,
            "cpu_us": out["cpu_s"] / out["rows"] * 1e6}


def check_same_text(path: Path, tokenizer: str, lf_text: str) -> None:
    """Stop unless LF's template renders row 0 exactly as ours does (else the comparison is meaningless)."""
    from data_prep.formats import FormatOptions, to_conversation
    from data_prep.render import render_example
    from models.loading import load_tokenizer

    row = json.loads(path.open(encoding="utf-8").readline())
    ours = render_example(load_tokenizer(tokenizer), to_conversation("sharegpt", row, FormatOptions()).as_chat()).text
    if ours != lf_text:
        raise SystemExit(f"LLaMA-Factory renders row 0 differently:\n ours: {ours!r}\n   LF: {lf_text!r}")


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of repeated runs (the least disturbed by other load on the box): its rows/s and the least
    CPU per row of any run; the peak RSS of all."""
    best = dict(max(runs, key=lambda r: r["rows_per_s"]))
    best["rss_mb"] = max(r["rss_mb"] for r in runs)
    best["cpu_us"] = min(r["cpu_us"] for r in runs)
    return best


def _size(n: int, tmp: Path, args: argparse.Namespace, lf_python: Path | None,
          tok_dir: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Both sides on ``n`` rows, alternating, ``--repeat`` times each; the best run of each side."""
    src = tmp / f"sharegpt_{n}.jsonl"
    write_rows(src, n)
    mb = src.stat().st_size / 1e6
    ours, peer = [], []
    for i in range(args.repeat):
        r = run_ours(src, tmp / f"out_{n}_{i}", args.tokenizer, args.workers)
        print(f"{n:>8} rows ({mb:.1f} MB) #{i + 1}  ours: {r['rows_per_s']:.0f} rows/s, {r['cpu_us']:.0f} us CPU/row, "
              f"wall {r['wall_s']:.1f} s, peak RSS {r['rss_mb']:.0f} MB, kept {r['kept']}, {r['tokens']} tokens",
              flush=True)
        ours.append(r)
        if lf_python is not None:
            lf = run_lf(lf_python, src, tok_dir, args.workers, args.max_length)
            check_same_text(src, args.tokenizer, lf["row0_text"])
            print(f"{'':>24}  LF:   {lf['rows_per_s']:.0f} rows/s, {lf['cpu_us']:.0f} us CPU/row, "
                  f"wall {lf['wall_s']:.1f} s, peak RSS {lf['rss_mb']:.0f} MB, {lf['rows']} rows, {lf['tokens']} tokens",
                  flush=True)
            peer.append(lf)
    src.unlink()
    return _best(ours), (_best(peer) if peer else None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000], help="row counts (smallest first)")
    p.add_argument("--tokenizer", default="smollm2-135m-instruct")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes, the same for both sides (1: each side in one process, the steadiest "
                        "comparison on a shared box; 2 uses both cores of this one)")
    p.add_argument("--max-length", type=int, default=2048, help="our --max-length and LF's cutoff_len")
    p.add_argument("--repeat", type=int, default=3, help="runs per side and size, alternating; the best counts")
    p.add_argument("--no-peer", action="store_true", help="skip LLaMA-Factory (rows_over_lf=na)")
    args = p.parse_args()
    lf_python = None if args.no_peer else ensure_venv(LLAMAFACTORY)
    tok_dir = resolve_source(args.tokenizer, with_weights=False)
    results = []
    with tempfile.TemporaryDirectory(prefix="dp-bench-") as tmp:
        for n in sorted(args.rows):
            results.append(_size(n, Path(tmp), args, lf_python, tok_dir))
    (small, _), (ours, lf) = results[0], results[-1]
    growth = ours["rss_mb"] / small["rss_mb"]
    ratio = f"{ours['rows_per_s'] / lf['rows_per_s']:.2f}" if lf else "na"
    if lf:
        print(f"best of {args.repeat}, workers={args.workers}: ours {ours['rows_per_s']:.0f} rows/s, "
              f"LF {lf['rows_per_s']:.0f} rows/s; peak RSS ours {ours['rss_mb']:.0f} MB, LF {lf['rss_mb']:.0f} MB; "
              f"cpu_over_lf={lf['cpu_us'] / ours['cpu_us']:.2f} (LF's CPU per row / ours, all processes); "
              f"wall_over_lf={lf['wall_s'] / ours['wall_s']:.2f} (child wall, imports and tokenizer load included)")
    print(f"rows_per_s={ours['rows_per_s']:.0f} rss_growth_10x={growth:.2f} rows_over_lf={ratio}")


if __name__ == "__main__":
    main()
