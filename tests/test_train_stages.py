"""The ``stage`` knob: pt, dpo, orpo and kto through the scenario script on a tiny random model, with real
data_prep, real TRL trainers and real PEFT; the reference of a DPO run is its start adapter; a DPO adapter
exports like an SFT one. The pieces (rows -> TRL form, text packing, token counts, start adapter) are fast.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from train.config import ConfigError, LoraConfig, validate_sft_keys
from train.data import TrainDataError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "train" / "roleplay_0_5b.py"
SYSTEM = "You are Mira, a cheerful airship pilot who answers in short, salty sentences."
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _prompt(i: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Where are we headed, captain? ({i})"}]


def _pair(i: int) -> dict:
    return {"prompt": _prompt(i), "chosen": [{"role": "assistant", "content": f"North past the reefs, {i} knots!"}],
            "rejected": [{"role": "assistant", "content": "As an AI language model, I cannot fly airships."}]}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------- fast: the pieces


def test_stage_names_and_their_trl_configs():
    from trl import DPOConfig, KTOConfig, SFTConfig

    from train.stages import check_stage, config_class

    assert config_class("sft") is SFTConfig and config_class("pt") is SFTConfig
    assert config_class("dpo") is DPOConfig and config_class("kto") is KTOConfig
    assert config_class("orpo").__name__ == "ORPOConfig"
    with pytest.raises(ConfigError, match="stage must be one of sft, pt, dpo, orpo, kto, not 'ppo'"):
        check_stage("ppo")
    validate_sft_keys({"beta": 0.1}, "x.yaml", DPOConfig)  # a DPO knob is fine for stage dpo ...
    with pytest.raises(ConfigError, match="unknown SFTConfig field 'beta'"):  # ... and refused for sft
        validate_sft_keys({"beta": 0.1}, "x.yaml", SFTConfig)


def test_preference_rows_become_trl_rows_and_bad_kinds_name_file_and_line():
    from train.preference import to_trl_rows

    rows = [{"kind": "preference", **_pair(0), "source": "p.jsonl:1"},
            {"kind": "preference", **_pair(1), "source": "p.jsonl:2"}]
    rows[0]["chosen"][0]["loss_weight"] = 0  # a data_prep field chat templates never read: dropped
    pairs, stats = to_trl_rows(rows, "dpo", "train.jsonl")
    assert [sorted(p) for p in pairs] == [["chosen", "prompt", "rejected"]] * 2 and stats.examples == 2
    assert pairs[0]["chosen"] == [{"role": "assistant", "content": "North past the reefs, 0 knots!"}]
    unpaired, stats = to_trl_rows(rows, "kto", "train.jsonl")  # KTO: each pair is one good and one bad row
    assert [r["label"] for r in unpaired] == [True, False, True, False] and stats.desirable == 2
    assert unpaired[1]["completion"] == pairs[0]["rejected"]
    with pytest.raises(TrainDataError, match=r"train.jsonl:2: stage dpo trains on prompt/chosen/rejected pairs; "
                                             r"this row is 'sft'"):
        to_trl_rows([rows[0], {"messages": _prompt(0)}], "dpo", "train.jsonl")
    with pytest.raises(TrainDataError, match=r"t.jsonl:1: field 'label' must be true or false"):
        to_trl_rows([{"kind": "unpaired_preference", "prompt": _prompt(0), "completion": [], "label": "yes"}],
                    "kto", "t.jsonl")


def test_pt_packs_every_token_into_blocks_with_an_end_of_text_between_documents():
    from tiny import make_tokenizer

    from train.pretrain import document_ids, pack_texts, texts_of

    tok = make_tokenizer("smollm2")
    docs = ["The airship flies north over the cloud reefs. " * (i + 1) for i in range(5)]
    ds, stats = pack_texts(texts_of([{"kind": "text", "text": d} for d in docs], "t.jsonl"), tok, 32)
    stream = [t for d in docs for t in document_ids(tok, d)]
    assert [t for block in ds["input_ids"] for t in block] == stream  # nothing dropped, order kept
    assert all(len(b) == 32 for b in ds["input_ids"][:-1]) and ds["labels"] == ds["input_ids"]
    assert stream.count(tok.eos_token_id) == len(docs) and stats.supervised == stats.tokens == len(stream)
    with pytest.raises(TrainDataError, match=r"t.jsonl:2: stage pt trains on text rows"):
        texts_of([{"kind": "text", "text": "a"}, {"messages": _prompt(0)}], "t.jsonl")


def test_preference_batches_count_completion_tokens_not_prompts():
    import torch

    from train.stages import batch_tokens

    dpo = {"input_ids": torch.ones(4, 6), "attention_mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2] * 2),
           "completion_mask": torch.tensor([[0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0]] * 2)}
    assert batch_tokens(dpo) == (20, 12)
    kto = {**dpo, "KL_attention_mask": torch.ones(4, 6), "KL_completion_mask": torch.ones(4, 6)}
    assert batch_tokens(kto) == (20, 12)  # the KL pass is forward-only
    orpo = {"prompt_attention_mask": torch.ones(2, 2), "chosen_attention_mask": torch.ones(2, 5),
            "chosen_labels": torch.tensor([[-100, -100, 3, 4, 5]] * 2), "rejected_attention_mask": torch.ones(2, 4),
            "rejected_labels": torch.tensor([[-100, -100, 3, 4]] * 2)}
    assert batch_tokens(orpo) == (18, 10)


def _start_adapter(model_dir: Path, out: Path, r: int = 4) -> Path:
    """A LoRA adapter far from the identity (random B), so its policy differs from the base model's."""
    import torch
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           PeftLoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj", "down_proj"],
                                          task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data = torch.randn(p.shape, generator=gen) * 0.05
    model.save_pretrained(out)
    return out


