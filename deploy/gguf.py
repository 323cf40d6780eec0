"""Streaming GGUF writer, on the ``gguf`` package, for the architectures in ``_ARCHES``: Llama (SmolLM2,
Llama 3.x), Mistral, Qwen2, Qwen3, Phi-3, Gemma 2 and Gemma 3 (text). Others raise ``UnsupportedArchitecture``
(the export then falls back to llama.cpp's converter).

Streaming: every tensor's GGUF name, shape and type is planned from the safetensors headers, the header and
tensor infos are written first, then each tensor is read (and merged with the adapter, when there is one),
converted and written before the next is touched. Peak memory is about one tensor in float32.

Layout facts (from llama.cpp's converter and model graphs):

- llama.cpp's Llama graph (Llama, Mistral) uses Meta's interleaved rotary layout, so HF ``q_proj``/``k_proj``
  rows are permuted back (``n_head`` for q, ``n_head_kv`` for k); Qwen, Phi-3 and Gemma use the NeoX layout,
  which is HF's, so nothing is permuted. A ``head_dim`` other than ``hidden / heads`` is written as key/value
  length.
- Qwen3 and Gemma 3 normalize q and k per head (``attn_q_norm``/``attn_k_norm``).
- Phi-3's fused ``qkv_proj`` is ``attn_qkv`` and its ``gate_up_proj`` is ``ffn_up`` (gate rows first: the
  graph's SwiGLU splits it in halves); LongRoPE writes ``rope_factors_long/short`` and the attention factor.
- Gemma's RMSNorm scales by ``1 + w``: every ``*norm.weight`` is written plus one. Gemma 2 has pre/post
  attention and feed-forward norms, logit softcapping (attention, final) and no output matrix; Gemma 3 has
  the same norms, local/global RoPE bases and its own sliding-window pattern. The per-layer pattern is
  written from ``layer_types``; embedding scaling by ``sqrt(hidden)`` is in llama.cpp's graph.
- Sliding windows that llama.cpp's graph does not run (Mistral, Phi-3) cap the context length (see
  ``_attention_window``).

Tied embeddings write no ``output.weight``. Norms and biases stay float32; 2-D weights take the file type
(q8_0 rows need a multiple of 32 columns, else that tensor falls back to f16).
"""

from __future__ import annotations

import math
import os
import re
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


@dataclass(frozen=True)
class ArchLayout:
    """How one Hugging Face architecture maps onto a llama.cpp graph (facts from llama.cpp's converter)."""

    family: str
    arch: gguf.MODEL_ARCH
    permute_qk: bool = False  # llama.cpp's Llama graph rotates Meta's interleaved pairs, not HF's halves
    norm_offset: float = 0.0  # Gemma's RMSNorm scales by (1 + w), llama.cpp's by w
    has_output: bool = True  # Gemma 2's graph always reuses token_embd as the output matrix
    swa_graph: bool = False  # the llama.cpp graph has per-layer sliding-window attention


_ARCHES = {
    "LlamaForCausalLM": ArchLayout("llama", gguf.MODEL_ARCH.LLAMA, permute_qk=True),
    # llama.cpp converts Mistral as Llama; its Llama graph has no sliding window (see _attention_window).
    "MistralForCausalLM": ArchLayout("mistral", gguf.MODEL_ARCH.LLAMA, permute_qk=True),
    "Qwen2ForCausalLM": ArchLayout("qwen2", gguf.MODEL_ARCH.QWEN2),
    "Qwen3ForCausalLM": ArchLayout("qwen3", gguf.MODEL_ARCH.QWEN3),
    "Phi3ForCausalLM": ArchLayout("phi3", gguf.MODEL_ARCH.PHI3),
    "Gemma2ForCausalLM": ArchLayout(
        "gemma2", gguf.MODEL_ARCH.GEMMA2, norm_offset=1.0, has_output=False, swa_graph=True
    ),
    "Gemma3ForCausalLM": ArchLayout("gemma3", gguf.MODEL_ARCH.GEMMA3, norm_offset=1.0, swa_graph=True),
}

# llama.cpp scales Gemma attention by 1/sqrt(head_dim), except for the 27B models (told apart by their layer
# count), where it uses 1/sqrt(n_embd / n_head); it never reads query_pre_attn_scalar.
_GEMMA_27B_LAYERS = {"gemma2": 46, "gemma3": 62}
# Sliding-window period when a config has no layer_types: every 2nd (Gemma 2) or 6th (Gemma 3) layer is global.
_SWA_PERIOD = {"gemma2": 2, "gemma3": 6}


