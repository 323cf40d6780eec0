"""A KV cache with one fixed slot per running episode, and ragged ("packed") forward passes over it.

Each slot holds one episode's keys and values at positions ``0 .. length-1`` of a preallocated buffer
``[slots, kv_heads, capacity, head_dim]`` per layer. One forward pass feeds every slot's new tokens at
once, packed into a single row without padding: a replying slot feeds its last token, a slot that just got
an observation (or a fresh episode) feeds that whole block. So every linear layer reads its weights once per
iteration for all the work there is (on a CPU, decoding is bound by reading the weights), and nothing is
ever re-padded or concatenated: an episode keeps its slot for life and a prefix miss is a shorter length.

How it plugs into a transformers model:

- ``update`` (called by each attention layer) writes the new keys/values to their slots and positions and
  returns the whole buffers (views, no copy);
- :func:`slot_attention` (registered as an attention implementation) attends each slot's packed queries
  to that slot's keys only, causally from the slot's old length. Its layout arrives as the ``slot_layout``
  keyword, which transformers passes from the model call down to the attention function. On a CPU the
  one-token segments (decoding steps) go to ``models.decode_attention``'s kernel, each slot over its own
  length; without it (no compiler), to one padded SDPA call, the few longest contexts alone;
- no mask function is registered for it, so transformers builds no mask at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

from models.decode_attention import decode_attention

SLOT_ATTENTION = "slot_packed"


@dataclass(frozen=True)
class Segment:
    slot: int
    start: int  # the slot's cached length before this pass (position of the segment's first token)
    q0: int  # the segment's tokens are q0 .. q1-1 of the packed row
    q1: int


def slot_attention(
    module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any,
    dropout: float = 0.0, scaling: float | None = None, slot_layout: list[Segment] | None = None, **_: Any,
) -> tuple[torch.Tensor, None]:
    """query ``[1, heads, T, dim]`` (packed); key/value ``[slots, kv_heads, view, dim]`` (the buffers)."""
    if slot_layout is None:  # an ordinary forward while this implementation is set (a shared-prefix prefill)
        from eval.policies.hf import _sdpa_gqa_forward

        return _sdpa_gqa_forward(module, query, key, value, attention_mask, scaling=scaling)
    heads, dim = query.shape[1], query.shape[3]
    kv_heads = key.shape[1]
    group = heads // kv_heads  # query heads per key/value head (HF order: head h reads kv head h // group)
    out = query.new_empty((1, query.shape[2], heads, dim))
    singles = [seg for seg in slot_layout if seg.q1 - seg.q0 == 1]
    if singles and _decode_kernel(out, query, key, value, singles, scaling):
        batched = singles  # every decoding step in one pass, each slot over its own length
    else:  # SDPA: one padded call, the longest contexts alone
        batched, _ = _split_singles(singles, key.shape[0])
        if batched:
            _attend_singles(out, query, key, value, batched, group, scaling)
    done = {id(seg) for seg in batched}
    for seg in slot_layout:
        n = seg.q1 - seg.q0
        if id(seg) in done:
            continue
        end = seg.start + n
        # grouped-query heads folded into the query length, so key/value heads are never copied
        q = query[:, :, seg.q0 : seg.q1].reshape(1, kv_heads, group * n, dim)
        causal = None
        if n > 1:  # query i sees keys 0 .. start + i
            causal = (torch.arange(end)[None, :] <= (seg.start + torch.arange(n))[:, None]).repeat(group, 1)
        o = torch.nn.functional.scaled_dot_product_attention(
            q, key[seg.slot : seg.slot + 1, :, :end], value[seg.slot : seg.slot + 1, :, :end],
            attn_mask=causal, scale=scaling,
        )
        out[0, seg.q0 : seg.q1] = o.reshape(heads, n, dim).transpose(0, 1)
    return out, None


def _decode_kernel(
    out: torch.Tensor, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, singles: list[Segment],
    scaling: float | None,
) -> bool:
    """One-token segments through ``models.decode_attention`` (CPU); False where it is not available."""
    if query.stride(-1) != 1:
        query = query.contiguous()
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    slots = torch.tensor([seg.slot for seg in singles], dtype=torch.long)
    rows = torch.tensor([seg.q0 for seg in singles], dtype=torch.long)
    lens = torch.tensor([seg.start + 1 for seg in singles], dtype=torch.long)
    return decode_attention(query, key, value, slots, rows, lens, out, scale)


CALL_COST = 300  # one extra attention call costs about as much as attending to this many more keys (CPU)


def _split_singles(singles: list[Segment], slots: int) -> tuple[list[Segment], list[Segment]]:
    """Which one-token segments share the batched call, and which (the few longest) attend alone.

    The batched call attends every slot over the longest included context, so one long episode would make
    every slot pay for its length; the longest ones go alone when that costs less (a simple token model).
    """
    if not singles:
        return [], []
    ordered = sorted(singles, key=lambda seg: seg.start)
    best_k, best_cost = len(ordered), float("inf")
    tail = 0
    for k in range(len(ordered), 0, -1):  # the first k share the batched call
        cost = slots * (ordered[k - 1].start + 1) + tail
        if cost < best_cost:
            best_k, best_cost = k, cost
        tail += ordered[k - 1].start + 1 + CALL_COST
    return ordered[:best_k], ordered[best_k:]


def _attend_singles(
    out: torch.Tensor, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, singles: list[Segment],
    group: int, scaling: float | None,
) -> None:
    """One-token segments: a query row per slot (idle slots see one ignored key) and a length mask."""
    view = max(seg.start for seg in singles) + 1  # only as far as the longest batched context
    key, value = key[:, :, :view], value[:, :, :view]
    idx = torch.tensor([seg.q0 for seg in singles], dtype=torch.long)
    rows = torch.tensor([seg.slot for seg in singles], dtype=torch.long)
    if 2 * len(singles) <= key.shape[0]:  # few slots decoding (the run's tail): copy theirs, skip idle ones
        key, value = key[rows], value[rows]
        rows = torch.arange(len(singles))
    slots, kv_heads, _, dim = key.shape
    q = query.new_zeros((slots, kv_heads, group, dim))
    ends = torch.ones(slots, dtype=torch.long)
    q[rows] = query[0, :, idx].reshape(kv_heads, group, len(singles), dim).permute(2, 0, 1, 3)
    ends[rows] = torch.tensor([seg.start + 1 for seg in singles], dtype=torch.long)
    mask = (torch.arange(view)[None, :] < ends[:, None])[:, None, None, :]
    o = torch.nn.functional.scaled_dot_product_attention(q, key, value, attn_mask=mask, scale=scaling)
    out[0, idx] = o[rows].reshape(len(singles), kv_heads * group, dim)


def register_slot_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(SLOT_ATTENTION, slot_attention)


class SlotCache(Cache):
    def __init__(self, model: Any, slots: int, capacity: int = 1024) -> None:
        super().__init__(layer_class_to_replicate=DynamicLayer)
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        self.n_layers = cfg.num_hidden_layers
        self.dtype = next(model.parameters()).dtype
        self.slots = slots
        self.lengths = [0] * slots
        self.capacity = 0
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self._grow(capacity)
        self._slot_idx = torch.zeros(0, dtype=torch.long)
        self._pos_idx = torch.zeros(0, dtype=torch.long)
        self._view = 0

    def _grow(self, need: int) -> None:
        """Make room for ``need`` positions (doubling, so copies are rare)."""
        if need <= self.capacity:
            return
        cap = max(64, self.capacity)
        while cap < need:
            cap *= 2
        shape = (self.slots, self.kv_heads, cap, self.head_dim)
        for store in (self.k, self.v):
            for i in range(self.n_layers):
                new = torch.zeros(shape, dtype=self.dtype)
                if i < len(store):
                    new[:, :, : self.capacity] = store[i]
                    store[i] = new
                else:
                    store.append(new)
        self.capacity = cap

    def begin(self, blocks: dict[int, int]) -> tuple[list[Segment], torch.Tensor]:
        """Lay out one packed pass: ``blocks`` maps slot -> number of new tokens (in packing order).

        Returns the segments (for :func:`slot_attention`) and the ``position_ids`` ``[1, T]``.
        """
        segments, slot_idx, pos_idx = [], [], []
        q = 0
        for slot, n in blocks.items():
            start = self.lengths[slot]
            segments.append(Segment(slot, start, q, q + n))
            slot_idx += [slot] * n
            pos_idx += range(start, start + n)
            q += n
        self._view = max(self.lengths[s] + n for s, n in blocks.items())
        self._grow(self._view)
        self._slot_idx = torch.tensor(slot_idx, dtype=torch.long)
        self._pos_idx = torch.tensor(pos_idx, dtype=torch.long)
        return segments, self._pos_idx[None].clone()

    def commit(self, blocks: dict[int, int]) -> None:
        """After the pass: the new tokens now count as cached."""
        for slot, n in blocks.items():
            self.lengths[slot] += n

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.k[layer_idx], self.v[layer_idx]
        # key_states [1, kv_heads, T, dim] -> one [kv_heads, dim] entry per packed token
        k[self._slot_idx, :, self._pos_idx] = key_states[0].transpose(0, 1).to(k.dtype)
        v[self._slot_idx, :, self._pos_idx] = value_states[0].transpose(0, 1).to(v.dtype)
        return k[:, :, : self._view], v[:, :, : self._view]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._view

    def load(self, slot: int, kv: list[tuple[torch.Tensor, torch.Tensor]], n: int) -> None:
        """Put ``n`` cached positions (per layer ``[1, heads, n, dim]``, e.g. a shared system prompt) in ``slot``."""
        self._grow(n)
        for layer, (k, v) in enumerate(kv):
            self.k[layer][slot, :, :n] = k[0, :, :n]
            self.v[layer][slot, :, :n] = v[0, :, :n]
        self.lengths[slot] = n
