"""CPU training speed: per-example causal attention for padding-free rows, bf16 frozen base weights.

Both are chosen by the hardware planner for CPU runs (``Plan.attention``, ``Plan.base_weights``) and
recorded in metrics.json; the GPU path (Unsloth / flash-attention) never uses them.

- ``sdpa_segments`` attention: a padding-free batch is one row of several examples whose ``position_ids``
  restart at 0. transformers' sdpa path turns that into a dense block-diagonal mask over the whole row, so
  the CPU kernel computes every example against every other one and throws most of it away (a row of 4
  examples: ~8x the useful work). Here each example runs its own causal attention: two matmuls with fp32
  scores when it is short (:func:`causal_attention`), SDPA's flash kernel with ``is_causal`` when long.
  Everything else (padded batches, generation with a KV cache) goes to plain sdpa.
- bf16 frozen weights: under bf16 autocast every matmul already runs on the bf16-rounded weights, but the
  fp32 frozen weights are re-cast on every forward (autocast caches only leaf tensors that need grad).
  Storing them in bf16 once computes with exactly the same weights and skips those casts and half the
  memory. LoRA A/B, norms and embeddings (the tied output head) stay fp32, so the residual stream and the
  optimizer are fp32 as before. PEFT's fp32 round trip of each LoRA input is skipped too (exact).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import TrainerCallback

SEGMENT_ATTENTION = "sdpa_segments"
# Examples up to this many attention scores (heads x tokens^2; SmolLM2's 9 heads: 384 tokens) take
# :func:`causal_attention`; longer ones SDPA's flash kernel, which never holds the scores.
MAX_SCORES = 9 * 384 * 384


def segment_bounds(position_ids: torch.Tensor) -> list[int] | None:
    """Start offsets of the examples of one flattened row, plus its length: [0, 252, 453, ..., n].

    None unless the positions are those of a padding-free row: 0, 1, 2, ... restarting only at 0. (Left
    padding, as ``generate`` numbers it, starts 1, 1, 0, 1, ...: its mask must be kept.)
    """
    pos = position_ids.reshape(-1)
    restart = pos[1:] == 0
    if int(pos[0]) != 0 or not bool(((pos[1:] == pos[:-1] + 1) | restart).all()):
        return None
    return [0, *(torch.nonzero(restart).flatten() + 1).tolist(), pos.numel()]


def sdpa_segments_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    position_ids: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers attention interface: causal attention per example of a padding-free row, else plain sdpa.

    Shapes follow the interface: query (B, H, N, D) in, (B, N, H, D) out.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    n = query.shape[2]
    # Only a single flattened row without a cache (q and kv the same tokens) is a padding-free batch; its mask
    # is exactly "causal within each example", which is what the per-example calls compute. Attention with
    # more to it (a sliding window, logit soft-capping, sinks) keeps sdpa and the mask that encodes it.
    extra = any(kwargs.get(k) is not None for k in ("sliding_window", "softcap", "s_aux"))
    if position_ids is None or query.shape[0] != 1 or key.shape[2] != n or n < 2 or extra:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    bounds = segment_bounds(position_ids)
    if bounds is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    parts = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        q, k, v = query[:, :, a:b], key[:, :, a:b], value[:, :, a:b]
        if dropout == 0.0 and query.shape[1] * (b - a) ** 2 <= MAX_SCORES:
            parts.append(causal_attention(q, k, v, scale))
        else:
            parts.append(sdpa_attention_forward(module, q, k, v, None, dropout, scaling, is_causal=True, **kwargs)[0])
    return (parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)), None


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal attention of one short example as two matmuls: fp32 scores and softmax, then P @ V in the
    compute dtype. (B, H, L, D) in, (B, L, H, D) out.

    On a CPU, for a few hundred tokens this is faster than SDPA's flash kernel (whose blocking pays off only
    for long rows) and more precise under bf16 autocast (the flash kernel takes q and k in bf16; here the
    scores come from the fp32 q and k that RoPE produces). It holds the (H, L, L) scores for backward, hence
    :data:`MAX_SCORES`.
    """
    from train.head_loss import compute_dtype

    rep = q.shape[1] // k.shape[1]  # grouped-query attention: each k/v head serves `rep` query heads
    if rep > 1:
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    dtype = compute_dtype(v)
    b, h, n, d = q.shape
    with torch.autocast(q.device.type, enabled=False):
        # one op for scale, scores and causal mask (an additive -inf above the diagonal): no extra passes
        future = torch.full((n, n), float("-inf"), device=q.device).triu(1).expand(b * h, n, n)
        scores = torch.baddbmm(
            future, q.float().reshape(b * h, n, d), k.float().reshape(b * h, n, d).transpose(1, 2), alpha=scale
        )
        probs = scores.softmax(dim=-1).to(dtype)
        out = torch.bmm(probs, v.to(dtype).reshape(b * h, n, d)).view(b, h, n, d)
    return out.transpose(1, 2)


