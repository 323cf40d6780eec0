"""GGUF writer for Llama-family (SmolLM2, Llama 3.x, Mistral-style) and Qwen2 models, on the ``gguf`` package.

Streaming: every tensor's GGUF name, shape and type is planned from the safetensors headers, the header and
tensor infos are written first, then each tensor is read (and merged with the adapter, when there is one),
converted and written before the next is touched. Peak memory is about one tensor in float32.

Layout facts (from llama.cpp's converter): llama.cpp's Llama graph uses the original Meta rotary layout, so
HF ``q_proj``/``k_proj`` rows are permuted back (``n_head`` for q, ``n_head_kv`` for k); Qwen2 uses the
NeoX rotary layout, which is HF's, so nothing is permuted. Tied embeddings write no ``output.weight``.
Norms and biases stay float32; 2-D weights take the file type (q8_0 rows need a multiple of 32 columns,
else that tensor falls back to f16).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from deploy.tokenizer_gguf import GGUFVocab
from fileio.atomic import atomic_path

DIRECT_TYPES = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}

_ARCHES = {
    "LlamaForCausalLM": ("llama", gguf.MODEL_ARCH.LLAMA, True),
    "MistralForCausalLM": ("llama", gguf.MODEL_ARCH.LLAMA, True),
    "Qwen2ForCausalLM": ("qwen2", gguf.MODEL_ARCH.QWEN2, False),
}


@dataclass(frozen=True)
class ModelHParams:
    """What llama.cpp needs from ``config.json``."""

    family: str  # "llama" or "qwen2"
    arch: gguf.MODEL_ARCH
    permute_qk: bool
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ctx: int
    rms_eps: float
    rope_theta: float
    vocab_size: int
    tied: bool
    rope_scaling: dict[str, Any] | None

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ModelHParams:
        archs = cfg.get("architectures") or []
        arch_name = next((a for a in archs if a in _ARCHES), None)
        if arch_name is None:
            raise ValueError(
                f"architecture {archs} is not supported for GGUF export; supported: {sorted(_ARCHES)}"
            )
        family, arch, permute = _ARCHES[arch_name]
        n_head = int(cfg["num_attention_heads"])
        rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        theta = float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        scaling = None if rope_type in (None, "default") else dict(rope)
        if scaling is not None and rope_type not in ("linear", "llama3"):
            raise ValueError(
                f"rope scaling type {rope_type!r} is not supported for GGUF export (linear, llama3 are)"
            )
        if cfg.get("sliding_window") and cfg.get("use_sliding_window"):
            raise ValueError("sliding-window attention is not supported for GGUF export")
        hidden = int(cfg["hidden_size"])
        return cls(
            family=family,
            arch=arch,
            permute_qk=permute,
            n_layer=int(cfg["num_hidden_layers"]),
            n_embd=hidden,
            n_ff=int(cfg["intermediate_size"]),
            n_head=n_head,
            n_head_kv=int(cfg.get("num_key_value_heads") or n_head),
            head_dim=int(cfg.get("head_dim") or hidden // n_head),
            n_ctx=int(cfg.get("max_position_embeddings", 4096)),
            rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            vocab_size=int(cfg["vocab_size"]),
            tied=bool(cfg.get("tie_word_embeddings", False)),
            rope_scaling=scaling,
        )

    def write(self, w: gguf.GGUFWriter) -> None:
        w.add_context_length(self.n_ctx)
        w.add_embedding_length(self.n_embd)
        w.add_block_count(self.n_layer)
        w.add_feed_forward_length(self.n_ff)
        w.add_head_count(self.n_head)
        w.add_head_count_kv(self.n_head_kv)
        w.add_rope_dimension_count(self.head_dim)
        if self.head_dim != self.n_embd // self.n_head:
            w.add_key_length(self.head_dim)
            w.add_value_length(self.head_dim)
        w.add_rope_freq_base(self.rope_theta)
        w.add_layer_norm_rms_eps(self.rms_eps)
        w.add_vocab_size(self.vocab_size)
        if (
            self.rope_scaling
            and self.rope_scaling.get("rope_type", self.rope_scaling.get("type")) == "linear"
        ):
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(float(self.rope_scaling["factor"]))


def permute_rotary(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotary row order -> llama.cpp's (Meta's) interleaved order, per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(hp: ModelHParams) -> np.ndarray:
    """The per-frequency factors llama.cpp expects as ``rope_freqs.weight`` for Llama 3.1+ rope scaling."""
    rs = hp.rope_scaling or {}
    factor = float(rs.get("factor", 8.0))
    low = float(rs.get("low_freq_factor", 1.0))
    high = float(rs.get("high_freq_factor", 4.0))
    old_ctx = float(rs.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / (hp.rope_theta ** (np.arange(0, hp.head_dim, 2, dtype=np.float64) / hp.head_dim))
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


@dataclass
class PlannedGGUFTensor:
    gguf_name: str
    hf_name: str | None  # None for generated tensors (rope_freqs)
    shape: tuple[int, ...]  # numpy order (rows, cols)
    qtype: gguf.GGMLQuantizationType
    nbytes: int


def _tensor_type(
    name: str, shape: tuple[int, ...], want: gguf.GGMLQuantizationType
) -> gguf.GGMLQuantizationType:
    if len(shape) < 2 or name.endswith(".bias") or "norm" in name:
        return gguf.GGMLQuantizationType.F32
    if want in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16):
        return want
    block, _ = gguf.GGML_QUANT_SIZES[want]
    return want if shape[-1] % block == 0 else gguf.GGMLQuantizationType.F16


def _nbytes(shape: tuple[int, ...], qtype: gguf.GGMLQuantizationType) -> int:
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n = int(np.prod(shape, dtype=np.int64))
    return n // block * type_size


def plan_tensors(
    names: list[str],
    shape_of: Callable[[str], tuple[int, ...]],
    hp: ModelHParams,
    qtype: gguf.GGMLQuantizationType,
) -> list[PlannedGGUFTensor]:
    tmap = gguf.get_tensor_name_map(hp.arch, hp.n_layer)
    plan: list[PlannedGGUFTensor] = []
    for name in names:
        if name.endswith("rotary_emb.inv_freq"):
            continue
        if name == "lm_head.weight" and hp.tied:
            continue
        gname = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise ValueError(
                f"tensor {name!r} has no GGUF name for {hp.arch.name.lower()}; is this the right model?"
            )
        shape = tuple(shape_of(name))
        t = _tensor_type(gname, shape, qtype)
        plan.append(PlannedGGUFTensor(gname, name, shape, t, _nbytes(shape, t)))
    if hp.rope_scaling and hp.rope_scaling.get("rope_type") == "llama3":
        shape = (hp.head_dim // 2,)
        plan.insert(
            0,
            PlannedGGUFTensor(
                "rope_freqs.weight",
                None,
                shape,
                gguf.GGMLQuantizationType.F32,
                _nbytes(shape, gguf.GGMLQuantizationType.F32),
            ),
        )
    names_out = {p.gguf_name for p in plan}
    if "token_embd.weight" not in names_out:
        raise ValueError("the model has no token embedding (model.embed_tokens.weight)")
    if not hp.tied and "output.weight" not in names_out:
        raise ValueError("config says tie_word_embeddings=false but there is no lm_head.weight")
    return plan


def convert_tensor(p: PlannedGGUFTensor, data: np.ndarray, hp: ModelHParams) -> np.ndarray:
    """float32 numpy (HF layout) -> the bytes-ready numpy array for the GGUF file."""
    if hp.permute_qk and p.hf_name is not None:
        if p.hf_name.endswith("q_proj.weight") or p.hf_name.endswith("q_proj.bias"):
            data = permute_rotary(data, hp.n_head)
        elif p.hf_name.endswith("k_proj.weight") or p.hf_name.endswith("k_proj.bias"):
            data = permute_rotary(data, hp.n_head_kv)
    if p.qtype == gguf.GGMLQuantizationType.F32:
        return np.ascontiguousarray(data, dtype=np.float32)
    if p.qtype == gguf.GGMLQuantizationType.F16:
        return np.ascontiguousarray(data, dtype=np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), p.qtype)


def _as_f32(data: Any) -> np.ndarray:
    if hasattr(data, "detach"):  # torch
        return data.detach().float().numpy()
    return np.asarray(data, dtype=np.float32)


def _write_tensor(
    writer: gguf.GGUFWriter,
    p: PlannedGGUFTensor,
    hp: ModelHParams,
    read_rows: Callable[[str, int, int], Any],
    chunked: bool = True,
) -> None:
    """Append one planned tensor to the open GGUF, chunk by chunk, with the writer's alignment rules."""
    from deploy.safetensors_io import row_chunks

    assert writer.fout is not None
    fout = writer.fout[0]
    info = writer.tensors[0].pop(p.gguf_name)  # keep the writer's own bookkeeping consistent
    if info.nbytes != p.nbytes:
        raise ValueError(f"{p.gguf_name}: planned {p.nbytes} bytes, header says {info.nbytes}")
    writer.write_padding(fout, fout.tell())
    whole = (
        not chunked
        or p.hf_name is None
        or (
            hp.permute_qk
            and p.hf_name.endswith(("q_proj.weight", "k_proj.weight", "q_proj.bias", "k_proj.bias"))
        )
    )
    chunks = [(0, p.shape[0])] if whole else row_chunks(p.shape)
    written = 0
    for start, stop in chunks:
        data = llama3_rope_factors(hp) if p.hf_name is None else _as_f32(read_rows(p.hf_name, start, stop))
        arr = convert_tensor(p, data, hp)
        del data
        arr.tofile(fout)
        written += arr.nbytes
        del arr
    if written != p.nbytes:
        raise ValueError(f"{p.gguf_name}: wrote {written} bytes, planned {p.nbytes}")
    writer.write_padding(fout, p.nbytes)
    writer.state = gguf.gguf_writer.WriterState.WEIGHTS


