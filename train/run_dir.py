"""The run folder: its name, the newest complete checkpoint to resume from, and the saved adapter."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from fileio.atomic import atomic_dir
from train.config import ConfigError, TrainConfig


def latest_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest *complete* checkpoint: a kill during a save leaves a folder without trainer_state.json."""
    if not ckpt_dir.is_dir():
        return None
    found = []
    for d in ckpt_dir.glob("checkpoint-*"):
        if d.name.split("-")[-1].isdigit() and (d / "trainer_state.json").is_file():
            found.append((int(d.name.split("-")[-1]), d))
    return str(max(found)[1]) if found else None


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
    with atomic_dir(adapter_dir) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        if tokenizer.chat_template and not (tmp / "chat_template.jinja").is_file():
            (tmp / "chat_template.jinja").write_text(tokenizer.chat_template, encoding="utf-8")
    return adapter_dir
