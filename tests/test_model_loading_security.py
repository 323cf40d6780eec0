"""Model loading runs no code from the model folder: pickle weights and remote code are refused by default."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from eval.react_eval import main
from models.loading import UnsafeWeightsError, check_weights, load_causal_lm, load_model


@pytest.fixture(scope="module")
def pickle_dir(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model re-saved as ``pytorch_model.bin`` (pickle), with its tokenizer.

    transformers 5 ignores ``safe_serialization=False``, so the state dict is pickled by hand, as older
    versions (and many Hub repos) have it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("pickled")
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir))
    model.save_pretrained(out, safe_serialization=False)
    for f in out.glob("*.safetensors"):
        f.unlink()
    torch.save(model.state_dict(), out / "pytorch_model.bin")
    AutoTokenizer.from_pretrained(str(tiny_llama_dir)).save_pretrained(out)
    assert (out / "pytorch_model.bin").is_file() and not list(out.glob("*.safetensors"))
    return out


def test_pickle_only_folder_is_refused_unless_allowed(pickle_dir, tiny_llama_dir):
    with pytest.raises(UnsafeWeightsError, match=r"pickle \(pytorch_model.bin\).*--allow-pickle"):
        load_causal_lm(str(pickle_dir))
    import torch

    model, _ = load_model(str(pickle_dir), allow_pickle=True)
    reference = load_causal_lm(str(tiny_llama_dir))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)


def test_pt_files_are_pickle_too_and_trainer_state_is_ignored(tmp_path):
    (tmp_path / "weights.pt").write_bytes(b"x")
    with pytest.raises(UnsafeWeightsError, match="weights.pt"):
        check_weights(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"x")
    check_weights(tmp_path)  # safetensors present: those load, the .pt is never read
    other = tmp_path / "ckpt"
    other.mkdir()
    (other / "training_args.bin").write_bytes(b"x")
    check_weights(other)  # Trainer state, not weights: nothing to refuse here


def test_pickle_adapter_is_refused(tiny_llama_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir))
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter, safe_serialization=False)
    assert (adapter / "adapter_model.bin").is_file()
    with pytest.raises(UnsafeWeightsError, match="adapter_model.bin"):
        load_causal_lm(str(tiny_llama_dir), adapter)
    assert load_causal_lm(str(tiny_llama_dir), adapter, allow_pickle=True) is not None


def test_react_eval_refuses_pickle_in_one_line_and_allow_pickle_runs(pickle_dir, tmp_path, capsys):
    argv = ["--policy", "hf", "--model", str(pickle_dir), "--episodes", "1", "--max-steps", "2",
            "--max-new-tokens", "3", "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--allow-pickle" in err and "Traceback" not in err
    assert main([*argv, "--allow-pickle"]) == 0
    assert json.loads((tmp_path / "o" / "results.json").read_text())["episodes"] == 1


def test_remote_code_in_the_model_folder_never_runs(tiny_llama_dir, tmp_path):
    folder = tmp_path / "custom"
    shutil.copytree(tiny_llama_dir, folder)
    marker = tmp_path / "ran"
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\n")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "modeling_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(cfg))
    try:
        load_causal_lm(str(folder))
    except (ValueError, OSError) as exc:  # transformers may refuse outright: also fine
        assert "trust_remote_code" in str(exc)
    assert not marker.exists()


def test_no_code_passes_trust_remote_code():
    root = Path(__file__).resolve().parents[1]
    hits = [
        f"{p.relative_to(root)}"
        for pkg in ("models", "eval", "train", "deploy", "data_prep")
        for p in (root / pkg).rglob("*.py")
        if "trust_remote_code=True" in p.read_text(encoding="utf-8")
    ]
    assert hits == []


def test_deploy_chat_refuses_pickle_in_one_line_unless_allowed(pickle_dir, capsys, monkeypatch):
    import io

    from deploy.chat import main as chat_main

    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert chat_main([str(pickle_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--allow-pickle" in err and "Traceback" not in err
    assert chat_main([str(pickle_dir), "--allow-pickle"]) == 0  # loads, then stdin ends the chat
