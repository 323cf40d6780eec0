"""Property-based fuzzing of every data_prep reader, plus one hand-written regression test per reject reason.

Each format of :data:`data_prep.formats.FORMAT_CHOICES` has one row generator in :data:`ROWS` (a new format
gets one entry there; ``test_every_format_has_a_generator`` fails until it does), and each LLaMA-Factory
entry kind one in :data:`LF_ENTRIES`. Hypothesis mutates valid rows (dropped/renamed keys, wrong types,
None, numbers, deep nesting, ~1 MB strings, control characters, lone surrogates) and their files (broken
UTF-8, truncated lines, blank lines, BOMs, JSON arrays and JSONL) and drives ``prepare`` in process. The
invariants (:func:`check_run`):

(a) nothing but :class:`DataPrepError` escapes, and its message names the input (or dataset_info.json, or
    the rejects file when no row was kept);
(b) every input row ends in exactly one of train/test/duplicates/rejects (matched by ``source``), each reject
    with a known reason and a detail; a failed run commits no output, except the "0 rows kept" error, which
    commits empty train/test next to its rejects and stats;
(c) the same input gives byte-identical outputs twice (and with 1 or 2 workers).

The slow test runs a few thousand cases and prints (``-s``) and writes ``fuzz_figures.json`` with the
number of cases and violations.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from tiny import make_tokenizer

import data_prep.pipeline as pipeline
from data_prep.formats import FORMAT_CHOICES, FORMATS
from data_prep.llamafactory import load_datasets
from data_prep.pipeline import DataPrepError, PrepConfig, prepare
from data_prep.validate import REASONS

ROOT = Path(__file__).resolve().parents[1]
OUTPUT_FILES = ("train.jsonl", "test.jsonl", "duplicates.jsonl", "rejects.jsonl")
STAGE_OF = {"text": "pt", "preference": "dpo", "unpaired_preference": "kto"}  # else sft
_TIMING = ("elapsed_s", "rows_s", "rows_per_s", "row_cpu_s", "cpu_s")

# ------------------------------------------------------------------------------------------ row generators
WORDS = st.sampled_from(("fish", "tank", "water", "filter", "neon", "tetra", "guppy", "plant", "light", "heater",
                         "snail", "shrimp"))
PLAIN = st.lists(WORDS, min_size=1, max_size=6).map(" ".join)
ODD = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)  # controls, RTL, astral, no surrogates
TEXT = st.one_of(PLAIN, PLAIN, PLAIN, ODD)
MAYBE = st.one_of(st.none(), TEXT)


def _msgs(n: st.SearchStrategy[int] | None = None, system: bool | None = None) -> st.SearchStrategy[list]:
    """OpenAI messages: optional system, then user/assistant exchanges; contents as strings or v1/OpenAI parts."""
    content = st.one_of(TEXT, TEXT, st.lists(st.builds(lambda t, k: {"type": k, k if k == "text" else "value": t},
                                                       TEXT, st.sampled_from(["text"])), min_size=1, max_size=2),
                        st.lists(st.builds(lambda t: {"type": "text", "value": t}, TEXT), min_size=1, max_size=2))

    @st.composite
    def build(draw: Any) -> list:
        out = []
        if system or (system is None and draw(st.booleans())):
            out.append({"role": "system", "content": draw(TEXT)})
        for _ in range(draw(st.integers(1, 3) if n is None else n)):
            out.append({"role": "user", "content": draw(content)})
            a: dict[str, Any] = {"role": "assistant", "content": draw(content)}
            if draw(st.integers(0, 5)) == 0:
                a["loss_weight"] = draw(st.sampled_from([0, 1]))
            if draw(st.integers(0, 5)) == 0:
                a["reasoning_content"] = draw(TEXT)
            out.append(a)
            if draw(st.integers(0, 6)) == 0:  # a tool round trip
                out[-1] = {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}]}
                out += [{"role": "tool", "tool_call_id": "c1", "content": draw(TEXT)},
                        {"role": "assistant", "content": draw(TEXT)}]
        return out

    return build()


def _sharegpt_turns(tags: tuple[str, str, str, str] = ("from", "value", "human", "gpt")) -> st.SearchStrategy:
    role, content, user, assistant = tags
    pair = st.builds(lambda q, a: [{role: user, content: q}, {role: assistant, content: a}], TEXT, TEXT)
    return st.lists(pair, min_size=1, max_size=3).map(lambda ps: [t for p in ps for t in p])


def _opt(d: dict[str, Any], **extra: st.SearchStrategy) -> st.SearchStrategy[dict]:
    """A fixed dict of strategies plus optional keys (each present or not)."""
    return st.fixed_dictionaries(d, optional=extra)


SIDE = st.one_of(TEXT, st.builds(lambda t: [{"role": "assistant", "content": t}], TEXT))
PROMPT = st.one_of(TEXT, st.builds(lambda t: [{"role": "user", "content": t}], TEXT))


@st.composite
def _preference(draw: Any) -> dict:
    kind = draw(st.integers(0, 2))
    if kind == 0:  # explicit prompt
        return {"prompt": draw(PROMPT), "chosen": draw(SIDE), "rejected": draw(SIDE)}
    prompt = draw(_msgs(st.integers(1, 1)))[:-1]
    chosen, rejected = (prompt + [{"role": "assistant", "content": draw(TEXT)}] for _ in range(2))
    if kind == 1:  # implicit prompt: the shared start
        return {"chosen": chosen, "rejected": rejected}
    return {"chosen_messages": chosen, "rejected_messages": rejected}  # LLaMA-Factory v1 pairs


_REACT_OBS = "You are in the middle of a room. Looking quickly around you, you see a desk 1.\nYour task is to: {}."
REACT = st.builds(lambda goal, steps, tt: {"observation": _REACT_OBS.format(goal), "task_type": tt,
                                           "steps": [{"action": a, "observation": o} for a, o in steps]},
                  PLAIN, st.lists(st.tuples(st.sampled_from(["go to desk 1", "think: look around", "take book 1"]),
                                            TEXT), min_size=1, max_size=3),
                  st.sampled_from(["look_at_obj_in_light", "pick_and_place_simple"]))

# One entry per --format: valid rows of that format (mutations are added on top).
ROWS: dict[str, st.SearchStrategy[dict]] = {
    "alpaca": _opt({"instruction": TEXT, "output": TEXT}, input=MAYBE, system=MAYBE,
                   history=st.lists(st.tuples(TEXT, TEXT).map(list), max_size=2)),
    "sharegpt": _opt({"conversations": _sharegpt_turns()}, system=TEXT,
                     tools=st.just('[{"name": "lookup", "description": "find", "parameters": {}}]')),
    "openai": _opt({"messages": _msgs()}, tags=st.lists(PLAIN, max_size=2)),
    "qa": _opt({"question": TEXT, "answer": TEXT}, system=TEXT),
    "roleplay": st.fixed_dictionaries({"messages": _msgs(system=True)}),
    "react": REACT,
    "dolly": _opt({"instruction": TEXT, "context": st.one_of(st.just(""), TEXT), "response": TEXT},
                  category=PLAIN),
    "text": st.fixed_dictionaries({"text": TEXT}),
    "prompt_only": st.fixed_dictionaries({"prompt": PROMPT}),
    "prompt_completion": _opt({"prompt": PROMPT, "completion": SIDE}, system=TEXT),
    "preference": _preference(),
    "unpaired_preference": st.fixed_dictionaries({"prompt": PROMPT, "completion": SIDE, "label": st.booleans()}),
}
ROWS["auto"] = st.one_of(*ROWS.values())  # a file of one format, found from its first row
KIND = {"text": "text", "preference": "preference", "unpaired_preference": "unpaired_preference"}


def _renamed(strategy: st.SearchStrategy[dict], names: dict[str, str]) -> st.SearchStrategy[dict]:
    return strategy.map(lambda r: {names.get(k, k): v for k, v in r.items()})


def _lf_sharegpt(role: str, content: str, user: str, assistant: str, key: str) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({key: _sharegpt_turns((role, content, user, assistant))}, optional={"sys": TEXT})


@dataclass(frozen=True)
class LfCase:
    entry: dict[str, Any]  # dataset_info.json entry, without file_name
    rows: st.SearchStrategy[dict]
    stage: str = "sft"


_LF_ALPACA = {"instruction": "ask", "input": "detail", "output": "reply", "system": "sys", "history": "hist"}
# One entry per kind of LLaMA-Factory dataset: its dataset_info.json entry and valid rows for it.
LF_ENTRIES: dict[str, LfCase] = {
    "alpaca_columns": LfCase({"columns": {"prompt": "ask", "query": "detail", "response": "reply", "system": "sys",
                                          "history": "hist"}}, _renamed(ROWS["alpaca"], _LF_ALPACA)),
    "sharegpt_tags": LfCase({"formatting": "sharegpt", "columns": {"messages": "dialog", "system": "sys"},
                             "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "customer",
                                      "assistant_tag": "agent"}},
                            _lf_sharegpt("speaker", "text", "customer", "agent", "dialog")),
    "sharegpt_openai_tags": LfCase({"formatting": "sharegpt", "columns": {"messages": "messages"},
                                    "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                             "assistant_tag": "assistant", "system_tag": "system"}},
                                   st.fixed_dictionaries({"messages": _msgs()})),
    "ranking": LfCase({"ranking": True, "columns": {"prompt": "ask", "chosen": "good", "rejected": "bad"}},
                      st.fixed_dictionaries({"ask": TEXT, "good": TEXT, "bad": TEXT}), "dpo"),
    "kto": LfCase({"columns": {"prompt": "ask", "response": "reply", "kto_tag": "ok"}},
                  st.fixed_dictionaries({"ask": TEXT, "reply": TEXT, "ok": st.booleans()}), "kto"),
    "pretrain": LfCase({"columns": {"prompt": "body"}}, st.fixed_dictionaries({"body": TEXT}), "pt"),
}

# ------------------------------------------------------------------------------------------------ mutations
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.one_of(WORDS, ODD), c, max_size=3), max_leaves=8)
HUGE = st.sampled_from(["x", "fish tank ", "é\u2028"]).map(lambda s: s * (1_000_000 // len(s)))
CONTROL = st.text(st.characters(min_codepoint=0, max_codepoint=31) | st.sampled_from("\x7f\x85\u2028\u2029\ufeff"),
                  min_size=1, max_size=6)
LONE = st.sampled_from(["\ud800", "a\udfff", "\udc00b"])  # written with ensure_ascii: a valid \\u escape


def _deep(depth: int, leaf: Any) -> Any:
    """``leaf`` inside ``depth`` levels of objects and lists (past ~900 even the test cannot dump it: see
    the "deep" line damage in :func:`files` for nesting the parser refuses)."""
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"k": leaf}
    return leaf


NEW_VALUE = st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), st.booleans(), st.just(""),
                      st.just("   "), JSON_VALUE, CONTROL, LONE, st.builds(_deep, st.integers(20, 500), TEXT))


def _slots(value: Any, path: tuple = ()) -> list[tuple]:
    """Every (path) to a dict key or list index in ``value``."""
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((*path, k))
            out += _slots(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.append((*path, i))
            out += _slots(v, (*path, i))
    return out


@st.composite
def mutated(draw: Any, base: st.SearchStrategy[dict]) -> Any:
    """A valid row with 0-3 mutations anywhere in it (most rows get none, so files keep some good rows)."""
    row = copy.deepcopy(draw(base))
    if draw(st.integers(0, 2)) == 0:
        return row
    for _ in range(draw(st.integers(1, 3))):
        slots = _slots(row)
        if not slots or draw(st.integers(0, 15)) == 0:
            return draw(JSON_VALUE)  # not an object at all, or any value
        path = draw(st.sampled_from(slots))
        parent = row
        for step in path[:-1]:
            parent = parent[step]
        key = path[-1]
        op = draw(st.sampled_from(["drop", "rename", "set", "set", "set", "wrap"]))
        if op == "drop":
            del parent[key]
        elif op == "rename" and isinstance(parent, dict):
            parent[draw(st.one_of(WORDS, st.just(str(key).upper()), ODD))] = parent.pop(key)
        elif op == "wrap":
            parent[key] = draw(st.sampled_from([[parent[key]], {"value": parent[key]}]))
        elif draw(st.integers(0, 30)) == 0:  # ~1 MB of text costs ~1 MB of I/O a run: now and then
            parent[key] = draw(HUGE)
        else:
            parent[key] = draw(NEW_VALUE)
    return row


# ---------------------------------------------------------------------------------------------------- files
@dataclass
class FileCase:
    """An input file as bytes, and the sources of the rows a reader must account for (None: unknown, the
    file must fail as a whole, or the count is the reader's own, for ReAct text)."""

    name: str
    data: bytes
    sources: list[int] | None
    must_fail: bool = False


def _dump(row: Any, ascii_: bool) -> str:
    return json.dumps(row, ensure_ascii=ascii_)


@st.composite
def files(draw: Any, rows: st.SearchStrategy[dict], containers: tuple[str, ...] = ("jsonl", "json")) -> FileCase:
    """Rows as a JSONL or JSON-array file, with file-level damage."""
    values = draw(st.lists(mutated(rows), min_size=1, max_size=6))
    dup = draw(st.integers(0, 3))
    if dup == 0 and values:  # an exact duplicate
        values.insert(draw(st.integers(0, len(values))), copy.deepcopy(values[0]))
    # JSON has no lone surrogates in UTF-8: rows holding one are written escaped
    ascii_ = draw(st.booleans())
    container = draw(st.sampled_from(containers))
    bom = b"\xef\xbb\xbf" if draw(st.integers(0, 4)) == 0 else b""
    if container == "json":
        data = json.dumps(values, ensure_ascii=True, indent=draw(st.sampled_from([None, 1]))).encode()
        damage = draw(st.sampled_from(["none", "none", "none", "truncate", "bad_utf8"]))
        if damage == "truncate":
            data = data[: draw(st.integers(0, len(data) - 2))]
        elif damage == "bad_utf8":
            at = draw(st.integers(1, len(data) - 1))
            data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + data[at:]
        return FileCase("rows.json", bom + data, list(range(len(values))), must_fail=damage != "none")
    lines: list[bytes] = []
    for v in values:
        try:
            line = _dump(v, ascii_).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: escaped, or its raw (invalid) bytes
            line = _dump(v, True).encode() if draw(st.booleans()) else _dump(v, False).encode("utf-8", "surrogatepass")
        damage = draw(st.sampled_from(["none"] * 6 + ["truncate", "bad_utf8", "crlf", "deep"]))
        if damage == "truncate" and len(line) > 1:
            line = line[: draw(st.integers(1, len(line) - 1))]
        elif damage == "bad_utf8":
            at = draw(st.integers(0, len(line)))
            line = line[:at] + draw(st.sampled_from([b"\xff", b"\xc3(", b"\x80"])) + line[at:]
        elif damage == "crlf":
            line += b"\r"
        elif damage == "deep":  # valid JSON nested past what the parser allows
            n = draw(st.integers(900, 20_000))
            line = b'{"messages": ' + b'[{"k": ' * n + b"0" + b"}]" * n + b"}"
        lines.append(line)
        if draw(st.integers(0, 5)) == 0:
            lines.append(draw(st.sampled_from([b"", b"   ", b"\t", b"\r"])))  # blank lines are not rows
    data = bom + b"\n".join(lines) + draw(st.sampled_from([b"\n", b""]))
    sources = [i for i, raw in enumerate(data.split(b"\n"), start=1)
               if (raw[3:] if i == 1 and raw.startswith(b"\xef\xbb\xbf") else raw).strip()]
    return FileCase("rows.jsonl", data, sources)


@st.composite
def react_text(draw: Any) -> FileCase:
    """ReAct plain-text trajectories, with stray and damaged lines."""
    lines = []
    if draw(st.integers(0, 3)) == 0:
        lines.append(draw(PLAIN))  # text before the first room line: one reject
    for _ in range(draw(st.integers(1, 3))):
        t = draw(REACT)
        lines.append(t["observation"])
        for s in t["steps"]:
            lines += [f"> {s['action']}", s["observation"].replace("\n", " ")]
        lines.append("")
    for _ in range(draw(st.integers(0, 2))):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.one_of(ODD, st.just("> "), st.just("> go"))))
    return FileCase("rows.txt", "\n".join(lines).encode("utf-8"), None)


