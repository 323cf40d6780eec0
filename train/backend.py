"""The backend seam: ``unsloth`` on an NVIDIA GPU, ``hf`` (transformers + PEFT) everywhere else.

The only module that imports ``unsloth``. Unsloth patches transformers/TRL/PEFT when it is imported, so it
must be imported before them: scripts call :func:`activate` right after parsing the command line, before
anything imports the trainer. Both backends return a PEFT-wrapped model and its tokenizer, ready for
``SFTTrainer``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Any

from train.config import LoraConfig, ModelConfig

BACKENDS = ("auto", "unsloth", "hf")
# What "all-linear" means for Unsloth, which wants names: every projection of a Llama/Qwen2/Mistral block.
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class BackendError(RuntimeError):
    """The requested backend cannot run here; the message says what to do."""


@dataclass(frozen=True)
class BackendInfo:
    name: str  # "unsloth" | "hf"
    cuda: bool
    reason: str  # one line: why this backend


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def bnb_available() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def choose(requested: str = "auto") -> BackendInfo:
    """Pick the backend without importing transformers."""
    if requested not in BACKENDS:
        raise BackendError(f"--backend must be one of {', '.join(BACKENDS)}, not '{requested}'")
    cuda = cuda_available()
    has_unsloth = importlib.util.find_spec("unsloth") is not None
    if requested == "unsloth":
        if not cuda:
            raise BackendError(
                "--backend unsloth needs an NVIDIA GPU with CUDA and none is visible; "
                "use --backend hf (transformers + PEFT) on this machine"
            )
        if not has_unsloth:
            raise BackendError("--backend unsloth: unsloth is not installed; pip install -e '.[gpu]'")
        return BackendInfo("unsloth", cuda, "forced with --backend unsloth")
    if requested == "hf":
        return BackendInfo("hf", cuda, "forced with --backend hf")
    if cuda and has_unsloth:
        return BackendInfo("unsloth", cuda, "CUDA GPU and unsloth found")
    why = (
        "no CUDA GPU"
        if not cuda
        else "unsloth not installed (pip install -e '.[gpu]' for 2x faster training)"
    )
    return BackendInfo("hf", cuda, f"transformers + PEFT ({why})")


def activate(info: BackendInfo) -> None:
    """Import Unsloth first when it is the backend (it must patch transformers/TRL before they load)."""
    if info.name != "unsloth":
        return
    late = [m for m in ("transformers", "trl", "peft") if m in sys.modules]
    if late:
        raise BackendError(
            f"unsloth must be imported before {', '.join(late)}; "
            "call train.backend.activate() before importing the trainer"
        )
    import unsloth  # noqa: F401


def _torch_dtype(name: str) -> Any:
    import torch

    return {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }[name]


def load_model(
    info: BackendInfo,
    source: str,
    model_cfg: ModelConfig,
    lora: LoraConfig,
    *,
    precision: str,
    gradient_checkpointing: bool,
    seed: int,
    tokenizer: Any,
) -> tuple[Any, Any]:
    """(PEFT model, tokenizer) for ``source`` (a folder or Hub id) on the chosen backend."""
    dtype_name = precision if model_cfg.dtype == "auto" else model_cfg.dtype
    four_bit = lora.method == "qlora" or model_cfg.load_in_4bit
    if info.name == "unsloth":
        return _load_unsloth(source, model_cfg, lora, dtype_name, four_bit, seed)
    return _load_hf(source, model_cfg, lora, dtype_name, four_bit, gradient_checkpointing, tokenizer)


def _load_unsloth(
    source: str, model_cfg: ModelConfig, lora: LoraConfig, dtype_name: str, four_bit: bool, seed: int
) -> tuple[Any, Any]:
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=source,
        max_seq_length=model_cfg.max_seq_length,
        dtype=_torch_dtype(dtype_name),
        load_in_4bit=four_bit,
    )
    targets = ALL_LINEAR if lora.target_modules in ("all-linear", None) else list(lora.target_modules)
    extra = {"use_dora": True} if lora.use_dora else {}
    model = FastLanguageModel.get_peft_model(
        model,
        r=lora.r,
        target_modules=targets,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        bias="none",
        use_gradient_checkpointing="unsloth",
        random_state=seed,
        use_rslora=lora.use_rslora,
        **extra,
    )
    return model, tokenizer


def _load_hf(
    source: str,
    model_cfg: ModelConfig,
    lora: LoraConfig,
    dtype_name: str,
    four_bit: bool,
    gradient_checkpointing: bool,
    tokenizer: Any,
) -> tuple[Any, Any]:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype_name)}
    if model_cfg.attn_implementation:
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    if four_bit:
        if not bnb_available():
            raise BackendError(
                "QLoRA (4-bit) needs bitsandbytes: pip install bitsandbytes, "
                "or train plain LoRA with --lora.method lora"
            )
        import torch
        from transformers import BitsAndBytesConfig

        compute = torch.float32 if dtype_name in ("fp32", "float32") else _torch_dtype(dtype_name)
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        )
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 and cuda_available():
        kwargs["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if four_bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    peft_cfg = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        use_dora=lora.use_dora,
        use_rslora=lora.use_rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg), tokenizer
