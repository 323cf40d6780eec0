"""PEFT LoRA adapters read from disk, and the merge math for one weight at a time.

Supported: plain LoRA (scale = alpha / r), rsLoRA (scale = alpha / sqrt(r)), ``rank_pattern`` /
``alpha_pattern`` overrides, DoRA (magnitude vector; the column norm is taken over the merged weight, as
PEFT does) and ``modules_to_save`` (full replacement tensors). Anything else fails early with a message.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PREFIX = "base_model.model."


@dataclass
class LoraModule:
    """The LoRA factors for one linear layer (names relative to the HF model, e.g. ``model.layers.0.self_attn.q_proj``)."""

    module: str
    a_key: str
    b_key: str
    scale: float
    magnitude_key: str | None = None


@dataclass
class LoraAdapter:
    path: Path
    config: dict[str, Any]
    modules: dict[str, LoraModule] = field(default_factory=dict)  # base weight name -> module
    replacements: dict[str, str] = field(default_factory=dict)  # base weight name -> adapter key
    _handle: Any = None

    @property
    def base_model(self) -> str | None:
        return self.config.get("base_model_name_or_path")

    @classmethod
    def load(cls, path: Path | str) -> LoraAdapter:
        path = Path(path)
        cfg_file = path / "adapter_config.json"
        weights = path / "adapter_model.safetensors"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{path}: no adapter_config.json (is this a PEFT adapter folder?)")
        if not weights.is_file():
            raise FileNotFoundError(
                f"{weights}: missing; save the adapter with save_pretrained(safe_serialization=True)"
            )
        config = json.loads(cfg_file.read_text())
        peft_type = config.get("peft_type", "LORA")
        if peft_type != "LORA":
            raise ValueError(f"{cfg_file}: peft_type {peft_type!r} is not supported, only LORA")
        if config.get("fan_in_fan_out"):
            raise ValueError(f"{cfg_file}: fan_in_fan_out=true (GPT-2 Conv1D) is not supported")
        if config.get("trainable_token_indices"):
            raise ValueError(
                f"{cfg_file}: trainable_token_indices is not supported; use modules_to_save instead"
            )
        if config.get("lora_bias"):
            raise ValueError(f"{cfg_file}: lora_bias=true is not supported")
        adapter = cls(path=path, config=config)
        adapter._index(weights)
        return adapter

    def _index(self, weights: Path) -> None:
        from safetensors import safe_open

        self._handle = safe_open(str(weights), framework="pt")
        keys = list(self._handle.keys())
        r_default = int(self.config["r"])
        alpha_default = float(self.config.get("lora_alpha", r_default))
        rslora = bool(self.config.get("use_rslora"))
        for key in keys:
            if not key.startswith(_PREFIX):
                raise ValueError(f"{weights}: unexpected key {key!r} (expected the PEFT prefix {_PREFIX!r})")
            rel = key[len(_PREFIX) :]
            if rel.endswith(".lora_A.weight"):
                module = rel[: -len(".lora_A.weight")]
                b_key = f"{_PREFIX}{module}.lora_B.weight"
                if b_key not in keys:
                    raise ValueError(f"{weights}: {key} has no matching lora_B")
                rank = int(self._handle.get_slice(key).get_shape()[0])
                r = _pattern_value(self.config.get("rank_pattern") or {}, module, r_default)
                if r != rank:
                    raise ValueError(f"{weights}: {module} has rank {rank}, config says {r}")
                alpha = _pattern_value(self.config.get("alpha_pattern") or {}, module, alpha_default)
                scale = alpha / math.sqrt(r) if rslora else alpha / r
                mag = f"{_PREFIX}{module}.lora_magnitude_vector"
                self.modules[f"{module}.weight"] = LoraModule(
                    module, key, b_key, float(scale), mag if mag in keys else None
                )
            elif rel.endswith((".lora_B.weight", ".lora_magnitude_vector")):
                continue
            elif ".lora_" in rel:
                raise ValueError(f"{weights}: unsupported adapter tensor {key!r}")
            else:
                self.replacements[rel] = key  # modules_to_save: a full trained copy of the tensor
        if self.config.get("use_dora") and not all(m.magnitude_key for m in self.modules.values()):
            raise ValueError(f"{weights}: use_dora=true but some modules have no lora_magnitude_vector")

    def tensor(self, key: str) -> Any:
        return self._handle.get_tensor(key)

    def touches(self, name: str) -> bool:
        return name in self.modules or name in self.replacements

    def merge_rows(self, name: str, rows: Any, start: int, stop: int) -> Any:
        """Rows ``start:stop`` of the merged weight, from the same rows of the base weight (float32).

        Every output row depends only on its own base row (DoRA's norm is per output row too), so merging
        in row chunks is exact.
        """
        import torch

        if name in self.replacements:
            return self.tensor(self.replacements[name])[start:stop].float()
        w = rows.float()
        mod = self.modules.get(name)
        if mod is None:
            return w
        a = self.tensor(mod.a_key).float()
        b = self.tensor(mod.b_key)[start:stop].float()
        if w.dim() != 2 or b.shape[0] != w.shape[0] or a.shape[1] != w.shape[1]:
            raise ValueError(
                f"{name}: LoRA shapes A{tuple(a.shape)} B{tuple(b.shape)} do not fit W{tuple(w.shape)}"
            )
        merged = torch.addmm(w, b, a, alpha=mod.scale)
        if mod.magnitude_key is not None:
            magnitude = self.tensor(mod.magnitude_key)[start:stop].float()
            merged = merged * (magnitude / torch.linalg.vector_norm(merged, dim=1)).unsqueeze(1)
        return merged

    def merge_into(self, name: str, weight: Any) -> Any:
        """``weight`` (torch, any float dtype) with this adapter merged in, as float32.

        LoRA: W + scale * B @ A. DoRA: m * (W + scale * B @ A) / ||W + scale * B @ A||, the norm taken per
        output row (over the input dimension), exactly as PEFT's merge does.
        """
        if name in self.replacements:
            rep = self.tensor(self.replacements[name]).float()
            if rep.shape != weight.shape and not name.endswith(("embed_tokens.weight", "lm_head.weight")):
                raise ValueError(
                    f"{name}: adapter copy has shape {tuple(rep.shape)}, base {tuple(weight.shape)}"
                )
            return rep
        return self.merge_rows(name, weight, 0, weight.shape[0])

    def close(self) -> None:
        self._handle = None


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's rank/alpha pattern lookup: the first key that matches the end of the module name."""
    for key, value in patterns.items():
        if re.fullmatch(rf"(.*\.)?{key}", module):
            return type(default)(value)
    return default
