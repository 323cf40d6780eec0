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
from pathlib import Path
from typing import Any

from models.loading import check_weights
from train.config import LoraConfig, ModelConfig, lora_targets

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


def activate(info: BackendInfo, runs_dir: str | Path = "runs") -> None:
    """Import Unsloth first when it is the backend (it must patch transformers/TRL before they load).

    Unsloth writes its compiled kernels to ``unsloth_compiled_cache/`` in the working directory; they go to
    ``<runs_dir>/.unsloth_compiled_cache`` instead, one cache for every run (recompiling costs minutes).
    """
    if info.name != "unsloth":
        return
    late = [m for m in ("transformers", "trl", "peft") if m in sys.modules]
    if late:
        raise BackendError(
            f"unsloth must be imported before {', '.join(late)}; "
            "call train.backend.activate() before importing the trainer"
        )
    os.environ.setdefault("UNSLOTH_COMPILE_LOCATION", str(Path(runs_dir).resolve() / ".unsloth_compiled_cache"))
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


def load_trainable(
    info: BackendInfo,
    source: str,
    model_cfg: ModelConfig,
    lora: LoraConfig,
    *,
    precision: str,
    gradient_checkpointing: bool,
    seed: int,
    tokenizer: Any,
    work_dir: str | Path | None = None,
) -> tuple[Any, Any]:
    """(PEFT model, tokenizer) for ``source`` (a folder or Hub id) on the chosen backend, ready to train.

    :func:`models.loading.load_model` loads for inference; this one wraps the base in a fresh LoRA.

    The tokenizer returned is always ``tokenizer``, the one the data was rendered with (see
    :func:`reconcile_tokenizer`). ``work_dir`` (the run folder) takes Unsloth's temporary buffers.
    """
    dtype_name = precision if model_cfg.dtype == "auto" else model_cfg.dtype
    four_bit = lora.method == "qlora"
    safe_kw = safetensors_only(source, model_cfg.allow_pickle)  # before either backend reads a weight
    if info.name == "unsloth":
        from unsloth import FastLanguageModel

        load_kw = unsloth_load_kwargs(source, model_cfg, dtype_name, four_bit)
        # Unsloth reads use_safetensors from **kwargs and hands it on to transformers' from_pretrained
        model, theirs = FastLanguageModel.from_pretrained(**load_kw, **safe_kw)
        tokenizer, notes = reconcile_tokenizer(tokenizer, theirs)
        for note in notes:
            print(f"unsloth: {note}", file=sys.stderr)
        model.config.pad_token_id = tokenizer.pad_token_id
        peft_kw = unsloth_peft_kwargs(lora, gradient_checkpointing, seed, work_dir)
        return FastLanguageModel.get_peft_model(model, **peft_kw), tokenizer
    return _load_hf(source, model_cfg, lora, dtype_name, four_bit, gradient_checkpointing, tokenizer, safe_kw)


def safetensors_only(source: str, allow_pickle: bool) -> dict[str, Any]:
    """Refuse a local model folder whose weights exist only as pickle files (unpickling can run any code)
    unless ``allow_pickle``; return the ``from_pretrained`` keyword that also keeps a Hub repo's ``.bin``
    files from being fetched and unpickled. Raises :class:`models.loading.UnsafeWeightsError`."""
    if Path(source).is_dir():
        check_weights(Path(source), allow_pickle=allow_pickle)
    return {} if allow_pickle else {"use_safetensors": True}


def patch_preference_trainers(info: BackendInfo) -> None:
    """On the Unsloth path, its patched preference trainers (``PatchDPOTrainer``, as Unsloth documents for DPO,
    ORPO and KTO) before TRL's trainer classes are used; nothing on the hf path."""
    if info.name != "unsloth":
        return
    from unsloth import PatchDPOTrainer

    PatchDPOTrainer()


