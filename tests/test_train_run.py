"""Whole runs of the scenario script on a tiny model: run folder, adapter in plain PEFT, resume after SIGKILL.

All slow (each run loads torch/TRL in a subprocess and trains a few dozen steps).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "train" / "roleplay_0_5b.py"
SYSTEM = "You are Mira, a cheerful airship pilot who answers in short, salty sentences."
QA = [
    ("Where are we headed?", "North, past the cloud reefs!"),
    ("Is the storm dangerous?", "Only if you forget to tie down."),
    ("What do you eat?", "Hardtack and pickled fish."),
    ("Can I steer?", "Hands at ten and two."),
    ("Tell me about the crew.", "Three rascals and a parrot."),
    ("How old is the ship?", "Older than my boots."),
    ("Are you scared?", "Every time, and I fly anyway."),
    ("Favourite port?", "Port Ember, best tea in the sky."),
]


def _rows_file(path: Path, n: int = 32) -> Path:
    with path.open("w") as f:
        for i in range(n):
            q, a = QA[i % len(QA)]
            q2, a2 = QA[(i * 3 + 1) % len(QA)]
            msgs = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"{q} (#{i})"},
                {"role": "assistant", "content": a},
                {"role": "user", "content": q2},
                {"role": "assistant", "content": a2},
            ]
            f.write(json.dumps({"messages": msgs}) + "\n")
    return path


def _cmd(model_dir: Path, data: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(SCRIPT),
        "--preset",
        "cpu_demo",
        "--model",
        str(model_dir),
        "--data",
        str(data),
        "--run-dir",
        str(run_dir),
        "--run.threads",
        "1",
        "--run.samples",
        "0",
        *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_llama_dir):
    tmp = tmp_path_factory.mktemp("run")
    data = _rows_file(tmp / "rows.jsonl")
    run_dir = tmp / "run"
    r = subprocess.run(
        _cmd(
            tiny_llama_dir,
            data,
            run_dir,
            "--max-steps",
            "24",
            "--lr",
            "1e-2",
            "--sft.eval_steps",
            "8",
            "--sft.save_steps",
            "8",
            "--run.samples",
            "2",
            "--run.sample_max_new_tokens",
            "8",
        ),
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return run_dir, r.stdout


@pytest.mark.slow
def test_run_folder_has_everything(finished_run):
    run_dir, stdout = finished_run
    for name in (
        "config.yaml",
        "data/train.jsonl",
        "data/test.jsonl",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/tokenizer.json",
        "adapter/chat_template.jinja",
        "metrics.json",
        "loss.png",
        "samples.json",
        "base_eval.json",
    ):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "logs").glob("events.out.tfevents.*")), "TensorBoard events in run/logs"
    assert list((run_dir / "checkpoints").glob("checkpoint-*"))
    assert not (run_dir / "checkpoints" / "runs").exists(), "TensorBoard events belong in run/logs only"
    m = json.loads((run_dir / "metrics.json").read_text())
    for key in (
        "backend",
        "versions",
        "device",
        "wall_time_s",
        "steps",
        "trained_tokens",
        "supervised_tokens",
        "supervised_tokens_per_s",
        "peak_ram_mb",
        "peak_vram_mb",
        "final_train_loss",
        "final_eval_loss",
        "base_eval_loss",
        "trained_token_share",
    ):
        assert key in m, key
    assert m["backend"] == "hf" and m["steps"] == 24
    assert 0 < m["trained_token_share"] < 1 and m["supervised_tokens"] > 0
    assert m["final_eval_loss"] < m["base_eval_loss"]
    # the CPU plan's levers, as planned and as run
    assert m["plan"]["head_loss"] == m["head_loss"] == "fused" and m["attention"] == "sdpa_segments"
    frozen = "bf16 (14 layers)" if m["plan"]["base_weights"] == "bf16" else "float32"
    assert m["frozen_weights"] == frozen
    assert "Hardware plan" in stdout and "trained-token share" in stdout
    assert len(json.loads((run_dir / "samples.json").read_text())) == 2


@pytest.mark.slow
def test_adapter_reloads_in_plain_peft_and_generates(finished_run, tiny_llama_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, _ = finished_run
    tok = AutoTokenizer.from_pretrained(run_dir / "adapter")
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    model = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    ids = tok.apply_chat_template(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Can I steer?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    out = model.generate(input_ids=ids, max_new_tokens=6, do_sample=False)
    assert out.shape[1] > ids.shape[1]
    with torch.no_grad():
        tuned = model(input_ids=ids).logits
        with model.disable_adapter():
            plain = model(input_ids=ids).logits
    assert not torch.allclose(tuned, plain, atol=1e-4)  # the adapter carries what was trained


@pytest.mark.slow
def test_saved_config_repeats_into_a_new_folder(finished_run, tmp_path):
    run_dir, _ = finished_run
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--config", str(run_dir / "config.yaml"), "--plan-only"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Hardware plan" in r.stdout


def _adapter_tensors(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_adapter(tmp_path, tiny_llama_dir):
    data = _rows_file(tmp_path / "rows.jsonl")
    common = (
        "--max-steps",
        "16",
        "--lr",
        "5e-3",
        "--sft.save_steps",
        "4",
        "--sft.eval_steps",
        "100",
        "--sft.save_total_limit",
        "3",
        "--lora.dropout",
        "0.1",
        "--run.base_eval",
        "false",
        "--sft.per_device_train_batch_size",
        "2",
    )
    straight = tmp_path / "straight"
    r = subprocess.run(
        _cmd(tiny_llama_dir, data, straight, *common),
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(tiny_llama_dir, data, killed, *common),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
        cwd=ROOT,
    )
    deadline = time.time() + 300
    target = killed / "checkpoints" / "checkpoint-8" / "trainer_state.json"
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.exists(), "the run ended before its checkpoint-8"
    assert not (killed / "adapter").exists(), "killed before the end"

    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--config", str(killed / "config.yaml"), "--resume"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((killed / "metrics.json").read_text())
    assert m["resumed_from"] and m["steps"] == 16
    a, b = _adapter_tensors(straight), _adapter_tensors(killed)
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, worst
    assert any(float(a[k].abs().max()) > 0 for k in a if "lora_B" in k)  # training really moved B


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_then_exits(tmp_path, tiny_llama_dir):
    data = _rows_file(tmp_path / "rows.jsonl")
    run_dir = tmp_path / "interrupted"
    proc = subprocess.Popen(
        _cmd(
            tiny_llama_dir,
            data,
            run_dir,
            "--max-steps",
            "400",
            "--sft.save_steps",
            "1000",
            "--sft.eval_steps",
            "1000",
            "--batch-size",
            "1",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=ROOT,
    )
    deadline = time.time() + 300
    while not (run_dir / "base_eval.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)  # a few steps in
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    states = list((run_dir / "checkpoints").glob("checkpoint-*/trainer_state.json"))
    assert len(states) == 1
    step = json.loads(states[0].read_text())["global_step"]
    assert 0 < step < 400
    assert "--resume" in out and "Traceback" not in err


@pytest.mark.slow
def test_early_stopping_ends_a_run_that_stops_improving(tmp_path, tiny_llama_dir):
    data = _rows_file(tmp_path / "rows.jsonl")
    run_dir = tmp_path / "early"
    r = subprocess.run(
        _cmd(tiny_llama_dir, data, run_dir, "--max-steps", "40", "--lr", "0", "--sft.eval_steps", "2",
             "--sft.save_steps", "2", "--run.early_stopping_patience", "1"),
        capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 4  # eval at 2, no gain at 4: stop
