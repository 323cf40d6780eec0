"""``python -m eval.react_eval`` end to end, and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from eval.react_eval import main

ROOT = Path(__file__).resolve().parents[1]


def test_cli_expert_end_to_end(tmp_path):
    out = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, "-m", "eval.react_eval", "--policy", "expert", "--split", "valid_unseen",
         "--episodes", "7", "--batch-size", "3", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "success 100.0% over 7 episodes" in proc.stdout
    assert "episodes (expert)" in proc.stderr  # the progress bar
    doc = json.loads((out / "results.json").read_text())
    assert doc["success_rate"] == 1.0 and doc["episodes"] == 7 and doc["split"] == "valid_unseen"
    assert sum(v["n"] for v in doc["by_task"].values()) == 7
    assert doc["loop_rate"] == doc["step_limit_rate"] == doc["invalid_action_rate"] == 0.0
    rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert [r["episode_id"] for r in rows] == [f"valid_unseen-0-{i:04d}" for i in range(7)]
    assert all(r["end_reason"] == "won" for r in rows)
    assert (out / "success_by_task.png").stat().st_size > 1000
    assert "| **ours: expert** | **100.0** |" in (out / "report.md").read_text()


def test_cli_random_fuzzy_and_grammar(tmp_path):
    assert main(["--policy", "random", "--split", "valid_seen", "--episodes", "3", "--max-steps", "6",
                 "--grammar", "2.1.2", "--fuzzy", "--seed", "1", "--out", str(tmp_path), "--no-progress"]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["matching"] == "fuzzy" and doc["grammar"] == "2.1.2" and doc["avg_steps"] <= 6
    assert "fuzzy" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--policy", "hf"], "--policy hf needs --model"),
        (["--policy", "llamacpp"], "--policy llamacpp needs --model"),
        (["--policy", "openai"], "--policy openai needs --base-url"),
        (["--policy", "openai", "--base-url", "http://127.0.0.1:1"], "needs --api-model"),
        (["--policy", "expert", "--adapter", "x"], "--adapter works with --policy hf only"),
        (["--policy", "hf", "--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["--policy", "random", "--episodes", "0"], "--episodes must be at least 1"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, argv, message):
    assert main([*argv, "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_alfworld_missing_exits_2_with_install_hint(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    assert main(["--policy", "random", "--env", "alfworld", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "pip install" in err and "alfworld-download" in err and err.count("\n") == 1


def test_cli_hf_with_adapter_on_a_tiny_model(tiny_llama_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir))
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)).save_pretrained(adapter)
    out = tmp_path / "eval"
    assert main(["--policy", "hf", "--model", str(tiny_llama_dir), "--adapter", str(adapter), "--split", "valid_seen",
                 "--episodes", "2", "--max-steps", "3", "--max-new-tokens", "4", "--batch-size", "2",
                 "--out", str(out), "--no-progress"]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["adapter"] == str(adapter) and doc["episodes"] == 2 and doc["success_rate"] == 0.0
    assert doc["tokens_encoded_per_episode"] > 0 and doc["policy_stats"]["turns"] >= 2
    rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    # Every reply is scored: either a parseable action or a counted format error.
    assert all(len(r["replies"]) == r["steps"] == len(r["actions"]) for r in rows)
    assert doc["format_error_rate"] == sum(r["n_format_errors"] for r in rows) / sum(r["steps"] for r in rows)
