"""Output head + cross entropy in one pass for a frozen head: the gradient is made in the forward.

TRL's ``chunked_nll`` (its default) already runs the head only on supervised tokens, but in chunks of 256
rounded up (a 260-token batch computes 512 rows), each chunk under activation checkpointing (the head
matmul and softmax run twice), plus an entropy and an argmax per chunk. On a CPU this is about a sixth of a
LoRA step of SmolLM2-135M. With a frozen head (LoRA never trains it) the only gradient needed is the one
for the hidden states, ``(softmax - onehot) @ W``, which this computes chunk by chunk in the forward while
the logits are at hand; backward only scales it. Same loss, same gradient, same logged metrics (token
accuracy, entropy); memory stays one chunk of logits.

:func:`install` puts it in place of TRL's patched forward on the models it covers (:func:`supported`).
"""

from __future__ import annotations

import inspect
import types
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

IGNORE_INDEX = -100
CHUNK_ROWS = 128  # rows of logits at once: 128 x 49152 fp32 = 25 MB, under glibc's 32 MB mmap ceiling (reused)


@dataclass
class HeadLossOutput(CausalLMOutputWithPast):
    """The output fields TRL's SFTTrainer logs from its own chunked forward (token accuracy, entropy)."""

    num_correct_tokens: torch.Tensor | None = None
    entropy_sum: torch.Tensor | None = None
    num_valid_tokens: torch.Tensor | None = None


def _chunk_stats(h: torch.Tensor, w: torch.Tensor, lbl: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(loss sum, correct, entropy sum, d loss / d h) of one chunk of supervised rows."""
    log_p = (h @ w.t()).float()
    correct = (log_p.argmax(dim=-1) == lbl).sum()
    log_p -= torch.logsumexp(log_p, dim=-1, keepdim=True)  # in place: one chunk of logits in memory, not three
    p = log_p.exp()
    entropy = -torch.dot(p.view(-1), log_p.view(-1))
    loss = -log_p.gather(1, lbl[:, None]).sum()
    p[torch.arange(lbl.numel(), device=p.device), lbl] -= 1.0  # softmax - onehot: d(summed loss)/d logits
    return loss, correct, entropy, p.to(w.dtype) @ w


class _FrozenHeadCE(torch.autograd.Function):
    """Summed next-token loss of supervised rows ``h`` (n, H) under a frozen head ``w`` (V, H)."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor, w: torch.Tensor, lbl: torch.Tensor) -> tuple[torch.Tensor, ...]:
        loss, correct, entropy = (h.new_zeros((), dtype=torch.float32) for _ in range(3))
        grad = torch.empty(h.shape, dtype=torch.float32, device=h.device)
        for a in range(0, h.shape[0], CHUNK_ROWS):
            c_loss, c_correct, c_entropy, c_grad = _chunk_stats(h[a : a + CHUNK_ROWS], w, lbl[a : a + CHUNK_ROWS])
            loss += c_loss
            correct += c_correct
            entropy += c_entropy
            grad[a : a + CHUNK_ROWS] = c_grad
        ctx.save_for_backward(grad)
        ctx.h_dtype = h.dtype
        ctx.mark_non_differentiable(correct, entropy)
        return loss, correct, entropy

    @staticmethod
    def backward(ctx: Any, g_loss: torch.Tensor, *_: Any) -> tuple[torch.Tensor | None, None, None]:
        (grad,) = ctx.saved_tensors
        return (grad * g_loss).to(ctx.h_dtype), None, None


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype a matmul on ``t`` runs in right now (autocast's, when it is on for that device)."""
    if torch.is_autocast_enabled(t.device.type):
        return torch.get_autocast_dtype(t.device.type)
    return t.dtype


_CAST: dict[str, Any] = {}  # the frozen head in the compute dtype, made once (a 28M-weight cast per step)


def _weight_as(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``weight.to(dtype)``, cached while it is the same tensor, unchanged (storage and version counter)."""
    if weight.dtype == dtype:
        return weight
    key = (weight.data_ptr(), weight._version, dtype)
    ref = _CAST.get("ref")
    if ref is None or ref() is not weight or _CAST.get("key") != key:  # a new model may reuse the address
        _CAST.update(ref=weakref.ref(weight), key=key, value=weight.detach().to(dtype))
    return _CAST["value"]


def head_loss(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, num_items_in_batch: Any = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, correct, entropy sum, n supervised) for hidden states (B, S, H) and unshifted labels (B, S)."""
    h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    lbl = labels[:, 1:].reshape(-1)
    keep = lbl != IGNORE_INDEX
    n_valid = keep.sum()
    dtype = compute_dtype(hidden)
    with torch.autocast(hidden.device.type, enabled=False):
        loss, correct, entropy = _FrozenHeadCE.apply(h[keep].to(dtype), _weight_as(weight, dtype), lbl[keep])
    if num_items_in_batch is None:
        loss = loss / n_valid.clamp(min=1)
    else:  # summed over the accumulated micro-batches, as the Trainer counts them
        loss = loss / torch.as_tensor(num_items_in_batch, device=loss.device)
    return loss, correct, entropy, n_valid


def supported(model: Any) -> str | None:
    """None when :func:`install` covers ``model`` (a causal LM or its PEFT wrap), else why not."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = target.get_output_embeddings() if hasattr(target, "get_output_embeddings") else None
    config = target.config.get_text_config()
    if type(head) is not torch.nn.Linear:
        return "the output head is not a plain Linear layer (a LoRA-wrapped or quantized head)"
    if head.weight.requires_grad or head.bias is not None:
        return "the output head trains or has a bias"
    for attr in ("final_logit_softcapping", "logit_scale", "output_multiplier", "output_router_logits"):
        if getattr(config, attr, None) not in (None, 1.0, False):
            return f"the model sets {attr}"
    if not hasattr(target, "base_model") or target.base_model is target:
        return "no separate decoder to call"
    return None


def install(model: Any) -> bool:
    """Make the causal LM's forward use :func:`head_loss` when labels are given; False when not supported."""
    if supported(model) is not None:
        return False
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    plain_forward = type(target).forward.__get__(target)  # the class's own, under any earlier patch

    def forward(
        self: Any, input_ids: Any = None, attention_mask: Any = None, labels: Any = None,
        num_items_in_batch: Any = None, **kwargs: Any,
    ) -> Any:
        if labels is None or kwargs.get("shift_labels") is not None:
            return plain_forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        kwargs.pop("use_cache", None)
        out = self.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)
        loss, correct, entropy, n_valid = head_loss(
            out.last_hidden_state, self.get_output_embeddings().weight, labels, num_items_in_batch
        )
        return HeadLossOutput(
            loss=loss, logits=None, num_correct_tokens=correct, entropy_sum=entropy, num_valid_tokens=n_valid
        )

    forward.__signature__ = inspect.signature(type(target).forward)  # type: ignore[attr-defined]
    target.forward = types.MethodType(forward, target)
    return True
