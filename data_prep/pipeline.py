"""The data_prep pipeline: read -> convert -> validate -> clean -> dedup -> render -> split -> write.

Pass one streams every input row through the checks and appends kept rows to a temp file in ``out`` (with
their split hash and length); pass two routes them to ``train.jsonl`` / ``test.jsonl``. Memory holds only
dedup digests (about 100 bytes per unique row) and 12 bytes per kept row (split hash and length).

Pass one reads records in chunks; the per-row work (convert, validate, score, hash, render, serialise:
:mod:`data_prep.work`) runs in ``workers`` processes, and this process applies the outcomes in input order
(dedup, balance cap, counters, writes), so every output is the same for any number of workers.

Outputs in ``cfg.out`` (each written to a temp file and renamed when complete): ``train.jsonl``,
``test.jsonl``, ``rejects.jsonl``, ``duplicates.jsonl``, ``stats.json``, ``length_hist.png``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from data_prep.clean import BalanceCap, Deduper, pack_source, unpack_source
from data_prep.conversation import Reject
from data_prep.formats import (
    COLUMN_NAMES,
    FORMAT_CHOICES,
    STAGE_KINDS,
    STAGES,
    FormatOptions,
    detect,
    kind_of,
)
from data_prep.io import DataPrepError, JsonlWriter, Reader, Record, RejectWriter
from data_prep.llamafactory import load_datasets
from data_prep.split import Splitter
from data_prep.stats import Stats, plot_lengths
from data_prep.validate import RowError
from data_prep.work import STAGE_HINTS, Outcome, RowSettings, Workers, cpu_seconds, gc_frozen, usable_cpus
from fileio.atomic import AtomicFile, commit_all, sweep_stale

__all__ = ["DataPrepError", "PrepConfig", "prepare"]

OVERLONG = ("truncate", "drop")
PROGRESS_MIN_BYTES = 4 << 20  # show a progress bar from 4 MiB of input
PARALLEL_MIN_BYTES = 4 << 20  # below this, starting worker processes costs more than it saves
CHUNK_ROWS = 256  # records per unit of work: large enough to batch tokenization, small enough to stay flat
MAX_AUTO_WORKERS = 8  # the main process applies outcomes serially; past this it is the bottleneck


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
    workers: int | None = None  # processes for the row work; None: the usable CPUs (at most 8) from 4 MiB of input
    fast_render: bool = True  # False: render every row the straightforward way (same results, slower)
    stage: str = "sft"  # what the rows are for: sft|pt|dpo|orpo|kto (formats.STAGE_KINDS: the row kinds kept)
    columns: dict[str, str] | None = None  # --columns: canonical field -> the field of the files that holds it

    def check(self) -> None:
        """Raise :class:`DataPrepError` for a setting that cannot work."""
        if self.format not in FORMAT_CHOICES:
            raise DataPrepError(f"--format {self.format!r} is unknown; choose one of {', '.join(FORMAT_CHOICES)}")
        if self.stage not in STAGES:
            raise DataPrepError(f"--stage {self.stage!r} is unknown; choose one of {', '.join(STAGES)}")
        for key, value in (self.columns or {}).items():
            if key not in COLUMN_NAMES:
                raise DataPrepError(f"--columns: {key!r} is not a field we read; map one of {', '.join(COLUMN_NAMES)}")
            if not isinstance(value, str) or not value:
                raise DataPrepError(f"--columns: {key}= needs the name of the field that holds it")
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
        if self.workers is not None and self.workers < 1:
            raise DataPrepError(f"--workers must be at least 1, got {self.workers}")
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
    base = FormatOptions(cfg.question_field, cfg.answer_field, cfg.system_prompt,
                         rename=tuple((cfg.columns or {}).items()))
    plan = [_Input(p, cfg.format, base) for p in cfg.inputs]
    if cfg.dataset_info and cfg.dataset:
        for spec in load_datasets(cfg.dataset_info, cfg.dataset, stage=cfg.stage):
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
    kinds: Counter[str] = field(default_factory=Counter)  # rows read, by kind (what a 0-kept error says)

    def reject(self, source: str, reason: str, row: Any, detail: str) -> None:
        self.stats.reject(reason)
        self.rejects.reject(Reject(source, reason, row, detail))

    def apply(self, rec: Record, o: Outcome, file_index: int) -> None:
        """Apply one row's outcome, in the serial order of the checks: early checks, dedup, render, cap."""
        cfg, stats = self.cfg, self.stats
        raw = rec.value[1] if isinstance(rec.value, tuple) else rec.value
        if o.fatal is not None:
            raise DataPrepError(f"{rec.source}: {o.fatal}")
        if o.kind:
            self.kinds[o.kind] += 1
        try:
            if o.error is not None:
                raise RowError(*o.error)
            if cfg.dedup:
                dup = self.deduper.check(o.exact, o.norm, pack_source(file_index, _position(rec.source)))
                if dup is not None:
                    kind, first = dup
                    fi, pos = unpack_source(first)
                    stats.rows_deduplicated += 1
                    stats.dedup[kind] += 1
                    self.duplicates.add({"source": rec.source, "duplicate_of": f"{self.files[fi]}:{pos}",
                                         "kind": kind, "row": raw})
                    return
            length, n_used, n_trained, over = self._lengths(o)
            if self.cap is not None:
                self.cap.admit(o.stratum)
            if over:
                stats.rows_over_max_length += 1
                stats.rows_truncated += 1
            stats.tokens_total += n_used
            stats.tokens_trained += n_trained
            self.splitter.add(o.key, o.h)
            # One line per kept row: split hash, length, stratum, then the row exactly as it will be written.
            self.kept.write(f"{o.h}\t{length}\t{json.dumps(o.key)}\t{o.row_json}\n")
            stats.rows_kept += 1
        except RowError as e:
            self.reject(rec.source, e.reason, raw, e.detail)

    def _lengths(self, o: Outcome) -> tuple[int, int, int, bool]:
        """(length, tokens used, tokens trained, over max length); rejects render errors and drops."""
        if o.failure is not None:
            raise o.failure
        if o.render_error is not None:
            raise RowError("render_error", o.render_error)
        if o.tokens is None:
            return o.n_chars, 0, 0, False
        cfg, length = self.cfg, o.tokens
        used = length if o.used is None else o.used
        if length <= cfg.max_length or o.pack:  # text is cut into max_length blocks when packed, not truncated
            return length, used, o.trained, False
        if cfg.overlong == "drop":
            self.stats.rows_over_max_length += 1
            raise RowError("too_long", f"{length} tokens, more than --max-length {cfg.max_length} (--overlong drop)")
        return length, cfg.max_length if o.used is None else o.used, o.trained, True


