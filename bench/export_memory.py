"""Peak memory of the streaming GGUF export on a random ~1B-parameter Llama.

1. Writes a random Llama (hidden 2048, 16 layers, SmolLM2's 49k vocab, untied head: ~0.9B parameters) as
   fp16 safetensors shards, one tensor at a time (the whole model is never in memory), with SmolLM2's
   tokenizer, into a temp folder.
2. Runs ``python -m deploy.export --base <folder> --quant f16 --no-merged`` in a subprocess and reads that
   child's peak RSS from ``wait4``.
3. Compares with llama.cpp's ``convert_hf_to_gguf.py`` when it is available locally (``$LLAMA_CPP_DIR`` or
   on PATH); it is not vendored here.

Usage: ``python bench/export_memory.py [--layers 16] [--keep DIR]``. Needs about 4 GB of free disk.
The last line is ``peak_rss_over_model=<ratio> seconds=<n>``; the target is a ratio <= 0.5.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_random_llama(
    folder: Path,
    layers: int,
    hidden: int = 2048,
    ffn: int = 5632,
    heads: int = 32,
    kv_heads: int = 4,
    seed: int = 0,
) -> int:
    """Random fp16 Llama into ``folder`` (2 shards), tensor by tensor. Returns the fp16 size in bytes."""
    import torch
    from tqdm import tqdm

    from deploy.merge import copy_tokenizer
    from deploy.safetensors_io import PlannedTensor, StreamingSafetensorsWriter, plan_shards
    from models.registry import resolve_source

    tok_dir = Path(resolve_source("smollm2-135m-instruct", with_weights=False))
    vocab = 49152
    head_dim = hidden // heads
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [
            (p + "input_layernorm.weight", (hidden,)),
            (p + "self_attn.q_proj.weight", (heads * head_dim, hidden)),
            (p + "self_attn.k_proj.weight", (kv_heads * head_dim, hidden)),
            (p + "self_attn.v_proj.weight", (kv_heads * head_dim, hidden)),
            (p + "self_attn.o_proj.weight", (hidden, heads * head_dim)),
            (p + "post_attention_layernorm.weight", (hidden,)),
            (p + "mlp.gate_proj.weight", (ffn, hidden)),
            (p + "mlp.up_proj.weight", (ffn, hidden)),
            (p + "mlp.down_proj.weight", (hidden, ffn)),
        ]
    shapes += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    planned = [PlannedTensor(n, s, "F16") for n, s in shapes]
    total = sum(t.nbytes for t in planned)
    shards = plan_shards(planned, total // 2 + 1)
    gen = torch.Generator().manual_seed(seed)
    weight_map: dict[str, str] = {}
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="random weights")
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        w = StreamingSafetensorsWriter(folder / fname, shard, metadata={"format": "pt"})
        for t in shard:
            if len(t.shape) == 1:
                w.write(t.name, torch.ones(t.shape, dtype=torch.float16))
            else:
                for start in range(0, t.shape[0], 4096):  # generate in row blocks, too
                    rows = min(4096, t.shape[0] - start)
                    w.write_part(t.name, (torch.randn((rows, *t.shape[1:]), generator=gen) * 0.02).half())
            weight_map[t.name] = fname
            bar.update(t.nbytes)
        w.close()
    bar.close()
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "vocab_size": vocab,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-5,
        "rope_theta": 100000.0,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "dtype": "float16",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    copy_tokenizer(folder, tok_dir)
    return total


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[int, float, int]:
    """Run ``cmd``; return (exit code, seconds, peak RSS bytes of that child)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, seconds, int(usage.ru_maxrss) * 1024  # Linux reports KiB


def llama_cpp_converter() -> Path | None:
    env_dir = os.environ.get("LLAMA_CPP_DIR")
    candidates = [Path(env_dir) / "convert_hf_to_gguf.py"] if env_dir else []
    found = shutil.which("convert_hf_to_gguf.py")
    if found:
        candidates.append(Path(found))
    return next((c for c in candidates if c.is_file()), None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=16, help="16 layers -> ~0.9B parameters")
    ap.add_argument("--keep", type=Path, help="build the model here and keep it (default: a temp dir)")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="export-bench-"))
    model_dir, out_dir = work / "model", work / "out"
    model_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work).free
    approx = int(args.layers * 44e6 + 201e6) * 2 * 2  # fp16 model + f16 GGUF
    if free < approx * 1.1:
        print(
            f"error: {work} has {free / 1e9:.1f} GB free, the bench needs about {approx / 1e9:.1f} GB",
            file=sys.stderr,
        )
        return 2
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    try:
        if not (model_dir / "config.json").is_file():
            size = write_random_llama(model_dir, args.layers)
        else:
            size = json.loads((model_dir / "model.safetensors.index.json").read_text())["metadata"][
                "total_size"
            ]
        n_params = size // 2
        print(f"model: {n_params / 1e9:.2f}B parameters, fp16 size {size / 1e9:.2f} GB ({model_dir})")
        cmd = [
            sys.executable,
            "-m",
            "deploy.export",
            "--base",
            str(model_dir),
            "--quant",
            "f16",
            "--no-merged",
            "--no-verify",
            "--no-ollama",
            "--out",
            str(out_dir),
            "--name",
            "bench",
        ]
        code, seconds, peak = run_measured(cmd, env)
        if code != 0:
            print(f"error: export exited with {code}", file=sys.stderr)
            return 1
        gguf_size = (out_dir / "bench-f16.gguf").stat().st_size
        ratio = peak / size
        print(
            f"deploy.export f16: {seconds:.1f} s, peak RSS {peak / 1e6:.0f} MB, GGUF {gguf_size / 1e9:.2f} GB, "
            f"peak RSS / fp16 model = {ratio:.3f} (target <= 0.5)"
        )
        conv = llama_cpp_converter()
        if conv is None:
            print(
                "llama.cpp convert_hf_to_gguf.py: not available (not vendored; set LLAMA_CPP_DIR to compare)"
            )
        else:
            c_code, c_sec, c_peak = run_measured(
                [
                    sys.executable,
                    str(conv),
                    str(model_dir),
                    "--outtype",
                    "f16",
                    "--outfile",
                    str(out_dir / "ref.gguf"),
                ],
                env,
            )
            print(
                f"llama.cpp convert_hf_to_gguf.py f16: exit {c_code}, {c_sec:.1f} s, peak RSS {c_peak / 1e6:.0f} MB, "
                f"ratio {c_peak / size:.3f}"
            )
        print(f"peak_rss_over_model={ratio:.3f} seconds={seconds:.1f}")
        return 0
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
