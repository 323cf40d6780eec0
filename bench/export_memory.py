"""Export memory and time: our torch-free GGUF converter vs llama.cpp's ``convert_hf_to_gguf.py``, side by side.

1. Builds two model folders: (i) SmolLM2-135M-Instruct from the registry cache (float32, as the registry
   dequantizes it) with a random rank-16 LoRA on every linear layer merged in by ``deploy.merge``: a
   ``merged/`` folder as an export writes it; (ii) a random Llama (hidden 2048, 16 layers, SmolLM2's 49k
   vocab, untied head: ~0.9B parameters) written as fp16 shards one tensor at a time, SmolLM2's tokenizer.
2. For each folder and f16 / q8_0 runs ``python -m deploy.convert`` (what ``deploy.export`` uses for the
   merged folder -> GGUF step) and llama.cpp's converter (fetched once from the llama-cpp-python sdist by
   ``deploy.llamacpp_convert``) on the same folder, each in its own subprocess, alternating which goes
   first, ``--repeat`` times. Peak RSS of each child from ``wait4`` (the largest over the repeats), wall
   time the fastest repeat (the machine is shared).
3. Compares the two files with gguf's ``GGUFReader``: tensors (names, shapes, types, bytes) and the metadata
   (hyperparameters, tokenizer model/pre/tokens/merges/scores/types, special token ids, add_bos/add_eos,
   chat template). Every difference is printed with its justification, or as UNEXPLAINED.
4. Loads each file in llama.cpp in a child process (a bad vocabulary aborts the whole process) and
   tokenizes a sentence and a chat prompt; transformers' tokenization of the folder says which side is right.
5. Runs the whole exporter, ``python -m deploy.export --base <0.9B> --quant f16 --no-merged --no-verify``
   (torch and transformers imported for the Modelfile and the gate), for the original figure.

Usage: ``python bench/export_memory.py [--layers 16] [--repeat 2] [--keep DIR]``; needs about 6 GB of disk.
The last line is ``peak_rss_over_model=<r> seconds=<s> rss_over_llamacpp=<worst ours/theirs>
time_over_llamacpp=<worst ours/theirs> tensors_identical=<k>/<n>`` (over the four conversions).
Targets: peak_rss_over_model <= 0.5, rss_over_llamacpp <= 0.5, time_over_llamacpp <= 1.0, every tensor.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUTTYPES = ("f16", "q8_0")
TEXTS = ("Hello world, how are you? 12 + 30 = 42.",
         "<|im_start|>user\nWhere is the mug?<|im_end|>\n<|im_start|>assistant\n")
LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


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


def write_smollm2_merge(folder: Path, rank: int = 16, seed: int = 0) -> Path:
    """SmolLM2-135M-Instruct with a random LoRA (updates about 1% of each weight's scale) merged in."""
    import torch
    from safetensors.torch import save_file

    from deploy.lora import LoraAdapter
    from deploy.merge import MergeSource, merge_to_folder
    from deploy.safetensors_io import TensorSource
    from models.registry import resolve_source

    base = Path(resolve_source("smollm2-135m-instruct"))
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, Any] = {}
    reader = TensorSource(base)
    for name in reader.names():
        if name.endswith(".weight") and name.split(".")[-2] in LINEAR:
            out_f, in_f = reader.meta(name).shape
            key = "base_model.model." + name[: -len(".weight")]
            tensors[key + ".lora_A.weight"] = torch.randn((rank, in_f), generator=gen) / in_f**0.5
            tensors[key + ".lora_B.weight"] = torch.randn((out_f, rank), generator=gen) * 1e-3
    adapter = folder.parent / f"{folder.name}-adapter"
    adapter.mkdir(parents=True, exist_ok=True)
    save_file(tensors, adapter / "adapter_model.safetensors")
    (adapter / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(LINEAR),
        "base_model_name_or_path": str(base)}))
    merge_to_folder(MergeSource(base, LoraAdapter.load(adapter)), folder, tokenizer_dirs=(base,), progress=False)
    shutil.rmtree(adapter)
    return folder


