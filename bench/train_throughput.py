"""Training throughput five ways, same model / data / steps: simple recipe, TRL, ours, Unsloth, LLaMA-Factory.

Model: SmolLM2-135M-Instruct (the real CPU model of the demo), LoRA r=16 / alpha 32 on all linear layers,
dropout 0, lr 3e-4 constant, the first ``--train`` dialogues of data/roleplay/dialogues.jsonl (rendered with
the model's chat template), the same batch size and number of steps (one pass over them), the same number
of torch threads (``--threads``, also OMP_NUM_THREADS).

  (a) simple: ``transformers.Trainer``, every row padded to ``--seq`` tokens, loss on all tokens (pads too),
      our reading of the fish-care project's simple_finetune.py (docs/sources.md#simple-recipe), but with
      the chat template, so all rows see the same text; TrainingArguments' default precision (fp32);
  (b) trl:    ``trl.SFTTrainer`` with its defaults on the ``messages`` rows (dynamic padding, loss on all
      tokens, TRL's default chunked loss and bf16=True, i.e. bf16 autocast on CPU), plus ``max_length=--seq``
      and the same LoRA;
  (c) ours:   ``train.recipe.build_trainer`` (what every ``train/*.py`` script runs) on data_prep's
      assistant-only labels: the hardware plan's batching (padding-free), precision and CPU levers (per-example
      attention, bf16 frozen base weights where the CPU has bf16 units, fused output-head loss), only the
      bench's steps / lr / seed / logging given as ``sft`` overrides (no warmup, no weight decay, no saving);
  (d) unsloth-cpu: the real ``unsloth==2026.10.9`` on this CPU, the way its notebooks train: its own CPU
      backend (``FastLanguageModel`` = ``FastCPUModel``: chunked cross entropy, fused AdamW, its precision
      choice) and its patched ``SFTTrainer`` on the ``messages`` rows, same LoRA, no checkpointing. Skipped
      when unsloth is not installed. Its subprocess imports unsloth first, so its patches touch no other row.
  (e) llamafactory: ``llamafactory-cli train <yaml>`` of LLaMA-Factory 0.9.5 in its own venv
      (``bench/.venvs/llamafactory``, made on first use by ``bench/peers.py`` with its pinned install commands;
      the row is skipped with a message when that fails): the same rows as openai-style ``messages`` with a
      ``dataset_info.json``, ``template: smollm2`` (its rendering of row 0 is checked against ours, token by
      token), LoRA rank 16 / alpha 32 / dropout 0 / target all, its default masking (train_on_prompt false:
      assistant turns), bf16 (autocast on CPU), same steps / batch / lr / cutoff, and no gradient
      checkpointing (its default is on; off as in every other row, so all do the same compute). Training time is its
      ``train_runtime``; peak RSS is of its process tree; its saved adapter is loaded with PEFT here for the
      held-out loss.

Measured for each, in its own subprocess (clean peak RSS): training wall time, supervised tokens/s where
supervised tokens = the assistant tokens of the training rows as data_prep labels them (the tokens the task
is about; identical for all, since all consume the same rows once), peak RSS, and held-out loss computed the
same way for all: mean next-token loss over assistant tokens of the last ``--test`` dialogues, one row at a
time, fp32.

Usage:
    OMP_NUM_THREADS=1 python bench/train_throughput.py                 # ~10 min on a quiet 2-core box
    python bench/train_throughput.py --train 16 --batch 4 --test 4      # quicker, noisier
    python bench/train_throughput.py --only b,c,e --repeat 3            # some rows, 3 rounds, medians
    python bench/train_throughput.py --profile                          # torch.profiler over row (c)'s steps
The last line is: ``c_over_a=<ratio> c_over_b=<ratio> c_over_d=<ratio> c_over_lf=<ratio> loss_a=<x> loss_b=<x>
loss_c=<y> loss_d=<z> loss_lf=<w>`` (``na`` for a row that did not run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "roleplay" / "dialogues.jsonl"
MODEL = "smollm2-135m-instruct"
LORA = dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
LF_PYTHON = ROOT / "bench" / ".venvs" / "llamafactory" / "bin" / "python"  # made by bench/peers.py on first use
LF_VERSIONS = ("llamafactory", "torch", "transformers", "peft", "trl", "accelerate")
NAMES = {"a": "(a) seeds' simple recipe", "b": "(b) TRL SFTTrainer defaults", "c": "(c) ours",
         "d": "(d) Unsloth CPU backend", "e": "(e) LLaMA-Factory 0.9.5"}


def _rows(n_train: int, n_test: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(rows) < n_train + n_test:
        raise SystemExit(f"{DATA}: {len(rows)} rows, need {n_train + n_test}")
    return rows[:n_train], rows[-n_test:]


def _held_out_loss(model: Any, tok: Any, rows: list[dict[str, Any]], seq: int) -> float:
    """Mean next-token loss over assistant tokens (data_prep's labels), one row at a time."""
    import torch

    from data_prep.render import IGNORE_INDEX, render_example

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            ex = render_example(tok, row["messages"], max_length=seq)
            ids = torch.tensor([ex.input_ids])
            labels = torch.tensor([ex.labels])
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()
            tgt = labels[:, 1:]
            total += float(
                torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.size(-1)), tgt.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
                )
            )
            count += int((tgt != IGNORE_INDEX).sum())
    return total / count


