"""The GPU path, as far as a CPU reaches it: LoRA targets, checkpointing, the T4 plan, dtype consistency,
tokenizer drift, the batching that really ran, and what setup installs beside us (torch/torchvision/xformers).

The real Unsloth package is exercised in tests/test_unsloth_real.py (each test in its own process).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import tomllib
import torch
from tiny import make_tokenizer

from train import install_plan, planner
from train.backend import BackendInfo, load_trainable, reconcile_tokenizer, unsloth_peft_kwargs
from train.config import ConfigError, LoraConfig, ModelConfig, TrainConfig, apply_overrides, load_config

ROOT = Path(__file__).resolve().parents[1]


# -- 1. target modules from the CLI -----------------------------------------------------------------


def test_comma_list_of_target_modules_becomes_a_list():
    cfg = apply_overrides(TrainConfig(), ["--lora.target_modules", "q_proj,v_proj"])
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert unsloth_peft_kwargs(cfg.lora, True, 0)["target_modules"] == ["q_proj", "v_proj"]
    cfg = apply_overrides(TrainConfig(), ["--lora.target_modules", "o_proj"])
    assert cfg.lora.target_modules == ["o_proj"]  # one name is a list too, not a regex
    assert apply_overrides(TrainConfig(), ["lora.target_modules=all-linear"]).lora.target_modules == "all-linear"
    with pytest.raises(ConfigError, match="target_modules"):
        apply_overrides(TrainConfig(), ["--lora.target_modules", ",,"])


def test_hf_backend_targets_exactly_the_listed_modules(tiny_llama_dir):
    cfg = apply_overrides(TrainConfig(), ["--lora.target_modules", "q_proj,v_proj", "--lora.r", "2"])
    model, _ = load_trainable(
        BackendInfo("hf", False, "test"), str(tiny_llama_dir), ModelConfig(), cfg.lora,
        precision="fp32", gradient_checkpointing=False, seed=0, tokenizer=make_tokenizer("smollm2"),
    )
    wrapped = {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if hasattr(mod, "lora_A")}
    assert wrapped == {"q_proj", "v_proj"}


def test_unsloth_all_linear_names_every_projection():
    targets = unsloth_peft_kwargs(LoraConfig(), True, 0)["target_modules"]
    assert targets == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_old_run_config_with_load_in_4bit_still_loads(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("model:\n  load_in_4bit: true\n  max_seq_length: 512\n")
    cfg = load_config(path)
    assert cfg.lora.method == "qlora" and cfg.model.max_seq_length == 512


# -- 2. gradient checkpointing follows the plan -------------------------------------------------------


@pytest.mark.parametrize("on, expected", [(True, "unsloth"), (False, False)])
def test_unsloth_checkpointing_follows_the_plan(on, expected, tmp_path):
    kwargs = unsloth_peft_kwargs(LoraConfig(), on, 3, work_dir=tmp_path)
    assert kwargs["use_gradient_checkpointing"] == expected
    assert kwargs["random_state"] == 3
    assert kwargs["temporary_location"] == str(tmp_path / "_unsloth_temporary_saved_buffers")


# -- 3. Colab T4: no emulated bf16; torch/torchvision/xformers that match -----------------------------


def _fake_gpu(monkeypatch, name: str, capability: tuple[int, int], gb: float) -> None:
    """A CUDA device as torch reports it (this CPU has none); torch's emulation-counting check says True."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda device=None: SimpleNamespace(name=name, total_memory=gb * 1024**3)
    )
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)


def test_t4_plans_fp16_not_emulated_bf16(monkeypatch):
    _fake_gpu(monkeypatch, "Tesla T4", (7, 5), 15.0)
    hw = planner.detect_hardware()
    assert hw.bf16 is False
    p = planner.plan(hw, 7.0, 2048, "qlora")
    assert p.precision == "fp16" and p.fits
    assert p.sft_fields()["fp16"] is True and p.sft_fields()["bf16"] is False


def test_ampere_plans_bf16(monkeypatch):
    _fake_gpu(monkeypatch, "NVIDIA A100-SXM4-40GB", (8, 0), 40.0)
    assert planner.plan(planner.detect_hardware(), 7.0, 2048, "lora").precision == "bf16"


@pytest.mark.parametrize(
    "torch_installed, colab, gpu, expected",
    [
        (None, False, False, ["torch==2.13.0"]),
        ("2.13.0+cpu", False, False, ["torch==2.13.0"]),
        (None, False, True, ["torch==2.13.0", "torchvision==0.28.*", "xformers==0.0.35"]),
        ("2.9.0+cu126", True, True, ["torchvision==0.24.*", "xformers==0.0.33.post1"]),  # Colab's torch stays
        ("2.11.0+cu128", True, True, ["torchvision==0.26.*", "xformers==0.0.35"]),
        ("2.6.0+cu124", True, True, ["torchvision==0.21.*"]),  # kept; no xformers build for it
        ("2.3.1+cu121", True, True, ["torch==2.13.0", "torchvision==0.28.*", "xformers==0.0.35"]),  # too old
        ("2.16.0", True, False, ["torch==2.13.0"]),  # newer than Unsloth 2026.10.9 accepts
    ],
)
def test_install_plan_keeps_a_matching_torch_vision_xformers_set(torch_installed, colab, gpu, expected):
    assert install_plan.plan(torch_installed, colab=colab, gpu=gpu) == expected


