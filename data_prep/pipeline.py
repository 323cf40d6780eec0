"""The data_prep pipeline: read -> convert -> validate -> clean -> dedup -> render -> split -> write.

Pass one streams every input row through the checks and appends kept rows to a temp file in ``out`` (with
their split hash and length); pass two routes them to ``train.jsonl`` / ``test.jsonl``. Memory holds only
dedup digests (about 100 bytes per unique row) and 12 bytes per kept row (split hash and length).

Outputs in ``cfg.out`` (each written to a temp file and renamed when complete): ``train.jsonl``,
``test.jsonl``, ``rejects.jsonl``, ``duplicates.jsonl``, ``stats.json``, ``length_hist.png``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from data_prep.clean import (
    BalanceCap,
    Deduper,
    check_length,
    digest64,
    exact_text,
    normalized_text,
    pack_source,
    quality_score,
    stratum,
    unpack_source,
)
from data_prep.conversation import Reject
from data_prep.formats import (
    FORMAT_CHOICES,
    FormatOptions,
    detect_format,
    options_for_sharegpt_messages,
    to_conversation,
)
from data_prep.io import DataPrepError, JsonlWriter, Reader, Record, RejectWriter
from data_prep.llamafactory import load_datasets
from data_prep.split import Splitter, split_hash
from data_prep.stats import Stats, plot_lengths
from data_prep.validate import RowError, validate
from fileio.atomic import write_json_atomic

__all__ = ["DataPrepError", "PrepConfig", "prepare"]

OVERLONG = ("truncate", "drop")
PROGRESS_MIN_BYTES = 4 << 20  # show a progress bar from 4 MiB of input


@dataclass
class PrepConfig:
    inputs: list[str]
    out: str
    format: str = "auto"  # auto|alpaca|sharegpt|openai|qa|roleplay|react
    tokenizer: str | None = None  # registry name, hub id or folder; None -> no token stats/length checks
    max_length: int = 2048
    overlong: str = "truncate"  # or "drop" (a reject with reason "too_long")
    test_size: float = 0.1
    seed: int = 42
    system_prompt: str | None = None  # added to rows that have none (not ReAct)
    question_field: str = "question"
    answer_field: str = "answer"
    dataset_info: str | None = None  # LLaMA-Factory dataset_info.json
    dataset: list[str] | None = None  # dataset names registered there
    dedup: bool = True
    min_chars: int = 1
    max_chars: int | None = None
    quality_threshold: float | None = None
    balance_cap: int | None = None
    progress: bool | None = None  # None: a bar on stderr from PROGRESS_MIN_BYTES of input

    def check(self) -> None:
        """Raise :class:`DataPrepError` for a setting that cannot work."""
        if self.format not in FORMAT_CHOICES:
            raise DataPrepError(f"--format {self.format!r} is unknown; choose one of {', '.join(FORMAT_CHOICES)}")
        if self.overlong not in OVERLONG:
            raise DataPrepError(f"--overlong {self.overlong!r} is unknown; choose truncate or drop")
        if not 0 <= self.test_size < 1:
            raise DataPrepError(f"--test-size must be in [0, 1), got {self.test_size}")
        if self.max_length < 1:
            raise DataPrepError(f"--max-length must be a positive number of tokens, got {self.max_length}")
        if self.max_chars is not None and self.max_chars < self.min_chars:
            raise DataPrepError(f"--max-chars {self.max_chars} is below --min-chars {self.min_chars}")
        if self.balance_cap is not None and self.balance_cap < 1:
            raise DataPrepError(f"--balance-cap must be at least 1, got {self.balance_cap}")
        if self.quality_threshold is not None and not 0 <= self.quality_threshold <= 1:
            raise DataPrepError(f"--quality-threshold must be in [0, 1], got {self.quality_threshold}")
        if bool(self.dataset_info) != bool(self.dataset):
            raise DataPrepError("--dataset-info and --dataset go together: pass both (or neither)")
        if not self.inputs and not self.dataset:
            raise DataPrepError("no input: pass --input FILE (or --dataset-info FILE --dataset NAME)")


@dataclass(frozen=True)
class _Input:
    path: str
    format: str  # "auto" or a format name
    opts: FormatOptions
    dataset: str | None = None


def _plan_inputs(cfg: PrepConfig) -> list[_Input]:
    base = FormatOptions(cfg.question_field, cfg.answer_field, cfg.system_prompt)
    plan = [_Input(p, cfg.format, base) for p in cfg.inputs]
    if cfg.dataset_info and cfg.dataset:
        for spec in load_datasets(cfg.dataset_info, cfg.dataset):
            plan += [_Input(str(f), spec.format, spec.options(base), spec.name) for f in spec.files]
    for item in plan:
        p = Path(item.path)
        if not p.exists():
            raise DataPrepError(f"{item.path}: file not found")
        if p.is_dir():
            raise DataPrepError(f"{item.path}: is a directory, pass a file")
    return plan


def _load_tokenizer(name: str) -> Any:
    from models.loading import load_tokenizer

    try:
        return load_tokenizer(name)
    except (OSError, ValueError, ImportError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataPrepError(f"tokenizer '{name}': {first}") from None


def _position(source: str) -> int:
    return int(source.rsplit(":", 1)[1])


@dataclass
class _Run:
    cfg: PrepConfig
    tokenizer: Any
    stats: Stats
    rejects: RejectWriter
    duplicates: JsonlWriter
    kept: Any  # text file handle of the pass-one temp file
    splitter: Splitter
    deduper: Deduper
    cap: BalanceCap | None
    files: list[str]

    def reject(self, source: str, reason: str, row: Any, detail: str) -> None:
        self.stats.reject(reason)
        self.rejects.reject(Reject(source, reason, row, detail))

    def row(self, rec: Record, fmt: str, opts: FormatOptions, file_index: int) -> None:
        cfg, stats = self.cfg, self.stats
        raw = rec.value[1] if isinstance(rec.value, tuple) else rec.value
        try:
            conv = to_conversation(fmt, rec.value, opts)
            conv.source = rec.source
            validate(conv)
            n_chars = check_length(conv, cfg.min_chars, cfg.max_chars)
            if cfg.quality_threshold is not None:
                won = raw.get("won") if fmt == "react" and isinstance(raw, dict) else None
                q = quality_score(conv, won=won)
                if q < cfg.quality_threshold:
                    raise RowError("low_quality", f"quality score {q} is below --quality-threshold {cfg.quality_threshold}")
            norm = normalized_text(conv)
            if cfg.dedup:
                here = pack_source(file_index, _position(rec.source))
                dup = self.deduper.check(digest64(exact_text(conv)), digest64(norm), here)
                if dup is not None:
                    kind, first = dup
                    fi, pos = unpack_source(first)
                    stats.rows_deduplicated += 1
                    stats.dedup[kind] += 1
                    self.duplicates.add({"source": rec.source, "duplicate_of": f"{self.files[fi]}:{pos}",
                                         "kind": kind, "row": raw})
                    return
            length, n_used, n_trained, over = n_chars, 0, 0, False
            if self.tokenizer is not None:
                from data_prep.render import IGNORE_INDEX, RenderError, render_example

                try:
                    ex = render_example(self.tokenizer, conv.as_chat(), tools=conv.tools)
                except RenderError as e:
                    raise RowError("render_error", str(e)) from None
                length = n_used = ex.n_tokens
                n_trained = ex.n_trained
                if length > cfg.max_length:
                    over = True
                    if cfg.overlong == "drop":
                        stats.rows_over_max_length += 1
                        raise RowError("too_long", f"{length} tokens, more than --max-length {cfg.max_length} "
                                                   "(--overlong drop)")
                    n_used = cfg.max_length
                    n_trained = sum(1 for x in ex.labels[: cfg.max_length] if x != IGNORE_INDEX)
            if self.cap is not None:
                self.cap.admit(stratum(conv))
            if over:
                stats.rows_over_max_length += 1
                stats.rows_truncated += 1
            stats.tokens_total += n_used
            stats.tokens_trained += n_trained
            key = conv.task_type or ""
            h = split_hash(cfg.seed, norm)
            self.splitter.add(key, h)
            self.kept.write(json.dumps({"h": h, "k": key, "n": length, "row": conv.to_dict()}, ensure_ascii=False))
            self.kept.write("\n")
            stats.rows_kept += 1
        except RowError as e:
            self.reject(rec.source, e.reason, raw, e.detail)


def _records(reader: Reader, bar: Any) -> Iterator[Record | Reject]:
    last = 0
    for n, item in enumerate(reader):
        if bar is not None and n % 256 == 0:
            bar.update(reader.bytes_read - last)
            last = reader.bytes_read
        yield item
    if bar is not None:
        bar.update(reader.bytes_read - last)


def prepare(cfg: PrepConfig, tokenizer: Any = None) -> dict[str, Any]:
    """Run the pipeline; returns the stats dict (also written to ``stats.json``). Raises :class:`DataPrepError`."""
    t0 = time.perf_counter()
    cfg.check()
    plan = _plan_inputs(cfg)
    if tokenizer is None and cfg.tokenizer:
        tokenizer = _load_tokenizer(cfg.tokenizer)
    t_rows = time.perf_counter()
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise DataPrepError(f"{out}: --out must be a folder, this is a file")
    out.mkdir(parents=True, exist_ok=True)

    stats = Stats()
    splitter = Splitter(cfg.seed, cfg.test_size)
    fd, kept_path = tempfile.mkstemp(prefix=".kept.", suffix=".tmp", dir=out)
    writers: list[Any] = []
    try:
        rejects = RejectWriter(out / "rejects.jsonl")
        writers.append(rejects)
        duplicates = JsonlWriter(out / "duplicates.jsonl")
        writers.append(duplicates)
        with os.fdopen(fd, "w", encoding="utf-8") as kept:
            run = _Run(cfg, tokenizer, stats, rejects, duplicates, kept, splitter, Deduper(),
                       BalanceCap(cfg.balance_cap) if cfg.balance_cap else None, [p.path for p in plan])
            _pass_one(run, plan)
        splitter.finalize()
        train = JsonlWriter(out / "train.jsonl")
        writers.append(train)
        test = JsonlWriter(out / "test.jsonl")
        writers.append(test)
        with open(kept_path, encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                split = splitter.assign(d["k"], d["h"])
                (test if split == "test" else train).add(d["row"])
                stats.splits[split].add(d["n"], d["row"].get("task_type"))
        unit = "tokens" if tokenizer is not None else "chars"
        config = asdict(cfg)
        if tokenizer is not None and not cfg.tokenizer:
            config["tokenizer"] = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
        now = time.perf_counter()
        result = stats.to_dict(length_unit=unit, config=config, elapsed_s=now - t0, rows_s=now - t_rows)
        for w in writers:
            w.commit()
        plot_lengths(out / "length_hist.png", stats, length_unit=unit, max_length=cfg.max_length)
        write_json_atomic(out / "stats.json", result)
        return result
    finally:
        for w in writers:
            if not w.done:
                w.abort()
        if os.path.exists(kept_path):
            os.unlink(kept_path)


def _pass_one(run: _Run, plan: list[_Input]) -> None:
    show = run.cfg.progress
    total = sum(Path(p.path).stat().st_size for p in plan)
    if show is None:
        show = total >= PROGRESS_MIN_BYTES
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, desc="data_prep", leave=False)
    try:
        for index, item in enumerate(plan):
            reader = Reader(item.path)
            fmt = "react" if item.format == "auto" and reader.container == "text" else item.format
            if reader.container == "text" and fmt != "react":
                raise DataPrepError(f"{item.path}: .txt files are read as ReAct text trajectories; --format {fmt} "
                                "needs a .json or .jsonl file")
            opts = item.opts
            rows_in, kept_before = run.stats.rows_in, run.stats.rows_kept
            for rec in _records(reader, bar):
                run.stats.rows_in += 1
                if isinstance(rec, Reject):
                    run.reject(rec.source, rec.reason, rec.row, rec.detail)
                    continue
                if fmt == "auto":
                    fmt = detect_format(rec.value, rec.source, opts)
                    if fmt == "sharegpt" and isinstance(rec.value, dict) and "conversations" not in rec.value:
                        opts = options_for_sharegpt_messages(opts)
                run.row(rec, fmt, opts, index)
            entry: dict[str, Any] = {"path": item.path, "format": fmt, "rows_in": run.stats.rows_in - rows_in,
                                     "rows_kept": run.stats.rows_kept - kept_before}
            if item.dataset:
                entry["dataset"] = item.dataset
            run.stats.inputs.append(entry)
    finally:
        if bar is not None:
            bar.close()
