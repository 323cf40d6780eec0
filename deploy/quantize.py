"""K-quants (q4_k_m and friends) through llama.cpp's own quantizer, via llama-cpp-python.

The input is an f16 (or f32/bf16) GGUF written by :mod:`deploy.gguf`; llama.cpp chooses the per-tensor mix
(e.g. q6_k for ``output.weight`` in q4_k_m) exactly as ``llama-quantize`` does.
"""

from __future__ import annotations

import os
from pathlib import Path

from deploy.gguf import DIRECT_TYPES
from deploy.llamacpp import LLAMA_CPP_HINT
from fileio.atomic import atomic_path

K_QUANTS = {
    "q2_k": 10,
    "q3_k_s": 11,
    "q3_k_m": 12,
    "q3_k_l": 13,
    "q4_k_s": 14,
    "q4_k_m": 15,
    "q5_k_s": 16,
    "q5_k_m": 17,
    "q6_k": 18,
}  # llama_ftype values (llama.h)


def supported_types() -> list[str]:
    return list(DIRECT_TYPES) + list(K_QUANTS)


def check_type(name: str) -> str:
    t = name.strip().lower()
    if t not in DIRECT_TYPES and t not in K_QUANTS:
        raise ValueError(f"unknown quant type {name!r}; choose from {', '.join(supported_types())}")
    return t


def quantize_k(src: Path, dst: Path, qtype: str, threads: int | None = None) -> Path:
    """Quantize ``src`` (a float GGUF) to ``dst`` with llama.cpp, atomically."""
    qtype = check_type(qtype)
    if qtype not in K_QUANTS:
        raise ValueError(f"{qtype} is written directly by deploy.gguf, not by llama.cpp's quantizer")
    try:
        import llama_cpp
    except Exception as exc:
        raise RuntimeError(f"{qtype} needs llama.cpp's quantizer: {LLAMA_CPP_HINT}") from exc
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = K_QUANTS[qtype]
    params.nthread = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or (os.cpu_count() or 1)
    with atomic_path(dst) as tmp:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
        if rc != 0 or not tmp.is_file():
            raise RuntimeError(f"llama_model_quantize({src.name} -> {qtype}) failed with code {rc}")
    return dst
