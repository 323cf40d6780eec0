"""Every text-only kind of LLaMA-Factory's ``data/`` prepares from a ``dataset_info.json`` entry.

The files in ``fixtures/lf_kinds`` are our own small rows in each of LLaMA-Factory's schemas (their keys and
``dataset_info.json`` entries as its ``data/README.md`` documents them): alpaca and sharegpt SFT sets with
tools, v1 content parts with ``loss_weight``, reasoning and tool-call parts, c4-style pretraining text, DPO
ranking sets (sharegpt and alpaca) and KTO tags (OpenAI-style messages and alpaca).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
from tiny import make_tokenizer

from data_prep.conversation import Conversation
from data_prep.io import DataPrepError
from data_prep.pipeline import PrepConfig, prepare
from data_prep.render import IGNORE_INDEX, render_example
from data_prep.work import preference_chats

INFO = Path(__file__).parent / "fixtures" / "lf_kinds" / "dataset_info.json"
# dataset -> (stage, kind of the rows written, rows)
KINDS = {
    "alpaca_sft": ("sft", "sft", 3),
    "sharegpt_tools": ("sft", "sft", 3),
    "v1_sft": ("sft", "sft", 3),
    "reason_tool": ("sft", "sft", 2),
    "c4_text": ("pt", "text", 3),
    "dpo_sharegpt": ("dpo", "preference", 2),
    "dpo_alpaca": ("orpo", "preference", 2),
    "kto_openai": ("kto", "unpaired_preference", 2),
    "kto_alpaca": ("kto", "unpaired_preference", 2),
}


@functools.cache
def _tok() -> Any:
    return make_tokenizer("smollm2")


def _prep(tmp_path: Path, name: str, stage: str) -> tuple[dict, list[dict]]:
    out = tmp_path / name
    stats = prepare(PrepConfig(inputs=[], out=str(out), dataset_info=str(INFO), dataset=[name], stage=stage,
                               test_size=0), tokenizer=_tok())
    rows = [json.loads(x) for x in (out / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    return stats, rows


def _runs(chat: list[dict], tools: Any = None) -> list[str]:
    ex = render_example(_tok(), chat, tools=tools)
    out, cur = [], []
    for t, lab in zip(ex.input_ids, ex.labels, strict=True):
        if lab != IGNORE_INDEX:
            cur.append(t)
        elif cur:
            out.append(_tok().decode(cur))
            cur = []
    return out + ([_tok().decode(cur)] if cur else [])


def test_registry_covers_every_kind() -> None:
    assert set(json.loads(INFO.read_text())) == set(KINDS)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_row_of_every_kind_is_kept(tmp_path: Path, name: str) -> None:
    stage, kind, n = KINDS[name]
    stats, rows = _prep(tmp_path, name, stage)
    assert stats["rows_in"] == stats["rows_kept"] == n and stats["rows_rejected"] == 0
    assert {r.get("kind", "sft") for r in rows} == {kind}
    assert stats["tokens_trained"] > 0


@pytest.mark.parametrize("name", sorted(KINDS))
def test_the_wrong_stage_says_which_to_use(tmp_path: Path, name: str) -> None:
    stage, kind, n = KINDS[name]
    wrong = "kto" if stage == "sft" else "sft"
    use = {"sft": "--stage sft", "text": "--stage pt", "preference": "--stage dpo",
           "unpaired_preference": "--stage kto"}[kind]
    with pytest.raises(DataPrepError, match=f"no rows kept out of {n} .*wrong_stage {n}.*use {use}"):
        _prep(tmp_path, name, wrong)


def test_v1_loss_weight_zero_reply_is_not_trained(tmp_path: Path) -> None:
    _, rows = _prep(tmp_path, "v1_sft", "sft")
    two = next(r for r in rows if len(r["messages"]) == 5)
    assert two["messages"][2]["loss_weight"] == 0
    assert _runs(two["messages"]) == ["A hoverfly.<|im_end|>"]


def test_reasoning_and_tool_parts(tmp_path: Path) -> None:
    _, rows = _prep(tmp_path, "reason_tool", "sft")
    msgs = rows[0]["messages"]
    assert msgs[2]["tool_calls"] == [{"type": "function", "function": {"name": "tide_times",
                                                                       "arguments": {"harbour": "Whitby"}}}]
    assert msgs[2]["reasoning_content"].startswith("The user wants tide times")
    assert msgs[3] == {"role": "tool", "content": '{"high": "14:05", "low": "20:17"}', "name": "tide_times"}
    assert rows[0]["tools"][0]["function"]["name"] == "tide_times"
    trained = _runs(msgs, rows[0]["tools"])
    assert len(trained) == 2 and trained[0].startswith("<think>\nThe user wants tide times")
    assert trained[1] == "<think>\nThe tool says 14:05.\n</think>\n\nHigh tide in Whitby is at 14:05 today.<|im_end|>"


def test_sharegpt_observation_after_plain_reply(tmp_path: Path) -> None:
    _, rows = _prep(tmp_path, "sharegpt_tools", "sft")
    roles = [[m["role"] for m in r["messages"]] for r in rows]
    assert ["user", "assistant", "tool", "assistant", "user", "assistant"] in roles


def test_c4_text_rows(tmp_path: Path) -> None:
    stats, rows = _prep(tmp_path, "c4_text", "pt")
    assert rows[0] == {"kind": "text", "text": rows[0]["text"], "source": rows[0]["source"]}
    assert stats["tokens_trained"] == stats["tokens_total"]


@pytest.mark.parametrize("name", ["dpo_sharegpt", "dpo_alpaca"])
def test_ranking_pairs_mask_the_prompt(tmp_path: Path, name: str) -> None:
    _, rows = _prep(tmp_path, name, "dpo")
    for row in rows:
        conv = Conversation.from_dict(row)
        chosen, rejected = (_runs(chat) for chat in preference_chats(conv))
        assert chosen == [row["chosen"][0]["content"] + "<|im_end|>"]
        assert rejected == [row["rejected"][0]["content"] + "<|im_end|>"]
    if name == "dpo_alpaca":
        assert rows[1]["prompt"][0]["content"] == "Summarise in one word.\nThe hike was long, steep and beautiful."


@pytest.mark.parametrize("name", ["kto_openai", "kto_alpaca"])
def test_kto_tags_become_labels(tmp_path: Path, name: str) -> None:
    _, rows = _prep(tmp_path, name, "kto")
    assert [r["label"] for r in rows] == [True, False]
    assert all(r["prompt"][-1]["role"] == "user" and len(r["completion"]) == 1 for r in rows)
