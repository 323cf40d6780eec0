"""Training throughput four ways, same model / data / steps: simple recipe, TRL, ours, Unsloth's CPU backend.

Model: SmolLM2-135M-Instruct (the real CPU model of the demo), LoRA r=16 / alpha 32 on all linear layers,
dropout 0, lr 3e-4 constant, fp32 on CPU, the first ``--train`` dialogues of data/roleplay/dialogues.jsonl
(rendered with the model's chat template), the same batch size and number of steps (one pass over them).

  (a) simple: ``transformers.Trainer``, every row padded to ``--seq`` tokens, loss on all tokens (pads too),
      our reading of the fish-care project's simple_finetune.py (docs/sources.md#simple-recipe), but with
      the chat template, so all rows see the same text; TrainingArguments' default precision (fp32);
  (b) trl:    ``trl.SFTTrainer`` with its defaults on the ``messages`` rows (dynamic padding, loss on all
      tokens, TRL's default chunked loss and bf16=True, i.e. bf16 autocast on CPU), plus ``max_length=--seq``
      and the same LoRA;
  (c) ours:   train.recipe's path: data_prep's assistant-only labels, padding-free batches, RecipeTrainer,
      and the hardware planner's precision (bf16 autocast over fp32 weights on CPUs with AMX/AVX512-BF16);
  (d) unsloth-cpu: the real ``unsloth==2026.10.9`` on this CPU, the way its notebooks train: its own CPU
      backend (``FastLanguageModel`` = ``FastCPUModel``: chunked cross entropy, fused AdamW, its precision
      choice) and its patched ``SFTTrainer`` on the ``messages`` rows, same LoRA, no checkpointing. Skipped
      when unsloth is not installed. Its subprocess imports unsloth first, so its patches touch no other row.

Measured for each, in its own subprocess (clean peak RSS): training wall time, supervised tokens/s where
supervised tokens = the assistant tokens of the training rows (the tokens the task is about; identical for
all three, since all consume the same rows once), peak RSS, and held-out loss computed the same way for all:
mean next-token loss over assistant tokens of the last ``--test`` dialogues, one row at a time.

Usage:
    OMP_NUM_THREADS=1 python bench/train_throughput.py                 # ~10 min on a quiet 2-core box
    python bench/train_throughput.py --train 16 --batch 4 --test 4      # quicker, noisier
The last line is: ``c_over_a=<ratio> c_over_b=<ratio> c_over_d=<ratio> loss_a=<x> loss_c=<y> loss_d=<z>``
(``c_over_d=na`` without unsloth).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "roleplay" / "dialogues.jsonl"
MODEL = "smollm2-135m-instruct"
LORA = dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


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


def run_variant(
    variant: str, n_train: int, n_test: int, batch: int, seq: int, threads: int
) -> dict[str, Any]:
    if variant == "d":
        import unsloth  # noqa: F401  (before transformers/TRL/PEFT, which it patches)
    import torch

    torch.set_num_threads(threads)
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from models.loading import load_tokenizer
    from models.registry import resolve_source

    train_rows, test_rows = _rows(n_train, n_test)
    tok = load_tokenizer(MODEL)
    source = resolve_source(MODEL)
    steps = n_train // batch
    common = dict(
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
    torch.manual_seed(0)
    model = None if variant == "d" else AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)

    if variant == "a":
        from transformers import Trainer, TrainingArguments, default_data_collator

        texts = [tok.apply_chat_template(r["messages"], tokenize=False) for r in train_rows]
        enc = tok(texts, padding="max_length", truncation=True, max_length=seq, add_special_tokens=False)
        ds = Dataset.from_dict(
            {
                "input_ids": enc["input_ids"],
                "attention_mask": enc["attention_mask"],
                "labels": [list(x) for x in enc["input_ids"]],
            }
        )
        trainer = Trainer(
            model=get_peft_model(model, LoraConfig(**LORA)),
            args=TrainingArguments(**common),
            train_dataset=ds,
            data_collator=default_data_collator,
        )
    elif variant == "b":
        from trl import SFTConfig, SFTTrainer

        ds = Dataset.from_list([{"messages": r["messages"]} for r in train_rows])
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**common, max_length=seq),
            train_dataset=ds,
            processing_class=tok,
            peft_config=LoraConfig(**LORA),
        )
    elif variant == "c":
        from trl import SFTConfig

        from train import planner
        from train.data import tokenize_rows
        from train.metrics import Counters
        from train.sft_trainer import RecipeTrainer

        ds, _ = tokenize_rows(train_rows, tok, seq)
        plan = planner.plan(planner.detect_hardware(), 0.135, seq)  # bf16 autocast where the CPU has AMX
        args = SFTConfig(**common, max_length=None, padding_free=True, bf16=plan.precision == "bf16")
        trainer = RecipeTrainer(
            model=get_peft_model(model, LoraConfig(**LORA)),
            args=args,
            train_dataset=ds,
            processing_class=tok,
            counters=Counters(),
        )
    elif variant == "d":
        trainer = _unsloth_cpu_trainer(source, tok, train_rows, common, seq)
    else:
        raise SystemExit(f"unknown variant {variant}")

    precision = "bf16 autocast" if trainer.args.bf16 else "fp32"
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    supervised = _supervised_tokens(tok, train_rows, seq)
    loss = _held_out_loss(trainer.model, tok, test_rows, seq)
    return {
        "variant": variant,
        "precision": precision,
        "steps": steps,
        "train_s": round(seconds, 2),
        "supervised_tokens": supervised,
        "supervised_tok_s": round(supervised / seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "held_out_loss": round(loss, 4),
    }


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
    # our tokenizer (the chat template the other rows use), so all four see the same text
    return SFTTrainer(model=model, args=SFTConfig(**common, max_length=seq), train_dataset=ds, processing_class=tok)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=32, help="training dialogues (one pass)")
    ap.add_argument("--test", type=int, default=8, help="held-out dialogues")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=384, help="max tokens per row; (a) pads every row to it")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variant", choices=["a", "b", "c", "d"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.variant:
        print(
            "RESULT "
            + json.dumps(run_variant(args.variant, args.train, args.test, args.batch, args.seq, args.threads))
        )
        return 0

    from rich.console import Console
    from rich.table import Table

    console = Console()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TRANSFORMERS_VERBOSITY": "error",
        "UNSLOTH_COMPILE_LOCATION": str(ROOT / "runs" / ".unsloth_compiled_cache"),  # not in the cwd
    }
    results: dict[str, dict[str, Any]] = {}
    names = {"a": "(a) seeds' simple recipe", "b": "(b) TRL SFTTrainer defaults", "c": "(c) ours",
             "d": "(d) Unsloth CPU backend"}
    import importlib.util

    variants = ["a", "b", "c"] + (["d"] if importlib.util.find_spec("unsloth") else [])
    for v in variants:
        with console.status(f"running {names[v]} ..."):
            r = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--variant",
                    v,
                    "--train",
                    str(args.train),
                    "--test",
                    str(args.test),
                    "--batch",
                    str(args.batch),
                    "--seq",
                    str(args.seq),
                    "--threads",
                    str(args.threads),
                ],
                capture_output=True,
                text=True,
                env=env,
                cwd=ROOT,
            )
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if r.returncode != 0 or line is None:
            console.print(r.stderr[-2000:])
            raise SystemExit(f"variant {v} failed (exit {r.returncode})")
        results[v] = json.loads(line[len("RESULT ") :])
        console.print(f"{names[v]}: {results[v]}")

    t = Table(
        title=f"SmolLM2-135M LoRA r=16, {args.train} dialogues, batch {args.batch}, seq {args.seq}, CPU"
    )
    for col in (
        "recipe",
        "precision",
        "steps",
        "train s",
        "supervised tok/s",
        "peak RSS MB",
        "held-out loss",
    ):
        t.add_column(col)
    for v in variants:
        x = results[v]
        t.add_row(
            names[v],
            x["precision"],
            str(x["steps"]),
            str(x["train_s"]),
            str(x["supervised_tok_s"]),
            str(x["peak_rss_mb"]),
            str(x["held_out_loss"]),
        )
    console.print(t)
    ca = results["c"]["supervised_tok_s"] / results["a"]["supervised_tok_s"]
    cb = results["c"]["supervised_tok_s"] / results["b"]["supervised_tok_s"]
    d = results.get("d")
    cd = f"{results['c']['supervised_tok_s'] / d['supervised_tok_s']:.2f}" if d else "na"
    print(
        f"c_over_a={ca:.2f} c_over_b={cb:.2f} c_over_d={cd} loss_a={results['a']['held_out_loss']:.4f} "
        f"loss_c={results['c']['held_out_loss']:.4f} loss_d={d['held_out_loss'] if d else 'na'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
