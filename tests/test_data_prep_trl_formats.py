"""TRL's standard dataset formats, Dolly, LLaMA-Factory v1 content parts and reasoning traces, end to end.

Each row goes through ``prepare`` (real SmolLM2 tokenizer, and Llama 3's or Qwen3's real template on it); the
written row is then rendered with ``data_prep.render`` and its labels are checked token by token: the runs of
trained tokens must decode to exactly the expected replies (+ end-of-turn token), every other token untrained.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tiny import make_tokenizer

from data_prep.__main__ import parse_columns
from data_prep.conversation import Conversation
from data_prep.formats import FormatOptions, detect, to_conversation
from data_prep.io import DataPrepError
from data_prep.pipeline import PrepConfig, prepare
from data_prep.render import IGNORE_INDEX, render_example, template_messages
from data_prep.validate import validate
from data_prep.work import preference_chats

ROOT = Path(__file__).resolve().parents[1]
EOT = {"smollm2": "<|im_end|>", "llama3": "<|eot_id|>", "qwen3": "<|im_end|>"}


@functools.cache
def tok_for(template: str) -> Any:
    return make_tokenizer(template)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _prep(tmp_path: Path, rows: list[dict], template: str = "smollm2", **cfg: Any) -> tuple[list[dict], dict]:
    src = _write(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    stats = prepare(PrepConfig(inputs=[str(src)], out=str(out), test_size=0, **cfg), tokenizer=tok_for(template))
    kept = [json.loads(line) for line in (out / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    return kept, stats


def runs(tok: Any, ids: list[int], labels: list[int]) -> list[str]:
    """The decoded runs of consecutive trained tokens; every trained label must equal its input id."""
    out, cur = [], []
    for t, lab in zip(ids, labels, strict=True):
        if lab != IGNORE_INDEX:
            assert lab == t
            cur.append(t)
        elif cur:
            out.append(tok.decode(cur, skip_special_tokens=False))
            cur = []
    if cur:
        out.append(tok.decode(cur, skip_special_tokens=False))
    return out


def reply(template: str, content: str) -> str:
    """What a template writes for a trained assistant turn after its header."""
    return (content.strip() if template == "llama3" else content) + EOT[template]


def trained_runs(template: str, chat: list[dict], tools: Any = None) -> list[str]:
    tok = tok_for(template)
    ex = render_example(tok, chat, tools=tools)
    return runs(tok, ex.input_ids, ex.labels)


# ------------------------------------------------------------------------------------------ detection


@pytest.mark.parametrize("row,fmt", [
    ({"text": "A document."}, "text"),
    ({"prompt": "Hi"}, "prompt_only"),
    ({"prompt": "Hi", "completion": "Hello"}, "prompt_completion"),
    ({"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "Yo"}]},
     "prompt_completion"),
    ({"prompt": "Hi", "chosen": "Hello", "rejected": "Go away"}, "preference"),
    ({"chosen": [{"role": "user", "content": "Hi"}], "rejected": [{"role": "user", "content": "Hi"}]}, "preference"),
    ({"chosen_messages": [], "rejected_messages": []}, "preference"),
    ({"prompt": "Hi", "completion": "Hello", "label": True}, "unpaired_preference"),
    ({"instruction": "Sum up", "context": "A long text", "response": "Short", "category": "summarization"}, "dolly"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "value": "Hi"}]}]}, "openai"),
])
def test_detection(row: dict, fmt: str) -> None:
    assert detect(row, "f.jsonl:1", FormatOptions())[0] == fmt


# ------------------------------------------------------------------------------------------ TRL formats


def test_language_modeling_text_every_token_trained(tmp_path: Path) -> None:
    texts = ["The kettle boiled twice before anyone noticed.", "Moss grows on the north side, mostly."]
    kept, stats = _prep(tmp_path, [{"text": t} for t in texts], stage="pt")
    assert [r["kind"] for r in kept] == ["text", "text"] and [r["text"] for r in kept] == texts
    n = sum(len(tok_for("smollm2")(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)  # + EOS
    assert stats["tokens_total"] == stats["tokens_trained"] == n


def test_text_under_sft_is_an_error_with_the_stage_to_use(tmp_path: Path) -> None:
    with pytest.raises(DataPrepError, match=r"no rows kept out of 2 \(--stage sft\); rejected: wrong_stage 2 .*"
                                            r"plain-text rows \(continued pretraining\): use --stage pt"):
        _prep(tmp_path, [{"text": "One."}, {"text": "Two."}])
    out = tmp_path / "out"
    assert json.loads((out / "stats.json").read_text())["rows_kept"] == 0  # written before the error
    assert [json.loads(x)["reason"] for x in (out / "rejects.jsonl").read_text().splitlines()] == ["wrong_stage"] * 2


def test_prompt_only_rows_have_nothing_to_train(tmp_path: Path) -> None:
    with pytest.raises(DataPrepError, match="nothing_to_train 1.*prompt-only"):
        _prep(tmp_path, [{"prompt": "Write a haiku about rain."}])


@pytest.mark.parametrize("template", ["smollm2", "llama3"])
def test_prompt_completion_plain(tmp_path: Path, template: str) -> None:
    kept, _ = _prep(tmp_path, [{"prompt": "Capital of Peru?", "completion": "Lima."}], template)
    assert kept[0]["messages"] == [{"role": "user", "content": "Capital of Peru?"},
                                   {"role": "assistant", "content": "Lima."}]
    assert trained_runs(template, kept[0]["messages"]) == [reply(template, "Lima.")]


@pytest.mark.parametrize("template", ["smollm2", "llama3"])
def test_prompt_completion_conversational_trains_the_completion_only(tmp_path: Path, template: str) -> None:
    row = {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a bird."},
                      {"role": "assistant", "content": "A robin."}, {"role": "user", "content": "Another?"}],
           "completion": [{"role": "assistant", "content": "A wren."}]}
    kept, stats = _prep(tmp_path, [row], template)
    msgs = kept[0]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant"]
    assert msgs[2] == {"role": "assistant", "content": "A robin.", "loss_weight": 0}  # TRL: completion-only loss
    assert "loss_weight" not in msgs[4]
    assert trained_runs(template, msgs) == [reply(template, "A wren.")]
    ids = tok_for(template)(reply(template, "A wren."), add_special_tokens=False)["input_ids"]
    assert stats["tokens_trained"] == len(ids)


def _pair_runs(template: str, row: dict) -> list[list[str]]:
    conv = Conversation.from_dict(row)
    return [trained_runs(template, chat, conv.tools) for chat in preference_chats(conv)]


@pytest.mark.parametrize("template", ["smollm2", "llama3"])
def test_preference_plain_strings_become_chat_messages(tmp_path: Path, template: str) -> None:
    kept, stats = _prep(tmp_path, [{"prompt": "Best soup for winter?", "chosen": "Leek and potato.",
                                    "rejected": "Ice cubes."}], template, stage="dpo")
    row = kept[0]
    assert row == {"kind": "preference", "prompt": [{"role": "user", "content": "Best soup for winter?"}],
                   "chosen": [{"role": "assistant", "content": "Leek and potato."}],
                   "rejected": [{"role": "assistant", "content": "Ice cubes."}], "source": row["source"]}
    assert _pair_runs(template, row) == [[reply(template, "Leek and potato.")], [reply(template, "Ice cubes.")]]
    tok = tok_for(template)
    both = [render_example(tok, c) for c in preference_chats(Conversation.from_dict(row))]
    assert stats["tokens_total"] == sum(e.n_tokens for e in both)
    assert stats["tokens_trained"] == sum(e.n_trained for e in both)
    assert stats["token_lengths"]["train"]["max"] == max(e.n_tokens for e in both)


@pytest.mark.parametrize("template", ["smollm2", "llama3"])
def test_preference_conversational_masks_the_prompt_replies(tmp_path: Path, template: str) -> None:
    prompt = [{"role": "user", "content": "Plan a picnic."}, {"role": "assistant", "content": "Where?"},
              {"role": "user", "content": "By the river."}]
    kept, _ = _prep(tmp_path, [{"prompt": prompt, "chosen": [{"role": "assistant", "content": "Bring a rug."}],
                                "rejected": [{"role": "assistant", "content": "Swim in your coat."}]}],
                    template, stage="orpo")
    assert kept[0]["prompt"] == prompt  # no loss_weight written: a prompt is never trained
    assert _pair_runs(template, kept[0]) == [[reply(template, "Bring a rug.")], [reply(template, "Swim in your coat.")]]


def test_preference_implicit_prompt_is_the_shared_start(tmp_path: Path) -> None:
    shared = [{"role": "user", "content": "Is it going to snow?"}]
    kept, _ = _prep(tmp_path, [{"chosen": shared + [{"role": "assistant", "content": "Maybe tonight."}],
                                "rejected": shared + [{"role": "assistant", "content": "Snow is a myth."}]}],
                    stage="dpo")
    assert kept[0]["prompt"] == shared
    assert kept[0]["chosen"] == [{"role": "assistant", "content": "Maybe tonight."}]
    assert kept[0]["rejected"] == [{"role": "assistant", "content": "Snow is a myth."}]
    assert _pair_runs("smollm2", kept[0]) == [["Maybe tonight.<|im_end|>"], ["Snow is a myth.<|im_end|>"]]


def test_v1_pairs_and_broken_pairs(tmp_path: Path) -> None:
    def conv(answer: str) -> list[dict]:
        return [{"role": "user", "content": [{"type": "text", "value": "Two plus two?"}], "loss_weight": 0.0},
                {"role": "assistant", "content": [{"type": "text", "value": answer}], "loss_weight": 1.0}]

    rows = [{"chosen_messages": conv("Four."), "rejected_messages": conv("Five.")},
            {"chosen_messages": conv("Four."), "rejected_messages": conv("Four.")},
            {"chosen_messages": conv("Four."), "rejected_messages": [{"role": "user", "content": "Other"}] + conv("x")[1:]}]
    kept, stats = _prep(tmp_path, rows, stage="dpo")
    assert kept[0]["prompt"] == [{"role": "user", "content": "Two plus two?"}]
    assert stats["rejects_by_reason"] == {"same_chosen_rejected": 1, "bad_role_order": 1}


@pytest.mark.parametrize("template", ["smollm2", "llama3"])
def test_unpaired_preference(tmp_path: Path, template: str) -> None:
    rows = [{"prompt": "Is the sun a star?", "completion": "Yes.", "label": True},
            {"prompt": [{"role": "user", "content": "Is the moon a planet?"}],
             "completion": [{"role": "assistant", "content": "Yes, the largest one."}], "label": False},
            {"prompt": "Is ice cold?", "completion": "Yes.", "label": "yes"}]
    kept, stats = _prep(tmp_path, rows, template, stage="kto")
    assert [(r["kind"], r["label"]) for r in kept] == [("unpaired_preference", True), ("unpaired_preference", False)]
    assert stats["rejects_by_reason"] == {"wrong_type": 1}  # the label must be a boolean
    assert _pair_runs(template, kept[1]) == [[reply(template, "Yes, the largest one.")]]


def test_dolly_context_goes_into_the_user_turn(tmp_path: Path) -> None:
    rows = [{"instruction": "How tall is it?", "context": "The tower is 300 m tall.", "response": "300 m.",
             "category": "closed_qa"},
            {"instruction": "Name a colour.", "context": "", "response": "Teal.", "category": "open_qa"}]
    kept, _ = _prep(tmp_path, rows)
    assert kept[0]["messages"][0] == {"role": "user", "content": "How tall is it?\n\nThe tower is 300 m tall."}
    assert kept[0]["tags"] == ["closed_qa"] and kept[1]["messages"][0]["content"] == "Name a colour."
    assert trained_runs("smollm2", kept[0]["messages"]) == ["300 m.<|im_end|>"]


def test_columns_map_other_field_names(tmp_path: Path) -> None:
    assert parse_columns("prompt=question, completion=answer") == {"prompt": "question", "completion": "answer"}
    with pytest.raises(DataPrepError, match="not CANONICAL=FIELD"):
        parse_columns("prompt")
    rows = [{"question": "Colour of grass?", "answer": "Green.", "id": 1}]
    kept, stats = _prep(tmp_path, rows, columns={"prompt": "question", "completion": "answer"})
    assert stats["inputs"][0]["format"] == "prompt_completion"
    assert kept[0]["messages"][1] == {"role": "assistant", "content": "Green."}
    with pytest.raises(DataPrepError, match="--columns: 'promt' is not a field we read"):
        _prep(tmp_path, rows, columns={"promt": "question"})


def test_a_file_mixing_kinds_stops_at_the_line(tmp_path: Path) -> None:
    rows = [{"prompt": "A?", "completion": "B."}, {"prompt": "C?", "chosen": "D.", "rejected": "E."}]
    with pytest.raises(DataPrepError, match=r"in\.jsonl:2: a preference row in a file of sft rows"):
        _prep(tmp_path, rows)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "data_prep", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_cli_zero_kept_exits_2_with_one_line_and_writes_rejects(tmp_path: Path) -> None:
    src = _write(tmp_path / "pairs.jsonl", [{"prompt": "Hi", "chosen": "Hello", "rejected": "Bye"}])
    r = _cli("--input", str(src), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert "no rows kept out of 1" in r.stderr and "use --stage dpo or --stage orpo" in r.stderr
    assert (tmp_path / "o" / "rejects.jsonl").exists() and (tmp_path / "o" / "stats.json").exists()
    r = _cli("--input", str(src), "--out", str(tmp_path / "o"), "--stage", "dpo")
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------------ v1 parts, reasoning, tool calls


def _v1(role: str, *parts: dict, weight: float | None = None) -> dict:
    m: dict = {"role": role, "content": list(parts)}
    if weight is not None:
        m["loss_weight"] = weight
    return m


def _t(value: str) -> dict:
    return {"type": "text", "value": value}


@pytest.mark.parametrize("template", ["smollm2", "llama3"])
def test_v1_loss_weight_zero_is_not_trained(tmp_path: Path, template: str) -> None:
    row = {"messages": [_v1("user", _t("Pick a fruit."), weight=0.0), _v1("assistant", _t("A turnip."), weight=0.0),
                        _v1("user", _t("A fruit, please."), weight=0.0), _v1("assistant", _t("A pear."), weight=1.0)]}
    kept, _ = _prep(tmp_path, [row, {"messages": row["messages"][:2]}], template)
    msgs = kept[0]["messages"]
    assert msgs[1] == {"role": "assistant", "content": "A turnip.", "loss_weight": 0}
    assert trained_runs(template, msgs) == [reply(template, "A pear.")]
    # fractional weights are refused, not rounded
    conv_row = {"messages": [_v1("user", _t("x")), _v1("assistant", _t("y"), weight=0.5)]}
    with pytest.raises(Exception, match="only 0 .* and 1"):
        to_conversation("openai", conv_row, FormatOptions())


def test_v1_all_weights_zero_is_a_reject(tmp_path: Path) -> None:
    rows = [{"messages": [_v1("user", _t("Hi")), _v1("assistant", _t("Hello"), weight=0.0)]},
            {"messages": [_v1("user", _t("Hi again")), _v1("assistant", _t("Hello again"))]}]
    _, stats = _prep(tmp_path, rows)
    assert stats["rows_kept"] == 1 and stats["rejects_by_reason"] == {"nothing_to_train": 1}


REASONED = {"messages": [_v1("user", _t("Is 91 prime?")),
                         _v1("assistant", {"type": "reasoning", "value": "91 = 7 * 13."}, _t("No, 91 = 7 x 13."))]}


def test_reasoning_as_a_think_block_for_templates_without_reasoning_content(tmp_path: Path) -> None:
    kept, _ = _prep(tmp_path, [REASONED])
    msg = kept[0]["messages"][1]
    assert msg == {"role": "assistant", "content": "No, 91 = 7 x 13.", "reasoning_content": "91 = 7 * 13."}
    expected = "<think>\n91 = 7 * 13.\n</think>\n\nNo, 91 = 7 x 13."
    assert trained_runs("smollm2", kept[0]["messages"]) == [expected + "<|im_end|>"]
    assert trained_runs("llama3", kept[0]["messages"]) == [expected + "<|eot_id|>"]


def test_reasoning_content_passed_to_templates_that_read_it(tmp_path: Path) -> None:
    tok = tok_for("qwen3")
    kept, _ = _prep(tmp_path, [REASONED], "qwen3")
    chat = kept[0]["messages"]
    assert template_messages(tok, chat)[0] == chat  # left as the field Qwen3's template reads
    ex = render_example(tok, chat)
    assert ex.text == tok.apply_chat_template(chat, tokenize=False)
    assert runs(tok, ex.input_ids, ex.labels) == ["<think>\n91 = 7 * 13.\n</think>\n\nNo, 91 = 7 x 13.<|im_end|>"]


def test_tool_calls_are_the_same_from_v1_sharegpt_and_openai() -> None:
    args = {"city": "Oslo"}
    v1 = {"messages": [_v1("user", _t("Weather in Oslo?")),
                       _v1("assistant", {"type": "reasoning", "value": "Use the tool."},
                           {"type": "tool_call", "value": json.dumps({"name": "weather", "arguments": args})}),
                       _v1("tool", _t("rain")), _v1("assistant", _t("It rains in Oslo."))]}
    sharegpt = {"conversations": [{"from": "human", "value": "Weather in Oslo?"},
                                  {"from": "function_call", "value": json.dumps({"name": "weather", "arguments": args})},
                                  {"from": "observation", "value": "rain"}, {"from": "gpt", "value": "It rains in Oslo."}]}
    openai = {"messages": [{"role": "user", "content": "Weather in Oslo?"},
                           {"role": "assistant", "content": None, "tool_calls": [
                               {"type": "function", "function": {"name": "weather", "arguments": json.dumps(args)}}]},
                           {"role": "tool", "content": "rain"}, {"role": "assistant", "content": "It rains in Oslo."}]}
    convs = {}
    for name, row in (("v1", v1), ("sharegpt", sharegpt), ("openai", openai)):
        fmt, opts = detect(row, "f:1", FormatOptions())
        convs[name] = to_conversation(fmt, row, opts)
        validate(convs[name])
    calls = [{"type": "function", "function": {"name": "weather", "arguments": args}}]
    assert all(c.messages[1].tool_calls == calls for c in convs.values())
    assert convs["v1"].messages[1].reasoning_content == "Use the tool."
    convs["v1"].messages[1].reasoning_content = None
    assert [m.content for m in convs["v1"].messages] == [m.content for m in convs["openai"].messages]
    assert [m.role for m in convs["v1"].messages] == [m.role for m in convs["sharegpt"].messages]


def test_sharegpt_observation_after_a_text_call_is_accepted(tmp_path: Path) -> None:
    row = {"conversations": [{"from": "human", "value": "Discount on 200 at 20%?"},
                             {"from": "gpt", "value": "Computing.\ncalc: {\"price\": 200, \"off\": 20}"},
                             {"from": "observation", "value": "{\"price\": 160}"},
                             {"from": "gpt", "value": "You pay 160."}]}
    kept, _ = _prep(tmp_path, [row])
    assert [m["role"] for m in kept[0]["messages"]] == ["user", "assistant", "tool", "assistant"]
    # the OpenAI form stays strict: a tool message must answer a structured tool call
    openai = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                           {"role": "tool", "content": "c"}, {"role": "assistant", "content": "d"}]}
    with pytest.raises(Exception, match="does not answer an assistant tool call"):
        validate(to_conversation("openai", openai, FormatOptions()))
