"""Which model a run trains, and how big it is (for the hardware planner)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from rich.console import Console

from models import registry
from train.config import TrainConfig


def pick_model(cfg: TrainConfig, *, cuda: bool, explicit: bool, console: Console) -> str:
    """The model to train: the configured one, or the offline fallback without a GPU or network."""
    name = cfg.model.name
    local = Path(name).expanduser().exists()
    spec = registry.lookup(name)
    packaged = spec is not None and spec.gguf_package is not None
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if explicit or local or packaged or (cuda and not offline):
        return name
    why = "no network (HF_HUB_OFFLINE=1)" if offline else "no GPU"
    console.print(
        f"[yellow]{why}: training {cfg.model.offline_fallback} instead of {name}[/yellow] "
        f"(pass --model {name} to insist)"
    )
    return cfg.model.offline_fallback


def params_billions(name: str, source: str) -> float:
    """Model size for the planner: the registry's figure, else estimated from config.json."""
    spec = registry.lookup(name)
    if spec is not None and spec.params_b:
        return spec.params_b
    cfg_path = Path(source) / "config.json"
    if cfg_path.is_file():
        c = json.loads(cfg_path.read_text())
        h, layers = c.get("hidden_size", 0), c.get("num_hidden_layers", 0)
        inter, vocab = c.get("intermediate_size", 4 * h), c.get("vocab_size", 0)
        return (layers * (4 * h * h + 3 * h * inter) + vocab * h) / 1e9
    return 7.0  # unknown Hub model: plan conservatively