# ------------------------------------------------------------------------------------------------ invariants
@dataclass
class Tally:
    """What a fuzz run did: cases, how they ended, violations (kept, not raised, by the slow test)."""

    cases: int = 0
    ok: int = 0
    errors: int = 0
    rows: int = 0
    violations: list[str] = field(default_factory=list)


def _lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), f"{path.name} does not end with a newline"
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def _outputs(out: Path) -> dict[str, bytes]:
    """The committed outputs (stats without timings); asserts no temp file was left behind."""
    names = {p.name for p in out.iterdir()} if out.exists() else set()
    assert not [n for n in names if n.startswith(".")], f"temp files left in {out}: {sorted(names)}"
    got = {n: (out / n).read_bytes() for n in OUTPUT_FILES if n in names}
    if "stats.json" in names:
        stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
        for k in _TIMING:
            stats.pop(k, None)
        for k in ("out", "workers"):  # the two runs differ here on purpose
            stats.get("config", {}).pop(k, None)
        got["stats.json"] = json.dumps(stats, sort_keys=True).encode()
    return got


def run_case(cfg: PrepConfig, tokenizer: Any, named: tuple[str, ...]) -> tuple[str, dict[str, Any] | None]:
    """One prepare() run: ("ok", stats) or ("error: <message>", None). Anything but DataPrepError propagates."""
    try:
        return "ok", prepare(cfg, tokenizer=tokenizer)
    except DataPrepError as e:
        msg = str(e)
        assert "\n" not in msg.strip(), f"multi-line error: {msg!r}"
        assert any(n in msg for n in named), f"error names none of {named}: {msg}"
        return "error: " + msg.replace(cfg.out, "<out>"), None


