"""``RecipeTrainer``: TRL's ``SFTTrainer`` (Unsloth's patched one when Unsloth was imported first) that counts
trained and supervised tokens and refuses a batch whose labels are all masked; with ``fused_head`` (the CPU
plan's ``head_loss: fused``) its output-head loss is :mod:`train.head_loss` instead of TRL's chunked one.

Import it only after :func:`train.backend.activate` (it imports TRL).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trl import SFTTrainer

from models.quiet import drop_known_log_lines
from train.data import IGNORE_INDEX
from train.metrics import Counters


class AllMaskedBatchError(RuntimeError):
    """A training batch had no supervised token."""


class RecipeTrainer(SFTTrainer):
    """SFTTrainer that counts trained/supervised tokens and refuses batches whose labels are all masked."""

    def __init__(self, *args: Any, counters: Counters, fused_head: bool = False, **kwargs: Any) -> None:
        self.counters = counters
        drop_known_log_lines()
        super().__init__(*args, **kwargs)
        loss_type = str(getattr(self.args, "loss_type", "nll"))
        self.head_loss = "trl chunked_nll" if loss_type == "chunked_nll" else loss_type  # what runs (metrics.json)
        if fused_head:
            self.head_loss = _fused_head(self.model, loss_type)

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

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Weights, then (in a checkpoint) the counters: both land before trainer_state.json, the Trainer's
        last write, so a checkpoint that resume takes as complete always has them. ``on_save`` would come
        after it: a SIGKILL in between left a complete-looking checkpoint whose counters restarted at 0."""
        super().save_model(output_dir, _internal_call)
        if _internal_call and output_dir and self.is_world_process_zero():
            self.counters.save(Path(output_dir))


def _fused_head(model: Any, loss_type: str) -> str:
    """Swap TRL's chunked head loss for ours where it covers the model; returns what runs (for metrics.json)."""
    from train import head_loss

    if loss_type != "chunked_nll":  # another loss was asked for (nll, dft): keep it
        return str(loss_type)
    why = head_loss.supported(model)
    if why is not None:
        return f"trl chunked_nll ({why})"
    head_loss.install(model)
    return "fused"
