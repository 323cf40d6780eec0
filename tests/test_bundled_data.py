"""The bundled data sets go through the real pipeline with nothing rejected, at the sizes their READMEs state.

The counts are exact (data/*/README.md), so a lost, added or duplicated row fails here.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from data_prep.pipeline import PrepConfig, prepare
from data_prep.react import TASK_TYPES

DATA = Path(__file__).resolve().parent.parent / "data"
CJK = re.compile(r"[\u4e00-\u9fff]")


def _prep(tmp_path: Path, tok, **kw) -> dict:
    return prepare(PrepConfig(out=str(tmp_path / "out"), tokenizer=None, progress=False, **kw), tokenizer=tok)


def test_roleplay_dialogues(tmp_path: Path, smol_tokenizer) -> None:
    card = json.loads((DATA / "roleplay" / "character.json").read_text(encoding="utf-8"))
    rows = [json.loads(x) for x in (DATA / "roleplay" / "dialogues.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 80
    # by the language of the first user turn (the README counts its 3 mixed dialogues apart)
    langs = Counter("zh" if CJK.search(r["messages"][1]["content"]) else "en" for r in rows)
    assert langs == {"zh": 42, "en": 38}
    forbidden = [f.lower() for f in card["consistency"]["forbidden"]]
    for r in rows:
        msgs = r["messages"]
        assert msgs[0] == {"role": "system", "content": card["system_prompt"]}
        assert len(msgs) in (5, 7), "multi-turn: two or three exchanges after the system prompt"
        for m in msgs[1:]:
            if m["role"] == "assistant":
                assert not any(f in m["content"].lower() for f in forbidden), m["content"]
    stats = _prep(tmp_path, smol_tokenizer, inputs=[str(DATA / "roleplay" / "dialogues.jsonl")], format="roleplay",
                  max_length=512)
    assert stats["rows_kept"] == len(rows) and stats["rows_rejected"] == 0 and stats["rows_deduplicated"] == 0
    assert stats["rows_over_max_length"] == 0


def test_domain_qa(tmp_path: Path, smol_tokenizer) -> None:
    path = DATA / "domain_qa" / "fish_care.jsonl"
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 128 and all(set(r) == {"question", "answer"} for r in rows)
    assert Counter("zh" if CJK.search(r["question"]) else "en" for r in rows) == {"zh": 78, "en": 50}
    stats = _prep(tmp_path, smol_tokenizer, inputs=[str(path)], format="qa")
    assert stats["rows_kept"] == len(rows) and stats["rows_rejected"] == 0 and stats["rows_deduplicated"] == 0


def test_domain_qa_through_llamafactory_registry(tmp_path: Path, smol_tokenizer) -> None:
    stats = _prep(tmp_path, smol_tokenizer, inputs=[], dataset_info=str(DATA / "domain_qa" / "dataset_info.json"),
                  dataset=["fish_care", "fish_care_sharegpt"], dedup=False)
    assert stats["rows_rejected"] == 0 and stats["rows_kept"] == 128 + 12
    # each registered data set is read in its own format, and every row of both is kept
    assert [(i["dataset"], i["format"], i["rows_in"], i["rows_kept"]) for i in stats["inputs"]] == [
        ("fish_care", "alpaca", 128, 128),
        ("fish_care_sharegpt", "sharegpt", 12, 12),
    ]


@pytest.mark.parametrize("name,per_type", [("train", 100), ("test", 10)])
def test_react_sets_balanced_and_identical_in_both_forms(tmp_path: Path, smol_tokenizer, name: str,
                                                         per_type: int) -> None:
    jsonl, txt = DATA / "react" / f"{name}.jsonl", DATA / "react" / f"{name}.txt"
    types = Counter(json.loads(x)["task_type"] for x in jsonl.read_text().splitlines())
    assert types == {t: per_type for t in TASK_TYPES}
    # The text form yields exactly the same chats: every text row is a duplicate of a JSON row.
    stats = _prep(tmp_path, smol_tokenizer, inputs=[str(jsonl), str(txt)], format="auto", max_length=4096)
    assert stats["rows_rejected"] == 0
    assert stats["rows_kept"] == 6 * per_type and stats["rows_deduplicated"] == 6 * per_type