def check_run(cfg: PrepConfig, case_sources: list[str] | None, tokenizer: Any = None,
              named: tuple[str, ...] = (), must_fail: bool = False, workers2: bool = False) -> str:
    """Run twice (into two folders) and check invariants (a)-(c); returns how it ended."""
    base = Path(cfg.out)
    named = (*named, *cfg.inputs)
    cfg.out = str(base / "a")
    end_a, stats = run_case(cfg, tokenizer, (*named, str(base / "a" / "rejects.jsonl")))
    out_a = _outputs(base / "a")
    assert not (must_fail and end_a == "ok"), "a damaged JSON array was read without an error"
    if end_a != "ok" and "stats.json" not in out_a:  # a file-level error: nothing committed
        assert not out_a, f"{end_a}: outputs committed anyway: {sorted(out_a)}"
    else:
        assert set(out_a) == {*OUTPUT_FILES, "stats.json"}, sorted(out_a)
        stats = stats or json.loads((base / "a" / "stats.json").read_text(encoding="utf-8"))
        if end_a != "ok":  # "0 rows kept": the one error after the outputs are written
            assert stats["rows_kept"] == 0 and "no rows kept" in end_a, end_a
        _check_accounting(base / "a", stats, case_sources)
    cfg.out = str(base / "b")
    if workers2:
        cfg.workers = 2
    end_b, _ = run_case(cfg, tokenizer, (*named, str(base / "b" / "rejects.jsonl")))
    assert end_b == end_a, f"second run ended differently: {end_a!r} vs {end_b!r}"
    assert _outputs(base / "b") == out_a, "second run wrote different bytes"
    return end_a