@dataclass
class Run:
    """One converter run: wall seconds and the child's peak RSS in bytes."""

    seconds: float
    peak: int


# Starts the command from a small process and reports the command's own peak RSS. Measured from this
# bench directly, a child would report the bench's peak instead: Linux carries the old memory's high-water
# mark over exec, and Python starts children with vfork, so that old memory is the (large) parent's.
_LAUNCHER = """
import json, os, resource, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status = os.waitpid(pid, 0)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux reports KiB
print(json.dumps({"code": os.waitstatus_to_exitcode(status), "seconds": seconds, "peak": peak}))
"""


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[int, float, int]:
    """Run ``cmd``; return (exit code, seconds, peak RSS bytes of that command alone)."""
    proc = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, *cmd], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["code"] != 0:
        sys.stderr.write(proc.stderr[-3000:])
    return result["code"], result["seconds"], result["peak"]


@dataclass
class Pair:
    """Our conversion and llama.cpp's of one folder to one type, with what the comparison found."""

    model: str
    outtype: str
    ours: list[Run] = field(default_factory=list)
    theirs: list[Run] = field(default_factory=list)
    identical: int = 0
    total: int = 0

    def best(self, side: list[Run]) -> tuple[float, int]:
        return min(r.seconds for r in side), max(r.peak for r in side)

    @property
    def rss_ratio(self) -> float:
        return self.best(self.ours)[1] / self.best(self.theirs)[1]

    @property
    def time_ratio(self) -> float:
        return self.best(self.ours)[0] / self.best(self.theirs)[0]


def commands(model_dir: Path, out_dir: Path, outtype: str, conv: Any) -> dict[str, tuple[list[str], dict[str, str]]]:
    """``ours`` and ``theirs``: command line and environment of each converter for one folder and type."""
    from deploy.llamacpp_convert import converter_command

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    ours = [sys.executable, "-m", "deploy.convert", str(model_dir), "--outfile", str(out_dir / f"ours-{outtype}.gguf"),
            "--outtype", outtype, "--model-name", model_dir.name, "--no-progress"]
    theirs, conv_env = converter_command(conv, model_dir, out_dir / f"theirs-{outtype}.gguf", outtype, model_dir.name)
    return {"ours": (ours, env), "theirs": (theirs, {**conv_env, "OMP_NUM_THREADS": env["OMP_NUM_THREADS"]})}


def measure(model_dir: Path, out_dir: Path, outtype: str, conv: Any, repeat: int) -> Pair:
    """Both converters ``repeat`` times, alternating which runs first."""
    pair = Pair(model_dir.name, outtype)
    cmds = commands(model_dir, out_dir, outtype, conv)
    for i in range(repeat):
        for side in (("ours", "theirs") if i % 2 == 0 else ("theirs", "ours")):
            code, seconds, peak = run_measured(*cmds[side])
            if code != 0:
                raise RuntimeError(f"{side} converter exited with {code} on {model_dir} ({outtype})")
            getattr(pair, side).append(Run(seconds, peak))
    return pair


# ---------------------------------------------------------------- comparing the two files


