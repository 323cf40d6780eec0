"""Scores over a list of episode results (docs/sources.md#household-metrics)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from data_prep.react import TASK_TYPES
from eval.runner import FUZZY_METHOD, EpisodeResult


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def wilson_interval(wins: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a success rate (stays inside [0, 1], sane at 0 and n wins)."""
    if n == 0:
        return 0.0, 1.0
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def compute_metrics(
    results: Sequence[EpisodeResult],
    *,
    policy: str,
    split: str,
    fuzzy: bool = False,
    elapsed_s: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``results.json`` document.

    Rates over episodes: ``success_rate``, ``loop_rate``, ``step_limit_rate``.
    Rates over steps: ``invalid_action_rate`` ("Nothing happens." share), ``format_error_rate``
    (replies with no parseable action).
    Errors are counted apart from failures: ``errors`` episodes ended because the policy could not reply at
    all (a failing server), ``failures`` are the scored episodes not won; ``success_rate`` stays over every
    episode (an error is not a win), ``success_rate_scored`` leaves the errors out. ``error_reasons`` counts
    each distinct reason.
    """
    n = len(results)
    n_errors = sum(r.end_reason == "error" for r in results)
    wins = sum(r.won for r in results)
    reasons: dict[str, int] = {}
    for r in results:
        if r.end_reason == "error":
            reasons[r.error or "unknown"] = reasons.get(r.error or "unknown", 0) + 1
    total_steps = sum(r.steps for r in results)
    by_task: dict[str, dict[str, Any]] = {}
    order = list(TASK_TYPES) + sorted({r.task_type or "unknown" for r in results} - set(TASK_TYPES))
    for task in order:
        rows = [r for r in results if (r.task_type or "unknown") == task]
        if rows:
            by_task[task] = {"success_rate": _share(sum(r.won for r in rows), len(rows)), "n": len(rows)}
    doc: dict[str, Any] = {
        "policy": policy,
        "split": split,
        "episodes": n,
        "success_rate": _share(sum(r.won for r in results), n),
        "success_ci95": list(wilson_interval(sum(r.won for r in results), n)),
        "by_task": by_task,
        "avg_steps": _mean([r.steps for r in results]),
        "avg_steps_success": _mean([r.steps for r in results if r.won]),
        "invalid_action_rate": _share(sum(r.n_invalid for r in results), total_steps),
        "format_error_rate": _share(sum(r.n_format_errors for r in results), total_steps),
        "failures": n - wins - n_errors,
        "errors": n_errors,
        "error_rate": _share(n_errors, n),
        "success_rate_scored": _share(wins, n - n_errors),
        "error_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "loop_rate": _share(sum(r.end_reason == "loop" for r in results), n),
        "step_limit_rate": _share(sum(r.end_reason == "step_limit" for r in results), n),
        "matching": "fuzzy" if fuzzy else "exact",
        "matching_method": f"{FUZZY_METHOD} (closest admissible command)" if fuzzy else "exact string",
        "total_steps": total_steps,
        "tokens_encoded_per_episode": _mean([r.tokens_encoded for r in results]),
        "episodes_per_s": (n / elapsed_s) if elapsed_s else None,
        "elapsed_s": elapsed_s,
    }
    if extra:
        doc.update(extra)
    return doc
