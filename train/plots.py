"""loss.png: train and eval loss against step (and the base model's held-out loss as a reference line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fileio.atomic import save_figure


def plot_loss(
    log_history: list[dict[str, Any]], path: Path, *, base_eval_loss: float | None = None, title: str = ""
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = sorted(
        {e["step"]: e["eval_loss"] for e in log_history if "eval_loss" in e and "step" in e}.items()
    )
    if base_eval_loss is not None:
        evals.insert(0, (0, base_eval_loss))  # the untrained adapter is the base model
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", color="tab:blue")
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", label="held-out loss", color="tab:orange")
    if base_eval_loss is not None:
        ax.axhline(base_eval_loss, ls="--", color="gray", label=f"base model held-out ({base_eval_loss:.3f})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.set_title(title or "training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    return path