def _check_accounting(out: Path, stats: dict[str, Any], case_sources: list[str] | None) -> None:
    rows = {n: _lines(out / n) for n in OUTPUT_FILES}
    rejects = rows["rejects.jsonl"]
    for r in rejects:
        assert r["reason"] in REASONS and isinstance(r["detail"], str) and r["detail"].strip(), r
    got = sorted(r["source"] for n in OUTPUT_FILES for r in rows[n])
    assert len(got) == stats["rows_in"], f"{stats['rows_in']} rows in, {len(got)} rows out"
    assert len(got) == len(set(got)), "a row was written twice"
    assert len(rows["train.jsonl"]) + len(rows["test.jsonl"]) == stats["rows_kept"]
    assert len(rejects) == stats["rows_rejected"] == sum(stats["rejects_by_reason"].values())
    if case_sources is not None:
        assert got == sorted(case_sources), f"rows read {sorted(case_sources)}, accounted {got}"


def _stage(fmt: str, draw: Any) -> str:
    """The stage that trains on the format's rows, or now and then another (wrong_stage rejects)."""
    right = STAGE_OF.get(KIND.get(fmt, ""), "sft")
    return draw(st.sampled_from([right, right, right, "sft", "pt", "dpo", "kto"]))


def fuzz_one(data: Any, fmt: str, tmp: Path, tokenizer: Any = None, workers2: bool = False) -> str:
    """One generated file read with ``--format fmt``; the invariants checked; how the run ended."""
    case = data.draw(react_text() if fmt == "react" and data.draw(st.integers(0, 3)) == 0 else files(ROWS[fmt]))
    if fmt != "auto" and data.draw(st.integers(0, 9)) == 0:  # rows of another format under this --format
        case = data.draw(files(ROWS[data.draw(st.sampled_from(FORMATS))]))
    path = tmp / case.name
    path.write_bytes(case.data)
    sources = None if case.sources is None else [f"{path}:{i}" for i in case.sources]
    cfg = PrepConfig(inputs=[str(path)], out=str(tmp / "out"), format=fmt, stage=_stage(fmt, data.draw),
                     test_size=data.draw(st.sampled_from([0.0, 0.25])), max_length=64, overlong="drop",
                     max_chars=data.draw(st.sampled_from([None, 200_000])), progress=False)
    return check_run(cfg, sources, tokenizer, must_fail=case.must_fail, workers2=workers2)


