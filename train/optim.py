"""LoRA+: the B matrices learn ``ratio`` times faster than the A matrices (Hayou et al., 2024).

Built on ``peft.optimizers.create_loraplus_optimizer``, which sorts the trainable parameters into groups
(A, B, embedding, no-decay) with their own learning rates; the optimizer is AdamW with the run's settings.
"""

from __future__ import annotations

from typing import Any


def loraplus_optimizer(model: Any, args: Any, ratio: float) -> Any:
    """An AdamW optimizer whose LoRA B parameters use ``ratio * args.learning_rate``."""
    import torch
    from peft.optimizers import create_loraplus_optimizer

    if ratio < 1:
        raise ValueError(f"lora.loraplus_lr_ratio must be >= 1 (B learns faster than A), got {ratio}")
    return create_loraplus_optimizer(
        model,
        torch.optim.AdamW,
        lr=args.learning_rate,
        loraplus_lr_ratio=ratio,
        weight_decay=args.weight_decay,
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_epsilon,
    )