@dataclass
class GGUFResult:
    path: Path
    qtype: str
    n_tensors: int
    nbytes: int


def write_gguf(
    out_path: Path,
    *,
    config: dict[str, Any],
    vocab: GGUFVocab,
    names: list[str],
    shape_of: Callable[[str], tuple[int, ...]],
    read_rows: Callable[[str, int, int], Any] | None = None,
    get_f32: Callable[[str], Any] | None = None,
    outtype: str = "f16",
    model_name: str | None = None,
    progress: bool = True,
) -> GGUFResult:
    """Write a GGUF file tensor by tensor to ``out_path``, atomically.

    ``read_rows(hf_name, start, stop)`` returns rows of a tensor in HF layout (torch or numpy, any float
    dtype). Big tensors are read, converted and written in row chunks of about 32 MB, so peak memory stays
    near one chunk; q/k projections of Llama models are read whole (the rotary permutation mixes rows).
    ``get_f32(hf_name)`` (whole tensors) is accepted instead, for small models built in memory.
    """
    if read_rows is None:
        if get_f32 is None:
            raise TypeError("write_gguf needs read_rows or get_f32")
        whole_reader = get_f32
        read_rows = lambda name, start, stop: whole_reader(name)  # noqa: E731 - always called with the full range
    if outtype not in DIRECT_TYPES:
        raise ValueError(
            f"outtype {outtype!r} is written directly only for {sorted(DIRECT_TYPES)}; "
            "K-quants go through deploy.quantize"
        )
    qtype, ftype = DIRECT_TYPES[outtype]
    hp = ModelHParams.from_config(config)
    _pad_vocab(vocab, hp.vocab_size)
    plan = plan_tensors(names, shape_of, hp, qtype)

    out_path = Path(out_path)
    writer = _model_writer(hp, vocab, plan, ftype, model_name or out_path.stem)
    with atomic_path(out_path) as tmp:
        try:
            writer.write_header_to_file(path=tmp)
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            _write_all_tensors(
                writer, plan, hp, read_rows, chunked=get_f32 is None, desc=f"gguf {outtype}", progress=progress
            )
        finally:
            writer.close()
    return GGUFResult(out_path, outtype, len(plan), out_path.stat().st_size)