def test_gpu_extra_leaves_xformers_to_the_install_plan():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert not any(req.startswith("xformers") for req in extras["gpu"])  # pip would pick a torch for it
    assert {"unsloth==2026.10.9", "unsloth_zoo==2026.10.9"} <= set(extras["gpu"])


# -- 4. one tokenizer -------------------------------------------------------------------------------


def test_unsloth_tokenizer_drift_keeps_ours_and_says_so():
    ours, theirs = make_tokenizer("qwen2_5"), make_tokenizer("qwen2_5")
    assert reconcile_tokenizer(ours, theirs) == (ours, [])
    theirs.pad_token = "<|im_end|>"  # Unsloth's pad fix where pad == eos
    theirs.chat_template = "{{ messages }}"
    kept, notes = reconcile_tokenizer(ours, theirs)
    assert kept is ours and ours.pad_token == "<|endoftext|>"
    assert any("pad_token" in n and "keeping ours" in n for n in notes)
    assert any("chat_template" in n for n in notes)


# -- 6. model dtype and trainer precision agree -----------------------------------------------------

A100 = planner.Hardware("NVIDIA A100", 40.0, bf16=True)
T4 = planner.Hardware("Tesla T4", 15.0, bf16=False)
CPU = planner.Hardware("cpu", bf16=True)


def test_explicit_fp16_weights_on_a_bf16_gpu_train_in_fp16():
    p = planner.with_model_dtype(planner.plan(A100, 0.5, 1024), "float16", A100, {})
    assert p.precision == "fp16" and p.sft_fields()["bf16"] is False
    assert planner.with_model_dtype(planner.plan(A100, 0.5, 1024), "float32", A100, {}).precision == "bf16"


@pytest.mark.parametrize(
    "hw, dtype, sft, needle",
    [
        (T4, "bfloat16", {}, "no native bf16"),
        (CPU, "float16", {}, "only on a GPU"),
        (A100, "float16", {"bf16": True}, "contradict"),
    ],
)
def test_impossible_dtype_requests_are_refused_in_our_words(hw, dtype, sft, needle):
    with pytest.raises(planner.DtypeConflict, match=needle):
        planner.with_model_dtype(planner.with_explicit(planner.plan(hw, 0.5, 1024), sft), dtype, hw, sft)


# -- 7. stray folders ------------------------------------------------------------------------------


def test_unsloth_work_folders_are_ignored_by_git():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert {"unsloth_compiled_cache/", "_unsloth_temporary_saved_buffers/"} <= set(ignored)


# -- QLoRA on CPU after an eval forward (the recipe's base-model eval comes first) -------------------


def test_qlora_trains_after_an_eval_forward_on_a_model_with_biases(tiny_qwen2_dir):
    """bitsandbytes repacks 4-bit weights for inference at the first no-grad eval forward on AVX512-BF16
    CPUs; training through the repacked layout must not happen (Qwen2's q/k/v biases make it raise)."""
    pytest.importorskip("bitsandbytes")
    lora = LoraConfig(method="qlora", r=4, alpha=8, dropout=0.0)
    model, _ = load_trainable(
        BackendInfo("hf", False, "test"), str(tiny_qwen2_dir), ModelConfig(), lora,
        precision="fp32", gradient_checkpointing=False, seed=0, tokenizer=make_tokenizer("qwen2_5"),
    )
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    model.eval()
    with torch.no_grad():
        before = model(input_ids=ids, labels=ids).loss
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-2)
    for _ in range(5):
        opt.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = model(input_ids=ids, labels=ids).loss
    assert after < before - 0.05


@pytest.mark.slow
def test_env_check_reports_backend_attention_and_versions():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "train.env_check"], capture_output=True, text=True, cwd=ROOT,
                       env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    assert lines["device"].startswith("cpu")
    assert lines["backend"].startswith("hf (")
    assert lines["attention"] == "sdpa (transformers)"
    assert lines["torch"].startswith("2.13.0")
    assert lines["xformers"] == "not installed"
    assert lines["import bitsandbytes"] == "ok" and lines["python"].startswith("3.")
    assert lines["torch build"].endswith("(CPU)")
    assert lines["ollama"] == "not on PATH"  # PATH above has no ollama, so its fix line is printed
    assert r.stdout.strip().splitlines()[-1].startswith("fix: ollama: ")
