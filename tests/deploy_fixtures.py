"""Tiny base models with real LoRA adapters on disk, for the deploy tests.

The output embedding is scaled up so the random model has decisive next-token choices (HF top-2 margins
above 1.0), which the quantized parity rule needs; the layers themselves stay at a small init.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deploy.llamacpp import llama_cpp_available

# The CI environment installs llama-cpp-python (quick_start.sh setup); elsewhere these tests say why they skip.
_LLAMA_CPP_OK, _WHY_NOT = llama_cpp_available()
needs_llama_cpp = pytest.mark.skipif(not _LLAMA_CPP_OK, reason=_WHY_NOT)

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_base(
    path: Path, template: str = "smollm2", family: str = "llama", seed: int = 0, logit_scale: float = 10.0
) -> tuple[Path, Any]:
    import torch
    from tiny import make_tokenizer, tiny_model

    tok = make_tokenizer(template)
    model = tiny_model(tok, family=family, seed=seed, initializer_range=0.05)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(logit_scale)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, model


def make_adapter(base_dir: Path, model: Any, out: Path, *, seed: int = 1, **lora: Any) -> Path:
    """A PEFT adapter with random (non-zero) A and B, saved with the tokenizer like a training run does."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    torch.manual_seed(seed)
    cfg = {"r": 4, "lora_alpha": 8, "target_modules": ALL_LINEAR, "init_lora_weights": False}
    cfg.update(lora)
    peft_model = get_peft_model(model, LoraConfig(**cfg))
    peft_model.peft_config["default"].base_model_name_or_path = str(base_dir)
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    peft_model.unload()  # give the caller its base model back unchanged
    return out


def base_and_adapter(
    root: Path, template: str = "smollm2", family: str = "llama", logit_scale: float = 10.0, **lora: Any
) -> tuple[Path, Path]:
    base_dir, model = make_base(root / "base", template, family, logit_scale=logit_scale)
    adapter_dir = make_adapter(base_dir, model, root / "adapter", **lora)
    return base_dir, adapter_dir