def _pad_vocab(vocab: GGUFVocab, vocab_size: int) -> None:
    """Pad the token list with unused ``[PADi]`` tokens up to the model's embedding rows (never truncate)."""
    if len(vocab.tokens) == vocab_size:
        return
    if len(vocab.tokens) > vocab_size:
        raise ValueError(f"tokenizer has {len(vocab.tokens)} tokens but the model only {vocab_size} rows")
    vocab.tokens += [f"[PAD{i}]" for i in range(len(vocab.tokens), vocab_size)]
    vocab.token_types += [int(gguf.TokenType.UNUSED)] * (vocab_size - len(vocab.token_types))


def _model_writer(
    hp: ModelHParams,
    vocab: GGUFVocab,
    plan: list[PlannedGGUFTensor],
    ftype: gguf.LlamaFileType,
    name: str,
) -> gguf.GGUFWriter:
    """A GGUF writer (no file yet) holding the metadata, vocab and tensor infos of ``plan``."""
    writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[hp.arch])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_file_type(int(ftype))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    hp.write(writer)
    vocab.write(writer)
    for p in plan:
        writer.add_tensor_info(p.gguf_name, p.shape, np.dtype(np.float32), p.nbytes, raw_dtype=p.qtype)
    return writer


def _write_all_tensors(
    writer: gguf.GGUFWriter,
    plan: list[PlannedGGUFTensor],
    hp: ModelHParams,
    read_rows: Callable[[str, int, int], Any],
    *,
    chunked: bool,
    desc: str,
    progress: bool,
) -> None:
    """Write every planned tensor after the header, then flush and fsync the file."""
    from tqdm import tqdm

    bar = tqdm(total=sum(p.nbytes for p in plan), unit="B", unit_scale=True, desc=desc, disable=not progress)
    for p in plan:
        _write_tensor(writer, p, hp, read_rows, chunked=chunked)
        bar.update(p.nbytes)
    bar.close()
    assert writer.fout is not None
    for fh in writer.fout:
        fh.flush()
        os.fsync(fh.fileno())


