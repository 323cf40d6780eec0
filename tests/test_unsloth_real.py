"""The real pinned Unsloth (2026.10.9) on this CPU, each check in its own process.

Importing unsloth patches transformers and TRL for the whole process, so nothing here imports it in the
pytest process. ``UNSLOTH_ALLOW_CPU=1`` makes it load its GPU classes (FastLanguageModel over
FastLlamaModel and friends) without a GPU, which is enough to bind our keyword arguments to their real
signatures; without it, Unsloth picks its own CPU backend, whose patched ``SFTTrainer`` our
``RecipeTrainer`` then subclasses for a real training run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("unsloth") is None:  # find_spec: importing it here would patch this process
    pytest.skip("the pinned unsloth is installed by ./quick_start.sh setup", allow_module_level=True)


def _run(code: str, *, gpu_classes: bool, cwd: Path | None = None, timeout: int = 600) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    env.pop("UNSLOTH_ALLOW_CPU", None)
    if gpu_classes:
        env["UNSLOTH_ALLOW_CPU"] = "1"
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                       cwd=cwd or ROOT, timeout=timeout)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    return r.stdout


def test_unsloth_imports_on_cpu_and_the_seam_still_picks_hf():
    out = _run(
        """
        import unsloth
        from train.backend import BackendError, choose
        print("auto:", choose().name)
        try:
            choose("unsloth")
        except BackendError as e:
            print("forced:", e)
        """,
        gpu_classes=False,
    )
    assert "auto: hf" in out
    assert "forced: --backend unsloth needs an NVIDIA GPU" in out


def test_our_keyword_arguments_bind_to_the_real_gpu_signatures(tmp_path):
    """from_pretrained / get_peft_model of FastLanguageModel and of the model classes it dispatches to."""
    out = _run(
        f"""
        import inspect
        from unsloth import FastLanguageModel
        from unsloth.models.llama import FastLlamaModel
        from unsloth.models.mistral import FastMistralModel
        from unsloth.models.qwen2 import FastQwen2Model
        from unsloth.models.qwen3 import FastQwen3Model
        from unsloth.models.gemma2 import FastGemma2Model
        from train.backend import attention_backend, unsloth_load_kwargs, unsloth_peft_kwargs
        from train.config import LoraConfig, ModelConfig

        classes = [FastLanguageModel, FastLlamaModel, FastMistralModel, FastQwen2Model, FastQwen3Model,
                   FastGemma2Model]
        for four_bit, dtype in ((True, "float16"), (False, "bfloat16")):
            load = unsloth_load_kwargs("/models/qwen", ModelConfig(max_seq_length=2048), dtype, four_bit)
            for cls in classes:
                params = inspect.signature(cls.from_pretrained).parameters
                inspect.signature(cls.from_pretrained).bind(**load)
                missing = [k for k in load if k not in params]  # not swallowed by **kwargs
                assert not missing, (cls, missing)
        loras = [LoraConfig(), LoraConfig(target_modules=["q_proj", "v_proj"], use_rslora=True),
                 LoraConfig(use_dora=True, dropout=0.0)]
        for lora in loras:
            for checkpointing in (True, False):
                peft = unsloth_peft_kwargs(lora, checkpointing, 7, work_dir="{tmp_path}")
                for cls in (FastLanguageModel, FastLlamaModel):
                    sig = inspect.signature(cls.get_peft_model)
                    sig.bind(None, **peft)
                    named = [k for k in peft if k != "use_dora"]  # use_dora is read from **kwargs upstream
                    assert all(k in sig.parameters for k in named), (cls, named)
        print("bound", len(classes), "classes")
        print("attention:", attention_backend("unsloth"))
        """,
        gpu_classes=True,
    )
    assert "bound 6 classes" in out
    assert "attention: sdpa" in out  # no FlashAttention-2 and no xformers on this CPU


def test_unsloth_compile_cache_goes_under_the_runs_folder(tmp_path):
    out = _run(
        f"""
        import os
        from train.backend import BackendInfo, activate
        activate(BackendInfo("unsloth", True, "test"), runs_dir="{tmp_path}/runs")
        print("location:", os.environ["UNSLOTH_COMPILE_LOCATION"])
        """,
        gpu_classes=True,
        cwd=tmp_path,
    )
    assert f"location: {tmp_path}/runs/.unsloth_compiled_cache" in out
    assert not (tmp_path / "unsloth_compiled_cache").exists()


def _rows(path: Path, n: int = 32) -> Path:
    with path.open("w") as f:
        for i in range(n):
            msgs = [
                {"role": "system", "content": "You are Mira, an airship pilot."},
                {"role": "user", "content": f"Where are we headed? (#{i})"},
                {"role": "assistant", "content": "North, past the cloud reefs!"},
            ]
            f.write(json.dumps({"messages": msgs}) + "\n")
    return path


@pytest.mark.slow
def test_recipe_trains_on_unsloths_patched_sft_trainer(tmp_path, tiny_llama_dir):
    """Our whole roleplay recipe with Unsloth's CPU backend imported first: RecipeTrainer sits on Unsloth's
    SFTTrainer, and the labels, the batching that really ran and the loss come through."""
    run_dir = tmp_path / "run"
    argv = ["roleplay_0_5b.py", "--preset", "cpu_demo", "--model", str(tiny_llama_dir),
            "--data", str(_rows(tmp_path / "rows.jsonl")), "--run-dir", str(run_dir), "--max-steps", "12",
            "--lr", "1e-2", "--run.samples", "0", "--run.threads", "1"]
    out = _run(
        f"""
        import os
        os.environ["UNSLOTH_COMPILE_LOCATION"] = "{tmp_path}/unsloth_cache"
        import runpy, sys
        import unsloth  # the CPU backend: patches trl.SFTTrainer
        from train.sft_trainer import RecipeTrainer
        print("patched parent:", getattr(RecipeTrainer.__mro__[1], "_unsloth_cpu", False))
        sys.argv = {argv!r}
        try:
            runpy.run_path("{ROOT}/train/roleplay_0_5b.py", run_name="__main__")
        except SystemExit as e:
            assert e.code in (0, None), e.code
        """,
        gpu_classes=False,
        cwd=tmp_path,
    )
    assert "patched parent: True" in out  # Unsloth's SFTTrainer is the parent of ours
    m = json.loads((run_dir / "metrics.json").read_text())
    # Unsloth's CPU backend turns padding-free off; metrics.json says what ran, and what was asked.
    assert m["batching_requested"] == "padding_free"
    assert m["batching"] == "padded" and m["sft_effective"]["padding_free"] is False
    assert m["sft_effective"]["max_length"] is None  # rows were truncated by data_prep
    # Assistant-only labels survived: the share trained equals the share our tokenizer pass labelled.
    assert m["trained_token_share"] == pytest.approx(m["data"]["train"]["supervised_share"], abs=0.002)
    assert m["final_eval_loss"] < m["base_eval_loss"]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_the_preference_patch_runs_against_the_real_unsloth():
    """``--stage dpo|orpo|kto`` on the Unsloth path calls ``PatchDPOTrainer()``: it must exist in the pinned
    Unsloth and run before TRL's preference trainers are built (a GPU run is the only place it matters)."""
    out = _run(
        """
        import unsloth
        from train.backend import BackendInfo, patch_preference_trainers
        patch_preference_trainers(BackendInfo("unsloth", True, "test"))
        from trl import DPOTrainer, KTOTrainer
        print("patched:", DPOTrainer.__name__, KTOTrainer.__name__)
        """,
        gpu_classes=True,
    )
    assert "patched: DPOTrainer KTOTrainer" in out
