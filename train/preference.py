"""Preference rows (``run/data/train.jsonl`` of a dpo / orpo / kto run) as the datasets TRL's trainers take,
and the persona check of the start and final adapter.

Rows, as data_prep writes them::

    {"kind": "preference", "prompt": [messages], "chosen": [assistant message(s)],
     "rejected": [assistant message(s)], "source": "prefs.jsonl:3", "tools": null}
    {"kind": "unpaired_preference", "prompt": [messages], "completion": [assistant message(s)],
     "label": true, "source": "kto.jsonl:7"}

DPO and ORPO get TRL's conversational preference form (``prompt`` / ``chosen`` / ``rejected`` message lists),
KTO its unpaired form (``prompt`` / ``completion`` / ``label``; a pair becomes a desirable and an undesirable
row). TRL renders them with the tokenizer's chat template (the one data_prep rendered with), so the prompt is
the generation prompt the deployed model sees. A row of another kind stops the run with its file and line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from train.data import TrainDataError
from train.stages import PAIRED_STAGES

_ROOT = Path(__file__).resolve().parents[1]
_MESSAGE_KEYS = ("role", "content", "tool_calls", "name", "reasoning_content")


@dataclass
class PreferenceStats:
    """Rows used and their sizes in characters (tokens are counted by TRL's tokenization, in the trainer)."""

    examples: int = 0  # pairs (dpo/orpo) or unpaired rows (kto)
    desirable: int = 0  # kto: rows labelled true
    sources: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"examples": self.examples, "desirable": self.desirable}


def _messages(value: Any, where: str, name: str) -> list[dict[str, Any]]:
    """A message list with only the keys chat templates read (every row then has the same columns)."""
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(m, dict) and "role" in m for m in value):
        raise TrainDataError(f"{where}: field '{name}' must be a non-empty list of messages with a role")
    return [{k: m.get(k) if k != "content" else (m.get("content") or "") for k in _MESSAGE_KEYS if k in m}
            for m in value]


def _kind(row: dict[str, Any]) -> str:
    if "kind" in row:
        return str(row["kind"])
    return "sft" if "messages" in row else "text" if "text" in row else "unknown"


def to_trl_rows(rows: list[dict[str, Any]], stage: str, path: str) -> tuple[list[dict[str, Any]], PreferenceStats]:
    """The rows of ``path`` in the form ``stage``'s TRL trainer takes; TrainDataError names the first bad row."""
    out, stats = [], PreferenceStats()
    for n, row in enumerate(rows, 1):
        where = f"{path}:{n}"
        kind = _kind(row)
        if kind == "preference":
            pair = {
                "prompt": _messages(row.get("prompt"), where, "prompt"),
                "chosen": _messages(row.get("chosen"), where, "chosen"),
                "rejected": _messages(row.get("rejected"), where, "rejected"),
            }
            out += [pair] if stage in PAIRED_STAGES else [
                {"prompt": pair["prompt"], "completion": pair["chosen"], "label": True},
                {"prompt": pair["prompt"], "completion": pair["rejected"], "label": False},
            ]
        elif kind == "unpaired_preference" and stage not in PAIRED_STAGES:
            label = row.get("label")
            if not isinstance(label, bool):
                raise TrainDataError(f"{where}: field 'label' must be true or false, got {label!r}")
            out.append({
                "prompt": _messages(row.get("prompt"), where, "prompt"),
                "completion": _messages(row.get("completion"), where, "completion"),
                "label": label,
            })
        else:
            need = "prompt/chosen/rejected pairs" if stage in PAIRED_STAGES else "preference or unpaired_preference rows"
            raise TrainDataError(
                f"{where}: stage {stage} trains on {need}; this row is '{kind}'. Prepare the data with "
                f"--stage {stage} (python -m data_prep ... --stage {stage})"
            )
        stats.sources.append(str(row.get("source") or where))
    stats.examples = len(out)
    stats.desirable = sum(1 for r in out if r.get("label") is True)
    _keep_tools(out, rows, stage)
    return out, stats


def _keep_tools(out: list[dict[str, Any]], rows: list[dict[str, Any]], stage: str) -> None:
    """TRL passes a row's ``tools`` to the chat template; a JSON string keeps the column one Arrow type."""
    if not any(r.get("tools") for r in rows):
        return
    per_row = [json.dumps(r.get("tools")) if r.get("tools") else None for r in rows]
    if stage not in PAIRED_STAGES:  # kto rows from pairs come two by two
        per_row = [t for r, t in zip(rows, per_row, strict=True) for _ in range(2 if _kind(r) == "preference" else 1)]
    for row, tools in zip(out, per_row, strict=True):
        row["tools"] = tools


def to_dataset(rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(rows)


def prompts_of(rows: list[dict[str, Any]], n: int) -> list[list[dict[str, Any]]]:
    """The first ``n`` distinct prompts of preference rows, or of ``{"messages": [..., user turn]}`` rows (for
    the persona check)."""
    seen, out = set(), []
    for row in rows:
        prompt = row.get("prompt") or row.get("messages")
        key = json.dumps(prompt, sort_keys=True, ensure_ascii=False)
        if not isinstance(prompt, list) or key in seen:
            continue
        seen.add(key)
        out.append([{"role": m["role"], "content": m.get("content") or ""} for m in prompt])
        if len(out) == n:
            break
    return out


def repo_path(path: str) -> Path:
    """``path``, or the bundled file of that name when run from outside the repository."""
    p = Path(path)
    return _ROOT / p if not p.exists() and not p.is_absolute() and (_ROOT / p).exists() else p


def load_rules(card_path: str) -> Any:
    """The persona rules of a character card; TrainDataError names the file and the bad field."""
    from eval.persona import PersonaRules

    p = repo_path(card_path)
    if not p.is_file():
        raise TrainDataError(f"run.character: {p}: no such file")
    try:
        return PersonaRules.from_card(json.loads(p.read_text(encoding="utf-8")))
    except json.JSONDecodeError as e:
        raise TrainDataError(f"{p}:{e.lineno}: invalid JSON ({e.msg})") from None
    except ValueError as e:
        raise TrainDataError(f"{p}: {e}") from None


def persona_check(
    generate: Callable[[list[dict[str, Any]]], str], prompts: list[list[dict[str, Any]]], rules: Any
) -> dict[str, Any]:
    """Replies to ``prompts`` (``generate(messages) -> reply``) and the share that stays in character."""
    from eval.persona import persona_score

    replies = [generate(p) for p in prompts]
    rate, checks = persona_score(replies, rules)
    return {
        "pass_rate": rate,
        "n": len(checks),
        "replies": [
            {"prompt": p[-1]["content"], "reply": r, "passed": c.passed, "reasons": c.reasons}
            for p, r, c in zip(prompts, replies, checks, strict=True)
        ],
    }
