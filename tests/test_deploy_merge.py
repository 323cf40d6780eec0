"""Merge math against PEFT's own merge_and_unload, the streaming safetensors writer, the merged folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from deploy_fixtures import ALL_LINEAR, make_adapter, make_base
from safetensors.torch import load_file

from deploy.lora import LoraAdapter
from deploy.merge import MergeSource, merge_to_folder
from deploy.safetensors_io import PlannedTensor, StreamingSafetensorsWriter, TensorSource, plan_shards


def _peft_merged(base_dir: Path, adapter_dir: Path) -> dict[str, torch.Tensor]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return {
        k: v.detach()
        for k, v in PeftModel.from_pretrained(model, adapter_dir).merge_and_unload().state_dict().items()
    }


LORA_VARIANTS = {
    "lora": {},
    "rslora": {"use_rslora": True, "lora_alpha": 16},
    "patterns": {"rank_pattern": {"q_proj": 8}, "alpha_pattern": {"down_proj": 3}},
    "dora": {"use_dora": True, "target_modules": ["q_proj", "v_proj", "up_proj"]},
}


@pytest.mark.parametrize("variant", sorted(LORA_VARIANTS))
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_streamed_merge_equals_peft_merge(tmp_path: Path, variant: str, family: str) -> None:
    template = "smollm2" if family == "llama" else "qwen2_5"
    base_dir, model = make_base(tmp_path / "base", template, family)
    adapter_dir = make_adapter(base_dir, model, tmp_path / "adapter", **LORA_VARIANTS[variant])
    want = _peft_merged(base_dir, adapter_dir)
    source = MergeSource(base_dir, LoraAdapter.load(adapter_dir))
    changed = 0
    for name in source.names():
        got = source.get(name).float()
        ref = want[name]
        assert got.shape == ref.shape, name
        torch.testing.assert_close(got, ref, atol=2e-6, rtol=1e-5, msg=name)
        changed += int(source.changed(name))
    n_targets = len(LORA_VARIANTS[variant].get("target_modules", ALL_LINEAR))
    assert changed == 2 * n_targets  # two layers


def test_rslora_scale_is_alpha_over_sqrt_r(tmp_path: Path) -> None:
    base_dir, model = make_base(tmp_path / "base")
    adapter = LoraAdapter.load(
        make_adapter(base_dir, model, tmp_path / "a", r=4, lora_alpha=8, use_rslora=True)
    )
    assert adapter.modules and all(m.scale == pytest.approx(8 / 2) for m in adapter.modules.values())


def test_modules_to_save_unties_lm_head(tmp_path: Path) -> None:
    base_dir, model = make_base(tmp_path / "base")  # llama tiny: tied embeddings
    adapter_dir = make_adapter(
        base_dir, model, tmp_path / "a", target_modules=["q_proj"], modules_to_save=["lm_head"]
    )
    source = MergeSource(base_dir, LoraAdapter.load(adapter_dir))
    assert source.untie and "lm_head.weight" in source.names()
    assert source.merged_config()["tie_word_embeddings"] is False


def test_merged_folder_loads_and_matches_peft(tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir, model = make_base(tmp_path / "base")
    adapter_dir = make_adapter(base_dir, model, tmp_path / "adapter", use_rslora=True)
    out = merge_to_folder(
        MergeSource(base_dir, LoraAdapter.load(adapter_dir)),
        tmp_path / "merged",
        tokenizer_dirs=(adapter_dir,),
        max_shard_bytes=1 << 20,
        progress=False,
    )
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1  # really sharded
    assert not list(out.parent.glob(".merged.*"))  # no temp folder left behind
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ref = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), adapter_dir
    ).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == AutoTokenizer.from_pretrained(adapter_dir).chat_template
    ids = tok(
        tok.apply_chat_template(
            [{"role": "user", "content": "hi there"}], tokenize=False, add_generation_prompt=True
        ),
        add_special_tokens=False,
        return_tensors="pt",
    )
    with torch.no_grad():
        torch.testing.assert_close(merged(**ids).logits, ref(**ids).logits, atol=1e-4, rtol=1e-4)


def test_merge_to_bf16(tmp_path: Path) -> None:
    base_dir, model = make_base(tmp_path / "base")
    adapter_dir = make_adapter(base_dir, model, tmp_path / "adapter")
    out = merge_to_folder(
        MergeSource(base_dir, LoraAdapter.load(adapter_dir)),
        tmp_path / "m16",
        dtype="bfloat16",
        progress=False,
    )
    src = TensorSource(out)
    assert {src.meta(n).dtype for n in src.names()} == {"BF16"}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_quantized_base_is_refused(tmp_path: Path) -> None:
    base_dir, _ = make_base(tmp_path / "base")
    cfg = json.loads((base_dir / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    cfg["_name_or_path"] = "unsloth/Qwen2.5-7B-Instruct-bnb-4bit"
    (base_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="Qwen2.5-7B-Instruct\\)"):
        MergeSource(base_dir)


def test_streaming_writer_roundtrip_and_abort(tmp_path: Path) -> None:
    tensors = {
        "a": torch.randn(3, 5),
        "b": torch.randn(7).to(torch.bfloat16),
        "c": torch.arange(6).view(2, 3),
    }
    plan = [
        PlannedTensor(
            k, tuple(v.shape), {torch.float32: "F32", torch.bfloat16: "BF16", torch.int64: "I64"}[v.dtype]
        )
        for k, v in tensors.items()
    ]
    w = StreamingSafetensorsWriter(tmp_path / "x.safetensors", plan, metadata={"format": "pt"})
    for k, v in tensors.items():
        w.write(k, v)
    w.close()
    back = load_file(tmp_path / "x.safetensors")
    for k, v in tensors.items():
        assert torch.equal(back[k], v)
    w2 = StreamingSafetensorsWriter(tmp_path / "y.safetensors", plan)
    w2.write("a", tensors["a"])
    with pytest.raises(ValueError):
        w2.write("c", tensors["c"])  # out of order
    w2.abort()
    assert not list(tmp_path.glob("y.safetensors*"))
    assert [len(s) for s in plan_shards(plan, 64)] == [1, 2]


def test_adapter_from_a_4bit_base_merges_into_the_16bit_weights(tmp_path: Path) -> None:
    from deploy.merge import resolve_base

    base_dir, model = make_base(tmp_path / "model")
    adapter_dir = make_adapter(base_dir, model, tmp_path / "adapter")
    cfg_file = adapter_dir / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["base_model_name_or_path"] = f"{base_dir}-bnb-4bit"  # as recorded by a QLoRA run
    cfg_file.write_text(json.dumps(cfg))
    assert resolve_base(LoraAdapter.load(adapter_dir), None) == base_dir