def _supervised_tokens(tok: Any, rows: list[dict[str, Any]], seq: int) -> int:
    from data_prep.render import render_example

    return sum(render_example(tok, r["messages"], max_length=seq).n_trained for r in rows)


def _common(variant: str, batch: int, steps: int) -> dict[str, Any]:
    """The trainer settings every Python row shares."""
    return dict(
        output_dir=tempfile.mkdtemp(prefix=f"bench-{variant}-"),
        per_device_train_batch_size=batch,
        max_steps=steps,
        learning_rate=3e-4,
        lr_scheduler_type="constant",
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        seed=0,
        disable_tqdm=True,
    )


def run_variant(
    variant: str, n_train: int, n_test: int, batch: int, seq: int, threads: int, profile: bool = False,
    lf_checkpointing: bool = False,
) -> dict[str, Any]:
    if variant == "d":
        import unsloth  # noqa: F401  (before transformers/TRL/PEFT, which it patches)
    if variant == "e":
        return run_llamafactory(n_train, n_test, batch, seq, threads, lf_checkpointing)
    import torch

    torch.set_num_threads(threads)
    from models.loading import load_tokenizer
    from models.registry import resolve_source

    train_rows, test_rows = _rows(n_train, n_test)
    tok = load_tokenizer(MODEL)
    source = resolve_source(MODEL)
    common = _common(variant, batch, n_train // batch)
    torch.manual_seed(0)
    build = {"a": _simple_trainer, "b": _trl_trainer, "c": _ours_trainer, "d": _unsloth_cpu_trainer}.get(variant)
    if build is None:
        raise SystemExit(f"unknown variant {variant}")
    trainer, precision = build(source, tok, train_rows, common, seq)
    t0 = time.perf_counter()
    if profile:
        _profiled_train(trainer)
    else:
        trainer.train()
    seconds = time.perf_counter() - t0
    return _result(variant, precision, common["max_steps"], seconds, _supervised_tokens(tok, train_rows, seq),
                   resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   _held_out_loss(trainer.model, tok, test_rows, seq))


def _result(variant: str, precision: str, steps: int, seconds: float, supervised: int, rss_mb: float,
            loss: float) -> dict[str, Any]:
    return {
        "variant": variant,
        "precision": precision,
        "steps": steps,
        "train_s": round(seconds, 2),
        "supervised_tokens": supervised,
        "supervised_tok_s": round(supervised / seconds, 2),
        "peak_rss_mb": round(rss_mb, 1),
        "held_out_loss": round(loss, 4),
    }


def _simple_trainer(source: str, tok: Any, rows: list[dict[str, Any]], common: dict[str, Any], seq: int) -> Any:
    """Row (a): HF Trainer, every row padded to ``seq``, loss on every token."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, default_data_collator

    texts = [tok.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    enc = tok(texts, padding="max_length", truncation=True, max_length=seq, add_special_tokens=False)
    ds = Dataset.from_dict(
        {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
         "labels": [list(x) for x in enc["input_ids"]]}
    )
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    trainer = Trainer(
        model=get_peft_model(model, LoraConfig(**LORA)), args=TrainingArguments(**common), train_dataset=ds,
        data_collator=default_data_collator,
    )
    return trainer, "bf16 autocast" if trainer.args.bf16 else "fp32"


def _trl_trainer(source: str, tok: Any, rows: list[dict[str, Any]], common: dict[str, Any], seq: int) -> Any:
    """Row (b): TRL's SFTTrainer with its defaults on the ``messages`` rows."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    ds = Dataset.from_list([{"messages": r["messages"]} for r in rows])
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32),
        args=SFTConfig(**common, max_length=seq), train_dataset=ds, processing_class=tok,
        peft_config=LoraConfig(**LORA),
    )
    return trainer, "bf16 autocast" if trainer.args.bf16 else "fp32"


