"""Run measurements: token counters that survive resume, peak memory, library versions, metrics.json."""

from __future__ import annotations

import json
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from fileio.atomic import write_text_atomic

COUNTERS_FILE = "recipe_counters.json"


@dataclass
class Counters:
    """Training tokens seen so far (all ranks summed at the end) and training wall time, across resumes."""

    tokens: int = 0  # non-padding tokens fed to the model in training steps
    supervised: int = 0  # tokens with a label (the assistant tokens the loss is on)
    train_seconds: float = 0.0  # inside training steps only (evals and checkpoint saves excluded)

    def save(self, folder: Path) -> None:
        write_text_atomic(folder / COUNTERS_FILE, json.dumps(asdict(self)))

    @classmethod
    def load(cls, folder: Path) -> Counters:
        p = folder / COUNTERS_FILE
        if not p.is_file():
            return cls()
        return cls(**json.loads(p.read_text()))


def peak_ram_mb() -> float:
    """Peak resident set size of this process (MB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 1024 / 1024


def peak_vram_mb() -> float:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 1024**2
    except ImportError:
        pass
    return 0.0


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "unsloth"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"cpu ({platform.processor() or platform.machine()}, torch threads: {_threads()})"


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def last_logged(log_history: list[dict[str, Any]], key: str) -> float | None:
    for entry in reversed(log_history):
        if key in entry:
            return float(entry[key])
    return None


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(metrics, indent=2, sort_keys=False) + "\n")


def _frozen_weights(built: Any) -> str:
    """The dtype the frozen base weights trained in: "bf16 (N layers)" when the CPU plan cast them."""
    frozen = getattr(built, "frozen", None)
    if frozen is not None and frozen.cast_layers:
        return f"bf16 ({frozen.cast_layers} layers)"
    dtype = getattr(built.trainer.model, "dtype", None)
    return str(dtype).replace("torch.", "") if dtype is not None else "unknown"


def run_metrics(
    session: Any, data: Any, built: Any, *, train_loss: float, train_call_s: float, tokens: int, supervised: int,
    final_eval: dict[str, Any], base_eval_loss: float | None,
) -> dict[str, Any]:
    """metrics.json of a finished run (``session``, ``data``, ``built``: the recipe's RunSession,
    PreparedData and BuiltTrainer)."""
    from train.backend import attention_backend

    trainer = built.trainer
    seconds = built.counters.train_seconds or train_call_s
    return {
        "scenario": session.cfg.run.scenario,
        "backend": session.info.name,
        "model": session.model_name,
        "device": device_name(),
        "processes": trainer.accelerator.num_processes,
        "versions": versions(),
        "plan": asdict(session.plan),
        "batching": built.ran["batching"],
        "batching_requested": built.batching,
        "sft_effective": {k: built.ran[k] for k in ("padding_free", "packing", "max_length")},
        "attention": attention_backend(session.info.name, trainer.model),
        "head_loss": built.ran.get("head_loss"),
        "frozen_weights": _frozen_weights(built),
        "wall_time_s": round(time.perf_counter() - session.t_start, 2),  # this session: load, data, train, eval
        "train_call_s": round(train_call_s, 2),
        "train_time_s": round(seconds, 2),
        "steps": trainer.state.global_step,
        "epochs": round(float(trainer.state.epoch or 0), 3),
        "trained_tokens": tokens,
        "supervised_tokens": supervised,
        "trained_token_share": round(supervised / tokens, 4) if tokens else 0.0,
        "supervised_tokens_per_s": round(supervised / seconds, 2) if seconds else 0.0,
        "tokens_per_s": round(tokens / seconds, 2) if seconds else 0.0,
        "peak_ram_mb": round(peak_ram_mb(), 1),
        "peak_vram_mb": round(peak_vram_mb(), 1),
        "final_train_loss": last_logged(trainer.state.log_history, "loss"),
        "mean_train_loss": round(train_loss, 4),
        "final_eval_loss": final_eval.get("eval_loss"),
        "base_eval_loss": base_eval_loss,
        "data": {"train": data.train_stats.to_dict(), "eval": data.eval_stats.to_dict() if data.eval_stats else None},
        "resumed_from": session.last_ckpt,
    }
