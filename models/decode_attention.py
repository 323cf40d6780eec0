"""One-pass decode attention on a CPU: each decoding slot's query rows against that slot's cached keys only.

A decoding step gives every running episode one new token, and each token attends its own episode's cache.
``torch.nn.functional.scaled_dot_product_attention`` on a CPU is a tiled (flash) kernel built for many
query rows; a decoding slot brings one row per query head, 3 per key/value head for SmolLM2, so most of a
tile is empty and the call reads the cache at 2.6 GB/s in bf16 (``bench/slot_attention.py``). It also
needs one padded call over every slot's longest context. This kernel walks each (slot, key/value head)
once: the grouped query rows are scored against every cached key in one read, soft-maxed, and the values
are summed in a second read, in fp32 whatever the cache dtype. Ragged lengths cost nothing: each slot
reads exactly its own length. Work items run on torch's own intra-op threads (``at::parallel_for``).

The C++ source is compiled once per machine by ``torch.utils.cpp_extension`` (a C++ compiler is needed,
about a minute; the build is cached under ``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``).
Where it cannot be built, :func:`load` returns None once, and callers keep SDPA. ``-march=native`` makes
the build specific to this CPU, so the CPU's feature flags are part of the build's name.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
import sys
from typing import Any

import torch

from models.cpu_info import cpu_flags

log = logging.getLogger(__name__)

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace {

// Row of `n` cache values -> fp32. fp32 rows are used in place (no copy).
inline const float* as_float(const float* src, float*, int64_t) { return src; }
inline const float* as_float(const c10::BFloat16* src, float* dst, int64_t n) {
  const uint16_t* s = reinterpret_cast<const uint16_t*>(src);
  uint32_t* d = reinterpret_cast<uint32_t*>(dst);
  #pragma omp simd
  for (int64_t i = 0; i < n; ++i) d[i] = uint32_t(s[i]) << 16;  // bf16 is the top half of an fp32
  return dst;
}
inline const float* as_float(const c10::Half* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
  return dst;
}

// exp(x) for x <= 0 (scores minus their max), in a form the compiler vectorizes: 2^(x log2 e) split into
// an integer power (the exponent bits) and a degree-6 polynomial for 2^f, f in [0, 1); relative error
// about 2e-7, the size of fp32 rounding. std::exp stays scalar here and cost a third of the kernel.
inline void exp_shifted(float* x, int64_t n, float shift, float& total) {
  float z = 0.f;
  #pragma omp simd reduction(+ : z)
  for (int64_t i = 0; i < n; ++i) {
    float t = (x[i] - shift) * 1.4426950408889634f;
    t = t < -126.f ? -126.f : t;
    const float fi = std::floor(t), f = t - fi;
    const float p = 1.f + f * (0.69314718f + f * (0.24022652f + f * (0.05550411f + f * (0.00961813f +
                    f * (0.00133336f + f * 0.00015404f)))));
    const int32_t bits = (static_cast<int32_t>(fi) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    x[i] = p * scale;
    z += x[i];
  }
  total = z;
}

inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0.f;
  #pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// D > 0: the head size as a compile-time constant, so the per-key loops unroll (64 and 128 are the common
// sizes); D == 0: any head size, read at run time.
template <typename T, int64_t D>
void run(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, const at::Tensor& slots,
         const at::Tensor& rows, const at::Tensor& lens, at::Tensor& out, double scale) {
  const int64_t heads = query.size(1), dim = D > 0 ? D : query.size(3), kv_heads = key.size(1);
  const int64_t group = heads / kv_heads;
  const int64_t n = slots.size(0);
  const T* q = query.data_ptr<T>();
  const T* k = key.data_ptr<T>();
  const T* v = value.data_ptr<T>();
  T* o = out.data_ptr<T>();
  const int64_t* slot = slots.data_ptr<int64_t>();
  const int64_t* row = rows.data_ptr<int64_t>();
  const int64_t* len = lens.data_ptr<int64_t>();
  const int64_t qs1 = query.stride(1), qs2 = query.stride(2);
  const int64_t ks0 = key.stride(0), ks1 = key.stride(1), ks2 = key.stride(2);
  const int64_t vs0 = value.stride(0), vs1 = value.stride(1), vs2 = value.stride(2);
  const int64_t os1 = out.stride(1), os2 = out.stride(2);
  at::parallel_for(0, n * kv_heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> qf(group * dim), acc(group * dim), tmp(dim), scores, mx(group), sum(group);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t i = item / kv_heads, h = item % kv_heads, L = len[i];
      for (int64_t g = 0; g < group; ++g) {  // the group's query rows, pre-scaled, in fp32
        const float* src = as_float(q + (h * group + g) * qs1 + row[i] * qs2, tmp.data(), dim);
        for (int64_t d = 0; d < dim; ++d) qf[g * dim + d] = src[d] * static_cast<float>(scale);
      }
      scores.resize(group * L);
      std::fill(mx.begin(), mx.end(), -std::numeric_limits<float>::infinity());
      const T* kb = k + slot[i] * ks0 + h * ks1;
      for (int64_t t = 0; t < L; ++t) {  // one read of the keys serves every query row of the group
        const float* kr = as_float(kb + t * ks2, tmp.data(), dim);
        for (int64_t g = 0; g < group; ++g) {
          const float s = dot(qf.data() + g * dim, kr, dim);
          scores[g * L + t] = s;
          mx[g] = s > mx[g] ? s : mx[g];
        }
      }
      for (int64_t g = 0; g < group; ++g) exp_shifted(scores.data() + g * L, L, mx[g], sum[g]);
      std::fill(acc.begin(), acc.end(), 0.f);
      const T* vb = v + slot[i] * vs0 + h * vs1;
      for (int64_t t = 0; t < L; ++t) {  // one read of the values
        const float* vr = as_float(vb + t * vs2, tmp.data(), dim);
        for (int64_t g = 0; g < group; ++g) {
          const float p = scores[g * L + t];
          float* a = acc.data() + g * dim;
          #pragma omp simd
          for (int64_t d = 0; d < dim; ++d) a[d] += p * vr[d];
        }
      }
      for (int64_t g = 0; g < group; ++g) {
        T* dst = o + row[i] * os1 + (h * group + g) * os2;
        const float inv = 1.f / sum[g];
        for (int64_t d = 0; d < dim; ++d) dst[d] = static_cast<T>(acc[g * dim + d] * inv);
      }
    }
  });
}

template <typename T>
void by_dim(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, const at::Tensor& slots,
            const at::Tensor& rows, const at::Tensor& lens, at::Tensor& out, double scale) {
  switch (query.size(3)) {
    case 64: run<T, 64>(query, key, value, slots, rows, lens, out, scale); break;
    case 128: run<T, 128>(query, key, value, slots, rows, lens, out, scale); break;
    default: run<T, 0>(query, key, value, slots, rows, lens, out, scale);
  }
}

}  // namespace

// query [1, heads, T, dim] (last dim contiguous); key/value [slots, kv_heads, >= max(lens), dim] (last dim
// contiguous); slots/rows/lens int64 [n]: segment i is packed token rows[i] of slot slots[i], attending
// keys 0 .. lens[i]-1; out [1, T, heads, dim] (last dim contiguous), rows not named are left untouched.
void decode_attention(at::Tensor query, at::Tensor key, at::Tensor value, at::Tensor slots, at::Tensor rows,
                      at::Tensor lens, at::Tensor out, double scale) {
  TORCH_CHECK(query.stride(3) == 1 && key.stride(3) == 1 && value.stride(3) == 1 && out.stride(3) == 1,
              "decode_attention: the head dimension must be contiguous");
  TORCH_CHECK(key.size(3) == query.size(3) && value.size(3) == query.size(3) && out.size(3) == query.size(3) &&
              out.size(2) == query.size(1), "decode_attention: head sizes differ");
  TORCH_CHECK(key.size(1) > 0 && query.size(1) % key.size(1) == 0, "decode_attention: heads % kv_heads");
  TORCH_CHECK(query.scalar_type() == key.scalar_type() && key.scalar_type() == value.scalar_type() &&
              value.scalar_type() == out.scalar_type(), "decode_attention: one dtype for all tensors");
  const auto ls = lens.contiguous(), ss = slots.contiguous(), rs = rows.contiguous();
  TORCH_CHECK(ss.numel() == ls.numel() && rs.numel() == ls.numel(), "decode_attention: one slot, row, length each");
  TORCH_CHECK(ls.scalar_type() == at::kLong && ss.scalar_type() == at::kLong && rs.scalar_type() == at::kLong,
              "decode_attention: int64 slots, rows and lengths");
  const int64_t *l = ls.data_ptr<int64_t>(), *sl = ss.data_ptr<int64_t>(), *r = rs.data_ptr<int64_t>();
  const int64_t n_rows = std::min(query.size(2), out.size(1));
  for (int64_t i = 0; i < ls.numel(); ++i) {  // plain loops: a tensor min()/max() per call costs more
    TORCH_CHECK(l[i] >= 1 && l[i] <= key.size(2), "decode_attention: lengths outside the cache");
    TORCH_CHECK(sl[i] >= 0 && sl[i] < key.size(0) && r[i] >= 0 && r[i] < n_rows,
                "decode_attention: a slot or row outside the tensors");
  }
  TORCH_CHECK(value.size(0) == key.size(0) && value.size(1) == key.size(1) && value.size(2) == key.size(2),
              "decode_attention: keys and values differ in shape");
  switch (query.scalar_type()) {
    case at::kFloat: by_dim<float>(query, key, value, ss, rs, ls, out, scale); break;
    case at::kBFloat16: by_dim<c10::BFloat16>(query, key, value, ss, rs, ls, out, scale); break;
    case at::kHalf: by_dim<c10::Half>(query, key, value, ss, rs, ls, out, scale); break;
    default: TORCH_CHECK(false, "decode_attention: fp32, bf16 or fp16 only");
  }
}
"""

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _build_name() -> str:
    digest = hashlib.sha256((_SOURCE + cpu_flags() + platform.machine()).encode()).hexdigest()[:12]
    return f"unsloth_recipes_decode_attention_{digest}"


