"""``RecipeTrainer``: TRL's ``SFTTrainer`` (Unsloth's patched one when Unsloth was imported first) that counts
trained and supervised tokens and refuses a batch whose labels are all masked.

Import it only after :func:`train.backend.activate` (it imports TRL).
"""

from __future__ import annotations

from typing import Any

from trl import SFTTrainer

from models.quiet import drop_known_log_lines
from train.data import IGNORE_INDEX
from train.metrics import Counters


class AllMaskedBatchError(RuntimeError):
    """A training batch had no supervised token."""


class RecipeTrainer(SFTTrainer):
    """SFTTrainer that counts trained/supervised tokens and refuses batches whose labels are all masked."""

    def __init__(self, *args: Any, counters: Counters, **kwargs: Any) -> None:
        self.counters = counters
        drop_known_log_lines()
        super().__init__(*args, **kwargs)

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if model.training:
            labels = inputs["labels"]
            supervised = int((labels[..., 1:] != IGNORE_INDEX).sum())
            if supervised == 0:
                raise AllMaskedBatchError(
                    f"step {self.state.global_step}: every label of this batch is masked (-100), so it "
                    "trains nothing; check the data's assistant turns and max_seq_length"
                )
            if "attention_mask" in inputs:
                tokens = int(inputs["attention_mask"].sum())
            else:  # padding-free: one flattened row
                tokens = int(inputs["input_ids"].numel())
            self.counters.tokens += tokens
            self.counters.supervised += supervised
        return super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
