"""prepare() end to end, the LLaMA-Factory path, and the CLI's behaviour on unusable input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import make_tokenizer

from data_prep.pipeline import DataPrepError, PrepConfig, prepare
from data_prep.render import render_example
from data_prep.validate import REASONS

FIX = Path(__file__).parent / "fixtures" / "data"
ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = {"train.jsonl", "test.jsonl", "rejects.jsonl", "duplicates.jsonl", "stats.json", "length_hist.png"}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _chat(u: str, a: str, **extra: object) -> dict:
    return {"messages": [{"role": "user", "content": u}, {"role": "assistant", "content": a}], **extra}


def test_all_fixture_formats_no_tokenizer(tmp_path: Path) -> None:
    inputs = [str(FIX / n) for n in ("alpaca.json", "sharegpt.jsonl", "openai.jsonl", "qa.jsonl", "roleplay.jsonl",
                                     "react.jsonl", "react.txt", "bad_rows.jsonl")]
    stats = prepare(PrepConfig(inputs=inputs, out=str(tmp_path / "out"), test_size=0.25))
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == OUTPUTS  # and no temp files left behind
    assert json.loads((out / "stats.json").read_text(encoding="utf-8")) == stats
    assert set(stats) >= {"rows_in", "rows_kept", "rows_rejected", "rows_deduplicated", "rejects_by_reason",
                          "rows_train", "rows_test", "token_lengths", "rows_over_max_length", "rows_truncated",
                          "trained_token_share", "task_types", "inputs"}
    assert stats["rows_in"] == stats["rows_kept"] + stats["rows_rejected"] + stats["rows_deduplicated"]
    assert stats["rows_in"] == 4 + 3 + 3 + 2 + 3 + 12 + 3 + 15
    assert stats["rows_deduplicated"] == 2 and stats["dedup_exact"] == 1 and stats["dedup_normalized"] == 1
    train, test = _jsonl(out / "train.jsonl"), _jsonl(out / "test.jsonl")
    assert len(train) == stats["rows_train"] and len(test) == stats["rows_test"]
    assert stats["rows_train"] + stats["rows_test"] == stats["rows_kept"]
    assert all(r["source"] and r["messages"][-1]["role"] == "assistant" for r in train + test)
    rejects = _jsonl(out / "rejects.jsonl")
    assert len(rejects) == stats["rows_rejected"] == sum(stats["rejects_by_reason"].values())
    assert all(set(r) == {"source", "reason", "row", "detail"} and r["detail"] for r in rejects)
    dups = _jsonl(out / "duplicates.jsonl")
    assert {d["duplicate_of"] for d in dups} == {f"{FIX / 'bad_rows.jsonl'}:1"}
    assert [i["format"] for i in stats["inputs"]] == ["alpaca", "sharegpt", "openai", "qa", "openai", "react",
                                                       "react", "openai"]
    assert stats["token_lengths"] is None and stats["char_lengths"]["train"]["p50"] > 0
    assert sum(stats["task_types"]["train"].values()) + sum(stats["task_types"]["test"].values()) == 14
    assert (out / "length_hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_reject_reason_reaches_rejects_jsonl(tmp_path: Path) -> None:
    long_answer = " ".join(f"word{i}" for i in range(120))
    call = {"role": "assistant", "content": None,
            "tool_calls": [{"type": "function", "function": {"name": "feed", "arguments": "{}"}}]}
    extra = _write_jsonl(tmp_path / "extra.jsonl", [
        _chat("a", "b"),  # too_short
        _chat("Please repeat: the tank is clean", "Please repeat: the tank is clean"),  # low_quality
        _chat("Fish one?", "Neon tetra.", tags=["fish"]),
        _chat("Fish two?", "Zebra danio.", tags=["fish"]),
        _chat("Fish three?", "Guppy.", tags=["fish"]),  # over_balance_cap
        _chat("Tell me everything.", long_answer),  # too_long
        {"messages": [{"role": "user", "content": "Feed the fish"}, call, {"role": "tool", "content": "fed"},
                      {"role": "assistant", "content": "Fed them."}]},  # render_error: Mistral has no tool role
        {"messages": [{"role": "user", "content": "Any fish?"},
                      {"role": "assistant", "content": "Not trained.", "loss_weight": 0}]},  # nothing_to_train
    ])
    pairs = _write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "Best fish?", "chosen": "A guppy.", "rejected": "A rock."},  # wrong_stage (a pair under sft)
        {"prompt": "Best food?", "chosen": "Flakes.", "rejected": "Flakes."},  # same_chosen_rejected
    ])
    cfg = PrepConfig(inputs=[str(FIX / "bad_rows.jsonl"), str(extra), str(pairs)], out=str(tmp_path / "out"), min_chars=5,
                     quality_threshold=0.5, balance_cap=2, max_length=64, overlong="drop")
    stats = prepare(cfg, tokenizer=make_tokenizer("mistral"))
    assert set(stats["rejects_by_reason"]) == set(REASONS)
    assert all(n == 1 for n in stats["rejects_by_reason"].values())
    rejects = {r["reason"]: r for r in _jsonl(tmp_path / "out" / "rejects.jsonl")}
    assert set(rejects) == set(REASONS)
    assert rejects["over_balance_cap"]["source"] == f"{extra}:5"
    assert rejects["too_long"]["row"]["messages"][1]["content"] == long_answer
    assert rejects["invalid_utf8"]["source"] == f"{FIX / 'bad_rows.jsonl'}:4"
    assert stats["rows_over_max_length"] == 1 and stats["rows_truncated"] == 0


def test_token_stats_and_truncation(tmp_path: Path, smol_tokenizer: object) -> None:
    inputs = [str(FIX / "react.jsonl"), str(FIX / "sharegpt.jsonl"), str(FIX / "qa.jsonl")]
    stats = prepare(PrepConfig(inputs=inputs, out=str(tmp_path / "o"), max_length=300, test_size=0.2),
                    tokenizer=smol_tokenizer)
    lengths = []
    trained = total = 0
    for row in _jsonl(tmp_path / "o" / "train.jsonl") + _jsonl(tmp_path / "o" / "test.jsonl"):
        ex = render_example(smol_tokenizer, row["messages"], tools=row.get("tools"), max_length=300)
        full = render_example(smol_tokenizer, row["messages"], tools=row.get("tools"))
        lengths.append(full.n_tokens)
        trained += ex.n_trained
        total += ex.n_tokens
    assert stats["rows_over_max_length"] == stats["rows_truncated"] == sum(n > 300 for n in lengths) > 0
    assert stats["token_lengths"]["train"]["max"] == max(lengths) or stats["token_lengths"]["test"]["max"] == max(lengths)
    assert stats["tokens_total"] == total and stats["tokens_trained"] == trained
    assert 0 < stats["trained_token_share"] < 1
    assert set(stats["token_lengths"]["train"]) >= {"p50", "p90", "p95", "p99", "max"}
    assert stats["config"]["tokenizer"]  # the object's name is recorded


def test_overlong_drop_rejects_as_too_long(tmp_path: Path, smol_tokenizer: object) -> None:
    stats = prepare(PrepConfig(inputs=[str(FIX / "react.jsonl"), str(FIX / "qa.jsonl")], out=str(tmp_path / "o"),
                               max_length=280, overlong="drop", test_size=0), tokenizer=smol_tokenizer)
    assert stats["rejects_by_reason"] == {"too_long": 12} and stats["rows_over_max_length"] == 12
    assert stats["rows_truncated"] == 0 and stats["rows_kept"] == 2
    assert stats["token_lengths"]["train"]["max"] <= 280


def test_split_is_reproducible_and_stratified(tmp_path: Path) -> None:
    rows = [_chat(f"Question {i}?", f"Answer number {i}.", task_type=("heat", "cool", "clean")[i % 3])
            for i in range(90)]
    src = _write_jsonl(tmp_path / "rows.jsonl", rows)

    def run(seed: int, name: str) -> tuple[list[str], dict]:
        stats = prepare(PrepConfig(inputs=[str(src)], out=str(tmp_path / name), seed=seed, test_size=0.2))
        return [r["source"] for r in _jsonl(tmp_path / name / "test.jsonl")], stats

    a, stats = run(42, "a")
    b, _ = run(42, "b")
    c, _ = run(7, "c")
    assert a == b and a != c
    assert stats["task_types"]["test"] == {"clean": 6, "cool": 6, "heat": 6}
    assert (tmp_path / "a" / "train.jsonl").read_bytes() == (tmp_path / "b" / "train.jsonl").read_bytes()


def test_system_prompt_and_qa_fields(tmp_path: Path) -> None:
    stats = prepare(PrepConfig(inputs=[str(FIX / "qa_custom.jsonl")], out=str(tmp_path / "o"), format="qa",
                               question_field="q", answer_field="a", system_prompt="You keep fish.", test_size=0))
    rows = _jsonl(tmp_path / "o" / "train.jsonl")
    assert stats["rows_kept"] == 2 and stats["rows_test"] == 0
    assert all(r["messages"][0] == {"role": "system", "content": "You keep fish."} for r in rows)


def test_no_dedup_keeps_duplicates(tmp_path: Path) -> None:
    stats = prepare(PrepConfig(inputs=[str(FIX / "bad_rows.jsonl")], out=str(tmp_path / "o"), dedup=False))
    assert stats["rows_deduplicated"] == 0 and stats["rows_kept"] == 4


def test_llamafactory_datasets(tmp_path: Path) -> None:
    info = FIX / "llamafactory" / "dataset_info.json"
    stats = prepare(PrepConfig(inputs=[], out=str(tmp_path / "o"), dataset_info=str(info),
                               dataset=["fish_alpaca,shop_sharegpt", "openai_style", "numbers"], test_size=0))
    assert [(i["dataset"], i["format"], i["rows_kept"]) for i in stats["inputs"]] == [
        ("fish_alpaca", "alpaca", 2), ("shop_sharegpt", "sharegpt", 2), ("openai_style", "sharegpt", 1),
        ("numbers", "alpaca", 1), ("numbers", "alpaca", 1)]
    rows = {r["source"].split("llamafactory/")[1]: r for r in _jsonl(tmp_path / "o" / "train.jsonl")}
    assert rows["lf_alpaca.json:0"]["messages"] == [
        {"role": "system", "content": "You are a fish-keeping expert."},
        {"role": "user", "content": "Name a hardy beginner fish.\nFreshwater only."},
        {"role": "assistant", "content": "Zebra danios are hardy and forgiving."}]
    assert [m["role"] for m in rows["lf_alpaca.json:1"]["messages"]] == ["user", "assistant", "user", "assistant"]
    shop = rows["lf_sharegpt.jsonl:1"]
    assert [m["role"] for m in shop["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    assert shop["tools"][0]["function"]["name"] == "feed"
    assert rows["sub/lf_openai.json:0"]["messages"][0]["role"] == "system"
    assert stats["rejects_by_reason"] == {"unknown_role": 1}


@pytest.mark.parametrize(
    "name,words",
    [("pairs", "no rows kept out of 2 .*wrong_stage 1.*use --stage dpo"),
     ("kto", "no rows kept out of 2 .*missing_field 2.*--columns"), ("hub_only", "no file_name"),
     ("nope", "not registered")],
)
def test_llamafactory_errors(tmp_path: Path, name: str, words: str) -> None:
    with pytest.raises(DataPrepError, match=words):
        prepare(PrepConfig(inputs=[], out=str(tmp_path / "o"), dataset_info=str(FIX / "llamafactory" /
                                                                                 "dataset_info.json"), dataset=[name]))


def test_unusable_file_mid_run_replaces_nothing(tmp_path: Path) -> None:
    out = tmp_path / "o"
    prepare(PrepConfig(inputs=[str(FIX / "qa.jsonl")], out=str(out)))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(DataPrepError, match=r"truncated\.json:3:"):
        prepare(PrepConfig(inputs=[str(FIX / "alpaca.json"), str(FIX / "truncated.json")], out=str(out)))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old outputs intact, no temp files


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "data_prep", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


@pytest.mark.parametrize(
    "name,where",
    [
        ("truncated.json", "truncated.json:3:35: invalid or truncated JSON"),
        ("utf16.jsonl", "utf16.jsonl:1: file is UTF-16"),
        ("empty.jsonl", "empty.jsonl:1: file is empty"),
        ("garbage.jsonl", "garbage.jsonl:1: no line of the file is valid JSON"),
        ("unknown_format.jsonl", "unknown_format.jsonl:1: cannot tell the format"),
        ("missing.jsonl", "missing.jsonl: file not found"),
    ],
)
def test_cli_unusable_file_exits_2_with_one_line(tmp_path: Path, name: str, where: str) -> None:
    r = _cli("--input", str(FIX / name), "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and where in lines[0], r.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_cli_bad_settings_and_tokenizer_exit_2(tmp_path: Path) -> None:
    r = _cli("--input", str(FIX / "qa.jsonl"), "--out", str(tmp_path / "o"), "--tokenizer", "no-such-model")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "tokenizer 'no-such-model'" in r.stderr
    r = _cli("--input", str(FIX / "qa.jsonl"), "--out", str(tmp_path / "o"), "--test-size", "1.5")
    assert r.returncode == 2 and r.stderr.strip() == "error: --test-size must be in [0, 1), got 1.5"
    r = _cli("--input", str(FIX / "qa.jsonl"), "--out", str(tmp_path / "o"), "--workers", "0")
    assert r.returncode == 2 and r.stderr.strip() == "error: --workers must be at least 1, got 0"
    r = _cli("--dataset-info", str(FIX / "llamafactory" / "dataset_info.json"), "--dataset", "pairs",
             "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "use --stage dpo" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_cli_success_prints_summary(tmp_path: Path) -> None:
    r = _cli("--input", str(FIX / "bad_rows.jsonl"), "--input", str(FIX / "react.txt"), "--out", str(tmp_path / "o"),
             "--seed", "3", "--test-size", "0.2", "--progress")
    assert r.returncode == 0, r.stderr
    assert "rows in" in r.stdout and "invalid_utf8" in r.stdout
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["rows_in"] == 18 and stats["config"]["seed"] == 3
    r = _cli("--input", str(FIX / "bad_rows.jsonl"), "--input", str(FIX / "react.txt"), "--out", str(tmp_path / "w"),
             "--seed", "3", "--test-size", "0.2", "--workers", "2")
    assert r.returncode == 0, r.stderr
    for name in ("train.jsonl", "test.jsonl", "rejects.jsonl", "duplicates.jsonl"):  # the same with two workers
        assert (tmp_path / "w" / name).read_bytes() == (tmp_path / "o" / name).read_bytes()
