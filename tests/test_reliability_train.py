"""Reliability of training: SIGKILL at random steps then ``--resume`` reproduces the uninterrupted run, a
half-written checkpoint is skipped, and pickle weights are refused unless ``--allow-pickle``.

The kill test runs the real scenario script in subprocesses on a tiny random model (checkpoint every step,
fixed seed, one thread); the kill steps come from a seeded generator so CI repeats them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_train_run import QA, SYSTEM  # the same airship-pilot rows as the other run tests

from models.loading import UnsafeWeightsError
from train.run_dir import latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "train" / "roleplay_0_5b.py"
STEPS = 10  # two epochs of the 10 training rows at batch 2: resume must also cross the epoch boundary
KILL_SEED = 1414
KILLS = 5
# Same seed, one thread, same CPU kernels: the resumed run repeats every float of the uninterrupted one (the
# measured difference is 0.0); the slack only absorbs kernel reordering on other CPUs.
ATOL = 1e-6


def _rows(path: Path, n: int = 12) -> Path:
    with path.open("w") as f:
        for i in range(n):
            q, a = QA[i % len(QA)]
            msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{q} (#{i})"},
                    {"role": "assistant", "content": f"{a} ({i})"}]  # fmt: skip
            f.write(json.dumps({"messages": msgs}) + "\n")
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _train_cmd(model: Path, data: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, str(SCRIPT), "--preset", "cpu_demo", "--model", str(model), "--data", str(data),
        "--run-dir", str(run_dir), "--run.threads", "1", "--run.samples", "0", "--run.base_eval", "false",
        "--max-steps", str(STEPS), "--lr", "5e-3", "--batch-size", "2", "--lora.dropout", "0.1",
        "--sft.save_steps", "1", "--sft.save_total_limit", "2", "--sft.eval_steps", "100",
        "--sft.logging_steps", "1", "--data.max_eval_examples", "1", *extra,
    ]  # fmt: skip


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=600)


def _adapter(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def _state(ckpt: Path) -> dict | None:
    """trainer_state.json of a checkpoint, or None while it is missing or half-written."""
    try:
        return json.loads((ckpt / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    state = _state(run_dir / "checkpoints" / f"checkpoint-{STEPS}")
    assert state is not None and state["global_step"] == STEPS
    return [(e["step"], e["loss"]) for e in state["log_history"] if "loss" in e]


# When the kill comes, relative to the save of checkpoint-<step>:
MODES = (
    "mid-save",  # as soon as its folder appears: weights, optimizer or trainer_state.json half-written
    "just-saved",  # as soon as its trainer_state.json (the Trainer's last write) is whole: rotation, on_save
    "between",  # a random fraction of one step later: during the next step's forward/backward or save
)


@dataclass(frozen=True)
class Kill:
    step: int
    mode: str  # one of MODES
    delay: float  # "between": the fraction of one step's wall time to wait


def kill_plan(seed: int = KILL_SEED) -> list[Kill]:
    """Five different steps from a seeded generator; every mode at least once."""
    rng = random.Random(seed)
    steps = sorted(rng.sample(range(1, STEPS - 1), KILLS))
    modes = [*MODES, *rng.choices(MODES, k=KILLS - len(MODES))]
    rng.shuffle(modes)
    return [Kill(s, m, rng.random()) for s, m in zip(steps, modes, strict=True)]


def _kill_during(cmd: list[str], run_dir: Path, kill: Kill, step_s: float) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), cwd=ROOT)
    ckpt = run_dir / "checkpoints" / f"checkpoint-{kill.step}"
    deadline = time.time() + 300
    try:
        while proc.poll() is None and time.time() < deadline:
            if kill.mode == "mid-save" and ckpt.is_dir():
                break
            if kill.mode != "mid-save" and _state(ckpt) is not None:
                time.sleep(kill.delay * step_s if kill.mode == "between" else 0)
                break
            time.sleep(0.002)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"{kill}: the run ended (rc {proc.returncode}) before the kill"
    assert not (run_dir / "adapter").exists(), f"{kill}: killed too late, the run had finished"


def _newest_complete(run_dir: Path) -> int:
    """The step resume must continue from, judged here from the files (0: no complete checkpoint)."""
    done = [
        int(d.name.split("-")[1])
        for d in (run_dir / "checkpoints").glob("checkpoint-*")
        if (s := _state(d)) is not None and (d / "optimizer.pt").is_file() and (d / "rng_state.pth").is_file()
        and s["global_step"] == int(d.name.split("-")[1])
    ]  # fmt: skip
    return max(done, default=0)


@pytest.mark.slow
def test_sigkill_at_five_random_steps_then_resume_gives_the_uninterrupted_adapter(tmp_path, tiny_llama_dir):
    t0 = time.perf_counter()
    data = _rows(tmp_path / "rows.jsonl")
    straight = tmp_path / "straight"
    r = _run(_train_cmd(tiny_llama_dir, data, straight))
    assert r.returncode == 0, r.stderr[-3000:]
    ref, ref_losses = _adapter(straight), _losses(straight)
    ref_metrics = json.loads((straight / "metrics.json").read_text())
    assert ref_metrics["steps"] == STEPS and len(ref_losses) == STEPS
    assert any(float(t.abs().max()) > 0 for k, t in ref.items() if "lora_B" in k)  # training moved B
    saved = [(straight / "checkpoints" / f"checkpoint-{s}" / "trainer_state.json").stat().st_mtime
             for s in (STEPS - 1, STEPS)]  # fmt: skip
    step_s = saved[1] - saved[0]  # wall time of one step with its save

    report = []
    for kill in kill_plan():
        run_dir = tmp_path / f"killed-{kill.step}"
        _kill_during(_train_cmd(tiny_llama_dir, data, run_dir), run_dir, kill, step_s)
        from_step = _newest_complete(run_dir)
        half_written = (run_dir / "checkpoints" / f"checkpoint-{from_step + 1}").is_dir()
        r = _run([sys.executable, str(SCRIPT), "--config", str(run_dir / "config.yaml"), "--resume"])
        assert r.returncode == 0, f"{kill}: {r.stderr[-3000:]}"
        m = json.loads((run_dir / "metrics.json").read_text())
        expected = str(run_dir / "checkpoints" / f"checkpoint-{from_step}") if from_step else None
        assert m["resumed_from"] == expected, kill
        assert m["steps"] == STEPS
        got = _adapter(run_dir)
        assert got.keys() == ref.keys()
        worst = max(float((ref[k] - got[k]).abs().max()) for k in ref)
        assert worst <= ATOL, (kill, worst)
        losses = _losses(run_dir)  # same data order, dropout and LR schedule: the same loss at every step
        assert [s for s, _ in losses] == [s for s, _ in ref_losses]
        assert [v for _, v in losses] == pytest.approx([v for _, v in ref_losses], abs=ATOL), kill
        assert (m["trained_tokens"], m["supervised_tokens"]) == (ref_metrics["trained_tokens"],
                                                                 ref_metrics["supervised_tokens"]), kill  # fmt: skip
        report.append(f"{kill.mode} k={kill.step}: resumed from {from_step}"
                      f"{' (half-written next one skipped)' if half_written else ''}, max |diff| {worst:.2e}")  # fmt: skip
    print(f"\n{'; '.join(report)}; wall {time.perf_counter() - t0:.0f} s")


def _complete_ckpt(folder: Path, step: int) -> Path:
    folder.mkdir(parents=True)
    for name in ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (folder / name).write_bytes(b"x")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return folder


def test_resume_skips_half_written_checkpoints(tmp_path):
    """A kill during a save leaves trainer_state.json missing or cut off; one during rotation leaves an old
    checkpoint without its weights. Resume takes the newest whole one."""
    ckpts = tmp_path / "checkpoints"
    good = _complete_ckpt(ckpts / "checkpoint-3", 3)
    cut = _complete_ckpt(ckpts / "checkpoint-4", 4)
    text = (cut / "trainer_state.json").read_text()
    (cut / "trainer_state.json").write_text(text[: len(text) // 2])  # killed while writing it
    (ckpts / "checkpoint-5").mkdir()  # killed while saving the weights
    (ckpts / "checkpoint-5" / "adapter_model.safetensors").write_bytes(b"x")
    assert latest_checkpoint(ckpts) == str(good)
    gutted = _complete_ckpt(ckpts / "checkpoint-6", 6)
    (gutted / "optimizer.pt").unlink()  # its state file survived a partial delete
    assert latest_checkpoint(ckpts) == str(good)
    shutil.rmtree(gutted)
    (good / "trainer_state.json").write_text(json.dumps({"global_step": 2}))  # not this folder's state
    assert latest_checkpoint(ckpts) is None


@pytest.fixture(scope="module")
def pickle_model(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its weights only as ``pytorch_model.bin`` (transformers 5 ignores
    ``safe_serialization=False``, so the state dict is pickled by hand, as older Hub repos have it)."""
    import torch
    from safetensors.torch import load_file

    out = tmp_path_factory.mktemp("pickled")
    for f in tiny_llama_dir.iterdir():
        if not f.name.endswith(".safetensors"):
            shutil.copy(f, out / f.name)
    torch.save(load_file(str(tiny_llama_dir / "model.safetensors")), out / "pytorch_model.bin")
    return out