def _pass_two(kept_path: str, splitter: Splitter, stats: Stats, train: JsonlWriter, test: JsonlWriter) -> None:
    """Route the kept rows, in input order, to train/test by the finalized split."""
    with open(kept_path, encoding="utf-8") as f:
        for line in f:
            h, n, key, row = line.split("\t", 3)
            k = "" if key == '""' else json.loads(key)  # the common case costs no parse
            split = splitter.assign(k, int(h))
            (test if split == "test" else train).add_line(row)
            stats.splits[split].add(int(n), k or None)


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
    t_rows, cpu_rows = time.perf_counter(), cpu_seconds()
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise DataPrepError(f"{out}: --out must be a folder, this is a file")
    out.mkdir(parents=True, exist_ok=True)

    stats = Stats()
    splitter = Splitter(cfg.seed, cfg.test_size)
    sweep_stale(out)  # temps of an earlier run that was killed
    fd, kept_path = tempfile.mkstemp(prefix=f".kept.{os.getpid()}.", suffix=".tmp", dir=out)
    writers: list[Any] = []
    try:
        rejects = RejectWriter(out / "rejects.jsonl")
        writers.append(rejects)
        duplicates = JsonlWriter(out / "duplicates.jsonl")
        writers.append(duplicates)
        with os.fdopen(fd, "w", encoding="utf-8") as kept, gc_frozen():
            run = _Run(cfg, tokenizer, stats, rejects, duplicates, kept, splitter, Deduper(),
                       BalanceCap(cfg.balance_cap) if cfg.balance_cap else None, [p.path for p in plan])
            _pass_one(run, plan)
        run.deduper = Deduper()  # the digests are done with: free them before pass two and the stats
        splitter.finalize()
        train = JsonlWriter(out / "train.jsonl")
        writers.append(train)
        test = JsonlWriter(out / "test.jsonl")
        writers.append(test)
        _pass_two(kept_path, splitter, stats, train, test)
        kinds = run.kinds
        unit = "tokens" if tokenizer is not None else "chars"
        config = asdict(cfg)
        if tokenizer is not None and not cfg.tokenizer:
            config["tokenizer"] = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
        now, cpu = time.perf_counter(), cpu_seconds()
        result = stats.to_dict(length_unit=unit, config=config, elapsed_s=now - t0, rows_s=now - t_rows,
                               cpu_s=None if cpu is None or cpu_rows is None else cpu - cpu_rows)
        hist = AtomicFile(out / "length_hist.png", "wb")
        writers.append(hist)
        plot_lengths(hist.fh, stats, length_unit=unit, max_length=cfg.max_length)
        summary = AtomicFile(out / "stats.json")
        writers.append(summary)
        summary.write(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
        commit_all(writers)  # all outputs or none: a full disk leaves the previous run's set whole
        if stats.rows_kept == 0:
            raise DataPrepError(nothing_kept(result, kinds, cfg))
        return result
    finally:
        for w in writers:
            if not w.done:
                w.abort()
        if os.path.exists(kept_path):
            os.unlink(kept_path)


_REASON_HINTS = {
    "missing_field": "check the field names: pass --format, or --columns canonical=field "
                     "(e.g. --columns prompt=question,completion=answer)",
    "unknown_role": "the roles are not the dataset's tags; set them in dataset_info.json 'tags' or use --format",
    "nothing_to_train": "every row lacks a reply to learn from (prompt-only rows, or loss_weight 0 everywhere)",
    "too_long": "raise --max-length / --max-chars, or use --overlong truncate",
    "too_short": "lower --min-chars",
    "low_quality": "lower --quality-threshold",
    "render_error": "the chat template cannot render these rows; try another --tokenizer",
    "no_final_assistant": "rows must end with an assistant reply",
}


def nothing_kept(stats: dict[str, Any], kinds: Counter[str], cfg: PrepConfig) -> str:
    """The one-line error for a run that kept no row: the top reasons and what to do."""
    reasons = sorted(stats["rejects_by_reason"].items(), key=lambda kv: (-kv[1], kv[0]))
    top = ", ".join(f"{r} {n}" for r, n in reasons[:3]) or "none"
    hint = ""
    other = Counter({k: n for k, n in kinds.items() if k not in STAGE_KINDS[cfg.stage]})
    if other and "wrong_stage" in stats["rejects_by_reason"]:  # the most useful advice whatever else went wrong
        hint = STAGE_HINTS[other.most_common(1)[0][0]]
    elif reasons:
        hint = _REASON_HINTS.get(reasons[0][0], "")
    if stats["rows_deduplicated"] and not reasons:
        hint = "every row was a duplicate"
    return (f"no rows kept out of {stats['rows_in']} (--stage {cfg.stage}); rejected: {top} "
            f"(see {Path(cfg.out) / 'rejects.jsonl'})" + (f"; {hint}" if hint else ""))


def _n_workers(cfg: PrepConfig, tokenizer: Any, total_bytes: int) -> int:
    if cfg.workers is not None:
        return cfg.workers
    if tokenizer is None or total_bytes < PARALLEL_MIN_BYTES:  # without rendering the row work is light
        return 1
    return min(usable_cpus(), MAX_AUTO_WORKERS)


def _settings(cfg: PrepConfig) -> RowSettings:
    return RowSettings(cfg.min_chars, cfg.max_chars, cfg.quality_threshold, cfg.dedup, cfg.max_length, cfg.seed,
                       cfg.fast_render, cfg.stage)


def _pass_one(run: _Run, plan: list[_Input]) -> None:
    show = run.cfg.progress
    total = sum(Path(p.path).stat().st_size for p in plan)
    if show is None:
        show = total >= PROGRESS_MIN_BYTES
    # Workers first: they fork before the progress bar starts its monitor thread.
    workers = Workers(_n_workers(run.cfg, run.tokenizer, total), run.tokenizer, _settings(run.cfg))
    bar = None
    finished = False
    try:
        if show:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, desc="data_prep", leave=False)
        for index, item in enumerate(plan):
            _one_file(run, workers, item, index, bar)
        finished = True
    finally:
        workers.close(wait=finished)
        if bar is not None:
            bar.close()


