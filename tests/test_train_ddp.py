"""Two CPU processes under ``accelerate launch`` (DDP over gloo) train one adapter together."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_run import _rows_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path, tiny_llama_dir):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert accelerate, "accelerate CLI missing from the venv"
    data = _rows_file(tmp_path / "rows.jsonl", n=24)
    run_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [
        accelerate,
        "launch",
        "--config_file",
        str(ROOT / "configs" / "accelerate" / "ddp_cpu.yaml"),
        "--main_process_port",
        "29617",
        str(ROOT / "train" / "roleplay_0_5b.py"),
        "--preset",
        "cpu_demo",
        "--model",
        str(tiny_llama_dir),
        "--data",
        str(data),
        "--run-dir",
        str(run_dir),
        "--max-steps",
        "4",
        "--batch-size",
        "2",
        "--run.samples",
        "0",
        "--run.threads",
        "1",
        "--sft.eval_steps",
        "2",
        "--sft.save_steps",
        "2",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["processes"] == 2 and m["steps"] == 4
    # ~22 training rows: one process needs 11 steps of 2 rows per epoch (4 steps = 0.36 epoch); two processes
    # split each epoch, 6 steps each, so 4 steps are 0.67 epoch.
    assert m["epochs"] > 0.5
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert r.stdout.count("Hardware plan") == 1  # only the main process prints and writes