def estimate_size(
    names: list[str], shape_of: Callable[[str], tuple[int, ...]], config: dict[str, Any], outtype: str
) -> int:
    """Bytes of tensor data a GGUF of ``outtype`` will take (K-quants estimated from their bits per weight)."""
    hp = ModelHParams.from_config(config)
    if outtype in DIRECT_TYPES:
        return sum(p.nbytes for p in plan_tensors(names, shape_of, hp, DIRECT_TYPES[outtype][0]))
    f16 = sum(p.nbytes for p in plan_tensors(names, shape_of, hp, gguf.GGMLQuantizationType.F16))
    return int(f16 * 0.4)  # K-quants are well under 6.5 bits per weight


def write_lora_gguf(
    out_path: Path, *, adapter: Any, config: dict[str, Any], model_name: str | None = None
) -> Path:
    """A LoRA-only GGUF (``general.type = adapter``) for llama.cpp's ``--lora`` and Ollama's ``ADAPTER`` line.

    Each module's own scale (alpha/r, or alpha/sqrt(r) for rsLoRA, with rank/alpha patterns) is folded into
    ``lora_b`` and ``adapter.lora.alpha`` is 0, which llama.cpp reads as "scale 1"; so every module keeps its
    exact scale whatever its rank. Llama's q/k ``lora_b`` rows get the same rotary permutation as the base.
    DoRA and ``modules_to_save`` have no llama.cpp adapter form: merge instead.
    """
    hp = ModelHParams.from_config(config)
    if adapter.replacements:
        raise ValueError(
            f"adapter trains full tensors {sorted(adapter.replacements)[:3]} (modules_to_save); "
            "llama.cpp adapters cannot carry them, export a merged GGUF instead"
        )
    if any(m.magnitude_key for m in adapter.modules.values()):
        raise ValueError("DoRA adapters have no llama.cpp adapter form; export a merged GGUF instead")
    tmap = gguf.get_tensor_name_map(hp.arch, hp.n_layer)
    tensors: list[tuple[str, np.ndarray]] = []
    for name, mod in adapter.modules.items():
        gname = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise ValueError(f"adapter module {mod.module} has no GGUF name for {hp.arch.name.lower()}")
        a = adapter.tensor(mod.a_key).float().numpy()
        b = adapter.tensor(mod.b_key).float().numpy() * mod.scale
        if hp.permute_qk and name.endswith("q_proj.weight"):
            b = permute_rotary(b, hp.n_head)
        elif hp.permute_qk and name.endswith("k_proj.weight"):
            b = permute_rotary(b, hp.n_head_kv)
        tensors += [
            (f"{gname}.lora_a", np.ascontiguousarray(a)),
            (f"{gname}.lora_b", np.ascontiguousarray(b)),
        ]
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[hp.arch])
        try:
            writer.add_type(gguf.GGUFType.ADAPTER)
            writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
            writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 0.0)
            writer.add_name(model_name or out_path.stem)
            for tname, arr in tensors:
                writer.add_tensor(tname, arr)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    return out_path