def register_segment_attention() -> str:
    """Make ``attn_implementation="sdpa_segments"`` known to transformers (idempotent); returns the name.

    Its mask builder is sdpa's, so padded batches and generation get the same masks as with ``sdpa``.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(SEGMENT_ATTENTION, sdpa_segments_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(SEGMENT_ATTENTION, sdpa_mask)
    return SEGMENT_ATTENTION


def frozen_linears(model: torch.nn.Module) -> list[torch.nn.Linear]:
    """Plain ``nn.Linear`` layers with a frozen weight, except the output head (tied to the embeddings)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_weight = getattr(head, "weight", None)
    return [
        m for m in model.modules()
        if type(m) is torch.nn.Linear  # not LoRA wrappers, not bitsandbytes' 4-bit layers
        and not m.weight.requires_grad
        and m.weight is not head_weight
    ]


def cast_frozen_weights(model: torch.nn.Module, dtype: torch.dtype) -> list[torch.nn.Linear]:
    """Store the frozen linear weights (and biases) in ``dtype``; returns the layers changed.

    Call it after the LoRA wrap (so the trainable A/B are known) and train under autocast of the same dtype;
    ``restore_weights`` undoes it for fp32 inference without autocast.
    """
    layers = [m for m in frozen_linears(model) if m.weight.dtype != dtype]
    for layer in layers:
        layer.to(dtype)
    return layers


def restore_weights(layers: list[torch.nn.Linear], dtype: torch.dtype = torch.float32) -> None:
    """Back to ``dtype`` (the bf16-rounded values, which are the weights training computed with)."""
    for layer in layers:
        layer.to(dtype)


def attention_for(plan_attention: str, batching: str, configured: str | None) -> str | None:
    """The ``attn_implementation`` to load the model with: the config's when it names one, else the plan's
    per-example attention where rows are flattened (padding-free or packed), else None (the default)."""
    if configured:
        return configured
    if plan_attention == SEGMENT_ATTENTION and batching in ("padding_free", "packing"):
        return register_segment_attention()
    return None


class FrozenWeightsDtype(TrainerCallback):
    """Trainer callback: frozen linear weights in ``dtype`` during ``train()``, back to fp32 after it.

    Also stops PEFT from casting each LoRA layer's input to the fp32 of its A/B weights during ``train()``:
    under autocast the matmul casts it straight back to ``dtype``, so the round trip (two copies forward,
    two backward, per layer) changes no number. Evaluation before and after training, sample generation and
    fp32 inference then see the usual fp32 model (holding the bf16-rounded values training used).
    """

    def __init__(self, dtype: torch.dtype = torch.bfloat16) -> None:
        self.dtype = dtype
        self.layers: list[torch.nn.Linear] = []
        self.lora_layers: list[Any] = []
        self.cast_layers = 0  # how many layers trained in ``dtype`` (for metrics.json)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.layers = cast_frozen_weights(model, self.dtype)
        self.cast_layers = max(self.cast_layers, len(self.layers))
        self.lora_layers = [m for m in model.modules() if getattr(m, "cast_input_dtype_enabled", False)]
        for layer in self.lora_layers:
            layer.cast_input_dtype_enabled = False

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        restore_weights(self.layers)
        for layer in self.lora_layers:
            layer.cast_input_dtype_enabled = True
        self.layers, self.lora_layers = [], []