def unsloth_load_kwargs(source: str, model_cfg: ModelConfig, dtype_name: str, four_bit: bool) -> dict[str, Any]:
    """The keyword arguments we give ``FastLanguageModel.from_pretrained`` (a test binds them to its signature)."""
    return {
        "model_name": source,
        "max_seq_length": model_cfg.max_seq_length,
        "dtype": _torch_dtype(dtype_name),
        "load_in_4bit": four_bit,
    }


def unsloth_peft_kwargs(
    lora: LoraConfig, gradient_checkpointing: bool, seed: int, work_dir: str | Path | None = None
) -> dict[str, Any]:
    """The keyword arguments we give ``FastLanguageModel.get_peft_model``.

    Checkpointing follows the plan: "unsloth" (offloaded, Unsloth's fastest) when on, False when off.
    """
    targets = lora_targets(lora.target_modules)
    kwargs: dict[str, Any] = {
        "r": lora.r,
        "target_modules": ALL_LINEAR if targets == "all-linear" else targets,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "bias": "none",
        "use_gradient_checkpointing": "unsloth" if gradient_checkpointing else False,
        "random_state": seed,
        "use_rslora": lora.use_rslora,
    }
    if lora.use_dora:
        kwargs["use_dora"] = True
    if work_dir is not None:  # not _unsloth_temporary_saved_buffers/ in the working directory
        kwargs["temporary_location"] = str(Path(work_dir) / "_unsloth_temporary_saved_buffers")
    return kwargs


def reconcile_tokenizer(ours: Any, theirs: Any) -> tuple[Any, list[str]]:
    """Keep our tokenizer (the one the data was rendered with) and say how Unsloth's differs, if it does.

    Unsloth may hand back a tokenizer from a renamed repo, or one with a new pad token where pad == eos.
    Training, samples and the saved adapter must use the tokenizer that built the labels, so ours wins, and
    each difference that matters is reported instead of passing silently.
    """
    notes = []
    for field in ("chat_template", "eos_token", "pad_token", "bos_token"):
        a, b = getattr(ours, field, None), getattr(theirs, field, None)
        if a != b:
            a, b = (("ours", "another") if field == "chat_template" else (repr(a), repr(b)))
            notes.append(f"Unsloth's tokenizer has {field} {b}, the data was rendered with {a}: keeping ours")
    if len(theirs) != len(ours):
        notes.append(f"Unsloth's tokenizer has {len(theirs)} tokens, ours {len(ours)}: keeping ours")
    return ours, notes


def _load_hf(
    source: str,
    model_cfg: ModelConfig,
    lora: LoraConfig,
    dtype_name: str,
    four_bit: bool,
    gradient_checkpointing: bool,
    tokenizer: Any,
    safe_kw: dict[str, Any],
) -> tuple[Any, Any]:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype_name), **safe_kw}
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
        keep_4bit_weights_trainable(model)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    peft_cfg = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora_targets(lora.target_modules),
        use_dora=lora.use_dora,
        use_rslora=lora.use_rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg), tokenizer


def keep_4bit_weights_trainable(model: Any) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for its CPU inference kernel; returns layers changed.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a ``Linear4bit`` weight in place at its first forward
    in eval mode without grad (our base-model eval before training is one) and keeps that layout. Training
    through it then breaks: layers with a bias (Qwen2) raise an in-place autograd error, the others learn
    from a wrong backward. The flag it checks is per layer.
    """
    layers = [m for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu")]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def attention_backend(backend: str, model: Any | None = None) -> str:
    """The attention kernel training really uses: Unsloth's choice on its GPU path, else the model's setting.

    Unsloth falls back to PyTorch attention without a word when xformers cannot load (a build for another
    torch), so this reads what its import decided rather than what is installed.
    """
    utils = sys.modules.get("unsloth.models._utils") if backend == "unsloth" else None
    if utils is not None:
        if getattr(utils, "HAS_FLASH_ATTENTION", False):
            return "flash_attention_2"
        if getattr(utils, "xformers_attention", None) is not None:
            return f"xformers {getattr(utils, 'xformers_version', '')}".strip()
        return "sdpa"
    config = getattr(model, "config", None)
    return str(getattr(config, "_attn_implementation", None) or "sdpa")