def test_start_adapter_is_found_shaped_and_loaded(tmp_path, tiny_llama_dir):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from train import init_adapter

    old, new = tmp_path / "runs" / "a-1" / "adapter", tmp_path / "runs" / "a-2" / "adapter"
    _start_adapter(tiny_llama_dir, old, r=2)
    _start_adapter(tiny_llama_dir, new, r=4)
    os.utime(old, (os.path.getmtime(new) + 10,) * 2)  # newest by time, not by name: a-1 now
    assert init_adapter.resolve(str(tmp_path / "runs" / "*" / "adapter")) == old
    with pytest.raises(ConfigError, match="model.init_adapter: no adapter folder"):
        init_adapter.resolve(str(tmp_path / "nothing-*"))
    lora = init_adapter.lora_like(LoraConfig(r=16, alpha=32, target_modules="all-linear"), new)
    assert (lora.r, lora.alpha, lora.target_modules) == (4, 8, ["down_proj", "q_proj", "v_proj"])
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir),
                           PeftLoraConfig(r=4, lora_alpha=8, target_modules=lora.target_modules, task_type="CAUSAL_LM"))
    assert init_adapter.load_weights(model, new) == len(load_file(new / "adapter_model.safetensors"))
    saved = load_file(new / "adapter_model.safetensors")
    state = {k.replace(".default", ""): v for k, v in model.state_dict().items() if "lora_" in k}
    assert all((state[k] == v).all() for k, v in saved.items())
    with pytest.raises(ConfigError, match="does not fit this model"):  # rank 2 into a rank-4 adapter
        init_adapter.load_weights(model, old)


# --------------------------------------------------------------------- slow: whole runs through the script


def _train(tmp: Path, model_dir: Path, stage: str, data: Path, *extra: str) -> tuple[Path, dict]:
    run = tmp / f"run-{stage}"
    cmd = [sys.executable, str(SCRIPT), "--preset", "cpu_demo", "--model", str(model_dir), "--data", str(data),
           "--data.format", "auto", "--data.test_size", "0.2", "--run-dir", str(run), "--stage", stage,
           "--run.threads", "1", "--run.samples", "0", "--max-steps", "4", "--sft.logging_steps", "1",
           "--sft.eval_steps", "2", "--sft.save_steps", "2", "--lr", "1e-2", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return run, json.loads((run / "metrics.json").read_text())


def _assert_trained(run: Path, m: dict, stage: str) -> None:
    assert m["stage"] == stage and m["steps"] == 4
    assert math.isfinite(m["final_train_loss"]) and math.isfinite(m["final_eval_loss"])
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and (run / "loss.png").is_file()
    assert not (run / "adapter" / "ref").exists()  # only the trained adapter is saved
    assert m["trained_tokens"] >= m["supervised_tokens"] > 0


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory):
    from deploy_fixtures import base_and_adapter

    tmp = tmp_path_factory.mktemp("dpo")
    # deploy's base: decisive next-token choices, which its quantized parity gate needs; a random start adapter
    base, start = base_and_adapter(tmp / "src")
    data = _write(tmp / "prefs.jsonl", [_pair(i) for i in range(20)])
    run, m = _train(tmp, base, "dpo", data, "--init-adapter", str(start), "--sft.warmup_steps", "0",
                    "--sft.save_total_limit", "2")  # checkpoint-2 stays for the resume test
    return run, m, start