def read_gguf(path: Path) -> tuple[dict[str, Any], dict[str, tuple[str, tuple[int, ...], Any]]]:
    """(metadata, tensors) of a GGUF: key -> value, name -> (type, shape, raw bytes view)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: (t.tensor_type.name, tuple(int(d) for d in t.shape), t.data) for t in reader.tensors}
    return fields, tensors


def compare_tensors(ours: dict[str, Any], theirs: dict[str, Any]) -> tuple[int, int, list[str]]:
    """(identical, total, differences): same name, type, shape and bytes."""
    import numpy as np

    names = sorted(set(ours) | set(theirs))
    lines, same = [], 0
    for name in names:
        if name not in ours or name not in theirs:
            lines.append(f"tensor {name}: only in {'ours' if name in ours else 'theirs'}")
            continue
        (t1, s1, d1), (t2, s2, d2) = ours[name], theirs[name]
        if (t1, s1) == (t2, s2) and np.array_equal(np.asarray(d1).view(np.uint8), np.asarray(d2).view(np.uint8)):
            same += 1
        else:
            lines.append(f"tensor {name}: ours {t1} {s1}, theirs {t2} {s2}" + (" (bytes differ)" if (t1, s1) == (t2, s2) else ""))
    return same, len(names), lines


_NAMING = ("general.name", "general.basename", "general.finetune", "general.size_label", "general.version",
           "general.quantized_by", "general.organization")
# The keys a byte-level vs SentencePiece reading of the same tokenizer.json changes.
_TOKENIZER_KIND = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.token_type",
                   "tokenizer.ggml.merges", "tokenizer.ggml.scores", "tokenizer.ggml.add_space_prefix")


def _short(value: Any) -> str:
    if isinstance(value, list):
        return f"[{len(value)} items: {', '.join(repr(v) for v in value[:3])}, ...]"
    return "(absent)" if value is None else repr(value)[:80]


def justify(key: str, ours: Any, theirs: Any, fields: dict[str, Any], loads: dict[str, dict[str, Any]]) -> str:
    """Why a metadata difference is harmless, or which side is right; UNEXPLAINED when nothing says."""
    arch = fields.get("general.architecture", "")
    if key in _NAMING:
        return "naming only: llama.cpp derives basename/finetune/size label and a title-cased name from the name"
    if key in (f"{arch}.attention.key_length", f"{arch}.attention.value_length") and ours is None:
        default = fields[f"{arch}.embedding_length"] // fields[f"{arch}.attention.head_count"]
        if theirs == default:
            return f"llama.cpp defaults a missing key to n_embd / n_head = {default}, the value theirs writes"
    seen = {side: loads[side].get("vocab", {}) for side in loads}
    if key == "tokenizer.ggml.add_eos_token" and theirs is None and ours is False and seen["theirs"].get("add_eos") is False:
        return "absent reads as false in llama.cpp (checked: it loads theirs with add_eos=false)"
    if key == "tokenizer.ggml.eot_token_id" and theirs is None:
        return _eot_verdict(ours, fields, seen)
    if key in _TOKENIZER_KIND:
        return _tokenizer_verdict(loads)
    return "UNEXPLAINED"


def _eot_verdict(ours: Any, fields: dict[str, Any], seen: dict[str, dict[str, Any]]) -> str:
    """Ours names the end-of-turn token; without the key llama.cpp guesses one by its text."""
    tokens, template = fields.get("tokenizer.ggml.tokens") or [], fields.get("tokenizer.chat_template") or ""
    guessed = seen["theirs"].get("eot")
    if guessed == ours:
        return f"llama.cpp finds the same end-of-turn token {ours} by its text (checked in llama.cpp)"
    text = tokens[ours] if isinstance(ours, int) and ours < len(tokens) else None
    if text and text in template:
        other = tokens[guessed] if isinstance(guessed, int) and 0 <= guessed < len(tokens) else guessed
        stops = " (generation stops there in both: it is eos too)" if fields.get("tokenizer.ggml.eos_token_id") == ours else ""
        return (f"ours is right: {text!r} ends every turn of the chat template; without the key llama.cpp "
                f"guesses {other!r} (id {guessed}) for theirs{stops}")
    return "UNEXPLAINED"


def _tokenizer_verdict(loads: dict[str, dict[str, Any]]) -> str:
    """Which file's vocabulary llama.cpp tokenizes as transformers does."""
    right = [side for side, r in loads.items() if r.get("matches_transformers")]
    if right == ["ours"]:
        why = loads["theirs"].get("error") or "tokenizes differently from transformers"
        return (f"ours is right: llama.cpp tokenizes our file exactly as transformers does; theirs: {why} "
                "(the converter reads this byte-level BPE tokenizer.json, byte_fallback=true as transformers "
                "rebuilds SmolLM2's, as SentencePiece)")
    return f"UNEXPLAINED (llama.cpp agrees with transformers on: {right or 'neither'})"