def _one_file(run: _Run, workers: Workers, item: _Input, index: int, bar: Any) -> None:
    """Stream one input file through the workers; every outcome is applied before this returns."""
    reader = Reader(item.path)
    fmt = "react" if item.format == "auto" and reader.container == "text" else item.format
    auto = fmt == "auto"
    if reader.container == "text" and fmt != "react":
        raise DataPrepError(f"{item.path}: .txt files are read as ReAct text trajectories; --format {fmt} "
                            "needs a .json or .jsonl file")
    opts = item.opts
    rows_in, kept_before = run.stats.rows_in, run.stats.rows_kept

    def done(entries: list[Record | Reject], outcomes: list[Outcome]) -> None:
        results = iter(outcomes)
        for rec in entries:
            if isinstance(rec, Reject):
                run.reject(rec.source, rec.reason, rec.row, rec.detail)
            else:
                run.apply(rec, next(results), index)

    entries: list[Record | Reject] = []
    for rec in _records(reader, bar):
        run.stats.rows_in += 1
        if isinstance(rec, Record) and fmt == "auto":
            fmt, opts = detect(rec.value, rec.source, opts)
            if auto:  # one kind per file: a row plainly of another kind stops the run at its line
                opts = replace(opts, expect_kind=kind_of(fmt, opts))
        entries.append(rec)
        if len(entries) >= CHUNK_ROWS:
            _submit(workers, fmt, opts, entries, done)
            entries = []
    if entries:
        _submit(workers, fmt, opts, entries, done)
    workers.drain(done)
    entry: dict[str, Any] = {"path": item.path, "format": fmt, "rows_in": run.stats.rows_in - rows_in,
                             "rows_kept": run.stats.rows_kept - kept_before}
    if item.dataset:
        entry["dataset"] = item.dataset
    run.stats.inputs.append(entry)


def _submit(workers: Workers, fmt: str, opts: FormatOptions, entries: list[Record | Reject], done: Any) -> None:
    items = [(r.source, r.value) for r in entries if isinstance(r, Record)]
    workers.submit(fmt, opts, items, entries, done)
