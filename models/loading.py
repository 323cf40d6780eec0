"""Tokenizers and models from a registry name, Hub id or local folder: the one loader every stage uses.

- :func:`load_tokenizer`: the tokenizer with its chat template (no weights needed);
- :func:`load_model`: ``(model, tokenizer)``, optionally with a PEFT adapter on top (merged or not), for
  eval, chat and deploy. Training loads through :func:`train.backend.load_trainable` instead, which wraps
  the same source in a fresh LoRA on the chosen backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.registry import fix_tokenizer, lookup, resolve_source


def load_tokenizer(name: str) -> Any:
    """The tokenizer (with its chat template) for a registry name, Hub id or local folder."""
    from transformers import AutoTokenizer

    source = resolve_source(name, with_weights=False)
    return fix_tokenizer(AutoTokenizer.from_pretrained(source), lookup(name))


def load_causal_lm(
    name: str, adapter: str | Path | None = None, *, dtype: str = "float32", merge: bool = False
) -> Any:
    """The model alone (eval mode, CPU) for a registry name, Hub id or folder, with an optional PEFT adapter.

    ``merge=True`` folds the adapter into the weights (faster generation); otherwise the model is a
    ``PeftModel``, so the base is one ``disable_adapter()`` away. Imports torch.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype!r}")
    source = resolve_source(name)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype), **_attention_kwargs(source))
    if adapter:
        adapter_dir = Path(adapter)
        if not (adapter_dir / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{adapter_dir}: no adapter_config.json; pass the adapter folder written by training")
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


def load_model(name: str, adapter: str | Path | None = None, *, dtype: str = "float32", merge: bool = False) -> Any:
    """``(model, tokenizer)``: :func:`load_causal_lm` and its tokenizer.

    The adapter folder's own tokenizer (saved by training with its chat template) wins over the base's.
    """
    model = load_causal_lm(name, adapter, dtype=dtype, merge=merge)
    if adapter and (Path(adapter) / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        return model, fix_tokenizer(AutoTokenizer.from_pretrained(str(adapter)), None)
    return model, load_tokenizer(name)
