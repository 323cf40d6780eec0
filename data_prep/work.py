"""The row work of pass one that needs no shared state: convert, validate, score, hash, render, serialise.

:func:`work_chunk` turns a chunk of one file's records into one :class:`Outcome` per record, in order. It
runs in the main process (one worker) or in worker processes (:class:`Workers`) and gives the same
outcomes either way. Everything that depends on earlier rows (dedup, the balance cap, counters, the order
of every output line) stays with the caller, which applies the outcomes in input order; so the output is
the same for any number of workers.

Work the serial pipeline skipped for a row (rendering a duplicate, say) may be done here and thrown away:
an outcome keeps each step's result apart, and the caller uses them in the serial order of the checks.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from data_prep.clean import check_length, digest64, exact_text, normalized_text, quality_score, stratum
from data_prep.conversation import Conversation, Message
from data_prep.formats import STAGE_KINDS, FormatOptions, KindMismatch, to_conversation
from data_prep.split import split_hash
from data_prep.validate import RowError, validate


@dataclass(frozen=True)
class RowSettings:
    """The part of the config that row work reads."""

    min_chars: int = 1
    max_chars: int | None = None
    quality_threshold: float | None = None
    dedup: bool = True
    max_length: int = 2048
    seed: int = 42
    fast_render: bool = True
    stage: str = "sft"


# What to do when rows do not fit --stage, by their kind.
STAGE_HINTS = {"text": "these are plain-text rows (continued pretraining): use --stage pt",
               "preference": "these are preference pairs: use --stage dpo or --stage orpo",
               "unpaired_preference": "these are unpaired preference rows (label): use --stage kto",
               "sft": "these are chat/instruction rows: use --stage sft"}


@dataclass(slots=True)
class Outcome:
    """What the row work found for one record; the caller applies it in the serial order of the checks."""

    error: tuple[str, str] | None = None  # (reason, detail) from a check before dedup
    exact: int = 0  # dedup digests (0 when dedup is off)
    norm: int = 0
    n_chars: int = 0
    tokens: int | None = None  # rendered length; None without a tokenizer
    trained: int = 0  # trained tokens within max_length
    render_error: str | None = None
    failure: BaseException | None = None  # an unexpected error while rendering; raised if the row gets there
    key: str = ""  # split stratum (task type)
    stratum: str = ""  # balance-cap stratum (task type, else first tag)
    h: int = 0  # split hash
    row_json: str = ""  # the kept row, serialised as train.jsonl / test.jsonl write it
    kind: str = ""  # the row's kind, once read
    fatal: str | None = None  # a file-level problem found at this row (a second kind): stops the run
    pack: bool = False  # text rows: packed into max_length blocks by the trainer, never truncated
    used: int | None = None  # tokens used when not min(tokens, max_length) (a pair: both sides)


def _convert(fmt: str, opts: FormatOptions, s: RowSettings, source: str, value: Any,
             o: Outcome) -> tuple[Conversation, list[dict[str, Any]]]:
    """The checks before dedup, in the pipeline's order; fills ``o``; the conversation and its chat."""
    conv = to_conversation(fmt, value, opts)
    conv.source = source
    o.kind = conv.kind
    validate(conv)
    if conv.kind not in STAGE_KINDS[s.stage]:  # a sound row, for another stage
        raise RowError("wrong_stage", f"a {conv.kind} row; --stage {s.stage} trains on "
                                      f"{' or '.join(STAGE_KINDS[s.stage])} rows ({STAGE_HINTS[conv.kind]})")
    o.n_chars = check_length(conv, s.min_chars, s.max_chars)
    if s.quality_threshold is not None:
        raw = value[1] if isinstance(value, tuple) else value
        won = raw.get("won") if fmt == "react" and isinstance(raw, dict) else None
        q = quality_score(_scored(conv), won=won)
        if q < s.quality_threshold:
            raise RowError("low_quality", f"quality score {q} is below --quality-threshold {s.quality_threshold}")
    norm = normalized_text(conv)
    chat = conv.as_chat()  # built once: dedup key, the written row and the renderer all read it, none writes
    if s.dedup:
        o.exact, o.norm = digest64(exact_text(conv, chat)), digest64(norm)
    o.key = conv.task_type or ""
    o.stratum = stratum(conv)
    o.h = split_hash(s.seed, norm)
    o.row_json = json.dumps(conv.to_dict(chat), ensure_ascii=False)
    return conv, chat


