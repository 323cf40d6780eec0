"""Trainer callbacks: Ctrl-C saves a checkpoint before stopping; token counters live in checkpoints."""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from train.metrics import COUNTERS_FILE, Counters


class GracefulInterrupt(TrainerCallback):
    """The first Ctrl-C (SIGINT) or SIGTERM finishes the current step, saves a checkpoint and stops training.

    A second Ctrl-C interrupts at once. Handlers are installed in ``on_train_begin`` and restored at the end.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nInterrupted: saving a checkpoint after this step (Ctrl-C again to quit at once)", flush=True)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no handler
                self._previous[sig] = signal.signal(sig, self._handle)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class CountersCheckpoint(TrainerCallback):
    """Times training steps only (not evals or saves) into :class:`Counters`, which our trainers' ``save_model``
    (``RecipeTrainer``, the preference stages') writes into every checkpoint folder."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self._t0: float | None = None

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t0 = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._t0 is not None:
            self.counters.train_seconds += time.perf_counter() - self._t0
            self._t0 = None

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Fallback for a trainer whose ``save_model`` does not write the counters (they would come after
        trainer_state.json here, so a kill in between restarts them at 0)."""
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir() and not (folder / COUNTERS_FILE).is_file():
            self.counters.save(folder)