class UnsupportedArchitecture(ValueError):
    """Our streaming writer has no layout for this architecture (the caller may fall back to llama.cpp's converter)."""


@dataclass(frozen=True)
class LongRope:
    """Phi-3 LongRoPE: per-frequency divisors (long and short contexts) and the cos/sin scale."""

    long_factors: tuple[float, ...]
    short_factors: tuple[float, ...]
    attn_factor: float


@dataclass(frozen=True)
class _Rope:
    theta: float
    scaling: dict[str, Any] | None  # None for plain RoPE
    theta_swa: float | None  # Gemma 3's local (sliding-window) layers


@dataclass(frozen=True)
class ModelHParams:
    """What llama.cpp needs from ``config.json``."""

    layout: ArchLayout
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
    n_rot: int = 0  # rotary dims per head (0: all of head_dim)
    sliding_window: int | None = None
    swa_layers: tuple[bool, ...] | None = None  # per layer: sliding-window attention (Gemma)
    rope_theta_swa: float | None = None
    attn_softcap: float | None = None
    final_softcap: float | None = None
    rope_orig_ctx: int | None = None  # Phi-3's pre-training context
    longrope: LongRope | None = None

    @property
    def family(self) -> str:
        return self.layout.family

    @property
    def arch(self) -> gguf.MODEL_ARCH:
        return self.layout.arch

    @property
    def permute_qk(self) -> bool:
        return self.layout.permute_qk

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ModelHParams:
        layout = _layout_of(cfg)
        n_head = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        head_dim = int(cfg.get("head_dim") or hidden // n_head)
        n_layer = int(cfg["num_hidden_layers"])
        rope = _rope_of(cfg, layout)
        window, swa_layers, n_ctx = _attention_window(cfg, layout, n_layer)
        _check_attention_scale(cfg, layout, n_layer, hidden // n_head, head_dim)
        n_rot = _rotary_dims(cfg, head_dim)
        return cls(
            layout=layout,
            n_layer=n_layer,
            n_embd=hidden,
            n_ff=int(cfg["intermediate_size"]),
            n_head=n_head,
            n_head_kv=int(cfg.get("num_key_value_heads") or n_head),
            head_dim=head_dim,
            n_ctx=n_ctx,
            rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=rope.theta,
            vocab_size=int(cfg["vocab_size"]),
            tied=bool(cfg.get("tie_word_embeddings", False)),
            rope_scaling=rope.scaling,
            n_rot=n_rot,
            sliding_window=window,
            swa_layers=swa_layers,
            rope_theta_swa=rope.theta_swa,
            attn_softcap=cfg.get("attn_logit_softcapping") if layout.family == "gemma2" else None,
            final_softcap=cfg.get("final_logit_softcapping") if layout.family.startswith("gemma") else None,
            rope_orig_ctx=cfg.get("original_max_position_embeddings") if layout.family == "phi3" else None,
            longrope=_longrope(cfg, rope.scaling, n_rot),
        )

    def write(self, w: gguf.GGUFWriter) -> None:
        w.add_context_length(self.n_ctx)
        w.add_embedding_length(self.n_embd)
        w.add_block_count(self.n_layer)
        w.add_feed_forward_length(self.n_ff)
        w.add_head_count(self.n_head)
        w.add_head_count_kv(self.n_head_kv)
        w.add_rope_dimension_count(self.n_rot or self.head_dim)
        if self.head_dim != self.n_embd // self.n_head:
            w.add_key_length(self.head_dim)
            w.add_value_length(self.head_dim)
        w.add_rope_freq_base(self.rope_theta)
        w.add_layer_norm_rms_eps(self.rms_eps)
        w.add_vocab_size(self.vocab_size)
        if self.rope_scaling and _rope_type(self.rope_scaling) == "linear":
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(float(self.rope_scaling["factor"]))
        self._write_family(w)

    def _write_family(self, w: gguf.GGUFWriter) -> None:
        """The keys only some llama.cpp graphs read."""
        if self.family == "phi3":
            w.add_rope_scaling_orig_ctx_len(int(self.rope_orig_ctx or self.n_ctx))
            w.add_sliding_window(self.sliding_window or 0)  # llama.cpp reads it but runs Phi-3 unwindowed
            if self.longrope is not None:
                w.add_rope_scaling_attn_factors(self.longrope.attn_factor)
        if self.swa_layers is not None and self.sliding_window:
            w.add_sliding_window(self.sliding_window)
            w.add_sliding_window_pattern(list(self.swa_layers))
            if self.rope_theta_swa is not None:
                w.add_rope_freq_base_swa(self.rope_theta_swa)
        if self.attn_softcap:
            w.add_attn_logit_softcapping(float(self.attn_softcap))
        if self.final_softcap:
            w.add_final_logit_softcapping(float(self.final_softcap))


def _layout_of(cfg: dict[str, Any]) -> ArchLayout:
    archs = cfg.get("architectures") or []
    arch_name = next((a for a in archs if a in _ARCHES), None)
    if arch_name is None:
        raise UnsupportedArchitecture(
            f"architecture {archs} is not supported for GGUF export; supported: {sorted(_ARCHES)}"
        )
    return _ARCHES[arch_name]


def _rope_type(params: dict[str, Any]) -> str:
    return str(params.get("rope_type", params.get("type", "default")))


def _rope_of(cfg: dict[str, Any], layout: ArchLayout) -> _Rope:
    """RoPE base and scaling, from transformers 5 ``rope_parameters`` (flat, or per attention type as in
    Gemma 3) or the older ``rope_theta`` / ``rope_scaling`` / ``rope_local_base_freq`` keys."""
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    full = params.get("full_attention", params)
    local = params.get("sliding_attention")
    theta = float(full.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    theta_swa = local.get("rope_theta") if local else cfg.get("rope_local_base_freq")
    if local and _rope_type(local) != "default":
        raise UnsupportedArchitecture(
            f"rope scaling {_rope_type(local)!r} on sliding-window layers is not supported for GGUF export"
        )
    kind = _rope_type(full)
    allowed = (
        {"linear"}
        | ({"llama3"} if layout.permute_qk else set())
        | ({"longrope"} if layout.family == "phi3" else set())
    )
    if kind not in ("default", "None") and kind not in allowed:
        raise UnsupportedArchitecture(
            f"rope scaling type {kind!r} is not supported for GGUF export of {layout.family} "
            f"(supported: {', '.join(sorted(allowed))})"
        )
    scaling = None if kind in ("default", "None") else dict(full)
    return _Rope(theta, scaling, None if theta_swa is None else float(theta_swa))


def _rotary_dims(cfg: dict[str, Any], head_dim: int) -> int:
    """Rotary dimensions per head (``partial_rotary_factor`` of head_dim, as transformers computes it)."""
    params = cfg.get("rope_parameters") or {}
    params = params.get("full_attention", params)
    return int(head_dim * float(params.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))))


def _attention_window(
    cfg: dict[str, Any], layout: ArchLayout, n_layer: int
) -> tuple[int | None, tuple[bool, ...] | None, int]:
    """(sliding window, per-layer pattern, context length) as llama.cpp can run them.

    Gemma's llama.cpp graphs window the layers that transformers windows. The Llama graph (Mistral) and
    Phi-3's run every layer unwindowed, which equals transformers only up to ``sliding_window`` tokens
    (a query sees itself and the ``sliding_window - 1`` tokens before it), so the GGUF's context length is
    capped there: the file claims only the context in which it computes what the trained model does.
    """
    n_ctx = int(cfg.get("max_position_embeddings", 4096))
    window = cfg.get("sliding_window")
    types = cfg.get("layer_types")
    if layout.swa_graph:
        if not window or (types is not None and "sliding_attention" not in types):
            return None, None, n_ctx
        period = int(cfg.get("sliding_window_pattern") or _SWA_PERIOD[layout.family])
        pattern = (
            tuple(t == "sliding_attention" for t in types)
            if types is not None
            else tuple((i + 1) % period != 0 for i in range(n_layer))
        )
        return int(window), pattern, n_ctx
    used = window and cfg.get("use_sliding_window", True) and (types is None or "sliding_attention" in types)
    if not used:
        return None, None, n_ctx
    return int(window), None, min(n_ctx, int(window))


def _check_attention_scale(
    cfg: dict[str, Any], layout: ArchLayout, n_layer: int, embd_per_head: int, head_dim: int
) -> None:
    """Gemma: refuse a ``query_pre_attn_scalar`` that llama.cpp's graph would not apply."""
    scalar = cfg.get("query_pre_attn_scalar")
    if scalar is None or layout.family not in _GEMMA_27B_LAYERS:
        return
    used = embd_per_head if n_layer == _GEMMA_27B_LAYERS[layout.family] else head_dim
    if float(scalar) != float(used):
        raise ValueError(
            f"query_pre_attn_scalar={scalar}, but llama.cpp's {layout.family} graph scales attention by "
            f"1/sqrt({used}) for a {n_layer}-layer model; the GGUF would compute a different model"
        )


def _longrope(cfg: dict[str, Any], scaling: dict[str, Any] | None, n_rot: int) -> LongRope | None:
    """Phi-3 LongRoPE factors and attention factor, computed as transformers does."""
    if not scaling or _rope_type(scaling) not in ("longrope", "su"):
        return None
    long_f = tuple(float(x) for x in scaling["long_factor"])
    short_f = tuple(float(x) for x in scaling["short_factor"])
    if len(long_f) != n_rot // 2 or len(short_f) != n_rot // 2:
        raise ValueError(
            f"longrope factors have {len(long_f)}/{len(short_f)} entries; the rotary dimension {n_rot} needs "
            f"{n_rot // 2}"
        )
    orig = float(scaling.get("original_max_position_embeddings") or cfg["original_max_position_embeddings"])
    factor = float(scaling.get("factor") or int(cfg["max_position_embeddings"]) / orig)
    attn = scaling.get("attention_factor")
    if attn is None:
        attn = math.sqrt(1 + math.log(factor) / math.log(orig)) if factor > 1.0 else 1.0
    return LongRope(long_f, short_f, float(attn))


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
    hf_name: str | None  # None for generated tensors (rope_freqs, rope_factors_*)
    shape: tuple[int, ...]  # numpy order (rows, cols)
    qtype: gguf.GGMLQuantizationType
    nbytes: int
    values: np.ndarray | None = None  # the data of a generated tensor


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


def _generated(name: str, values: np.ndarray) -> PlannedGGUFTensor:
    values = np.ascontiguousarray(values, dtype=np.float32)
    f32 = gguf.GGMLQuantizationType.F32
    return PlannedGGUFTensor(name, None, values.shape, f32, _nbytes(values.shape, f32), values)


def generated_tensors(hp: ModelHParams) -> list[PlannedGGUFTensor]:
    """Tensors llama.cpp wants that the checkpoint does not store: RoPE frequency factors."""
    if hp.rope_scaling and _rope_type(hp.rope_scaling) == "llama3":
        return [_generated("rope_freqs.weight", llama3_rope_factors(hp))]
    if hp.longrope is not None:
        return [
            _generated("rope_factors_long.weight", np.asarray(hp.longrope.long_factors)),
            _generated("rope_factors_short.weight", np.asarray(hp.longrope.short_factors)),
        ]
    return []


def _gguf_name(tmap: gguf.TensorNameMap, name: str, hp: ModelHParams) -> str | None:
    """The GGUF name of a checkpoint tensor; None for tensors llama.cpp does not load."""
    if name.endswith("rotary_emb.inv_freq") or (name == "lm_head.weight" and hp.tied):
        return None
    if name == "lm_head.weight" and not hp.layout.has_output:
        raise ValueError(
            f"this {hp.family} model has its own lm_head.weight (an untied or trained output matrix), but "
            f"llama.cpp's {hp.family} graph always reuses the token embedding as output; not exportable"
        )
    gname = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
    if gname is None:
        raise ValueError(
            f"tensor {name!r} has no GGUF name for {hp.arch.name.lower()}; is this the right model?"
        )
    return gname


def plan_tensors(
    names: list[str],
    shape_of: Callable[[str], tuple[int, ...]],
    hp: ModelHParams,
    qtype: gguf.GGMLQuantizationType,
) -> list[PlannedGGUFTensor]:
    tmap = gguf.get_tensor_name_map(hp.arch, hp.n_layer)
    plan = generated_tensors(hp)
    for name in names:
        gname = _gguf_name(tmap, name, hp)
        if gname is None:
            continue
        shape = tuple(shape_of(name))
        t = _tensor_type(gname, shape, qtype)
        plan.append(PlannedGGUFTensor(gname, name, shape, t, _nbytes(shape, t)))
    names_out = {p.gguf_name for p in plan}
    if "token_embd.weight" not in names_out:
        raise ValueError("the model has no token embedding (model.embed_tokens.weight)")
    if not hp.tied and hp.layout.has_output and "output.weight" not in names_out:
        raise ValueError("config says tie_word_embeddings=false but there is no lm_head.weight")
    return plan


def convert_tensor(p: PlannedGGUFTensor, data: np.ndarray, hp: ModelHParams) -> np.ndarray:
    """float32 or float16 numpy (HF layout) -> the bytes-ready numpy array for the GGUF file."""
    if hp.permute_qk and p.hf_name is not None:
        if p.hf_name.endswith("q_proj.weight") or p.hf_name.endswith("q_proj.bias"):
            data = permute_rotary(data, hp.n_head)
        elif p.hf_name.endswith("k_proj.weight") or p.hf_name.endswith("k_proj.bias"):
            data = permute_rotary(data, hp.n_head_kv)
    if hp.layout.norm_offset and p.hf_name is not None and p.hf_name.endswith("norm.weight"):
        data = np.asarray(data, dtype=np.float32) + np.float32(hp.layout.norm_offset)
    if p.qtype == gguf.GGMLQuantizationType.F32:
        return np.ascontiguousarray(data, dtype=np.float32)
    if p.qtype == gguf.GGMLQuantizationType.F16:
        return np.ascontiguousarray(data, dtype=np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), p.qtype)