def _ours_trainer(source: str, tok: Any, rows: list[dict[str, Any]], common: dict[str, Any], seq: int) -> Any:
    """Row (c): ``train.recipe.build_trainer`` (the scripts' path) on data_prep's tokenized rows."""
    from rich.console import Console

    from train.backend import BackendInfo
    from train.config import TrainConfig
    from train.data import tokenize_rows
    from train.recipe import PreparedData, build_trainer, plan_run

    cfg = TrainConfig()
    cfg.model.name, cfg.model.max_seq_length = MODEL, seq
    cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout = LORA["r"], LORA["lora_alpha"], LORA["lora_dropout"]
    out = Path(common["output_dir"])
    # the bench's shared settings; no warmup / weight decay, as in the other rows (TRL's and HF's defaults)
    cfg.sft = {k: v for k, v in common.items() if k != "output_dir"} | {"warmup_steps": 0, "weight_decay": 0.0}
    cfg.run.run_dir, cfg.run.base_eval, cfg.run.samples = str(out), False, 0
    session = plan_run(cfg, BackendInfo("hf", False, "bench"), explicit_model=True, console=Console(stderr=True))
    session.run_dir = out
    ds, stats = tokenize_rows(rows, tok, seq)
    built = build_trainer(session, PreparedData(out, tok, ds, None, stats, None, []))
    precision = "bf16 autocast" if session.plan.precision == "bf16" else session.plan.precision
    precision += ", bf16 frozen weights" if built.frozen else ""
    print(f"(c) runs: {precision}, batching {built.ran['batching']}, attention "
          f"{built.trainer.model.config._attn_implementation}, head loss {built.ran['head_loss']}", file=sys.stderr)
    return built.trainer, precision


def _unsloth_cpu_trainer(source: str, tok: Any, rows: list[dict[str, Any]], common: dict[str, Any], seq: int) -> Any:
    """Row (d): Unsloth's CPU backend as its notebooks use it (imported first by run_variant)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer
    from unsloth import FastLanguageModel

    model, _ = FastLanguageModel.from_pretrained(source, max_seq_length=seq, dtype=None, load_in_4bit=False)
    model = FastLanguageModel.get_peft_model(
        model, r=LORA["r"], lora_alpha=LORA["lora_alpha"], lora_dropout=LORA["lora_dropout"],
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        use_gradient_checkpointing=False, random_state=0,
    )
    ds = Dataset.from_list([{"messages": r["messages"]} for r in rows])
    # our tokenizer (the chat template the other rows use), so all rows see the same text
    trainer = SFTTrainer(model=model, args=SFTConfig(**common, max_length=seq), train_dataset=ds, processing_class=tok)
    return trainer, "bf16 autocast (its choice)" if trainer.args.bf16 else "fp32 (its choice)"


def _profiled_train(trainer: Any, warmup: int = 1) -> None:
    """train() with torch.profiler over every step after the first; prints the breakdown by kind of op."""
    import torch
    from transformers import TrainerCallback

    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])

    class Window(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == warmup:
                prof.__enter__()

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            prof.__exit__(None, None, None)

    trainer.add_callback(Window())
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    steps = trainer.state.global_step - warmup
    t1 = time.perf_counter()
    n_batches = sum(1 for _ in trainer.get_train_dataloader())  # sampling + collation, timed apart
    collate_ms = (time.perf_counter() - t1) * 1e3 / max(n_batches, 1)
    rows = _breakdown(prof, steps)
    print(f"profile of {steps} steps (self CPU time per step, ms; {wall / trainer.state.global_step * 1e3:.0f} ms "
          "wall per step, profiler on):", file=sys.stderr)
    for kind, ms in rows + [("data loading + collation (timed apart)", collate_ms)]:
        print(f"  {kind:<60} {ms:8.0f}", file=sys.stderr)



_MATMUL = {"aten::mm", "aten::addmm", "aten::matmul", "aten::linear"}
_ATTENTION = {"aten::bmm", "aten::baddbmm", "aten::_softmax", "aten::softmax", "aten::_softmax_backward_data"}
_ATTENTION_BWD = ("BmmBackward", "BaddbmmBackward", "SoftmaxBackward")
_CASTS = {"aten::copy_", "aten::_to_copy", "aten::to", "aten::clone", "aten::contiguous"}


def _kind(evt: Any) -> str:
    """What one profiled op belongs to: its nearest marker ancestor (head loss, attention, optimizer) or its name."""
    phase, node = "fwd", evt
    marker = None
    while node is not None:
        name = node.name
        if marker is None and ("HeadCE" in name or "_chunk" in name or "nll_loss" in name or "log_softmax" in name):
            marker = "output head + cross entropy"
        elif marker is None and ("scaled_dot_product" in name or name in _ATTENTION
                                 or any(b in name for b in _ATTENTION_BWD)):  # sdpa, or sdpa_segments' ops
            marker = "attention (fwd + bwd)"
        elif name.startswith("Optimizer."):
            return "optimizer (AdamW step, zero_grad)"
        if name.startswith("autograd::engine::evaluate_function"):
            phase = "bwd"
        node = node.cpu_parent
    if marker is not None:
        return marker
    if evt.name in _MATMUL:
        return f"matmuls, linear layers {phase}"
    if evt.name in _CASTS:
        return f"dtype casts / copies {phase}"
    return f"elementwise + other ops {phase} (norms, rope, SiLU, residual)"


def _breakdown(prof: Any, steps: int) -> list[tuple[str, float]]:
    """Self CPU time per step by kind of op, largest first."""
    totals: dict[str, float] = {}
    for evt in prof.events():
        kind = _kind(evt)
        totals[kind] = totals.get(kind, 0.0) + evt.self_cpu_time_total
    return sorted(((k, v / 1e3 / max(steps, 1)) for k, v in totals.items()), key=lambda kv: -kv[1])



def ensure_lf_venv() -> tuple[Path | None, str]:
    """llamafactory-cli of row (e)'s venv (made by ``peers.ensure_venv`` on first use); (None, why) on failure."""
    from peers import LLAMAFACTORY, ensure_venv

    try:
        python = ensure_venv(LLAMAFACTORY)
    except (OSError, subprocess.CalledProcessError, RuntimeError) as e:
        return None, f"could not make {LLAMAFACTORY.path}: {e}"
    cli = python.parent / "llamafactory-cli"
    return (cli, str(LLAMAFACTORY.path)) if cli.is_file() else (None, f"{cli} is missing")