def fuzz_lf(data: Any, name: str, tmp: Path, tokenizer: Any = None) -> str:
    """One generated file registered in a dataset_info.json entry; the invariants checked."""
    lf = LF_ENTRIES[name]
    case = data.draw(files(lf.rows))
    (tmp / case.name).write_bytes(case.data)
    entry = {**lf.entry, "file_name": case.name}
    if data.draw(st.integers(0, 9)) == 0:  # a damaged entry: every problem is one DataPrepError
        entry[data.draw(st.sampled_from(sorted(entry)))] = data.draw(JSON_VALUE)
    info = tmp / "dataset_info.json"
    info.write_text(json.dumps({"fuzz": entry}), encoding="utf-8")
    sources = None if case.sources is None else [f"{tmp / case.name}:{i}" for i in case.sources]
    cfg = PrepConfig(inputs=[], out=str(tmp / "out"), dataset_info=str(info), dataset=["fuzz"], stage=lf.stage,
                     test_size=0.25, max_length=64, progress=False)
    return check_run(cfg, sources, tokenizer, named=(str(info), str(tmp / case.name)), must_fail=case.must_fail)


# No shrinking: with ~1 MB strings and deep nesting it can take minutes; the failing case is printed as found.
FUZZ = {"derandomize": True, "database": None, "deadline": None, "print_blob": True,
        "phases": (Phase.explicit, Phase.generate),
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                  HealthCheck.large_base_example]}
_SMOL: list[Any] = []