def _scored(conv: Conversation) -> Conversation:
    """What the quality score reads: the chosen side of a pair, a completion, a text as one reply."""
    if conv.kind == "text":
        return Conversation([Message("user", ""), Message("assistant", conv.text)])
    return Conversation(conv.sequences()[0])


def work_chunk(tokenizer: Any, s: RowSettings, fmt: str, opts: FormatOptions,
               items: list[tuple[str, Any]]) -> list[Outcome]:
    """One outcome per ``(source, value)`` record, in order."""
    outcomes: list[Outcome] = []
    convs: list[tuple[Outcome, Conversation, list[dict[str, Any]]]] = []
    for source, value in items:
        o = Outcome()
        try:
            convs.append((o, *_convert(fmt, opts, s, source, value, o)))
        except RowError as e:
            o.error = (e.reason, e.detail)
        except KindMismatch as e:
            o.fatal = str(e)
        outcomes.append(o)
    if tokenizer is not None and convs:
        _render_all(tokenizer, s, convs)
    return outcomes


def preference_chats(conv: Conversation) -> list[list[dict[str, Any]]]:
    """The chats a preference row is scored on, prompt + each completion, with the prompt's replies untrained:
    TRL's preference trainers put the loss on the completion only."""
    prompt = [{**m.to_dict(), "loss_weight": 0} if m.role == "assistant" else m.to_dict() for m in conv.messages]
    sides = [conv.chosen, conv.rejected] if conv.kind == "preference" else [conv.completion]
    return [prompt + [m.to_dict() for m in side] for side in sides]


def _render_all(tokenizer: Any, s: RowSettings, convs: list[tuple[Outcome, Conversation, list[dict[str, Any]]]]) -> None:
    texts = [(o, c) for o, c, _ in convs if c.kind == "text"]
    if texts:
        _count_texts(tokenizer, s, texts)
    chats: list[list[dict[str, Any]]] = []
    tools: list[Any] = []
    owners: list[tuple[Outcome, int]] = []  # each outcome and how many chats it has
    for o, conv, chat in convs:
        if conv.kind == "text":
            continue
        mine = [chat] if conv.kind == "sft" else preference_chats(conv)
        chats += mine
        tools += [conv.tools] * len(mine)
        owners.append((o, len(mine)))
    results = iter(_count_chats(tokenizer, s, chats, tools))
    for o, n in owners:
        _apply_counts(o, [next(results) for _ in range(n)], s.max_length)


def _count_texts(tokenizer: Any, s: RowSettings, texts: list[tuple[Outcome, Conversation]]) -> None:
    """Plain text: every token is trained, plus the end-of-sequence token the trainer appends."""
    eos = 1 if getattr(tokenizer, "eos_token_id", None) is not None else 0
    try:
        ids = tokenizer([c.text for _, c in texts], add_special_tokens=False)["input_ids"]
    except Exception as e:  # noqa: BLE001 - raised if the row gets there, as for chats
        for o, _ in texts:
            o.failure = e
        return
    for (o, _), row in zip(texts, ids, strict=True):
        o.tokens = o.trained = len(row) + eos
        o.pack = True


def _count_chats(tokenizer: Any, s: RowSettings, chats: list[list[dict[str, Any]]], tools: list[Any]) -> list[Any]:
    from data_prep.render import IGNORE_INDEX, count_examples, render_example

    results: list[Any] = []
    if not chats:
        return results
    if s.fast_render:
        try:
            results = count_examples(tokenizer, chats, tools, max_length=s.max_length)
        except Exception:  # noqa: BLE001 - redo row by row, so an unexpected error stays with its row
            results = []
    if not results:
        for chat, row_tools in zip(chats, tools, strict=True):
            try:
                ex = render_example(tokenizer, chat, tools=row_tools, fast=False)
                labels = ex.labels[: s.max_length]
                results.append((ex.n_tokens, len(labels) - labels.count(IGNORE_INDEX)))
            except Exception as e:  # noqa: BLE001 - a RenderError rejects the row; others are raised if it gets there
                results.append(e)
    return results


