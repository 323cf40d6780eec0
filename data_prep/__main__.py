"""``python -m data_prep``: raw chat/instruction files -> train.jsonl, test.jsonl, rejects.jsonl, stats.json.

Bad input never shows a traceback: the CLI prints one line ``error: FILE:LINE: what broke`` and exits 2.
"""

from __future__ import annotations

import argparse
import sys

from data_prep.formats import FORMAT_CHOICES, STAGE_KINDS
from data_prep.pipeline import OVERLONG, DataPrepError, PrepConfig, prepare
from data_prep.stats import print_summary
from fileio.atomic import write_error


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m data_prep",
        description="Read chat/instruction data in any supported format; validate, clean, split and write "
        "canonical chat rows with stats.",
    )
    p.add_argument("--input", action="append", default=[], metavar="FILE",
                   help="input file (.jsonl, .json array, or .txt ReAct); repeat for several")
    p.add_argument("--format", default="auto", choices=FORMAT_CHOICES, help="input format (default: auto per file)")
    p.add_argument("--stage", default="sft", choices=tuple(STAGE_KINDS),
                   help="what the data is for: sft (chats), pt (plain text), dpo/orpo (preference pairs), "
                        "kto (unpaired preference); rows of other kinds are rejected as wrong_stage (default sft)")
    p.add_argument("--columns", metavar="CANON=FIELD[,...]",
                   help="read a canonical field from another field name, e.g. prompt=question,completion=answer")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--tokenizer", metavar="NAME",
                   help="registry name, hub id or folder; enables token stats and --max-length checks")
    p.add_argument("--max-length", type=int, default=2048, metavar="N", help="max tokens per row (default 2048)")
    p.add_argument("--overlong", choices=OVERLONG, default="truncate",
                   help="rows over --max-length: truncate (kept, counted) or drop (rejected as too_long)")
    p.add_argument("--test-size", type=float, default=0.1, help="share of rows for test.jsonl (default 0.1)")
    p.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    p.add_argument("--system-prompt", metavar="TEXT", help="system message for rows that have none")
    p.add_argument("--question-field", default="question", help="QA question field (default: question)")
    p.add_argument("--answer-field", default="answer", help="QA answer field (default: answer)")
    p.add_argument("--dataset-info", metavar="FILE", help="LLaMA-Factory dataset_info.json")
    p.add_argument("--dataset", action="append", metavar="NAME[,NAME]", help="dataset name(s) in --dataset-info")
    p.add_argument("--no-dedup", action="store_true", help="keep duplicate rows")
    p.add_argument("--min-chars", type=int, default=1, help="reject rows with fewer content characters (too_short)")
    p.add_argument("--max-chars", type=int, help="reject rows with more content characters (too_long)")
    p.add_argument("--quality-threshold", type=float, metavar="X", help="reject rows scoring below X in [0, 1]")
    p.add_argument("--balance-cap", type=int, metavar="N", help="keep at most N rows per task type / tag")
    p.add_argument("--workers", type=int, metavar="N",
                   help="processes for the row work (default: the usable CPUs, at most 8, from 4 MiB of input "
                        "with a tokenizer; else 1); the output is the same for any N")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show progress")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress")
    return p


def parse_columns(text: str | None) -> dict[str, str] | None:
    """``prompt=question,completion=answer`` -> ``{"prompt": "question", "completion": "answer"}``."""
    if not text:
        return None
    out: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise DataPrepError(f"--columns: {item!r} is not CANONICAL=FIELD (e.g. prompt=question)")
        out[key.strip()] = value.strip()
    return out


def config_from_args(args: argparse.Namespace) -> PrepConfig:
    return PrepConfig(
        inputs=args.input,
        out=args.out,
        format=args.format,
        tokenizer=args.tokenizer,
        max_length=args.max_length,
        overlong=args.overlong,
        test_size=args.test_size,
        seed=args.seed,
        system_prompt=args.system_prompt,
        question_field=args.question_field,
        answer_field=args.answer_field,
        dataset_info=args.dataset_info,
        dataset=args.dataset,
        dedup=not args.no_dedup,
        min_chars=args.min_chars,
        max_chars=args.max_chars,
        quality_threshold=args.quality_threshold,
        balance_cap=args.balance_cap,
        progress=args.progress,
        workers=args.workers,
        stage=args.stage,
        columns=parse_columns(args.columns),
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        stats = prepare(cfg)
    except DataPrepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk or an unwritable --out: one line, and the old outputs stand
        print(f"error: {write_error(e, args.out)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; no output was replaced", file=sys.stderr)
        return 130
    print_summary(stats, cfg.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
