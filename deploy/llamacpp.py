"""Loading GGUF files in llama-cpp-python: one loader for the parity gate, chat and the eval policy."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LLAMA_CPP_HINT = (
    "pip install 'llama-cpp-python==0.3.36' (or pip install -e '.[llamacpp]'); it compiles llama.cpp "
    "once, about 20 minutes on a laptop CPU, and pip caches the wheel"
)


def llama_cpp_available() -> tuple[bool, str]:
    try:
        import llama_cpp  # noqa: F401
    except Exception as exc:  # ImportError, or a broken shared library
        return (
            False,
            f"llama-cpp-python is not importable ({exc.__class__.__name__}: {exc}); {LLAMA_CPP_HINT}",
        )
    return True, ""


@contextlib.contextmanager
def _no_repack() -> Iterator[None]:
    """Load without llama.cpp's extra (repacking/AMX) buffer types.

    On CPUs with AMX, llama.cpp 0.3.36's repacked kernels crash (q8_0 on very small matrices, and the
    packaged SmolLM2 Q4_1 file); the plain CPU kernels compute the same numbers, so every loader uses them.
    """
    import llama_cpp.llama as ll

    original = ll.llama_cpp.llama_model_default_params

    def params() -> Any:
        p = original()
        p.use_extra_bufts = False
        return p

    ll.llama_cpp.llama_model_default_params = params
    try:
        yield
    finally:
        ll.llama_cpp.llama_model_default_params = original


def load_llama(
    path: str | Path,
    n_ctx: int = 512,
    logits_all: bool = True,
    lora_path: Path | None = None,
    n_batch: int | None = None,
    n_threads: int | None = None,
) -> Any:
    """A llama_cpp.Llama for ``path`` (plus a LoRA GGUF); ``n_ctx=0`` takes the model's training context."""
    from llama_cpp import Llama

    threads = n_threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or max(1, (os.cpu_count() or 2) // 2)
    with _no_repack():
        return Llama(
            str(path),
            n_ctx=n_ctx,
            n_batch=n_batch or n_ctx or 512,
            logits_all=logits_all,
            verbose=False,
            n_threads=threads,
            n_threads_batch=threads,
            lora_path=str(lora_path) if lora_path else None,
        )
