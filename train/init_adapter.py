"""Training an existing LoRA adapter further (``model.init_adapter``): find it, shape the new adapter like it,
and load its weights into that adapter.

The new adapter is made the usual way (``get_peft_model``, or Unsloth's on the GPU path) with the rank, alpha,
dropout and target modules of the saved one, then the saved weights are loaded into it, so both backends
continue the same adapter and every saved tensor must land (a mismatch is an error, never a silent partial
load). Only ``adapter_model.safetensors`` is read: a pickle file can run code.
"""

from __future__ import annotations

import dataclasses
import glob
import json
from pathlib import Path
from typing import Any

from train.config import ConfigError, LoraConfig

WEIGHTS = "adapter_model.safetensors"


def resolve(pattern: str, root: Path | None = None) -> Path:
    """The adapter folder ``pattern`` names; with a ``*`` the newest match (run folders sort by time)."""
    candidates = [pattern] + ([str(root / pattern)] if root is not None and not Path(pattern).is_absolute() else [])
    for cand in candidates:
        matches = sorted(glob.glob(cand), key=lambda p: Path(p).stat().st_mtime) if "*" in cand else [cand]
        found = [Path(m) for m in matches if (Path(m) / "adapter_config.json").is_file()]
        if found:
            return found[-1]
    raise ConfigError(
        f"model.init_adapter: no adapter folder (with adapter_config.json) at '{pattern}'; train the SFT adapter "
        "first (e.g. python train/roleplay_0_5b.py --preset cpu_demo) or pass --init-adapter runs/<run>/adapter"
    )


def read_config(adapter_dir: Path) -> dict[str, Any]:
    path = adapter_dir / "adapter_config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


def lora_like(lora: LoraConfig, adapter_dir: Path) -> LoraConfig:
    """``lora`` with the shape of the saved adapter (its rank, alpha, dropout, targets, rsLoRA/DoRA)."""
    saved = read_config(adapter_dir)
    if saved.get("peft_type", "LORA") != "LORA":
        raise ConfigError(f"{adapter_dir}/adapter_config.json: peft_type {saved.get('peft_type')!r} is not LORA")
    targets = saved.get("target_modules") or lora.target_modules
    if isinstance(targets, (list, tuple, set)):
        targets = sorted(targets)
    return dataclasses.replace(
        lora,
        r=int(saved.get("r", lora.r)),
        alpha=int(saved.get("lora_alpha", lora.alpha)),
        dropout=float(saved.get("lora_dropout", lora.dropout)),
        target_modules=targets,
        use_rslora=bool(saved.get("use_rslora", lora.use_rslora)),
        use_dora=bool(saved.get("use_dora", lora.use_dora)),
    )


def load_weights(model: Any, adapter_dir: Path, adapter_name: str = "default") -> int:
    """Load the saved adapter's tensors into ``adapter_name`` of the PEFT ``model``; returns tensors loaded."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = adapter_dir / WEIGHTS
    if not path.is_file():
        raise ConfigError(f"model.init_adapter: {path} not found (only safetensors adapters are loaded)")
    state = load_file(str(path))
    try:
        result = set_peft_model_state_dict(model, state, adapter_name=adapter_name)
    except RuntimeError as e:  # size mismatch: another base model or rank
        raise ConfigError(f"model.init_adapter: {path} does not fit this model: {str(e).splitlines()[-1]}") from None
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ConfigError(
            f"model.init_adapter: {path} does not fit this model ({len(unexpected)} tensors have no place, "
            f"e.g. {unexpected[0]}); was it trained on another base model?"
        )
    return len(state)
