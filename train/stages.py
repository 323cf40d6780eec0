"""The training stage of a run (``run.stage``, ``--stage``) and the TRL config and trainer each one uses.

- ``sft``: supervised fine-tuning on chats, loss on assistant tokens (:class:`train.sft_trainer.RecipeTrainer`);
- ``pt``: continued pretraining on plain text rows, loss on every token, packed to ``max_seq_length``
  (the same trainer over ``input_ids`` = ``labels``);
- ``dpo`` / ``orpo`` / ``kto``: preference training with TRL's ``DPOTrainer``, ``ORPOTrainer``
  (``trl.experimental.orpo`` in TRL 1.x) and ``KTOTrainer`` on prompt/chosen/rejected pairs (KTO: unpaired
  prompt/completion/label rows), counting tokens like the SFT trainer.

The ``sft`` section of a config holds fields of the stage's TRL config (SFTConfig, DPOConfig, ORPOConfig or
KTOConfig); :func:`config_class` is what they are checked against. The stage names need no TRL, the classes do
(import them only after :func:`train.backend.activate`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

from data_prep.formats import STAGES  # one list of stages for data_prep and training
from train.config import ConfigError

PREFERENCE_STAGES = ("dpo", "orpo", "kto")
PAIRED_STAGES = ("dpo", "orpo")  # rows with chosen and rejected; kto takes unpaired rows (and unpairs pairs)


def check_stage(stage: str, origin: str = "run.stage") -> str:
    if stage not in STAGES:
        raise ConfigError(f"{origin}: stage must be one of {', '.join(STAGES)}, not '{stage}'")
    return stage


def is_preference(stage: str) -> bool:
    return stage in PREFERENCE_STAGES


def config_class(stage: str) -> type:
    """The TRL config dataclass of ``stage`` (imports TRL)."""
    check_stage(stage)
    if stage in ("sft", "pt"):
        from trl import SFTConfig

        return SFTConfig
    if stage == "dpo":
        from trl import DPOConfig

        return DPOConfig
    if stage == "kto":
        from trl import KTOConfig

        return KTOConfig
    _quiet_experimental()
    from trl.experimental.orpo import ORPOConfig

    return ORPOConfig


def trainer_class(stage: str) -> type:
    """TRL's trainer for a preference stage, subclassed to count trained tokens (imports TRL)."""
    if stage == "dpo":
        from trl import DPOTrainer as base
    elif stage == "kto":
        from trl import KTOTrainer as base
    elif stage == "orpo":
        _quiet_experimental()
        from trl.experimental.orpo import ORPOTrainer as base
    else:
        raise ConfigError(f"run.stage: '{stage}' is not a preference stage ({', '.join(PREFERENCE_STAGES)})")
    return _counting(base)


def _quiet_experimental() -> None:
    """ORPO lives in ``trl.experimental`` in TRL 1.x, which warns on every import; the docs say so once."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def field_names(stage: str) -> set[str]:
    return {f.name for f in dataclasses.fields(config_class(stage))}


def build_preference_config(stage: str, base: dict[str, Any], explicit: dict[str, Any], seq_len: int) -> Any:
    """The stage's TRL config: our defaults ``base`` (those fields the config has) < ``explicit`` (the ``sft``
    section, already checked against the config's fields)."""
    names = field_names(stage)
    merged = {k: v for k, v in base.items() if k in names}
    # Padded batches: TRL's preference collators concatenate chosen and rejected; DPO's padding-free path is
    # switched off in TRL 1.x. Rows longer than the planned sequence length are cut by the collator.
    merged.update({k: v for k, v in (("padding_free", False), ("max_length", seq_len)) if k in names})
    if stage == "orpo":
        merged["remove_unused_columns"] = False  # its collator needs the tokenized columns ORPO adds
    merged.update(explicit)
    return config_class(stage)(**merged)


def _counting(base: type) -> type:
    """``base`` with a ``counters`` attribute that sums trained and completion tokens per training batch."""

    class CountingTrainer(base):  # type: ignore[misc, valid-type]
        counters: Any = None

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            if model.training and self.counters is not None:
                tokens, supervised = batch_tokens(inputs)
                self.counters.tokens += tokens
                self.counters.supervised += supervised
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

        def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
            super().save_model(output_dir, _internal_call)
            if _internal_call and output_dir and self.counters is not None and self.is_world_process_zero():
                self.counters.save(Path(output_dir))  # before trainer_state.json: see RecipeTrainer.save_model

        def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
            super()._save(output_dir, state_dict)
            # PEFT writes the frozen "ref" adapter to a ref/ subfolder; transformers' resume, seeing a subfolder,
            # would load only the subfolders and leave the trained adapter at its start weights. The reference
            # is rebuilt from model.init_adapter on resume, so checkpoints (and the adapter) keep "default" only.
            ref = Path(output_dir or self.args.output_dir) / "ref"
            if ref.is_dir() and (ref / "adapter_config.json").is_file():
                shutil.rmtree(ref)

    CountingTrainer.__name__ = CountingTrainer.__qualname__ = f"Recipe{base.__name__}"
    return CountingTrainer


def batch_tokens(inputs: dict[str, Any]) -> tuple[int, int]:
    """(tokens fed to the model, completion tokens the loss is on) of a preference batch.

    DPO and KTO batches carry ``attention_mask`` + ``completion_mask`` (KTO's mismatched ``KL_`` sequences are
    forward-only, so not counted); ORPO's carry ``chosen_``/``rejected_`` attention masks and labels.
    """
    tokens = supervised = 0
    for key, value in inputs.items():
        if key.startswith("KL_") or key.startswith("prompt_") or not hasattr(value, "sum"):
            continue
        if key.endswith("attention_mask"):
            tokens += int(value.sum())
        elif key.endswith("completion_mask"):
            supervised += int(value.sum())
        elif key.endswith("labels"):
            supervised += int((value != -100).sum())
    return tokens, supervised
