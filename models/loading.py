"""Tokenizers and models from a registry name, Hub id or local folder: the one loader every stage uses.

- :func:`load_tokenizer`: the tokenizer with its chat template (no weights needed);
- :func:`load_model`: ``(model, tokenizer)``, optionally with a PEFT adapter on top (merged or not), for
  eval, chat and deploy. Training loads through :func:`train.backend.load_trainable` instead, which wraps
  the same source in a fresh LoRA on the chosen backend.

Safety: weights load from safetensors only (packaged GGUFs are dequantized into safetensors first). A
folder or adapter that holds only pickle files (``pytorch_model.bin``, ``adapter_model.bin``, ``*.pt``) is
refused with :class:`UnsafeWeightsError` unless ``allow_pickle=True``, since unpickling can run any code.
``trust_remote_code`` is never passed: a model whose architecture lives in the repo's own Python files is
not loaded. A Hub id that is not cached while ``HF_HUB_OFFLINE`` is set fails with one line saying what
to do, before transformers tries the network.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from models.registry import fix_tokenizer, lookup, resolve_source

SAFE_SUFFIXES = (".safetensors", ".gguf")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
NOT_WEIGHTS = ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth")  # Trainer state, never loaded


class UnsafeWeightsError(ValueError):
    """Only pickle weights where safetensors were required."""


def check_weights(folder: Path, *, allow_pickle: bool = False) -> None:
    """Refuse a folder whose weights exist only as pickle files, unless ``allow_pickle``."""
    names = [p.name for p in folder.iterdir() if p.is_file()]
    if allow_pickle or any(n.endswith(SAFE_SUFFIXES) for n in names):
        return
    pickled = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES) and n not in NOT_WEIGHTS)
    if pickled:
        raise UnsafeWeightsError(
            f"{folder}: weights only as pickle ({', '.join(pickled[:3])}), which can run code when loaded; "
            "convert them to safetensors, or pass --allow-pickle (allow_pickle=True) if you trust the files"
        )


def _load_tensors(path: Path) -> dict[str, Any]:
    """A pickle file of plain tensors; anything else (objects, code) is refused by torch's restricted unpickler."""
    import pickle

    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeWeightsError(f"{path}: not a plain tensor file, refused even with --allow-pickle ({first})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UnsafeWeightsError(f"{path}: holds {type(state).__name__}, not a dict of tensors")
    return state


def safetensors_copy(folder: Path, dest: Path) -> Path:
    """A safetensors copy at ``dest`` of a model or PEFT adapter folder whose weights are pickle only, for the
    tools that read safetensors alone (``deploy.export``). It unpickles (``torch.load(weights_only=True)``),
    so call it only when the user passed ``--allow-pickle``. The other files (config, tokenizer) are copied."""
    import shutil

    from fileio.atomic import atomic_dir

    pickled = sorted(p for p in folder.iterdir() if p.name.endswith(PICKLE_SUFFIXES) and p.name not in NOT_WEIGHTS)
    with atomic_dir(dest) as tmp:
        for p in folder.iterdir():
            if p.is_file() and not p.name.endswith(PICKLE_SUFFIXES):
                shutil.copy2(p, tmp / p.name)
        if (folder / "adapter_config.json").is_file():
            from safetensors.torch import save_file

            state: dict[str, Any] = {}
            for p in pickled:
                state.update(_load_tensors(p))
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "adapter_model.safetensors"))
        else:
            from transformers import AutoModelForCausalLM

            # save_pretrained handles tied weights and shards, which a plain save_file would refuse
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype="auto", use_safetensors=False)
            model.save_pretrained(tmp, safe_serialization=True)
    return dest


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _check_hub(name: str, source: str) -> None:
    """A Hub id that is not cached cannot load offline: say so in one line instead of a traceback."""
    if Path(source).exists() or not _offline():
        return
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(source, "config.json"), str):
        shown = f"'{name}'" if name == source else f"'{name}' ({source})"
        raise FileNotFoundError(
            f"model {shown} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 forbids "
            f"downloading it: run 'hf download {source}' where there is network, or pass a local folder"
        )


def _hub_error(name: str, exc: OSError) -> FileNotFoundError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return FileNotFoundError(f"cannot load model '{name}': {first}")


def load_tokenizer(name: str) -> Any:
    """The tokenizer (with its chat template) for a registry name, Hub id or local folder."""
    from transformers import AutoTokenizer

    source = resolve_source(name, with_weights=False)
    _check_hub(name, source)
    try:
        return fix_tokenizer(AutoTokenizer.from_pretrained(source), lookup(name))
    except OSError as exc:
        raise _hub_error(name, exc) from exc


def load_causal_lm(
    name: str, adapter: str | Path | None = None, *, dtype: str = "float32", merge: bool = False,
    allow_pickle: bool = False,
) -> Any:
    """The model alone (eval mode, CPU) for a registry name, Hub id or folder, with an optional PEFT adapter.

    ``merge=True`` folds the adapter into the weights (faster generation); otherwise the model is a
    ``PeftModel``, so the base is one ``disable_adapter()`` away. Pickle weights (model or adapter) are
    refused unless ``allow_pickle``. Imports torch.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}")
    source = resolve_source(name)
    _check_hub(name, source)
    if Path(source).is_dir():
        check_weights(Path(source), allow_pickle=allow_pickle)
    adapter_dir = Path(adapter) if adapter else None
    if adapter_dir is not None:
        if not (adapter_dir / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json; pass the adapter folder written by training")
        check_weights(adapter_dir, allow_pickle=allow_pickle)
    try:
        # use_safetensors=True also keeps a Hub repo's .bin files from being fetched and unpickled
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=getattr(torch, dtype), use_safetensors=None if allow_pickle else True,
            **_attention_kwargs(source),
        )
    except OSError as exc:
        raise _hub_error(name, exc) from exc
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
        if merge:
            model = model.merge_and_unload()
    return model.eval()


def _attention_kwargs(source: str) -> dict[str, str]:
    """Eager attention for models whose attention logits are soft-capped (Gemma 2): transformers' sdpa path
    drops the cap, and the reference must compute what llama.cpp and the model's authors do."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(source)
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return {"attn_implementation": "eager"} if getattr(cfg, "attn_logit_softcapping", None) else {}


def load_model(
    name: str, adapter: str | Path | None = None, *, dtype: str = "float32", merge: bool = False,
    allow_pickle: bool = False,
) -> Any:
    """``(model, tokenizer)``: :func:`load_causal_lm` and its tokenizer.

    The adapter folder's own tokenizer (saved by training with its chat template) wins over the base's.
    """
    model = load_causal_lm(name, adapter, dtype=dtype, merge=merge, allow_pickle=allow_pickle)
    if adapter and (Path(adapter) / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        return model, fix_tokenizer(AutoTokenizer.from_pretrained(str(adapter)), None)
    return model, load_tokenizer(name)