def lf_versions() -> dict[str, str]:
    code = ("import json, importlib.metadata as m; "
            f"print(json.dumps({{p: m.version(p) for p in {list(LF_VERSIONS)!r}}}))")
    r = subprocess.run([str(LF_PYTHON), "-c", code], capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 else {"error": r.stderr.strip()[-200:]}


def _lf_files(work: Path, rows: list[dict[str, Any]], source: str, batch: int, seq: int, checkpointing: bool) -> Path:
    """The dataset (openai-style messages + dataset_info.json) and the training yaml for row (e)."""
    import yaml

    (work / "train.json").write_text(json.dumps([{"messages": r["messages"]} for r in rows], ensure_ascii=False))
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
            "system_tag": "system"}
    info = {"bench_rows": {"file_name": "train.json", "formatting": "sharegpt", "columns": {"messages": "messages"},
                           "tags": tags}}
    (work / "dataset_info.json").write_text(json.dumps(info))
    cfg = {
        "model_name_or_path": source, "stage": "sft", "do_train": True, "finetuning_type": "lora",
        "lora_rank": LORA["r"], "lora_alpha": LORA["lora_alpha"], "lora_dropout": 0.0, "lora_target": "all",
        "dataset": "bench_rows", "dataset_dir": str(work), "template": "smollm2", "cutoff_len": seq,
        "overwrite_cache": True, "output_dir": str(work / "out"), "overwrite_output_dir": True,
        "per_device_train_batch_size": batch, "gradient_accumulation_steps": 1, "learning_rate": 3e-4,
        "max_steps": len(rows) // batch, "lr_scheduler_type": "constant", "warmup_steps": 0, "bf16": True,
        "use_cpu": True, "logging_steps": 1, "save_strategy": "no", "report_to": "none", "seed": 0,
        "disable_tqdm": True, "plot_loss": False, "dataloader_num_workers": 0,
        # its default is on; off as in (c) and (d), so the same compute is compared (--lf-checkpointing: its default)
        "disable_gradient_checkpointing": not checkpointing,
    }
    path = work / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _tree_peak_rss(proc: Any, stop: threading.Event, peak: list[float]) -> None:
    """Poll the summed RSS of ``proc`` and its descendants until ``stop`` (MB into peak[0])."""
    import psutil

    while not stop.wait(0.2):
        try:
            procs = [proc, *proc.children(recursive=True)]
            peak[0] = max(peak[0], sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20)
        except psutil.Error:
            continue