def _trainable(source: Path, backend: str = "hf", allow_pickle: bool = False):
    from tiny import make_tokenizer

    from train.backend import BackendInfo, load_trainable
    from train.config import LoraConfig, ModelConfig

    return load_trainable(
        BackendInfo(backend, False, "test"), str(source), ModelConfig(allow_pickle=allow_pickle),
        LoraConfig(r=2), precision="fp32", gradient_checkpointing=False, seed=0, tokenizer=make_tokenizer(),
    )  # fmt: skip


def test_train_backend_refuses_pickle_weights_unless_allowed(pickle_model, tiny_llama_dir):
    import torch

    with pytest.raises(UnsafeWeightsError, match=r"pytorch_model.bin.*--allow-pickle"):
        _trainable(pickle_model)
    model, _ = _trainable(pickle_model, allow_pickle=True)
    reference, _ = _trainable(tiny_llama_dir)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():  # the pickled weights are the ones that loaded
        assert torch.equal(model(input_ids=ids).logits, reference(input_ids=ids).logits)


def test_unsloth_branch_refuses_pickle_before_importing_unsloth(pickle_model):
    """In a subprocess: the check must come before ``import unsloth`` (which patches transformers)."""
    code = (
        "import sys\n"
        "from models.loading import UnsafeWeightsError\n"
        "from train.backend import BackendInfo, load_trainable\n"
        "from train.config import LoraConfig, ModelConfig\n"
        "try:\n"
        f"    load_trainable(BackendInfo('unsloth', True, 't'), {str(pickle_model)!r}, ModelConfig(), LoraConfig(),\n"
        "                   precision='bf16', gradient_checkpointing=False, seed=0, tokenizer=None)\n"
        "except UnsafeWeightsError as e:\n"
        "    print('refused:', e)\n"
        "print('unsloth imported:', 'unsloth' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=ROOT,
                       timeout=120)  # fmt: skip
    assert "refused:" in r.stdout and "pytorch_model.bin" in r.stdout, r.stdout + r.stderr[-2000:]
    assert "unsloth imported: False" in r.stdout


@pytest.mark.slow
def test_train_cli_refuses_pickle_in_one_line_and_allow_pickle_trains(pickle_model, tmp_path):
    data = _rows(tmp_path / "rows.jsonl")
    base = [*_train_cmd(pickle_model, data, tmp_path / "run"), "--max-steps", "2"]
    r = _run(base)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "pytorch_model.bin" in lines[0] and "--allow-pickle" in lines[0]
    assert not (tmp_path / "run" / "adapter").exists()
    r = _run([*base, "--allow-pickle"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert "allow_pickle: true" in (tmp_path / "run" / "config.yaml").read_text()


def test_allow_pickle_is_a_model_knob_and_a_flag():
    from train.cli import parse

    assert parse([], scenario="roleplay", default_preset="roleplay_cpu_demo").cfg.model.allow_pickle is False
    assert parse(["--allow-pickle"], scenario="roleplay", default_preset="roleplay_cpu_demo").cfg.model.allow_pickle
    on = parse(["--model.allow_pickle", "true"], scenario="roleplay", default_preset="roleplay_cpu_demo")
    assert on.cfg.model.allow_pickle is True