@pytest.mark.slow
def test_dpo_trains_from_the_start_adapter_against_it(dpo_run):
    from safetensors.torch import load_file

    run, m, start = dpo_run
    _assert_trained(run, m, "dpo")
    assert m["init_adapter"] == str(start)
    # The reference is the start policy: at the first step (before any update) policy == reference, so every
    # reward (beta * log-ratio) is exactly 0. A base-model reference would give non-zero rewards here.
    first = m["preference"]["train_first"]
    assert first["step"] == 1 and first["rewards/chosen"] == first["rewards/rejected"] == first["rewards/margins"] == 0
    assert first["rewards/accuracies"] == 0  # no pair is preferred yet (ties)
    ev = m["preference"]["eval"]
    assert {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"} <= set(ev)
    assert ev["rewards/margins"] > 0 and ev["rewards/accuracies"] > 0.5  # it learnt the preference
    # The trained adapter moved away from its start; checkpoints hold it alone (see the resume test).
    began, ended = load_file(start / "adapter_model.safetensors"), load_file(run / "adapter" / "adapter_model.safetensors")
    assert began.keys() == ended.keys() and any(not (ended[k] == began[k]).all() for k in began)
    assert not list((run / "checkpoints").glob("*/ref")) and (run / "preference.png").is_file()


@pytest.mark.slow
def test_a_dpo_run_resumes_to_the_same_adapter(dpo_run, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file

    run, _, _ = dpo_run
    again = tmp_path / run.name
    shutil.copytree(run / "data", again / "data")
    shutil.copytree(run / "checkpoints" / "checkpoint-2", again / "checkpoints" / "checkpoint-2")
    (again / "config.yaml").write_text((run / "config.yaml").read_text().replace(str(run), str(again)))
    r = subprocess.run([sys.executable, str(SCRIPT), "--config", str(again / "config.yaml"), "--resume"],
                       capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((again / "metrics.json").read_text())
    assert m["resumed_from"].endswith("checkpoint-2") and m["steps"] == 4
    want, got = (load_file(d / "adapter" / "adapter_model.safetensors") for d in (run, again))
    assert all(torch.allclose(want[k], got[k], atol=1e-6) for k in want)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["pt", "orpo", "kto"])
def test_each_stage_trains_through_the_script(stage, tmp_path, tiny_llama_dir):
    if stage == "pt":
        docs = [{"text": f"Log {i}: the airship flew north over the cloud reefs and landed at Port Ember." * 3}
                for i in range(20)]
        data = _write(tmp_path / "text.jsonl", docs)
    elif stage == "kto":
        rows = [{"prompt": _prompt(i), "completion": _pair(i)["chosen" if i % 2 else "rejected"],
                 "label": bool(i % 2)} for i in range(24)]
        data = _write(tmp_path / "kto.jsonl", rows)
    else:
        data = _write(tmp_path / "prefs.jsonl", [_pair(i) for i in range(20)])
    run, m = _train(tmp_path, tiny_llama_dir, stage, data)
    _assert_trained(run, m, stage)
    if stage == "pt":  # loss on every token (but the first of each row, which nothing predicts; batch 2 x 4 steps)
        assert m["data"]["train"]["supervised_share"] == 1
        assert 0 <= m["trained_tokens"] - m["supervised_tokens"] <= 2 * 4 and m["supervised_tokens"] > 0
        return
    keys = {"orpo": {"rewards/accuracies", "rewards/margins", "nll_loss", "log_odds_ratio"},
            "kto": {"rewards/chosen", "rewards/rejected", "rewards/margins", "kl"}}[stage]
    assert keys <= set(m["preference"]["eval"]) and keys <= set(m["preference"]["train_last"])


@pytest.mark.slow
def test_a_dpo_adapter_exports_like_an_sft_one(dpo_run):
    from deploy.modelfile import parse_modelfile

    run, _, _ = dpo_run
    r = subprocess.run([sys.executable, "-m", "deploy.export", "--run", str(run), "--quant", "q8_0", "--no-progress"],
                       capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = run / "export"
    assert (out / "merged" / "model.safetensors").is_file() and (out / f"{run.name}-q8_0.gguf").is_file()
    assert json.loads((out / "parity.json").read_text())["status"] == "passed"
    assert dict(parse_modelfile((out / "Modelfile").read_text()))["system"] == SYSTEM  # from the pairs' prompts


def test_a_stage_without_its_rows_stops_with_one_line(tmp_path, tiny_llama_dir):
    data = _write(tmp_path / "chats.jsonl", [{"messages": _prompt(i) + [{"role": "assistant", "content": "Aye."}]}
                                             for i in range(6)])
    cmd = [sys.executable, str(SCRIPT), "--preset", "cpu_demo", "--model", str(tiny_llama_dir), "--data", str(data),
           "--data.format", "auto", "--run-dir", str(tmp_path / "run"), "--stage", "dpo", "--run.threads", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
