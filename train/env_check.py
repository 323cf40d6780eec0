"""What this machine will train with, and what is missing: ``./quick_start.sh doctor``.

    python -m train.env_check          # or: ./quick_start.sh doctor (alias: check)

Python, the torch build, the device (GPU name, VRAM, bf16; T4: fp16 only), free disk and RAM, the backend,
the attention kernel, whether unsloth / bitsandbytes / llama-cpp-python import (each in its own process),
whether ``ollama`` is on PATH, and every version. Each missing piece gets one ``fix:`` line.

Reads versions from package metadata. With an NVIDIA GPU and unsloth installed it imports unsloth, as a
training run would, to report the attention kernel Unsloth settled on (FlashAttention-2, xformers, or
PyTorch's SDPA when xformers cannot load); that is also the ``attention`` field of ``metrics.json``.
Exit code 1 when something would break a run (a torch/torchvision pair Unsloth refuses), else 0.
"""

from __future__ import annotations

import sys

from train.install_plan import TORCHVISION_OFFSET, installed, minor_version

PACKAGES = ("torch", "torchvision", "transformers", "trl", "peft", "datasets", "accelerate", "bitsandbytes",
            "unsloth", "unsloth_zoo", "xformers", "llama_cpp_python", "gguf")


def device_lines() -> list[str]:
    import torch

    from train.planner import cpu_has_bf16_units, gpu_has_native_bf16

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        cap = torch.cuda.get_device_capability(0)
        prec = "bf16" if gpu_has_native_bf16() else "fp16 (no native bf16)"
        return [f"device: {props.name}, compute capability {cap[0]}.{cap[1]}, {props.total_memory / 1024**3:.1f} GB",
                f"precision: {prec}"]
    prec = "bf16 autocast (AMX / AVX512-BF16)" if cpu_has_bf16_units() else "fp32"
    return [f"device: cpu, {torch.get_num_threads()} torch threads", f"precision: {prec}"]


def torchvision_problem() -> str | None:
    """Unsloth refuses to import beside a torchvision built for another torch."""
    torch_v, vision_v = installed("torch"), installed("torchvision")
    if not torch_v or not vision_v:
        return None
    (tmaj, tmin), (vmaj, vmin) = minor_version(torch_v), minor_version(vision_v)
    if (vmaj, vmin) != (tmaj - 2, tmin + TORCHVISION_OFFSET):
        return (f"torchvision {vision_v} was built for another torch than {torch_v}: "
                f"pip install 'torchvision=={tmaj - 2}.{tmin + TORCHVISION_OFFSET}.*'")
    return None


def attention_line(backend: str) -> str:
    from train.backend import activate, attention_backend, choose

    if backend != "unsloth":
        return "attention: sdpa (transformers)"
    activate(choose("unsloth"))
    return f"attention: {attention_backend('unsloth')} (as Unsloth decided at import)"


IMPORTS = {  # module -> how to get it
    "unsloth": "GPU only: pip install -e '.[gpu]' (CPU tests: ./quick_start.sh setup installs it --no-deps)",
    "bitsandbytes": "pip install bitsandbytes==0.50.2 (QLoRA / 4-bit)",
    "llama_cpp": "pip install -e '.[llamacpp]' (compiles 8-17 min once; GGUF parity gate, K-quants, chat)",
}


def imports_ok(module: str) -> bool:
    """Whether ``module`` imports, in a fresh process (unsloth patches whatever process imports it)."""
    import subprocess

    r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, timeout=300)
    return r.returncode == 0


def machine_lines() -> list[str]:
    import platform
    import shutil

    import psutil
    import torch

    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU"
    free_disk = shutil.disk_usage(".").free / 1024**3
    ram = psutil.virtual_memory()
    return [f"python: {platform.python_version()}", f"torch build: {torch.__version__} ({build})",
            f"disk free: {free_disk:.1f} GB", f"ram: {ram.available / 1024**3:.1f} GB free of {ram.total / 1024**3:.1f} GB"]


def tool_lines() -> tuple[list[str], list[str]]:
    """(status lines, fix lines) for the optional imports and ollama."""
    import shutil

    lines, fixes = [], []
    for module, fix in IMPORTS.items():
        ok = imports_ok(module)
        lines.append(f"import {module}: {'ok' if ok else 'missing'}")
        if not ok:
            fixes.append(f"fix: {module}: {fix}")
    ollama = shutil.which("ollama")
    lines.append(f"ollama: {ollama or 'not on PATH'}")
    if not ollama:
        fixes.append("fix: ollama: https://ollama.com/download (export works without it; `ollama create` is skipped)")
    return lines, fixes


def main() -> int:
    from train.backend import choose

    info = choose("auto")  # imports torch only
    tools, fixes = tool_lines()
    lines = machine_lines() + device_lines() + [f"backend: {info.name} ({info.reason})"] + tools
    problem = torchvision_problem()
    lines.append(attention_line(info.name) if problem is None else "attention: not checked (see problem)")
    lines += [f"{name}: {installed(name) or 'not installed'}" for name in PACKAGES]
    if problem:
        lines.append(f"problem: {problem}")
    print("\n".join(lines + fixes))
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
