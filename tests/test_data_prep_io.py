"""Streaming readers and atomic writers of data_prep.io."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_prep import io as dio
from data_prep.conversation import Reject
from data_prep.io import DataPrepError, JsonlWriter, Reader, Record, detect_container
from fileio.atomic import AtomicFile

FIX = Path(__file__).parent / "fixtures" / "data"


def _items(path: Path) -> list[Record | Reject]:
    return list(Reader(path))


def test_jsonl_bom_blank_lines_and_bad_bytes_reject_one_line_only() -> None:
    items = _items(FIX / "bad_rows.jsonl")
    # 17 physical lines, 2 blank ones are skipped: 15 rows
    assert len(items) == 15
    assert isinstance(items[0], Record) and items[0].source.endswith("bad_rows.jsonl:1")
    assert items[0].value["messages"][0]["content"].startswith("What is the boiling point")  # BOM gone
    bad = {i.source.rsplit(":", 1)[1]: i.reason for i in items if isinstance(i, Reject)}
    assert bad == {"3": "invalid_json", "4": "invalid_utf8"}
    # the row after the bad bytes is read normally
    assert isinstance(items[3], Record) and items[3].value == [1, 2, 3]


def test_json_array_streams_across_chunk_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dio, "_CHUNK", 64)  # force many refills, elements longer than a chunk
    rows = [{"instruction": f"q{i} " + "x" * (i * 7 % 150), "output": "é" * (i % 5 + 1), "n": i * 1.5}
            for i in range(200)]
    p = tmp_path / "a.json"
    p.write_text("\ufeff" + json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    items = _items(p)
    assert [i.value for i in items] == rows
    assert items[5].source == f"{p}:5"


def test_json_array_numbers_split_at_chunk_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dio, "_CHUNK", 5)
    p = tmp_path / "n.json"
    p.write_text("[123456789, 42, {\"a\": 1}]")
    assert [i.value for i in _items(p)] == [123456789, 42, {"a": 1}]


def test_pretty_printed_objects_without_array(tmp_path: Path) -> None:
    p = tmp_path / "objs.json"
    p.write_text('{\n  "question": "a",\n  "answer": "b"\n}\n{\n  "question": "c",\n  "answer": "d"\n}\n')
    items = _items(p)
    assert [i.value["answer"] for i in items] == ["b", "d"]
    assert [i.source for i in items] == [f"{p}:1", f"{p}:5"]


@pytest.mark.parametrize(
    "text,where,what",
    [
        ('[\n {"a": 1},\n {"a": 2', ":3:", "truncated"),
        ('[\n {"a": 1},\n {"a": 2}\n', ":4:", "truncated JSON array"),
        ('[{"a": 1},]', ":1:11", "trailing comma"),
        ('[{"a": 1} {"a": 2}]', ":1:11", "expected ','"),
        ('[{"a": 1}] x', ":1:12", "extra data"),
    ],
)
def test_broken_json_array_is_a_data_error_with_position(tmp_path: Path, text: str, where: str, what: str) -> None:
    p = tmp_path / "broken.json"
    p.write_text(text)
    with pytest.raises(DataPrepError) as e:
        _items(p)
    assert str(e.value).startswith(str(p) + where)
    assert what in str(e.value)


def test_invalid_bytes_in_a_json_array_name_the_line(tmp_path: Path) -> None:
    p = tmp_path / "bytes.json"
    p.write_bytes(b'[\n{"a": "ok"},\n{"a": "\xff"}\n]')
    with pytest.raises(DataPrepError, match=r"bytes\.json:3: invalid UTF-8"):
        _items(p)


@pytest.mark.parametrize(
    "name,message",
    [
        ("utf16.jsonl", "utf16.jsonl:1: file is UTF-16"),
        ("empty.jsonl", "empty.jsonl:1: file is empty"),
        ("garbage.jsonl", "garbage.jsonl:1: no line of the file is valid JSON"),
        ("missing.jsonl", "missing.jsonl: file not found"),
    ],
)
def test_unusable_files(name: str, message: str) -> None:
    with pytest.raises(DataPrepError) as e:
        _items(FIX / name)
    assert str(e.value) == str(FIX / message) or str(e.value).startswith(str(FIX / message))


def test_container_detection(tmp_path: Path) -> None:
    assert detect_container(FIX / "alpaca.json") == "json"
    assert detect_container(FIX / "sharegpt.jsonl") == "jsonl"
    assert detect_container(FIX / "react.txt") == "text"
    p = tmp_path / "rows.json"  # JSON Lines content behind a .json name
    p.write_text('{"a": 1}\n{"a": 2}\n')
    assert detect_container(p) == "jsonl"


def test_react_text_blocks_keep_file_line_numbers() -> None:
    items = _items(FIX / "react.txt")
    assert [i.source.rsplit(":", 1)[1] for i in items] == ["1", "14", "25"]
    start, text = items[1].value
    assert start == 14 and text.startswith("You are in the middle of a room.")


def test_text_before_first_room_line_is_one_reject(tmp_path: Path) -> None:
    p = tmp_path / "t.txt"
    p.write_text("notes\n\n" + (FIX / "react.txt").read_text())
    items = _items(p)
    assert isinstance(items[0], Reject) and items[0].reason == "unsupported_format"
    assert items[1].source == f"{p}:3"


def test_atomic_file_commit_and_abort(tmp_path: Path) -> None:
    with JsonlWriter(tmp_path / "x.jsonl") as w:
        w.add({"a": "é"})
        assert not (tmp_path / "x.jsonl").exists()  # only the temp file exists while writing
    assert (tmp_path / "x.jsonl").read_text(encoding="utf-8") == '{"a": "é"}\n'
    with pytest.raises(RuntimeError), AtomicFile(tmp_path / "y.txt") as f:
        f.write("partial")
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.jsonl"]