def fuzz_cases(examples: int, case: Callable[[Any, Path], object]) -> None:
    """``case(data, folder)`` on ``examples`` hypothesis draws, each in a fresh temporary folder."""

    @settings(max_examples=examples, **FUZZ)
    @given(st.data())
    def run(data: Any) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            case(data, Path(tmp))

    run()



def smol() -> Any:
    """SmolLM2's real tokenizer, built once for the module (hypothesis runs many cases per test)."""
    if not _SMOL:
        _SMOL.append(make_tokenizer("smollm2"))
    return _SMOL[0]


# -------------------------------------------------------------------------------------------- fast fuzzing
def test_every_format_has_a_generator() -> None:
    assert set(ROWS) == set(FORMAT_CHOICES), "add a row generator to ROWS for each new --format"


@pytest.mark.parametrize("fmt", FORMAT_CHOICES)
def test_fuzz_format(fmt: str) -> None:
    fuzz_cases(6, lambda data, tmp: fuzz_one(data, fmt, tmp))


@pytest.mark.parametrize("name", sorted(LF_ENTRIES))
def test_fuzz_llamafactory_entry(name: str) -> None:
    fuzz_cases(3, lambda data, tmp: fuzz_lf(data, name, tmp))


@pytest.mark.parametrize("fmt", ["auto", "sharegpt", "preference"])
def test_fuzz_with_smollm2_tokenizer(fmt: str) -> None:
    fuzz_cases(4, lambda data, tmp: fuzz_one(data, fmt, tmp, tokenizer=smol()))


def test_fuzz_one_worker_and_two_write_the_same() -> None:
    fuzz_cases(3, lambda data, tmp: fuzz_one(data, "openai", tmp, tokenizer=smol(), workers2=True))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "data_prep", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_fuzz_cli_exit_codes_and_no_traceback() -> None:
    """A few generated files through ``python -m data_prep``: exit 0 or 2, never a traceback."""
    ends = []

    @settings(max_examples=4, **FUZZ)
    @given(files(ROWS["auto"]))
    def run(case: FileCase) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / case.name
            path.write_bytes(case.data)
            r = _cli("--input", str(path), "--out", str(Path(tmp) / "out"))
            assert r.returncode in (0, 2) and "Traceback" not in r.stderr, r.stderr
            if r.returncode == 2:
                lines = r.stderr.strip().splitlines()
                assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
                assert str(path) in lines[0] or "rejects.jsonl" in lines[0], r.stderr
            ends.append(r.returncode)

    run()
    assert ends


# -------------------------------------------------------------------------------------------- slow fuzzing
def _tallied(tally: Tally, fn: Callable[[], str]) -> None:
    tally.cases += 1
    try:
        end = fn()
    except AssertionError as e:
        tally.violations.append(str(e).splitlines()[0][:300])
        return
    except Exception as e:  # noqa: BLE001 - an escaped exception is a violation of (a), counted, then raised
        where = traceback.extract_tb(e.__traceback__)[-1]
        tally.violations.append(f"{type(e).__name__}: {str(e)[:300]} ({where.filename}:{where.lineno})")
        return
    if end == "ok":
        tally.ok += 1
    else:
        tally.errors += 1


