"""Every LLaMA-Factory text-only kind trains: prepared from its ``dataset_info.json`` entry, then 2 steps.

Each dataset of ``fixtures/lf_kinds/dataset_info.json`` (alpaca, sharegpt with tools, v1 content parts,
reasoning + tool calls, c4-style text, DPO ranking, KTO tags) goes through the scenario script's ``main`` (the
function ``python train/roleplay_0_5b.py`` runs) with ``--data.dataset_info``/``--data.dataset``: data_prep
runs inside the run, by the stage of the kind, then real TRL/PEFT train a tiny random model for 2 steps. The
runs are in-process, since importing torch and TRL is most of a subprocess run's time; ``test_train_stages``
covers the subprocess path, resume and export.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from test_data_prep_lf_kinds import INFO, KINDS

STEPS = 2
# The kind's own stage (KINDS), plus the other stages a ranking set feeds: ORPO on the sharegpt one (KINDS has
# it on the alpaca one), DPO on the alpaca one, and KTO, which splits each pair into a good and a bad row.
CASES = sorted({(name, stage) for name, (stage, _, _) in KINDS.items()}
               | {("dpo_sharegpt", "orpo"), ("dpo_alpaca", "dpo"), ("dpo_sharegpt", "kto")})
# What each preference stage logs, so a run that silently trained SFT instead would fail.
PREFERENCE_LOGS = {"dpo": {"rewards/margins", "rewards/accuracies"},
                   "orpo": {"nll_loss", "log_odds_ratio"},
                   "kto": {"rewards/chosen", "rewards/rejected", "kl"}}


def _run(tmp_path: Path, model_dir: Path, name: str, stage: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    from train.roleplay_0_5b import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    monkeypatch.chdir(tmp_path)  # anything a run writes beside its run folder stays in tmp_path
    run = tmp_path / f"run-{name}-{stage}"
    # test_size 0: the fixtures hold 2-3 rows each, and KTO needs both rows of a batch of 2 to train.
    argv = ["--preset", "cpu_demo", "--model", str(model_dir), "--data.inputs", "[]",
            "--data.dataset_info", str(INFO), "--data.dataset", f"[{name}]", "--data.format", "auto",
            "--data.test_size", "0", "--run-dir", str(run), "--stage", stage, "--run.threads", "1",
            "--run.samples", "0", "--max-steps", str(STEPS), "--sft.logging_steps", "1",
            "--sft.warmup_steps", "0", "--lr", "1e-2", "--seq", "256"]
    assert main(argv) == 0
    return run


def _lora_b(run: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert config["init_lora_weights"] is True  # PEFT's default: every lora_B starts at zero
    weights = load_file(run / "adapter" / "adapter_model.safetensors")
    return {k: v for k, v in weights.items() if "lora_B" in k}


@pytest.mark.slow
@pytest.mark.parametrize(("name", "stage"), CASES, ids=[f"{n}-{s}" for n, s in CASES])
def test_each_lf_kind_prepares_and_trains(name: str, stage: str, tmp_path: Path, tiny_llama_dir: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run(tmp_path, tiny_llama_dir, name, stage, monkeypatch)
    _, kind, n = KINDS[name]
    stats = json.loads((run / "data" / "stats.json").read_text())
    assert stats["rows_in"] == stats["rows_kept"] == n and stats["rows_rejected"] == 0  # every row of the kind
    m = json.loads((run / "metrics.json").read_text())
    assert m["stage"] == stage and m["steps"] == STEPS
    assert math.isfinite(m["final_train_loss"]) and m["trained_tokens"] >= m["supervised_tokens"] > 0
    if stage == "pt":  # continued pretraining: loss on every token
        assert m["data"]["train"]["supervised_share"] == 1
    if stage in PREFERENCE_LOGS:
        assert PREFERENCE_LOGS[stage] <= set(m["preference"]["train_last"])
    # The adapter moved: each lora_B left its zero init (any module the loss did not reach would stay 0).
    moved = {k: bool(v.abs().max() > 0) for k, v in _lora_b(run).items()}
    assert moved and all(moved.values()), [k for k, ok in moved.items() if not ok]
