"""loss.png: train and eval loss against step (and the base model's held-out loss as a reference line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fileio.atomic import save_figure


def plot_loss(
    log_history: list[dict[str, Any]], path: Path, *, base_eval_loss: float | None = None, title: str = "",
    ylabel: str | None = None,
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
    ax.set_ylabel(ylabel or "loss (assistant tokens)")
    ax.set_title(title or "training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    return path


def plot_preference(log_history: list[dict[str, Any]], path: Path, *, title: str = "") -> Path | None:
    """preference.png: reward margin (chosen - rejected, left) and reward accuracy (right) against step, for
    training and held-out pairs. None when the trainer logged no rewards."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> list[tuple[int, float]]:
        return sorted({e["step"]: e[key] for e in log_history if key in e and "step" in e}.items())

    panels = [("rewards/margins", "reward margin (chosen - rejected)"), ("rewards/accuracies", "reward accuracy")]
    panels = [(k, label) for k, label in panels if series(k) or series(f"eval_{k}")]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        for name, style, color in ((key, "-", "tab:blue"), (f"eval_{key}", "o-", "tab:orange")):
            points = series(name)
            if points:
                ax.plot(*zip(*points, strict=True), style, color=color,
                        label="held-out pairs" if name.startswith("eval_") else "training batches")
        if key == "rewards/accuracies":
            ax.axhline(0.5, ls="--", color="gray", label="chance")
            ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title or "preference training")
    fig.tight_layout()
    save_figure(fig, path)
    return path
