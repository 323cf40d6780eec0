"""Side-by-side ReAct results: several ``results.json`` files -> one Markdown table and one grouped PNG.

    python -m eval.compare docs/results/react/*/results.json --out docs/results/react
    python -m eval.compare base=runs/eval/base/results.json tuned=runs/eval/tuned/results.json --out docs/x

Each input is ``[label=]path``; without a label the file's folder name is used. Writes ``table.md`` (success
by task type, overall success with its 95% Wilson interval, invalid-action and format-error rates, mean
steps, wall time, per split) and ``success_by_task.png`` (one bar group per task type, one bar per run),
beside the published numbers of the ReAct paper (Table 3, quoted; real ALFWorld, not our simulator).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from data_prep.react import TASK_TYPES
from eval.metrics import wilson_interval
from eval.report import _pct
from fileio.atomic import save_figure, write_text_atomic

SHORT = {
    "pick_and_place_simple": "Pick",
    "pick_clean_then_place_in_recep": "Clean",
    "pick_heat_then_place_in_recep": "Heat",
    "pick_cool_then_place_in_recep": "Cool",
    "look_at_obj_in_light": "Look",
    "pick_two_obj_and_place": "Pick 2",
}

# ReAct paper (Yao et al., ICLR 2023), Table 3: ALFWorld success % on the 134 unseen games, by task type
# (Pick, Clean, Heat, Cool, Look, Pick 2) and overall. Quoted, not measured here.
PAPER_TABLE3: tuple[tuple[str, tuple[int, ...], int], ...] = (
    ("Act, best of 6 (PaLM-540B prompting)", (88, 42, 74, 67, 72, 41), 45),
    ("ReAct, average (PaLM-540B prompting)", (65, 39, 83, 76, 55, 24), 57),
    ("ReAct, best of 6 (PaLM-540B prompting)", (92, 58, 96, 86, 78, 41), 71),
    ("BUTLER, best of 8 (imitation learning)", (46, 39, 74, 100, 22, 24), 37),
)
# Fine-tuned 7B agents, overall success % only (quoted).
PAPER_OVERALL: tuple[tuple[str, float, str], ...] = (
    ("Llama-2-7B SFT (ETO paper)", 67.2, "134 unseen games"),
    ("AgentLM-7B (AgentTuning paper)", 84.0, "AgentBench ALFWorld split: 50 games, 35 steps"),
)


def load(spec: str) -> tuple[str, dict[str, Any]]:
    label, sep, path = spec.partition("=")
    if not sep:
        label, path = Path(spec).parent.name, spec
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read results.json ({e})") from None
    for key in ("split", "success_rate", "by_task", "episodes"):
        if key not in doc:
            raise ValueError(f"{path}: field {key!r} missing: not a react_eval results.json")
    return label, doc


def _ci(doc: dict[str, Any]) -> tuple[float, float]:
    if "success_ci95" in doc:
        lo, hi = doc["success_ci95"]
        return lo, hi
    return wilson_interval(round(doc["success_rate"] * doc["episodes"]), doc["episodes"])


def render_table(runs: list[tuple[str, dict[str, Any]]]) -> str:
    head = "| run | split | " + " | ".join(SHORT[t] for t in TASK_TYPES) + " | all % (95% CI) | invalid % | format err % | mean steps | wall s |"
    lines = [head, "|" + "---|" * 2 + "---:|" * (len(TASK_TYPES) + 5)]
    for label, d in runs:
        lo, hi = _ci(d)
        cells = [_pct(d["by_task"].get(t, {}).get("success_rate")) for t in TASK_TYPES]
        wall = d.get("elapsed_s")
        lines.append(
            f"| {label} | {d['split']} ({d['episodes']}) | " + " | ".join(cells)
            + f" | **{_pct(d['success_rate'])}** ({_pct(lo)}-{_pct(hi)}) | {_pct(d.get('invalid_action_rate'))}"
            + f" | {_pct(d.get('format_error_rate'))} | {d.get('avg_steps') or 0:.1f}"
            + f" | {'-' if wall is None else f'{wall:.0f}'} |"
        )
    lines += ["", "Quoted, real ALFWorld (not our simulator), 134 unseen games unless noted:", ""]
    lines += ["| agent | " + " | ".join(SHORT[t] for t in TASK_TYPES) + " | all % |", "|---|" + "---:|" * 7]
    for name, by_task, overall in PAPER_TABLE3:
        lines.append(f"| {name} (ReAct paper, Table 3) | " + " | ".join(map(str, by_task)) + f" | {overall} |")
    for name, overall_f, setting in PAPER_OVERALL:
        lines.append(f"| {name}, {setting} | " + " | ".join("-" for _ in TASK_TYPES) + f" | {overall_f} |")
    return "\n".join(lines) + "\n"


def save_grouped_png(path: Path, runs: list[tuple[str, dict[str, Any]]], title: str) -> None:
    """Success % by task type, one bar per run in each group (Agg backend, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [*(SHORT[t] for t in TASK_TYPES), "all"]
    width = 0.8 / max(1, len(runs))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for k, (label, d) in enumerate(runs):
        values = [100 * d["by_task"].get(t, {}).get("success_rate", 0.0) for t in TASK_TYPES]
        values.append(100 * d["success_rate"])
        xs = [i + (k - (len(runs) - 1) / 2) * width for i in range(len(groups))]
        bars = ax.bar(xs, values, width, label=label)
        for bar, v in zip(bars, values, strict=True):
            ax.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.0f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylim(0, 110)
    ax.set_ylabel("success %")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eval.compare", description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="[label=]path/to/results.json")
    ap.add_argument("--out", type=Path, required=True, help="folder for table.md and success_by_task.png")
    ap.add_argument("--plot", nargs="*", default=None, help="labels to plot (default: all)")
    ap.add_argument("--plot-split", default=None, help="the split to plot (default: the first run's)")
    args = ap.parse_args(argv)
    try:
        runs = [load(s) for s in args.results]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    table = render_table(runs)
    write_text_atomic(args.out / "table.md", table)
    split = args.plot_split or runs[0][1]["split"]
    plotted = [r for r in runs if (args.plot is None or r[0] in args.plot) and r[1]["split"] == split]
    n = plotted[0][1]["episodes"] if plotted else 0
    save_grouped_png(args.out / "success_by_task.png", plotted, f"ReAct success by task type ({split}, {n} games)")
    print(table)
    print(f"wrote {args.out / 'table.md'} and {args.out / 'success_by_task.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
