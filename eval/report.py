"""Write an evaluation run: ``results.json``, ``episodes.jsonl``, ``report.md``, ``success_by_task.png``.

Every file is written to a temporary file in the output folder and moved into place.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.runner import EpisodeResult
from fileio.atomic import save_figure, write_text_atomic


@dataclass(frozen=True)
class Reference:
    name: str
    success: float  # percent
    setting: str


# docs/sources.md#household-references. All on real ALFWorld, not on our simulator.
REFERENCES: tuple[Reference, ...] = (
    Reference("ReAct, best of 6 (few-shot prompting)", 71.0, "ReAct paper, 134 unseen games"),
    Reference("ReAct, average (few-shot prompting)", 57.0, "ReAct paper, 134 unseen games"),
    Reference("Act only (few-shot prompting)", 45.0, "ReAct paper, 134 unseen games"),
    Reference("BUTLER (imitation learning)", 37.0, "ReAct paper, 134 unseen games"),
    Reference("AgentLM-7B (fine-tuned)", 84.0, "AgentBench-old, 50 games, 35 steps"),
    Reference("Llama-2-7B SFT (fine-tuned)", 67.2, "ETO, 134 unseen games"),
)


def write_json(path: Path, doc: Any) -> None:
    write_text_atomic(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def save_bar_png(
    path: Path, labels: Sequence[str], values: Sequence[float], *, title: str, ylabel: str, ymax: float | None = 105,
    fmt: str = "{:.0f}",
) -> None:
    """A bar chart as PNG (Agg backend), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels) + 2), 4.5))
    bars = ax.bar(range(len(labels)), values, color="#4C72B0")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, ymax if ymax is not None else 1.15 * max([*values, 1e-9]))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    for bar, v in zip(bars, values, strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, v, fmt.format(v), ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def render_react_report(metrics: dict[str, Any], env_name: str = "household") -> str:
    """``report.md``: our result beside the published reference numbers, with a comparability note."""
    where = "our offline household simulator" if env_name == "household" else "real ALFWorld"
    lines = [
        f"# ReAct evaluation: {metrics['policy']} on {metrics['split']}",
        "",
        f"{metrics['episodes']} episodes in {where}; grammar {metrics.get('grammar', '2.1.1')}, "
        f"step limit {metrics.get('max_steps', 50)}, action matching: **{metrics['matching']}** "
        f"({metrics['matching_method']}).",
        "",
        "## Result beside the reference numbers",
        "",
        "| agent | success % | setting |",
        "|---|---:|---|",
        f"| **ours: {metrics['policy']}** | **{_pct(metrics['success_rate'])}** | "
        f"{metrics['split']}, {metrics['episodes']} episodes, {where} |",
    ]
    lines += [f"| {r.name} | {r.success:.1f} | {r.setting} |" for r in REFERENCES]
    lines += [
        "",
        "Comparability: the reference numbers were measured on the real ALFWorld games (TextWorld, "
        "grammar 2.1.1), mostly on the 134 out-of-distribution (unseen) games with a 50-step limit; "
        "AgentLM-7B used 50 games and 35 steps. "
        + (
            "Our simulator reproduces ALFWorld's text interface but generates its own rooms, so its scores "
            "show the same skills without being the same benchmark. "
            if env_name == "household"
            else ""
        )
        + ("Fuzzy matching (as AgentBench does with BLEU) forgives malformed commands and raises scores. "
           if metrics["matching"] == "fuzzy" else "Actions were matched exactly, as in the ReAct paper. "),
        "",
        "## By task type",
        "",
        "| task type | success % | n |",
        "|---|---:|---:|",
    ]
    lines += [f"| {t} | {_pct(v['success_rate'])} | {v['n']} |" for t, v in metrics["by_task"].items()]
    lines += [
        "",
        "## Episode statistics",
        "",
        "| metric | value |",
        "|---|---:|",
        f"| average steps | {_num(metrics['avg_steps'])} |",
        f"| average steps (successes) | {_num(metrics['avg_steps_success'])} |",
        f"| invalid actions (\"Nothing happens.\") % of steps | {_pct(metrics['invalid_action_rate'])} |",
        f"| format errors % of steps | {_pct(metrics['format_error_rate'])} |",
        f"| ended in a repetition loop % | {_pct(metrics['loop_rate'])} |",
        f"| ended at the step limit % | {_pct(metrics['step_limit_rate'])} |",
        f"| failed episodes (scored, not won) | {metrics.get('failures', '-')} |",
        f"| error episodes (no reply from the policy, not scored) | {metrics.get('errors', 0)} |",
        f"| tokens encoded per episode | {_num(metrics.get('tokens_encoded_per_episode'), '{:.0f}')} |",
        f"| episodes / s | {_num(metrics.get('episodes_per_s'), '{:.3f}')} |",
        "",
        "![success by task](success_by_task.png)",
        "",
    ]
    return "\n".join(lines)


def write_react_outputs(
    out_dir: Path, results: Sequence[EpisodeResult], metrics: dict[str, Any], env_name: str = "household"
) -> None:
    out_dir = Path(out_dir)
    write_json(out_dir / "results.json", metrics)
    write_jsonl(out_dir / "episodes.jsonl", (r.to_dict() for r in results))
    write_text_atomic(out_dir / "report.md", render_react_report(metrics, env_name))
    tasks = list(metrics["by_task"])
    save_bar_png(
        out_dir / "success_by_task.png",
        [*tasks, "overall"],
        [100 * metrics["by_task"][t]["success_rate"] for t in tasks] + [100 * metrics["success_rate"]],
        title=f"{metrics['policy']} on {metrics['split']} ({metrics['episodes']} episodes)",
        ylabel="success %",
    )
