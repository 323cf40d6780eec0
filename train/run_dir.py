"""The run folder: its name, the newest complete checkpoint to resume from, and the saved adapter."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from fileio.atomic import atomic_dir
from train.config import ConfigError, TrainConfig


def latest_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest *complete* checkpoint (see :func:`checkpoint_complete`); None when there is none."""
    if not ckpt_dir.is_dir():
        return None
    found = []
    for d in ckpt_dir.glob("checkpoint-*"):
        step = d.name.split("-")[-1]
        if step.isdigit() and checkpoint_complete(d, int(step)):
            found.append((int(step), d))
    return str(max(found)[1]) if found else None


def checkpoint_complete(folder: Path, step: int) -> bool:
    """The Trainer writes trainer_state.json last (after weights, optimizer, scheduler and RNG state), but
    not atomically: a SIGKILL during a save leaves it missing or cut off, and one while an old checkpoint is
    being deleted (save_total_limit) can leave its state file without the files it points to."""
    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(state, dict) or state.get("global_step") != step:
        return False
    names = {p.name for p in folder.iterdir()}
    weights = any(n.startswith(("adapter_model.", "model.", "pytorch_model.")) for n in names)
    rng = any(n.startswith("rng_state") for n in names)
    return weights and rng and {"optimizer.pt", "scheduler.pt"} <= names


def _distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def resolve_run_dir(cfg: TrainConfig, resume: bool) -> Path:
    """runs/<scenario>-<YYYYmmdd-HHMMSS>, the configured folder, or (resume) the newest checkpointed run."""
    if cfg.run.run_dir:
        return Path(cfg.run.run_dir)
    if resume:
        runs = sorted(
            p.parents[2]
            for p in Path(cfg.run.runs_dir).glob(
                f"{cfg.run.scenario}-*/checkpoints/checkpoint-*/trainer_state.json"
            )
        )
        if not runs:
            raise ConfigError(
                f"--resume: no checkpoint under {cfg.run.runs_dir}/{cfg.run.scenario}-*/; "
                "pass --run-dir runs/<run> or --config runs/<run>/config.yaml"
            )
        return runs[-1]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if _distributed():  # every rank must agree on the folder
        from accelerate import PartialState
        from accelerate.utils import broadcast_object_list

        PartialState()
        stamp = broadcast_object_list([stamp])[0]
    return Path(cfg.run.runs_dir) / f"{cfg.run.scenario}-{stamp}"


def save_adapter(model: Any, tokenizer: Any, adapter_dir: Path) -> Path:
    """Adapter + tokenizer + chat template into ``adapter_dir``, which appears whole or not at all."""
    # Only the trained adapter: DPO/KTO keep a frozen copy of the start adapter as "ref" (their reference).
    adapters = list(getattr(model, "peft_config", None) or [])
    only = {"selected_adapters": ["default"]} if len(adapters) > 1 and "default" in adapters else {}
    with atomic_dir(adapter_dir) as tmp:
        model.save_pretrained(str(tmp), **only)
        tokenizer.save_pretrained(str(tmp))
        if tokenizer.chat_template and not (tmp / "chat_template.jinja").is_file():
            (tmp / "chat_template.jinja").write_text(tokenizer.chat_template, encoding="utf-8")
    return adapter_dir
