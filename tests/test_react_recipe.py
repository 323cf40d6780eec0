"""The ReAct recipe end to end: what the trainer sees is what the eval runner feeds, and a tiny run of
``train/react_7b.py --preset cpu`` trains, then scores episodes with its adapter (slow).

The slow test proves no accuracy, only that nothing between the preset and the reports is broken.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import make_tokenizer

from data_prep.react import Trajectory
from data_prep.render import IGNORE_INDEX, render_example, render_prompt
from eval.household import HouseholdEnv, Scene
from eval.policies.base import EpisodeState

ROOT = Path(__file__).resolve().parents[1]


def _trajectories(n: int) -> list[dict]:
    with (ROOT / "data" / "react" / "train.jsonl").open() as f:
        return [json.loads(next(f)) for _ in range(n)]


@pytest.mark.parametrize("template", ["smollm2", "qwen2_5", "llama3"])
def test_training_rows_and_eval_prompts_are_the_same_tokens(template):
    """At every step, the eval prompt is a prefix of the training ids, and the next trained tokens are
    exactly the expert's action: the model is asked in the format it was taught."""
    tok = make_tokenizer(template)
    d = _trajectories(1)[0]
    traj = Trajectory.from_dict(d)
    ex = render_example(tok, traj.messages())
    env = HouseholdEnv(Scene.from_dict(d["scene"]))
    state = EpisodeState("e", env.reset())
    for action, _ in traj.steps:
        prompt = render_prompt(tok, state.messages())
        assert ex.input_ids[: len(prompt)] == prompt
        assert ex.labels[len(prompt) - 1] == IGNORE_INDEX
        target = tok(action, add_special_tokens=False)["input_ids"]
        assert ex.input_ids[len(prompt) : len(prompt) + len(target)] == target
        assert all(label != IGNORE_INDEX for label in ex.labels[len(prompt) : len(prompt) + len(target)])
        observation, _, _ = env.step(action)
        state.steps.append((action, observation))
    assert env.won


@pytest.mark.slow
def test_cpu_preset_trains_then_scores_episodes(tmp_path, tiny_llama_dir):
    data = tmp_path / "six.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in _trajectories(6)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    run = tmp_path / "run"
    train = [
        sys.executable, str(ROOT / "train" / "react_7b.py"), "--preset", "cpu", "--model", str(tiny_llama_dir),
        "--data", str(data), "--run-dir", str(run), "--max-steps", "3", "--run.threads", "1",
        "--sft.eval_steps", "3", "--sft.save_steps", "3", "--run.samples", "1", "--run.sample_max_new_tokens", "4",
    ]
    r = subprocess.run(train, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (run / "adapter" / "adapter_config.json").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 3
    out = run / "eval"
    score = [
        sys.executable, "-m", "eval.react_eval", "--policy", "hf", "--model", str(tiny_llama_dir),
        "--adapter", str(run / "adapter"), "--split", "valid_unseen", "--episodes", "3", "--max-steps", "4",
        "--max-new-tokens", "6", "--batch-size", "2", "--out", str(out),
    ]
    r = subprocess.run(score, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["episodes"] == 3 and results["adapter"] == str(run / "adapter")
    assert 0.0 <= results["success_ci95"][0] <= results["success_ci95"][1] <= 1.0
    assert results["total_steps"] > 3  # episodes were played, not skipped
    for name in ("report.md", "episodes.jsonl", "success_by_task.png"):
        assert (out / name).stat().st_size > 0
