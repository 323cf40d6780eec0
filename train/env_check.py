"""What this machine will train with: device, precision, backend, attention kernel and package versions.

    python -m train.env_check          # or: ./quick_start.sh check

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


def main() -> int:
    from train.backend import choose

    info = choose("auto")  # imports torch only
    lines = device_lines() + [f"backend: {info.name} ({info.reason})"]
    problem = torchvision_problem()
    lines.append(attention_line(info.name) if problem is None else "attention: not checked (see problem)")
    lines += [f"{name}: {installed(name) or 'not installed'}" for name in PACKAGES]
    if problem:
        lines.append(f"problem: {problem}")
    print("\n".join(lines))
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
