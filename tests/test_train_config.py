"""Config presets, dotted CLI overrides, SFTConfig pass-through, the hardware planner and the backend seam."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from train import planner
from train.backend import BackendError, choose
from train.cli import parse
from train.config import (
    CONFIGS_DIR,
    ConfigError,
    TrainConfig,
    apply_overrides,
    load_config,
    save_config,
    validate_sft_keys,
)

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- presets and overrides


@pytest.mark.parametrize("preset", sorted(p.name for p in CONFIGS_DIR.glob("*.yaml")))
def test_every_preset_loads_and_names_only_sftconfig_fields(preset):
    from train.stages import config_class

    cfg = load_config(CONFIGS_DIR / preset)
    validate_sft_keys(cfg.sft, preset, config_class(cfg.run.stage))  # SFTConfig, or DPOConfig for stage dpo
    assert cfg.lora.method in ("lora", "qlora")
    assert cfg.model.max_seq_length > 0


def test_every_preset_knob_has_a_cost_comment():
    for path in CONFIGS_DIR.glob("*.yaml"):
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        knobs = [ln for ln in lines if ":" in ln and not ln.rstrip().endswith(":")]
        commented = [ln for ln in knobs if "#" in ln]
        assert commented == knobs, f"{path.name}: every knob needs a one-line cost comment"


def test_scenario_presets_follow_the_seeds():
    rp = load_config(CONFIGS_DIR / "roleplay_0_5b.yaml")
    assert (rp.model.name, rp.model.max_seq_length) == ("Qwen/Qwen2.5-0.5B-Instruct", 512)
    assert (rp.lora.r, rp.lora.alpha, rp.lora.dropout) == (16, 32, 0.1)
    assert rp.sft["learning_rate"] == 5e-5 and rp.sft["num_train_epochs"] == 3
    react = load_config(CONFIGS_DIR / "react_7b.yaml")
    assert react.model.name == "unsloth/Qwen2.5-7B-Instruct-bnb-4bit" and react.model.max_seq_length == 2048
    assert react.lora.r == 16
    qa = load_config(CONFIGS_DIR / "domain_qa.yaml")
    assert qa.model.name == "Qwen/Qwen2.5-1.5B-Instruct"


def test_override_forms_and_aliases():
    cfg = TrainConfig()
    apply_overrides(
        cfg,
        [
            "--lora.r",
            "8",
            "--lora.alpha=4",
            "lora.use_dora=true",
            "--lr",
            "1e-4",
            "--sft.warmup_steps",
            "0.1",
            "--data",
            "a.jsonl,b.jsonl",
            "--run.samples=0",
            "--lora.target_modules",
            "[q_proj, v_proj]",
        ],
    )
    assert cfg.lora.r == 8 and cfg.lora.alpha == 4 and cfg.lora.use_dora is True
    assert cfg.sft["learning_rate"] == 1e-4 and isinstance(cfg.sft["learning_rate"], float)
    assert cfg.sft["warmup_steps"] == 0.1
    assert cfg.data.inputs == ["a.jsonl", "b.jsonl"]
    assert cfg.run.samples == 0
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]


@pytest.mark.parametrize(
    "tokens, needle",
    [
        (["--lora.rank", "8"], "unknown field 'lora.rank'"),
        (["--lora.r", "eight"], "must be an integer"),
        (["--optim.lr", "1"], "unknown section 'optim'"),
        (["--lora.r"], "has no value"),
        (["stray"], "cannot read 'stray'"),
    ],
)
def test_bad_overrides_say_what_is_wrong(tokens, needle):
    with pytest.raises(ConfigError, match=needle):
        apply_overrides(TrainConfig(), tokens)


def test_unknown_sft_field_is_refused_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"'learning_rte' \(did you mean 'learning_rate'\?\)"):
        validate_sft_keys({"learning_rte": 1e-4})


def test_cli_overrides_reach_sftconfig(tmp_path):
    from train.sft_args import build_sft_config

    cli = parse(
        [
            "--preset",
            "cpu_demo",
            "--lr",
            "7e-4",
            "--sft.lr_scheduler_type",
            "linear",
            "--sft.max_grad_norm=0.5",
            "--batch-size",
            "3",
            "--sft.gradient_checkpointing",
            "true",
            "--sft.neftune_noise_alpha",
            "5",
            "--sft.save_total_limit",
            "4",
        ],
        scenario="roleplay",
        default_preset="roleplay_0_5b",
    )
    plan = planner.plan(planner.Hardware("cpu"), 0.135, cli.cfg.model.max_seq_length)
    args = build_sft_config(cli.cfg, plan, tmp_path, "padding_free", True, 50)
    assert args.learning_rate == 7e-4
    assert getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type) == "linear"
    assert args.max_grad_norm == 0.5
    assert args.per_device_train_batch_size == 3  # explicit beats the plan (which says 2 at seq 384)
    assert args.gradient_checkpointing is True
    assert args.neftune_noise_alpha == 5
    assert args.save_total_limit == 4
    assert args.use_cpu is True and args.bf16 is False and args.fp16 is False  # from the plan
    assert args.padding_free is True and args.max_length is None
    assert args.output_dir == str(tmp_path / "checkpoints")


def test_saved_config_repeats_the_run(tmp_path):
    cli = parse(
        ["--preset", "cpu_demo", "--lora.r", "4", "--epochs", "1"],
        scenario="roleplay",
        default_preset="roleplay_0_5b",
    )
    save_config(cli.cfg, tmp_path / "config.yaml")
    again = parse(
        ["--config", str(tmp_path / "config.yaml")], scenario="roleplay", default_preset="roleplay_0_5b"
    )
    assert dataclasses.asdict(again.cfg) == dataclasses.asdict(cli.cfg)
    assert again.explicit_model  # a saved config names its model: no second fallback


def test_bad_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  name: x\n lora: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_config(p)


# ---------------------------------------------------------------- planner


def test_plan_t4_is_fp16_and_needs_qlora_for_7b():
    t4 = planner.Hardware("Tesla T4", vram_gb=14.7, bf16=False)
    p = planner.plan(t4, 7.0, 2048, "qlora")
    assert p.fits and p.precision == "fp16" and p.gradient_checkpointing and not p.use_cpu
    assert p.batch_size * p.grad_accum == planner.EFFECTIVE_BATCH
    lora = planner.plan(t4, 7.0, 2048, "lora")
    assert not lora.fits
    assert any("QLoRA" in a for a in lora.advice) and any("smaller model" in a for a in lora.advice)


def test_plan_4090_matches_the_seed_preset():
    p = planner.plan(planner.Hardware("NVIDIA GeForce RTX 4090", 23.6, True), 7.0, 2048, "lora")
    assert (p.precision, p.batch_size, p.grad_accum, p.fits) == ("bf16", 2, 8, True)


def test_plan_a100_matches_the_seed_preset():
    p = planner.plan(planner.Hardware("NVIDIA A100-SXM4-80GB", 79.2, True), 14.0, 2048, "lora")
    assert (p.precision, p.batch_size, p.grad_accum, p.fits) == ("bf16", 4, 4, True)


def test_plan_cpu_is_fp32_use_cpu_without_checkpointing():
    p = planner.plan(planner.Hardware("cpu"), 0.135, 512, "lora")
    assert (p.precision, p.use_cpu, p.gradient_checkpointing, p.seq_len) == ("fp32", True, False, 512)
    q = planner.plan(planner.Hardware("cpu"), 0.135, 512, "qlora", bnb_available=False)
    assert q.method == "lora" and "bitsandbytes" in q.notes[0]


def test_plan_cpu_with_bf16_units_uses_bf16_autocast():
    p = planner.plan(planner.Hardware("cpu", bf16=True), 0.135, 384, "lora")
    assert (p.precision, p.use_cpu) == ("bf16", True) and p.sft_fields()["bf16"] is True
    off = planner.with_explicit(planner.plan(planner.Hardware("cpu", bf16=True), 0.135, 384), {"bf16": False})
    assert off.precision == "fp32" and off.sft_fields()["bf16"] is False


def test_plan_suggests_shorter_sequences_when_that_is_enough():
    p = planner.plan(planner.Hardware("small", 10.0, True), 3.0, 16384, "qlora")
    assert not p.fits and any("--model.max_seq_length 8192" in a for a in p.advice)


def test_vram_table_is_the_seeds_figures():
    assert planner.VRAM_TABLE_GB[(7.0, "lora")] == (16.0, 20.0)
    assert planner.VRAM_TABLE_GB[(7.0, "qlora")] == (10.0, 14.0)
    assert planner.VRAM_TABLE_GB[(14.0, "qlora")] == (18.0, 24.0)
    assert planner.VRAM_TABLE_GB[(0.5, "lora")] == (4.0, 6.0)
    lo, hi = planner.table_gb(5.0, "lora")
    assert 10.0 < lo < 16.0 and 12.0 < hi < 20.0  # interpolated between the 3B and 7B rows


# ---------------------------------------------------------------- backend seam


def test_backend_auto_is_hf_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("machine has a GPU")
    assert choose("auto").name == "hf"
    with pytest.raises(BackendError, match="needs an NVIDIA GPU"):
        choose("unsloth")


def test_forcing_unsloth_without_gpu_is_one_line_no_traceback():
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train" / "roleplay_0_5b.py"),
            "--preset",
            "cpu_demo",
            "--backend",
            "unsloth",
            "--plan-only",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "needs an NVIDIA GPU" in r.stderr


def test_only_backend_imports_unsloth():
    offenders = [
        p.name
        for p in (ROOT / "train").glob("*.py")
        if p.name != "backend.py"
        and "import unsloth" in p.read_text().replace("from unsloth", "import unsloth")
    ]
    assert offenders == []


def test_trl_and_hf_trainer_flags_work_unqualified():
    """What a TRL / HF Trainer user types: bare SFTConfig / TrainingArguments names, '_' or '-' spelling."""
    cfg = apply_overrides(
        TrainConfig(),
        ["--output_dir", "runs/x", "--learning_rate", "1e-4", "--num-train-epochs", "2", "--max_steps=10",
         "--gradient_accumulation_steps", "4", "--lr_scheduler_type", "linear"],
    )
    assert cfg.run.run_dir == "runs/x"
    assert cfg.sft == {"learning_rate": 1e-4, "num_train_epochs": 2, "max_steps": 10,
                       "gradient_accumulation_steps": 4, "lr_scheduler_type": "linear"}
    validate_sft_keys(cfg.sft)  # every one is a real SFTConfig field


@pytest.mark.parametrize(
    "flag, hint",
    [("--learnig_rate", "learning_rate"), ("--lora_r", "lora.r"), ("--max_seq_length", "model.max_seq_length")],
)
def test_unknown_bare_flag_gets_a_did_you_mean(flag, hint):
    cfg = apply_overrides(TrainConfig(), [flag, "1"])
    with pytest.raises(ConfigError, match=rf"did you mean '{re.escape(hint)}'"):
        validate_sft_keys(cfg.sft, origin="command line")


def test_a_comma_string_fills_a_list_field_that_defaults_to_none():
    cfg = apply_overrides(TrainConfig(), ["--data.dataset", "fish_care", "--data.inputs", "a.jsonl,b.jsonl"])
    assert cfg.data.dataset == ["fish_care"] and cfg.data.inputs == ["a.jsonl", "b.jsonl"]
    assert apply_overrides(TrainConfig(), ["--data.dataset", "[x, y]"]).data.dataset == ["x", "y"]