def _run_lf_cli(cli: Path, yaml_path: Path, threads: int) -> tuple[str, float]:
    """``llamafactory-cli train yaml``; returns its stdout+stderr and its process tree's peak RSS (MB)."""
    import psutil

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1",
           "DISABLE_VERSION_CHECK": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    log = yaml_path.parent / "lf.log"
    with log.open("w") as f:
        proc = psutil.Popen([str(cli), "train", str(yaml_path)], stdout=f, stderr=subprocess.STDOUT, env=env,
                            cwd=yaml_path.parent)
        stop, peak = threading.Event(), [0.0]
        watcher = threading.Thread(target=_tree_peak_rss, args=(proc, stop, peak), daemon=True)
        watcher.start()
        code = proc.wait()
        stop.set()
        watcher.join()
    text = log.read_text(errors="replace")
    if code != 0:
        raise RuntimeError(f"llamafactory-cli exited {code}:\n{text[-3000:]}")
    return text, peak[0]


def _lf_first_example(log: str) -> list[int] | None:
    """The input_ids of the first training example LLaMA-Factory prints."""
    marker = log.find("input_ids:\n[")
    if marker < 0:
        return None
    start = marker + len("input_ids:\n")
    return json.loads(log[start : log.index("]", start) + 1])


def run_llamafactory(
    n_train: int, n_test: int, batch: int, seq: int, threads: int, checkpointing: bool = False
) -> dict[str, Any]:
    """Row (e): LLaMA-Factory's own CLI trains; its adapter is evaluated here with PEFT and our evaluator."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from data_prep.render import render_example
    from models.loading import load_tokenizer
    from models.registry import resolve_source

    cli, why = ensure_lf_venv()
    if cli is None:
        raise SystemExit(f"LLaMA-Factory venv: {why}")
    torch.set_num_threads(threads)
    train_rows, test_rows = _rows(n_train, n_test)
    tok, source = load_tokenizer(MODEL), resolve_source(MODEL)
    work = Path(tempfile.mkdtemp(prefix="bench-e-"))
    log, rss = _run_lf_cli(cli, _lf_files(work, train_rows, source, batch, seq, checkpointing), threads)
    theirs, ours = _lf_first_example(log), render_example(tok, train_rows[0]["messages"], max_length=seq).input_ids
    same = theirs == list(ours)
    check = f"row 0 rendered identically ({len(ours)} tokens)" if same else (
        f"row 0 DIFFERS: ours {tok.decode(ours)!r} vs LLaMA-Factory's {tok.decode(theirs or [])!r}")
    seconds = float(json.loads((work / "out" / "train_results.json").read_text())["train_runtime"])
    base = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(work / "out"))
    precision = "bf16 autocast" if "compute dtype: torch.bfloat16" in log else "see its log"
    res = _result("e", precision + (", gradient checkpointing" if checkpointing else ""),
                  n_train // batch, seconds, _supervised_tokens(tok, train_rows, seq), rss,
                  _held_out_loss(model, tok, test_rows, seq))
    return {**res, "template_check": check, "versions": lf_versions()}


def _run_child(v: str, args: argparse.Namespace, env: dict[str, str], profile: bool = False) -> Any:
    cmd = [sys.executable, __file__, "--variant", v, "--train", str(args.train), "--test", str(args.test),
           "--batch", str(args.batch), "--seq", str(args.seq), "--threads", str(args.threads)]
    cmd += (["--profile"] if profile else []) + (["--lf-checkpointing"] if args.lf_checkpointing else [])
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)


def _variants(only: str | None, console: Any) -> list[str]:
    """The rows to run: a-c always, (d) when unsloth is installed, (e) when its venv exists or installs."""
    import importlib.util

    want = only.split(",") if only else ["a", "b", "c", "d", "e"]
    out = [v for v in want if v in ("a", "b", "c")]
    if "d" in want:
        if importlib.util.find_spec("unsloth"):
            out.append("d")
        else:
            console.print("(d) skipped: unsloth is not installed in this venv")
    if "e" in want:
        with console.status("LLaMA-Factory venv (first use installs several GB: 20+ min) ..."):
            cli, why = ensure_lf_venv()
        if cli is None:
            console.print(f"[yellow](e) skipped: {why}[/yellow]")
        else:
            out.append("e")
    return out


def _median_run(rs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median training time (the upper middle one of an even count)."""
    return sorted(rs, key=lambda x: x["train_s"])[len(rs) // 2]


def _versions_line(results: dict[str, dict[str, Any]]) -> str:
    from importlib import metadata

    ours = {}
    for pkg in ("torch", "transformers", "trl", "peft", "unsloth"):
        try:
            ours[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    line = "versions: ours " + " ".join(f"{k}={v}" for k, v in ours.items())
    if "e" in results:
        line += "; LLaMA-Factory venv " + " ".join(f"{k}={v}" for k, v in results["e"]["versions"].items())
    return line


def _table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> Any:
    from rich.table import Table

    t = Table(title=f"SmolLM2-135M LoRA r=16, {args.train} dialogues, batch {args.batch}, seq {args.seq}, "
                    f"CPU, {args.threads} thread(s)")
    for col in ("recipe", "precision", "steps", "train s", "supervised tok/s", "peak RSS MB", "held-out loss"):
        t.add_column(col)
    for v, x in results.items():
        t.add_row(NAMES[v], x["precision"], str(x["steps"]), str(x["train_s"]), str(x["supervised_tok_s"]),
                  str(x["peak_rss_mb"]), str(x["held_out_loss"]))
    return t


def _summary(results: dict[str, dict[str, Any]]) -> str:
    """The last line: c's speed over each other row, and every row's held-out loss (na: did not run)."""
    c = results.get("c")

    def ratio(v: str) -> str:
        return f"{c['supervised_tok_s'] / results[v]['supervised_tok_s']:.2f}" if c and v in results else "na"

    def loss(v: str) -> str:
        return f"{results[v]['held_out_loss']:.4f}" if v in results else "na"

    return (f"c_over_a={ratio('a')} c_over_b={ratio('b')} c_over_d={ratio('d')} c_over_lf={ratio('e')} "
            f"loss_a={loss('a')} loss_b={loss('b')} loss_c={loss('c')} loss_d={loss('d')} loss_lf={loss('e')}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=32, help="training dialogues (one pass)")
    ap.add_argument("--test", type=int, default=8, help="held-out dialogues")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=384, help="max tokens per row; (a) pads every row to it")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", help="comma-separated rows, e.g. b,c,e (default: all that can run)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds over the rows; each row reports its median")
    ap.add_argument("--profile", action="store_true", help="profile row (c)'s training steps instead")
    ap.add_argument("--lf-checkpointing", action="store_true", help="(e) with its default gradient checkpointing")
    ap.add_argument("--variant", choices=list(NAMES), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.variant:
        res = run_variant(args.variant, args.train, args.test, args.batch, args.seq, args.threads, args.profile,
                          args.lf_checkpointing)
        print("RESULT " + json.dumps(res, ensure_ascii=False))
        return 0

    from rich.console import Console

    console = Console()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TRANSFORMERS_VERBOSITY": "error",
        "UNSLOTH_COMPILE_LOCATION": str(ROOT / "runs" / ".unsloth_compiled_cache"),  # not in the cwd
    }
    runs: dict[str, list[dict[str, Any]]] = {}
    variants = ["c"] if args.profile else _variants(args.only, console)
    for rep in range(1 if args.profile else args.repeat):  # round robin: the box's load hits every row alike
        for v in variants:
            with console.status(f"running {NAMES[v]} ({rep + 1}/{args.repeat}) ..."):
                r = _run_child(v, args, env, profile=args.profile)
            line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if r.returncode != 0 or line is None:
                console.print(r.stderr[-3000:])
                raise SystemExit(f"variant {v} failed (exit {r.returncode})")
            keep = ("profile", "  ", "(c) runs") if args.profile else ("(c) runs",)
            console.print("\n".join(ln for ln in r.stderr.splitlines() if ln.startswith(keep) and rep == 0))
            runs.setdefault(v, []).append(json.loads(line[len("RESULT ") :]))
            console.print(f"{NAMES[v]}: {runs[v][-1]}")
    results = {v: _median_run(rs) for v, rs in runs.items()}
    if args.repeat > 1:
        print("train s per round: " + "; ".join(f"{v} " + " ".join(str(x["train_s"]) for x in rs)
                                                for v, rs in runs.items()))
    console.print(_table(results, args))
    if "e" in results:
        print(f"(e) template check: {results['e']['template_check']}")
    print(_versions_line(results))
    print(_summary(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