@pytest.mark.slow
def test_fuzz_many_cases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A few thousand generated cases over every format and LLaMA-Factory entry; figures in fuzz_figures.json.

    The length histogram (matplotlib, ~0.1 s a run) is not drawn here; the fast tests draw it for every case."""
    monkeypatch.setattr(pipeline, "plot_lengths", lambda *a, **k: None)
    tally = Tally()
    per_format, per_lf, per_tok = int(os.environ.get("FUZZ_PER_FORMAT", 180)), 100, 60

    def each(n: int, fn: Callable[[Any, Path], str]) -> None:
        fuzz_cases(n, lambda data, tmp: _tallied(tally, lambda: fn(data, tmp)))

    for fmt in FORMAT_CHOICES:
        each(per_format, lambda d, t, f=fmt: fuzz_one(d, f, t))
    for name in LF_ENTRIES:
        each(per_lf, lambda d, t, n=name: fuzz_lf(d, n, t))
    for fmt in ("auto", "openai", "preference"):
        each(per_tok, lambda d, t, f=fmt: fuzz_one(d, f, t, tokenizer=smol()))
    figures = {"cases": tally.cases, "runs_ok": tally.ok, "runs_data_prep_error": tally.errors,
               "violations": len(tally.violations), "first_violations": tally.violations[:10]}
    (tmp_path / "fuzz_figures.json").write_text(json.dumps(figures, indent=2), encoding="utf-8")
    print(f"\nfuzz figures ({tmp_path / 'fuzz_figures.json'}): {json.dumps(figures)}")
    assert tally.cases >= 2000 and not tally.violations, figures


# ----------------------------------------------------------------------- dataset_info.json file_name escapes
def _info(folder: Path, file_name: str) -> Path:
    info = folder / "dataset_info.json"
    info.write_text(json.dumps({"fish": {"file_name": file_name}}), encoding="utf-8")
    return info


def _rows(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"instruction": "Name a fish.", "output": "A guppy."}) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def lf_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A dataset_info.json folder and a file outside it."""
    inside = tmp_path / "lf"
    inside.mkdir()
    return inside, _rows(tmp_path / "secret.jsonl")


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "folder_with_symlink", "symlinked_folder"])
def test_file_name_outside_the_folder_is_refused(lf_dirs: tuple[Path, Path], how: str) -> None:
    inside, outside = lf_dirs
    if how == "dotdot":
        file_name = "../secret.jsonl"
    elif how == "absolute":
        file_name = str(outside)
    elif how == "symlink":
        (inside / "data.jsonl").symlink_to(outside)
        file_name = "data.jsonl"
    elif how == "folder_with_symlink":
        _rows(inside / "parts" / "a.jsonl")
        (inside / "parts" / "b.jsonl").symlink_to(outside)
        file_name = "parts"
    else:
        (inside / "parts").symlink_to(outside.parent)
        file_name = "parts/secret.jsonl"
    info = _info(inside, file_name)
    with pytest.raises(DataPrepError) as e:
        load_datasets(info, ["fish"])
    msg = str(e.value)
    assert msg.startswith(f"{info}: dataset 'fish': file_name {file_name!r}") and "\n" not in msg, msg
    assert "absolute" in msg if how == "absolute" else "outside the folder" in msg or "links outside" in msg
    r = _cli("--dataset-info", str(info), "--dataset", "fish", "--out", str(inside.parent / "out"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and str(info) in r.stderr and "'fish'" in r.stderr


def test_file_name_inside_the_folder_still_works(lf_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    inside, _ = lf_dirs
    _rows(inside / "sub" / "deeper" / "rows.jsonl")
    (inside / "link.jsonl").symlink_to(inside / "sub" / "deeper" / "rows.jsonl")  # a link that stays inside
    _rows(inside / "parts" / "a.jsonl")
    (inside / "parts" / "b.jsonl").symlink_to(inside / "sub" / "deeper" / "rows.jsonl")
    for file_name, n in (("sub/deeper/rows.jsonl", 1), ("./sub/../link.jsonl", 1), ("parts", 2), ("link.jsonl", 1)):
        info = _info(inside, file_name)
        (spec,) = load_datasets(info, ["fish"])
        assert len(spec.files) == n and all(f.resolve().is_relative_to(inside.resolve()) for f in spec.files)
    stats = prepare(PrepConfig(inputs=[], out=str(tmp_path / "o"), dataset_info=str(info), dataset=["fish"],
                               dedup=False, test_size=0))
    assert stats["rows_kept"] == 1


# -------------------------------------------------------------------- hand-written regressions, one a reason
def _one(tmp_path: Path, line: bytes, **cfg: Any) -> list[dict]:
    """``line`` as the second row of a JSONL file (after one good row); the rejects."""
    path = tmp_path / "in.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})
    path.write_bytes(good.encode() + b"\n" + line + b"\n")
    out = tmp_path / "out"
    with contextlib.suppress(DataPrepError):  # "0 rows kept" (a stage the good row does not fit): rejects written
        prepare(PrepConfig(inputs=[str(path)], out=str(out), test_size=0, **cfg))
    return _lines(out / "rejects.jsonl")


def _msg_row(*turns: tuple[str, Any], **extra: Any) -> bytes:
    return json.dumps({"messages": [{"role": r, "content": c} for r, c in turns], **extra}).encode()


REGRESSIONS: dict[str, tuple[bytes, dict[str, Any]]] = {
    "invalid_json": (b'{"messages": [', {}),
    "invalid_utf8": (b'{"messages": "caf\xc3("}', {}),
    "not_an_object": (b"[1, 2]", {}),
    "missing_field": (b'{"msgs": []}', {"format": "openai"}),
    "wrong_type": (b'{"messages": "hello"}', {}),
    "empty_content": (_msg_row(("user", "Hi"), ("assistant", "  ")), {}),
    "null_content": (_msg_row(("user", None), ("assistant", "ok")), {}),
    "unknown_role": (_msg_row(("narrator", "Once"), ("assistant", "ok")), {}),
    "bad_role_order": (_msg_row(("assistant", "first"), ("user", "then")), {}),
    "no_final_assistant": (_msg_row(("user", "Hello?")), {}),
    "too_long": (_msg_row(("user", "tell me"), ("assistant", "x" * 500)), {"max_chars": 100}),
    "too_short": (_msg_row(("user", "tell me a long story"), ("assistant", "ok")), {"min_chars": 30}),
    "low_quality": (_msg_row(("user", "Echo me"), ("assistant", "Echo me")), {"quality_threshold": 0.5}),
    "over_balance_cap": (_msg_row(("user", "Bye"), ("assistant", "Bye!"), tags=["x"]), {"balance_cap": 1}),
    "unsupported_format": (_msg_row(("user", "What is this?"), ("assistant", "A cat."), images=["a.png"]), {}),
    "nothing_to_train": (json.dumps({"messages": [{"role": "user", "content": "Hi there"},
                                                  {"role": "assistant", "content": "Yo", "loss_weight": 0}]}).encode(),
                         {}),
    "wrong_stage": (json.dumps({"text": "plain text for pretraining"}).encode(), {"format": "text"}),
    "same_chosen_rejected": (json.dumps({"prompt": "Pick", "chosen": "A", "rejected": "A"}).encode(),
                             {"format": "preference", "stage": "dpo"}),
}


@pytest.mark.parametrize("reason", sorted(REGRESSIONS))
def test_each_reject_reason_has_a_regression(tmp_path: Path, reason: str) -> None:
    line, cfg = REGRESSIONS[reason]
    if reason == "over_balance_cap":  # the cap counts the first row of the "x" tag, then rejects the next
        line = line + b"\n" + line.replace(b"Bye!", b"Ciao!")
    rejects = _one(tmp_path, line, **cfg)
    assert [r["reason"] for r in rejects][-1:] == [reason], rejects
    assert rejects[-1]["detail"].strip() and rejects[-1]["source"].endswith((":2", ":3"))


def test_every_reject_reason_has_a_regression() -> None:
    # render_error needs a template that fails: tests/test_data_prep_pipeline.py and _fastpath.py cover it.
    assert set(REGRESSIONS) | {"render_error"} == set(REASONS)


@pytest.mark.parametrize("line,detail", [
    (b'{"messages": [{"role": "user", "content": "hi \\ud800"}, {"role": "assistant", "content": "ok"}]}',
     "lone surrogate"),
    (b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested deeper"),
    (b'{"question": "q", "answer": "a", "n": ' + b"9" * 5000 + b"}", "number too long"),
])
def test_valid_json_python_cannot_hold_is_a_reject(tmp_path: Path, line: bytes, detail: str) -> None:
    """Found by the fuzzer: each used to crash the run with a traceback (UnicodeEncodeError on writing,
    RecursionError, ValueError from the integer digit limit)."""
    rejects = _one(tmp_path, line)
    assert len(rejects) == 1 and detail in rejects[0]["detail"] and rejects[0]["source"].endswith(":2"), rejects


@pytest.mark.parametrize("body,detail", [
    (b"[" + b"[" * 100_000 + b"]" * 100_000 + b"]", "nested deeper"),
    (b'[{"question": "q", "answer": "a", "n": ' + b"9" * 5000 + b"}]", "number too long"),
])
def test_json_array_element_python_cannot_hold_stops_with_the_file(tmp_path: Path, body: bytes, detail: str) -> None:
    path = tmp_path / "rows.json"
    path.write_bytes(body)
    with pytest.raises(DataPrepError, match=rf"^{path}:1:\d+: element 0: .*{detail}"):
        prepare(PrepConfig(inputs=[str(path)], out=str(tmp_path / "o")))


def test_json_array_lone_surrogate_is_a_reject(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"question": "q\ud800", "answer": "a"}, {"question": "q2", "answer": "a"}]))
    stats = prepare(PrepConfig(inputs=[str(path)], out=str(tmp_path / "o"), test_size=0))
    rejects = _lines(tmp_path / "o" / "rejects.jsonl")
    assert stats["rows_kept"] == 1 and [r["reason"] for r in rejects] == ["invalid_utf8"]
    assert rejects[0]["source"] == f"{path}:0"


@pytest.mark.parametrize("call_id", [["c1"], {"id": "c1"}])
def test_tool_call_id_of_another_type_does_not_crash(tmp_path: Path, call_id: object) -> None:
    """Found by the fuzzer: a list/dict ``tool_call_id`` raised TypeError (unhashable) out of the reader."""
    row = {"messages": [{"role": "user", "content": "Look it up"},
                        {"role": "assistant", "content": None, "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
                        {"role": "tool", "tool_call_id": call_id, "content": "found"},
                        {"role": "assistant", "content": "Here it is."}]}
    assert _one(tmp_path, json.dumps(row).encode()) == []
