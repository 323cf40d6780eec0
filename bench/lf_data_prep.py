"""Driver for LLaMA-Factory's own SFT preprocessing; runs inside ``bench/.venvs/llamafactory`` (see peers.py).

It does what ``llamafactory-cli train`` does before training starts (``train/sft/workflow.py``): parse the
arguments with ``get_train_args``, ``load_tokenizer``, ``get_template_and_fix_tokenizer``, then
``get_dataset(..., stage="sft")``: load the JSONL into Arrow, align the ShareGPT rows, split off
``val_size``, tokenize with the template and build the labels (``datasets.map`` with
``preprocessing_num_workers`` processes, caches off). Only ``get_dataset`` is timed.

Prints one JSON line: rows, seconds, CPU seconds (this process and its workers), tokens (all rows), trained tokens (labels != -100), and ``row0_text``,
the template's rendering of the first input row (decoded from LF's own ids) so the caller can check that
both sides render the same text.

Usage (inside the LF venv): ``python bench/lf_data_prep.py --data rows.jsonl --tokenizer DIR --workers 2``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


def _args(data: Path, work: Path, a: argparse.Namespace) -> dict:
    (work / "dataset_info.json").write_text(json.dumps({
        "bench": {"file_name": str(data), "formatting": "sharegpt",
                  "columns": {"messages": "conversations", "system": "system"}},
    }))
    return {
        "model_name_or_path": a.tokenizer, "stage": "sft", "do_train": True, "finetuning_type": "lora",
        "dataset": "bench", "dataset_dir": str(work), "template": a.template, "cutoff_len": a.cutoff_len,
        "val_size": a.val_size, "preprocessing_num_workers": a.workers if a.workers > 1 else None,
        "overwrite_cache": True, "output_dir": str(work / "out"), "report_to": "none", "seed": 42,
    }


def _row0_text(template, tokenizer, data: Path) -> str:
    """LF's ids for the first row (through its own encode_multiturn), decoded."""
    row = json.loads(data.open(encoding="utf-8").readline())
    roles = {"human": "user", "gpt": "assistant"}
    msgs = [{"role": roles[m["from"]], "content": m["value"]} for m in row["conversations"]]
    pairs = template.encode_multiturn(tokenizer, msgs, row.get("system"))
    return tokenizer.decode([t for p, r in pairs for t in p + r], skip_special_tokens=False)


def _cpu() -> float:
    """CPU seconds of this process and its finished children (datasets' worker processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="ShareGPT JSONL (conversations + system)")
    p.add_argument("--tokenizer", required=True, help="tokenizer folder")
    p.add_argument("--template", default="smollm2")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cutoff-len", type=int, default=2048)
    p.add_argument("--val-size", type=float, default=0.1)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="lf-bench-") as tmp:
        work = Path(tmp)
        os.environ["HF_DATASETS_CACHE"] = str(work / "hf_cache")  # a fresh cache: nothing reused between runs
        from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
        from llamafactory.hparams import get_train_args
        from llamafactory.model import load_tokenizer

        model_args, data_args, training_args, _, _ = get_train_args(_args(a.data.resolve(), work, a))
        tok_module = load_tokenizer(model_args)
        template = get_template_and_fix_tokenizer(tok_module["tokenizer"], data_args)
        t0, c0 = time.perf_counter(), _cpu()
        module = get_dataset(template, model_args, data_args, training_args, stage="sft", **tok_module)
        seconds, cpu = time.perf_counter() - t0, _cpu() - c0
        sets = [module[k] for k in ("train_dataset", "eval_dataset") if module.get(k) is not None]
        rows = sum(len(d) for d in sets)
        tokens = sum(len(x) for d in sets for x in d["input_ids"])
        trained = sum(sum(1 for t in x if t != -100) for d in sets for x in d["labels"])
        text = _row0_text(template, tok_module["tokenizer"], a.data)
    print(json.dumps({"rows": rows, "seconds": seconds, "cpu_s": cpu, "tokens": tokens, "trained": trained, "row0_text": text}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