def _apply_counts(o: Outcome, results: list[Any], max_length: int) -> None:
    """One row's counts; a pair's length is its longer side, its used and trained tokens both sides'."""
    from data_prep.render import RenderError

    for r in results:
        if isinstance(r, RenderError):
            o.render_error = str(r)
            return
        if isinstance(r, BaseException):
            o.failure = r
            return
    if len(results) == 1:
        o.tokens, o.trained = results[0]
        return
    o.tokens = max(n for n, _ in results)
    o.trained = sum(t for _, t in results)
    o.used = sum(min(n, max_length) for n, _ in results)


# ---------------------------------------------------------------------------------------------- workers

_STATE: tuple[Any, RowSettings] | None = None  # (tokenizer, settings) in a worker process
# Chunks queued per worker: enough that workers keep going while this process is off the CPU for a while
# (a shared box), few enough that memory stays bounded (about 0.5 MB a chunk).
_IN_FLIGHT = 4


def _init(tokenizer: Any, settings: RowSettings) -> None:
    global _STATE
    # Each worker is one process on one core: the tokenizer's own thread pool would only oversubscribe.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    # What the worker inherited (modules, the tokenizer) lives as long as it does: keep the collector off it,
    # which also spares the copy-on-write pages the collector would touch.
    gc.freeze()
    _STATE = (tokenizer, settings)


def _work(fmt: str, opts: FormatOptions, items: list[tuple[str, Any]]) -> list[Outcome]:
    assert _STATE is not None, "worker not initialised"
    return work_chunk(_STATE[0], _STATE[1], fmt, opts, items)


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Workers:
    """Ordered chunk processing: ``submit`` chunks, get their outcomes back through ``done`` in order.

    ``n == 1`` works in this process, as each chunk comes. ``n > 1`` uses a process pool (forked where the
    platform can, so the tokenizer is shared, not pickled) with at most ``4 * n`` chunks in flight, so
    memory stays bounded however large the input.
    """

    def __init__(self, n: int, tokenizer: Any, settings: RowSettings) -> None:
        self.n = n
        self.tokenizer, self.settings = tokenizer, settings
        self.pool: Any = None
        self.pending: deque[tuple[Any, Any]] = deque()
        if n > 1:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self.pool = ctx.Pool(n, initializer=_init, initargs=(tokenizer, settings))

    def submit(self, fmt: str, opts: FormatOptions, items: list[tuple[str, Any]], tag: Any,
               done: Callable[[Any, list[Outcome]], None]) -> None:
        """Queue a chunk; ``done(tag, outcomes)`` is called for each finished chunk in submission order."""
        if self.pool is None:
            done(tag, work_chunk(self.tokenizer, self.settings, fmt, opts, items))
            return
        self.pending.append((tag, self.pool.apply_async(_work, (fmt, opts, items))))
        while len(self.pending) >= _IN_FLIGHT * self.n:
            self._pop(done)

    def drain(self, done: Callable[[Any, list[Outcome]], None]) -> None:
        while self.pending:
            self._pop(done)

    def _pop(self, done: Callable[[Any, list[Outcome]], None]) -> None:
        tag, result = self.pending.popleft()
        done(tag, result.get())

    def close(self, wait: bool = True) -> None:
        """Stop the workers: let them exit (``wait``, so their CPU time is counted) or kill them (on error)."""
        if self.pool is not None:
            if wait:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()
            self.pool = None


@contextmanager
def gc_frozen() -> Iterator[None]:
    """Keep the cyclic collector off the objects that exist now (imports, the tokenizer) for the block.

    Row work makes many short-lived containers; each full collection would otherwise walk every object of
    the process (a few hundred thousand once transformers is imported), about 10% of the row work.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def cpu_seconds() -> float | None:
    """User + system CPU seconds of this process and its finished children; None where not measurable."""
    try:
        import resource
    except ImportError:  # not on Unix
        return None
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