def compare_metadata(ours: dict[str, Any], theirs: dict[str, Any], loads: dict[str, dict[str, Any]]) -> list[str]:
    """One line per metadata key whose value differs, with its justification."""
    lines = []
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key), theirs.get(key)
        if a != b:
            why = justify(key, a, b, {**theirs, **ours}, loads)
            lines.append(f"{key}: ours {_short(a)}, theirs {_short(b)} -- {why}")
    return lines


# ---------------------------------------------------------------- llama.cpp reads the files


_LOAD = """
import json, sys
from llama_cpp import Llama
llm = Llama(sys.argv[1], vocab_only=True, verbose=False)
m = llm._model
print(json.dumps({"vocab": {"bos": m.token_bos(), "eos": m.token_eos(), "eot": m.token_eot(),
                            "add_bos": m.add_bos_token(), "add_eos": m.add_eos_token()}}), flush=True)
ids = [llm.tokenize(t.encode(), add_bos=False, special=True) for t in json.loads(sys.argv[2])]
print(json.dumps({"ids": ids}), flush=True)
"""


def llama_cpp_reads(path: Path, want: list[list[int]]) -> dict[str, Any]:
    """What llama.cpp makes of ``path``, in a child: its special tokens, and whether it tokenizes TEXTS as
    transformers (``want``) or fails (the error's last line)."""
    env = {**os.environ, "GGML_NO_BACKTRACE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _LOAD, str(path), json.dumps(TEXTS)], capture_output=True,
                          text=True, env=env, timeout=300, check=False)
    out: dict[str, Any] = {}
    for line in proc.stdout.splitlines():
        out.update(json.loads(line))
    if proc.returncode != 0:
        tail = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1:] or [""]
        out["error"] = f"llama.cpp exits {proc.returncode} on the test sentence ({tail[0].strip()[:120]})"
    out["matches_transformers"] = out.get("ids") == want
    return out


def transformers_ids(model_dir: Path) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]


# ---------------------------------------------------------------- the run


def compare_pair(pair: Pair, out_dir: Path, want: list[list[int]], log: bool) -> None:
    """Tensor and metadata comparison of one pair; prints the differences (metadata once per model)."""
    ours_f, ours_t = read_gguf(out_dir / f"ours-{pair.outtype}.gguf")
    theirs_f, theirs_t = read_gguf(out_dir / f"theirs-{pair.outtype}.gguf")
    pair.identical, pair.total, t_lines = compare_tensors(ours_t, theirs_t)
    del ours_t, theirs_t
    for line in t_lines:
        print(f"  {pair.model} {pair.outtype} {line}")
    if not log:
        return
    loads = {side: llama_cpp_reads(out_dir / f"{side}-{pair.outtype}.gguf", want) for side in ("ours", "theirs")}
    for side, r in loads.items():
        print(f"  llama.cpp on {side}: {r.get('vocab')} tokenizes as transformers: {r['matches_transformers']}"
              + (f"; {r['error']}" if "error" in r else ""))
    print(f"  metadata differences ({pair.model}, the same for every type):")
    for line in compare_metadata(ours_f, theirs_f, loads):
        print(f"    {line}")


def convert_model(model_dir: Path, out_dir: Path, conv: Any, repeat: int) -> list[Pair]:
    """Both types for one folder: measure, compare, delete the GGUFs (disk)."""
    want = transformers_ids(model_dir)
    pairs = []
    for i, outtype in enumerate(OUTTYPES):
        pair = measure(model_dir, out_dir, outtype, conv, repeat)
        compare_pair(pair, out_dir, want, log=i == 0)
        for side in ("ours", "theirs"):
            (out_dir / f"{side}-{outtype}.gguf").unlink()
        pairs.append(pair)
    return pairs


