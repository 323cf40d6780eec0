"""Dependency log lines that mean nothing to our users, dropped at the logger that emits them.

Each entry names one logger and a fragment of each message to drop (a fragment, not the start: TRL prefixes
its lines with "[RANK n] "); everything else those loggers say still shows.
Entry points (the train scripts, eval, deploy) call :func:`quiet_dependency_noise` once at start.
"""

from __future__ import annotations

import logging

KNOWN_NOISE: dict[str, tuple[str, ...]] = {
    # bitsandbytes on AVX512-BF16 CPUs tries to fetch an inference kernel from the Hugging Face Hub through
    # the optional `kernels` package. We train 4-bit layers in their trainable layout (train.backend) and
    # never download at run time, so its absence changes nothing.
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward from kernels-community",),
    # TRL says padding-free / packing need flash-attention. With transformers >= 5, sdpa/eager build a
    # block-diagonal causal mask from the reset position_ids, so sequences stay isolated
    # (tests/test_train_packing.py checks packed loss == unpacked loss).
    "trl.trainer.sft_trainer": (
        "Padding-free training is enabled, but the attention implementation",
        "You are using packing, but the attention implementation",
    ),
}


class _DropKnown(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(fragment in msg for fragment in self.fragments)


def drop_known_log_lines() -> None:
    """Install the :data:`KNOWN_NOISE` filters (idempotent; works before the dependency is imported)."""
    for name, fragments in KNOWN_NOISE.items():
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropKnown) for f in log.filters):
            log.addFilter(_DropKnown(fragments))


def quiet_dependency_noise() -> None:
    """:func:`drop_known_log_lines`, and in a log (stderr is no terminal) progress bars that do not flood
    it: transformers' per-file "Loading weights" bars off, tqdm redrawn at most every 30 s."""
    import os
    import sys

    if not sys.stderr.isatty():
        # Read by transformers when it is imported; never import it here (Unsloth must come first).
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_MININTERVAL", "30")  # read by tqdm at import: a redraw per 30 s at most
        hf_logging = sys.modules.get("transformers.utils.logging")
        if hf_logging is not None:
            hf_logging.disable_progress_bar()
    drop_known_log_lines()
