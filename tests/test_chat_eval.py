"""``python -m eval.chat_eval`` on a tiny model folder with a real PEFT adapter, and the persona rules."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from eval.chat_eval import main, read_rows
from eval.persona import PersonaRules, check_reply, persona_score

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "data" / "roleplay" / "character.json"

ROWS = [
    {"messages": [{"role": "system", "content": "You are Lin Zhi."}, {"role": "user", "content": "Hi!"},
                  {"role": "assistant", "content": "Rainy day, tea day."}, {"role": "user", "content": "Jasmine?"},
                  {"role": "assistant", "content": "Smell this first."}]},
    {"messages": [{"role": "user", "content": "How warm should the water be?"},
                  {"role": "assistant", "content": "About eighty degrees, or it turns bitter."}]},
]


@pytest.fixture(scope="module")
def adapter_dir(tiny_llama_dir, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir))
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    out = tmp_path_factory.mktemp("adapter")
    get_peft_model(model, cfg).save_pretrained(str(out))
    return out


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def test_chat_eval_base_and_finetuned(tiny_llama_dir, adapter_dir, data, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["--model", str(tiny_llama_dir), "--adapter", str(adapter_dir), "--data", str(data),
                 "--out", str(out), "--samples", "2", "--max-new-tokens", "6", "--character", str(CARD)])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((out / "results.json").read_text())
    for v in ("base", "finetuned"):
        assert doc[v]["rows"] == 2 and doc[v]["tokens"] > 0
        assert doc[v]["perplexity"] == pytest.approx(math.exp(doc[v]["loss"]))
        assert doc[v]["loss"] > 5  # a random tiny model is close to uniform over a 49k vocabulary
    assert doc["base"]["loss"] != doc["finetuned"]["loss"]  # the adapter really changes the model
    # Assistant tokens only: 4 short assistant turns, far fewer than all tokens of the chats.
    assert doc["base"]["tokens"] == doc["finetuned"]["tokens"] < 60
    assert len(doc["samples"]) == 2
    s = doc["samples"][0]
    assert s["prompt"] == "Jasmine?" and s["reference"] == "Smell this first."
    assert set(s["replies"]) == {"base", "finetuned"} and set(s["persona"]) == {"base", "finetuned"}
    assert set(doc["persona"]) == {"base", "finetuned"}
    report = (out / "report.md").read_text()
    assert "| base |" in report and "| finetuned |" in report and "Samples (greedy)" in report
    assert (out / "perplexity.png").read_bytes()[:4] == b"\x89PNG"


def test_chat_eval_base_only_and_errors(tiny_llama_dir, data, tmp_path, capsys):
    assert main(["--model", str(tiny_llama_dir), "--data", str(data), "--out", str(tmp_path / "o"),
                 "--samples", "1", "--max-new-tokens", "4"]) == 0
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert doc["finetuned"] is None and list(doc["samples"][0]["replies"]) == ["base"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    capsys.readouterr()
    assert main(["--model", str(tiny_llama_dir), "--data", str(bad), "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "bad.jsonl:2: invalid JSON" in err and err.count("\n") == 1


def test_read_rows_names_the_field(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"messages": [{"role": "user"}]}\n')
    with pytest.raises(ValueError, match=r"t.jsonl:1: field 'messages\[0\]'"):
        read_rows(p)


def test_persona_rules_from_the_real_card():
    rules = PersonaRules.from_card(json.loads(CARD.read_text(encoding="utf-8")))
    assert check_reply("Rainy day, tea day. I'm Lin Zhi, welcome in.", rules).passed
    assert check_reply("下雨天，就该喝茶。我叫林栀。", rules).passed
    bad = check_reply("As an AI language model, I am SmolLM.", rules)
    assert not bad.passed and any("forbidden" in r for r in bad.reasons) and any("SmolLM" in r for r in bad.reasons)
    assert not check_reply("我是机器人。", rules).passed
    assert not check_reply("Hello, my name is Bob.", rules).passed
    assert check_reply("x" * 301, rules).reasons == ["too long: 301 > 300 characters"]
    assert check_reply("  ", rules).reasons == ["empty reply"]
    rate, checks = persona_score(["Smell this first.", "I'm a chatbot."], rules)
    assert rate == 0.5 and checks[1].reasons and "claims" in checks[1].reasons[0]
    with pytest.raises(ValueError, match="consistency.max_reply_chars"):
        PersonaRules.from_card({"consistency": {"max_reply_chars": "long"}})
