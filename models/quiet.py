"""Dependency log lines that mean nothing to our users, dropped at the logger that emits them.

Each entry names one logger and the start of one message; everything else those loggers say still shows.
Entry points (the train scripts, eval, deploy) call :func:`quiet_dependency_noise` once at start.
"""

from __future__ import annotations

import logging

KNOWN_NOISE: dict[str, tuple[str, ...]] = {
    # bitsandbytes on AVX512-BF16 CPUs tries to fetch an inference kernel from the Hugging Face Hub through
    # the optional `kernels` package. We train 4-bit layers in their trainable layout (train.backend) and
    # never download at run time, so its absence changes nothing.
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward from kernels-community",),
}


class _DropKnown(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def quiet_dependency_noise() -> None:
    """Install the filters (idempotent; works before the dependency is imported). In a log (stderr is no
    terminal), transformers' per-file "Loading weights" bars are turned off: they only flood the log."""
    import os
    import sys

    if not sys.stderr.isatty():
        # Read by transformers when it is imported; never import it here (Unsloth must come first).
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_MININTERVAL", "30")  # read by tqdm at import: a redraw per 30 s at most
        hf_logging = sys.modules.get("transformers.utils.logging")
        if hf_logging is not None:
            hf_logging.disable_progress_bar()
    for name, prefixes in KNOWN_NOISE.items():
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropKnown) for f in log.filters):
            log.addFilter(_DropKnown(prefixes))
