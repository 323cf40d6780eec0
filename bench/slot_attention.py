"""Slot attention on a CPU: what one decoding step's attention costs, against just reading the cache.

    python bench/slot_attention.py [--slots 16] [--tokens 1000] [--layers 30] [--threads 1]

The shapes are SmolLM2-135M's during a tuned ReAct eval (3 key/value heads, 3 query heads per group folded
into the query length, 64-wide heads): per layer, one query token per slot attends its own cached keys and
values under a length mask, as ``eval/policies/slot_cache.py`` calls it. Printed per dtype: milliseconds
per step (all layers) and the cache bytes read per second for SDPA with and without the mask, the same
attention written as two matmuls, ``models.decode_attention``'s kernel (what the hf policy uses), and a
plain sum over the cache (the memory-bandwidth floor). Each slot's length is drawn from 500-1,000 tokens;
SDPA reads every slot to the longest under the mask, the kernel only each slot's own length, which is
part of what it saves (the GB/s column counts the whole cache for every row, so compare milliseconds).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from models.decode_attention import load

KV_HEADS, GROUP, DIM = 3, 3, 64


def _ms(fn: Callable[[], None], repeat: int = 5) -> float:
    fn()  # warm-up: first calls allocate
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat * 1000


def _cases(slots: int, tokens: int, layers: int, dtype: torch.dtype) -> dict[str, Callable[[], None]]:
    cap = 2 * tokens  # the cache is a view into a larger buffer, as in SlotCache
    ks = [torch.randn(slots, KV_HEADS, cap, DIM, dtype=dtype)[:, :, :tokens] for _ in range(layers)]
    vs = [torch.randn(slots, KV_HEADS, cap, DIM, dtype=dtype)[:, :, :tokens] for _ in range(layers)]
    q = torch.randn(slots, KV_HEADS, GROUP, DIM, dtype=dtype)
    ends = torch.randint(tokens // 2, tokens + 1, (slots,), generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(tokens)[None, :] < ends[:, None])[:, None, None, :]
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def masked() -> None:
        for k, v in zip(ks, vs, strict=True):
            sdpa(q, k, v, attn_mask=mask)

    def unmasked() -> None:
        for k, v in zip(ks, vs, strict=True):
            sdpa(q, k, v)

    def matmuls() -> None:
        for k, v in zip(ks, vs, strict=True):
            s = (q @ k.transpose(-1, -2)).float() * DIM**-0.5
            torch.matmul(s.masked_fill_(~mask, float("-inf")).softmax(-1).to(dtype), v)

    kernel = load()
    packed = q.reshape(1, slots, KV_HEADS * GROUP, DIM).transpose(1, 2)  # [1, heads, slots, dim], as packed
    out = torch.empty(1, slots, KV_HEADS * GROUP, DIM, dtype=dtype)
    idx = torch.arange(slots)

    def fused() -> None:  # reads each slot's own length only (the mask's ends)
        for k, v in zip(ks, vs, strict=True):
            kernel.decode_attention(packed, k, v, idx, idx, ends, out, DIM**-0.5)

    def read() -> None:
        for k, v in zip(ks, vs, strict=True):
            k.sum()
            v.sum()

    cases = {"sdpa, length mask": masked, "sdpa, no mask": unmasked, "two matmuls": matmuls}
    if kernel is not None:
        cases["decode kernel (ours)"] = fused
    return cases | {"read (sum)": read}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=1000)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for dtype in (torch.bfloat16, torch.float32):
        nbytes = args.layers * 2 * args.slots * KV_HEADS * args.tokens * DIM * dtype.itemsize
        for name, fn in _cases(args.slots, args.tokens, args.layers, dtype).items():
            ms = _ms(fn)
            print(f"{str(dtype).removeprefix('torch.'):9s} {name:20s} {ms:7.1f} ms/step  {nbytes / ms / 1e6:5.1f} GB/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
