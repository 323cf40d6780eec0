"""The ``SFTConfig`` of a run (our defaults < the hardware plan < every explicit ``sft`` key), the batching
mode, and the batching the built trainer really runs.

Import it only after :func:`train.backend.activate` (it imports TRL).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trl import SFTConfig

from train import planner
from train.config import ConfigError, TrainConfig


def choose_batching(cfg: TrainConfig, batch_size: int) -> str:
    if cfg.run.batching != "auto":
        if cfg.run.batching not in ("padding_free", "packing", "padded"):
            raise ConfigError(
                f"run.batching must be auto, padding_free, packing or padded, not '{cfg.run.batching}'"
            )
        return cfg.run.batching
    if batch_size == 1:
        return "padded"  # one row per step: nothing to pad or flatten
    # padding-free: no pad tokens at all; sequences stay isolated through position_ids (flash-attn varlen on
    # GPU, a block-diagonal mask built by transformers from the position_ids with sdpa/eager on CPU).
    return "padding_free"


def build_sft_config(
    cfg: TrainConfig, plan: planner.Plan, run_dir: Path, batching: str, has_eval: bool, steps_hint: int
) -> SFTConfig:
    """Our defaults, overridden by the plan's decisions, overridden by every explicit ``sft`` key."""
    merged = {**trainer_fields(cfg, plan, run_dir, batching, has_eval, steps_hint), **cfg.sft}
    if merged.get("padding_free") and not merged.get("packing"):
        merged["max_length"] = None  # TRL enforces no max_length in padding-free mode; data_prep truncated
    return SFTConfig(**merged)


def trainer_fields(
    cfg: TrainConfig, plan: planner.Plan, run_dir: Path, batching: str, has_eval: bool, steps_hint: int
) -> dict[str, Any]:
    """Our defaults overridden by the plan's decisions (the trainer config of every stage starts here)."""
    eval_every = max(1, steps_hint // 5)
    base: dict[str, Any] = {
        "output_dir": str(run_dir / "checkpoints"),
        "report_to": "none",  # TensorBoard is added as a callback writing to run/logs
        "logging_steps": max(1, min(10, steps_hint // 20)),
        "save_strategy": "steps",
        "save_steps": eval_every,
        "save_total_limit": 2,
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": eval_every,
        "per_device_eval_batch_size": plan.batch_size,
        "max_length": None,  # rows are already rendered and truncated by data_prep
        "packing": batching == "packing",
        "padding_free": batching == "padding_free",
        "dataset_num_proc": None,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.05,
        "weight_decay": 0.01,
        "seed": 42,
        "dataloader_num_workers": 0,
        "save_only_model": False,
    }
    base.update(plan.sft_fields())
    if batching == "packing":
        base["max_length"] = plan.seq_len
        base["packing_strategy"] = "bfd"
    if cfg.run.early_stopping_patience:
        base.update(load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False)
    return base


def effective_batching(args: Any) -> dict[str, Any]:
    """The batching the built trainer will run, read from its args (Unsloth may have changed what we asked)."""
    padding_free, packing = bool(getattr(args, "padding_free", False)), bool(getattr(args, "packing", False))
    name = "packing" if packing else "padding_free" if padding_free else "padded"
    return {"batching": name, "padding_free": padding_free, "packing": packing, "max_length": args.max_length}
