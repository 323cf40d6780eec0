"""What ``quick_start.sh setup`` installs beside our package: torch, torchvision and xformers that match.

    python -m train.install_plan [--colab] [--gpu]     # prints one pip requirement per line

Run by the setup script before it installs anything else; reads installed versions from package metadata,
so it never imports torch. The rules, and why:

- **torch.** Ours is ``2.13.0`` (the CPU wheel without a GPU, the CUDA build with one). On Colab, the
  notebook's own torch is kept when it lies in our range: replacing it next to Colab's torchvision gives a
  pair that Unsloth refuses at import (``ImportError`` on a torch/torchvision mismatch).
- **torchvision** (Unsloth imports it): installed only with a GPU, always the release paired with the torch
  that stays, so pip never has to pick a pair itself.
- **xformers** (Unsloth's attention on GPUs without FlashAttention-2, e.g. the T4): each wheel is built
  against one torch, and a mismatched build fails to load, after which Unsloth silently uses PyTorch's
  attention. So it is pinned by torch release, installed without dependencies (it must never pull in
  another torch), and skipped where no build matches. ``metrics.json`` records the attention that ran.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata

TORCH = "2.13.0"
TORCH_RANGE = ((2, 4), (2, 15))  # pyproject: torch>=2.4,<2.15 (Unsloth 2026.10.9 accepts the same)
# torch minor -> torchvision minor: torchvision 0.(minor + 15) pairs with torch 2.minor since torch 2.x.
TORCHVISION_OFFSET = 15
# torch (major, minor) -> the xformers build for it (PyPI metadata: 0.0.33.post1 needs torch==2.9.0,
# 0.0.34 torch==2.10.0, 0.0.35 torch>=2.10, built on torch's stable ABI).
XFORMERS = {(2, 9): "xformers==0.0.33.post1", **{(2, m): "xformers==0.0.35" for m in range(10, 15)}}


def minor_version(version: str) -> tuple[int, int]:
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int(minor)


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def plan(torch_installed: str | None, *, colab: bool, gpu: bool) -> list[str]:
    """pip requirements, in install order; xformers last (installed with ``--no-deps`` by the caller)."""
    keep = colab and torch_installed is not None and TORCH_RANGE[0] <= minor_version(torch_installed) < TORCH_RANGE[1]
    torch_version = torch_installed.split("+")[0] if keep and torch_installed else TORCH
    reqs = [] if keep else [f"torch=={TORCH}"]
    if gpu:
        major, minor = minor_version(torch_version)
        reqs.append(f"torchvision=={major - 2}.{minor + TORCHVISION_OFFSET}.*")
        if (major, minor) in XFORMERS:
            reqs.append(XFORMERS[(major, minor)])
    return reqs


def explain(torch_installed: str | None, reqs: list[str], *, gpu: bool) -> str:
    kept = not any(r.startswith("torch==") for r in reqs)
    parts = [f"keeping the notebook's torch {torch_installed}" if kept else f"torch {TORCH}"]
    if gpu and not any(r.startswith("xformers") for r in reqs):
        parts.append("no xformers build matches this torch: Unsloth will use PyTorch attention")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="torch / torchvision / xformers for this machine")
    ap.add_argument("--colab", action="store_true", help="installing into the notebook's own Python")
    ap.add_argument("--gpu", action="store_true", help="an NVIDIA GPU is present")
    ap.add_argument("--torch", default=None, help="pretend this torch is installed (default: read it)")
    args = ap.parse_args(argv)
    current = args.torch if args.torch is not None else installed("torch")
    reqs = plan(current, colab=args.colab, gpu=args.gpu)
    print(explain(current, reqs, gpu=args.gpu), file=sys.stderr)
    print("\n".join(reqs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