SWITCH = "UNSLOTH_RECIPES_DECODE_KERNEL"  # "0": SDPA everywhere, e.g. to compare the two


def enabled() -> bool:
    return os.environ.get(SWITCH, "1") != "0"


@functools.cache
def load() -> Any | None:
    """The compiled extension (built on first use), or None where it cannot be built."""
    bindir = os.path.dirname(sys.executable)  # pip's ninja lands next to python, maybe not on PATH
    if shutil.which("ninja") is None and shutil.which("ninja", path=bindir):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    try:
        from torch.utils.cpp_extension import _get_build_directory, load_inline

        name = _build_name()
        if not os.path.exists(os.path.join(_get_build_directory(name, False), f"{name}.so")):
            print(
                "building the CPU decode-attention kernel once for this machine (about a minute)",
                file=sys.stderr,
            )
        return load_inline(
            name,
            cpp_sources=_SOURCE,
            functions=["decode_attention"],
            extra_cflags=["-O3", "-march=native", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as exc:  # no compiler, no headers, a failed build: SDPA still works
        log.warning("the CPU decode-attention kernel could not be built (%s); using SDPA", exc)
        return None


def decode_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    slots: torch.Tensor,
    rows: torch.Tensor,
    lens: torch.Tensor,
    out: torch.Tensor,
    scale: float,
) -> bool:
    """Write each segment's attention into ``out`` (see the C++ signature); False if the kernel is unusable."""
    if not enabled() or query.device.type != "cpu" or query.dtype not in DTYPES:
        return False
    ext = load()
    if ext is None:
        return False
    ext.decode_attention(query, key, value, slots, rows, lens, out, float(scale))
    return True