def table(pairs: list[Pair]) -> str:
    rows = ["| model | type | ours s | llama.cpp s | ours MiB | llama.cpp MiB | RSS ratio | time ratio | tensors identical |",
            "|---|---|---|---|---|---|---|---|---|"]
    for p in pairs:
        (s1, m1), (s2, m2) = p.best(p.ours), p.best(p.theirs)
        rows.append(f"| {p.model} | {p.outtype} | {s1:.1f} | {s2:.1f} | {m1 / 2**20:.0f} | {m2 / 2**20:.0f} | "
                    f"{p.rss_ratio:.2f} | {p.time_ratio:.2f} | {p.identical}/{p.total} |")
    return "\n".join(rows)


def whole_export(model_dir: Path, out_dir: Path, size: int) -> tuple[float, float]:
    """``deploy.export`` on the 0.9B (torch and transformers included): (peak RSS / fp16 size, seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "deploy.export", "--base", str(model_dir), "--quant", "f16", "--no-merged",
           "--no-verify", "--no-ollama", "--no-progress", "--out", str(out_dir / "export"), "--name", "bench"]
    code, seconds, peak = run_measured(cmd, env)
    if code != 0:
        raise RuntimeError(f"deploy.export exited with {code}")
    print(f"deploy.export f16 (whole exporter): {seconds:.1f} s, peak RSS {peak / 1e6:.0f} MB, "
          f"peak RSS / fp16 model = {peak / size:.3f} (target <= 0.5)")
    shutil.rmtree(out_dir / "export")
    return peak / size, seconds


def build_models(work: Path, layers: int) -> tuple[Path, Path, int]:
    """(SmolLM2 merge, 0.9B Llama, its fp16 bytes), built once (kept with --keep)."""
    smol, llama = work / "smollm2-lora-merged", work / "llama-0.9b"
    if not (smol / "config.json").is_file():
        write_smollm2_merge(smol)
    if not (llama / "config.json").is_file():
        llama.mkdir(parents=True, exist_ok=True)
        write_random_llama(llama, layers)
    size = json.loads((llama / "model.safetensors.index.json").read_text())["metadata"]["total_size"]
    return smol, llama, size


def check_disk(work: Path, layers: int) -> None:
    need = int(layers * 44e6 + 201e6) * 2 * 3.2 + 1.5e9  # fp16 model, two f16 GGUFs, the SmolLM2 merge
    free = shutil.disk_usage(work).free
    if free < need:
        raise RuntimeError(f"{work} has {free / 1e9:.1f} GB free, the bench needs about {need / 1e9:.1f} GB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=16, help="16 layers -> ~0.9B parameters")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each converter per model and type")
    ap.add_argument("--keep", type=Path, help="build the models here and keep them (default: a temp dir)")
    args = ap.parse_args()

    from deploy.llamacpp_convert import ensure_converter

    work = args.keep or Path(tempfile.mkdtemp(prefix="export-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        check_disk(work, args.layers)
        conv = ensure_converter()
        smol, llama, size = build_models(work, args.layers)
        print(f"models: {smol.name}; {llama.name}: {size / 2e9:.2f}B parameters, fp16 {size / 1e9:.2f} GB")
        out = work / "out"
        out.mkdir(exist_ok=True)
        pairs = [p for m in (smol, llama) for p in convert_model(m, out, conv, args.repeat)]
        print(table(pairs))
        ratio, seconds = whole_export(llama, out, size)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    same, total = sum(p.identical for p in pairs), sum(p.total for p in pairs)
    print(f"peak_rss_over_model={ratio:.3f} seconds={seconds:.1f} "
          f"rss_over_llamacpp={max(p.rss_ratio for p in pairs):.3f} "
          f"time_over_llamacpp={max(p.time_ratio for p in pairs):.3f} tensors_identical={same}/{total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
