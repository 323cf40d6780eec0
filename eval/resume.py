"""Resumable eval runs: ``episodes.jsonl`` as a log written as episodes end, read back by ``--resume``.

Each finished episode is appended to ``episodes.jsonl`` (one JSON line, flushed and fsynced), so a run
killed at any point keeps every episode it finished. ``--resume`` reads that log back, skips those
episodes and plays the rest; the final ``results.json`` then equals an uninterrupted run's (wall-time
fields aside). A process killed mid-write leaves a truncated last line: it is dropped (that episode is
played again), and the log is rewritten without it before anything is appended.

``resume.json`` records what the results depend on (policy, model, split, seed, limits); resuming with
different settings is refused, so episodes of two different runs are never mixed in one report.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from eval.runner import EpisodeResult
from fileio.atomic import write_json_atomic, write_text_atomic

LOG_NAME = "episodes.jsonl"
IDENTITY_NAME = "resume.json"
IDENTITY_FIELDS = ("policy", "model", "api_model", "adapter", "tokenizer", "split", "seed", "episodes", "env",
                   "grammar", "max_steps", "max_new_tokens", "fuzzy", "dtype")


def run_identity(args: argparse.Namespace) -> dict[str, Any]:
    """The settings an episode's outcome depends on (not batch size, concurrency or progress bars)."""
    ident = {k: getattr(args, k, None) for k in IDENTITY_FIELDS}
    if ident["policy"] != "hf":
        ident["dtype"] = None
    return ident


def read_log(path: Path) -> list[dict[str, Any]]:
    """The complete rows of an episodes log; a truncated last line (killed mid-write) is dropped.

    A bad line anywhere else means the file is not our log: ValueError naming the line.
    """
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            if n == len(lines):  # the last line has no newline: the write was cut off
                break
            raise ValueError(f"{path}:{n}: not a JSON line; remove the file or pass a new --out") from None
        if not isinstance(row, dict) or "episode_id" not in row:
            raise ValueError(f"{path}:{n}: not an episode row; remove the file or pass a new --out")
        rows.append(row)
    return rows


def finished_episodes(out: Path, ident: dict[str, Any], ids: Sequence[str]) -> dict[int, EpisodeResult]:
    """Episodes already played in ``out`` by a run with the same identity, by index in ``ids``."""
    saved_path = out / IDENTITY_NAME
    rows = read_log(out / LOG_NAME)
    if not saved_path.is_file():
        if rows:
            raise ValueError(f"--resume: {out}/{IDENTITY_NAME} is missing, so {out}/{LOG_NAME} cannot be matched "
                             "to these settings; pass a new --out")
        return {}
    saved = json.loads(saved_path.read_text())
    diff = [k for k in IDENTITY_FIELDS if saved.get(k) != ident.get(k)]
    if diff:
        shown = ", ".join(f"{k}: was {saved.get(k)!r}, now {ident.get(k)!r}" for k in diff)
        raise ValueError(f"--resume: {out} holds a run with other settings ({shown}); use the same ones or a new --out")
    where = {episode_id: i for i, episode_id in enumerate(ids)}
    done: dict[int, EpisodeResult] = {}
    for row in rows:
        if row["episode_id"] not in where:
            raise ValueError(f"--resume: {out}/{LOG_NAME} holds episode {row['episode_id']!r}, which this run "
                             "does not have; pass a new --out")
        result = EpisodeResult.from_dict(row)
        result.index = where[row["episode_id"]]
        done[result.index] = result
    return done


class EpisodeLog:
    """Appends finished episodes to ``out/episodes.jsonl``; starts from ``kept`` (rewritten atomically)."""

    def __init__(self, out: Path, ident: dict[str, Any], kept: Sequence[EpisodeResult] = ()) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / LOG_NAME
        write_json_atomic(out / IDENTITY_NAME, ident)
        # Rewriting drops a truncated last line, so the next append starts on a fresh line.
        write_text_atomic(self.path, "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in kept))
        self._fh: IO[str] | None = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def append(self, result: EpisodeResult) -> None:
        assert self._fh is not None
        self._fh.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())  # a finished episode survives a kill or a power cut

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