def _as_numpy(data: Any) -> np.ndarray:
    """Rows as float numpy: float16 stays float16 (an f16 GGUF copies it as it is; widening and narrowing
    again gives the same bits, only slower), everything else becomes float32."""
    if hasattr(data, "detach"):  # torch
        data = data.detach()
        return data.numpy() if str(data.dtype) == "torch.float16" else data.float().numpy()
    arr = np.asarray(data)
    return arr if arr.dtype in (np.float16, np.float32) else arr.astype(np.float32)


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
        data = p.values if p.hf_name is None else _as_numpy(read_rows(p.hf_name, start, stop))
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
    writer = _model_writer(hp, vocab, plan, ftype, gguf_model_name(model_name or out_path.stem, vocab))
    with atomic_path(out_path) as tmp:
        try:
            writer.write_header_to_file(path=tmp)
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            _write_all_tensors(
                writer,
                plan,
                hp,
                read_rows,
                chunked=get_f32 is None,
                desc=f"gguf {outtype}",
                progress=progress,
            )
        finally:
            writer.close()
    return GGUFResult(out_path, outtype, len(plan), out_path.stat().st_size)


_PHI3_NAME = re.compile(r"phi(-?)3", re.IGNORECASE)


def gguf_model_name(name: str, vocab: GGUFVocab) -> str:
    """``general.name`` for ``name``, such that llama.cpp strips whitespace after special tokens exactly when
    the HF tokenizer does.

    llama.cpp gives every special token except ``<unk>``, ``<s>`` and ``<|endoftext|>`` the "rstrip" attribute
    when ``general.name`` contains ``phi3`` or ``phi-3`` (Phi-3's HF tokens strip the newline after
    ``<|user|>``), and no other way to ask for it: so a run named ``phi3-...`` whose tokenizer does not strip
    is written ``phi_3-...``, and a stripping tokenizer under another name gets ``-phi3`` appended.
    """
    if vocab.strips_after_special and not _PHI3_NAME.search(name):
        return f"{name}-phi3"
    if not vocab.strips_after_special and _PHI3_NAME.search(name):
        return _PHI3_NAME.sub(lambda m: m.group(0)[:3] + "_3", name)
    return name


def _pad_vocab(vocab: GGUFVocab, vocab_size: int) -> None:
    """Pad the token list with unused ``[PADi]`` tokens up to the model's embedding rows (never truncate)."""
    vocab.pad_to(vocab_size)


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
    exact scale whatever its rank. Llama's (and Mistral's) q/k ``lora_b`` rows get the same rotary permutation
    as the base; Phi-3's fused ``qkv_proj`` / ``gate_up_proj`` adapters map to ``attn_qkv`` / ``ffn_up`` as they
    are (llama.cpp looks adapters up by the base tensor's name).
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
