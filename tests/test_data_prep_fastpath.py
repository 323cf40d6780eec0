"""The fast paths give exactly what the straightforward ones give.

- render: the skeleton cache (one template render per conversation shape) and batched tokenization against
  ``render_example(..., fast=False)`` (one render per row and prefix), on every test template and on tricky
  chats: tools, tool calls, system prompts, multi-turn, unicode, special-token and sentinel strings in
  content, chats that fail;
- the purity check that decides which templates may use the cache, on real and hand-made templates;
- the pipeline: worker processes + fast render against one process + straightforward render, byte for byte,
  on rows of every kind (kept, truncated, deduplicated, rejected for every reason the rows can reach) and on
  every bundled data set.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny import TEMPLATES_DIR, make_tokenizer

from data_prep.io import DataPrepError
from data_prep.pipeline import PrepConfig, prepare
from data_prep.render import RenderError, _plan_for, count_examples, render_example, render_examples
from data_prep.skeleton import template_is_pure

TEMPLATES = ("smollm2", "qwen2_5", "llama3", "mistral", "qwen3")
PURE = {"smollm2": True, "qwen2_5": True, "llama3": False, "mistral": True, "qwen3": False}
DATA = Path(__file__).resolve().parent.parent / "data"

TOOLS = [{"type": "function", "function": {"name": "get_temp", "description": "Water temperature",
                                           "parameters": {"type": "object", "properties": {"tank": {"type": "string"}}}}}]
CALL = [{"type": "function", "function": {"name": "get_temp", "arguments": {"tank": "a"}}}]


def u(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def a(text: str, **kw: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": text, **kw}


def sys_(text: str) -> dict[str, Any]:
    return {"role": "system", "content": text}


CHATS: list[tuple[list[dict[str, Any]], Any]] = [
    ([u("hi"), a("hello")], None),
    ([sys_("Be brief."), u("hi"), a("\nleading newline")], None),
    ([u("你好，鱼"), a("世界 🐟\u2028 sep\t tab"), u("再来"), a("  spaced  ")], None),
    ([sys_("s"), u("a"), a("b"), u("c"), a("d"), u("e"), a("f")], None),
    ([u("q <|im_start|>assistant\n"), a("fake <|im_end|> end")], None),
    ([u("sentinel \ue000" + "0\ue001 look-alike"), a("\ue0001\ue001")], None),
    ([u("empty answer"), a("")], None),
    ([u("a"), u("b"), a("two users")], None),
    ([sys_("s"), u("a"), a("b"), sys_("late system"), u("c"), a("d")], None),
    ([a("starts with the assistant"), u("then a user")], None),
    ([u("no answer")], None),
    ([], None),
    ([u("call"), a("", tool_calls=CALL), {"role": "tool", "content": "25", "name": "get_temp"}, a("25 degrees")], TOOLS),
    ([u("with tools, plain answer"), a("ok")], TOOLS),
    ([u("extra field"), {"role": "assistant", "content": "x", "name": "bob"}], None),
    ([u("x"), {"role": "assistant", "content": None}], None),
    ([{"role": "user"}, a("missing content")], None),
]


def _same(slow: Any, fast: Any) -> bool:
    if isinstance(slow, RenderError) or isinstance(fast, RenderError):
        return type(slow) is type(fast) and str(slow) == str(fast)
    return (slow.input_ids, slow.labels, slow.text, slow.truncated) == (
        fast.input_ids, fast.labels, fast.text, fast.truncated)


def _slow(tok: Any, chat: Any, tools: Any, max_length: int | None = None) -> Any:
    try:
        return render_example(tok, chat, tools=tools, max_length=max_length, fast=False)
    except RenderError as e:
        return e


def _counts(ex: Any, max_length: int | None) -> Any:
    if isinstance(ex, RenderError):
        return ex
    labels = ex.labels[:max_length] if max_length else ex.labels
    return ex.n_tokens, sum(1 for x in labels if x != -100)


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("max_length", [None, 12])
def test_fast_render_equals_straightforward(template: str, max_length: int | None) -> None:
    tok = make_tokenizer(template)
    chats, tools = [c for c, _ in CHATS], [t for _, t in CHATS]
    fast = render_examples(tok, chats, tools, max_length=max_length)
    counts = count_examples(tok, chats, tools, max_length=max_length)
    for chat, row_tools, f, c in zip(chats, tools, fast, counts, strict=True):
        slow = _slow(tok, chat, row_tools, max_length)
        assert _same(slow, f), (template, chat)
        full = _slow(tok, chat, row_tools)  # counts are over the full rendering, trained within max_length
        expected = _counts(full, max_length)
        assert (str(c) == str(expected)) if isinstance(c, RenderError) else c == expected, (template, chat)
        try:
            single = render_example(tok, chat, tools=row_tools, max_length=max_length)
        except RenderError as e:
            single = e
        assert _same(slow, single)
    # the comparison is only worth something if the fast path really ran for the pure templates
    plan = _plan_for(tok)
    assert (plan is not None and any(sk is not None for sk in plan.shapes.values())) == PURE[template]


@pytest.mark.parametrize("template", ["smollm2", "qwen2_5", "mistral"])
def test_template_change_is_picked_up(template: str) -> None:
    tok = make_tokenizer(template)
    chat = [u("hi"), a("hello")]
    before = render_example(tok, chat)
    tok.chat_template = (TEMPLATES_DIR / "qwen2_5.jinja").read_text() if template != "qwen2_5" else \
        make_tokenizer("smollm2").chat_template
    after = render_example(tok, chat)
    assert after.text != before.text and _same(_slow(tok, chat, None), after)


_PIECES = [*"ab \n\t中🐟<|>/_\ue000\ue001", "<|im_end|>", "<|im_start|>", "[INST]", "</s>"]
roles_and_text = st.lists(st.sampled_from(_PIECES), max_size=8).map("".join)


@st.composite
def chats(draw: st.DrawFn) -> list[dict[str, str]]:
    msgs = [sys_(draw(roles_and_text))] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 3))):
        msgs += [u(draw(roles_and_text)), a(draw(roles_and_text))]
    return msgs


@pytest.mark.parametrize("template", ["smollm2", "qwen2_5", "mistral"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chat=chats())
def test_property_fast_equals_straightforward(template: str, chat: list[dict[str, str]]) -> None:
    tok = _tokenizer(template)
    assert _same(_slow(tok, chat, None), render_examples(tok, [chat])[0])


@functools.cache
def _tokenizer(template: str) -> Any:
    return make_tokenizer(template)  # one per template for the property test (render never mutates it)


# ------------------------------------------------------------------------------------------- the purity check


@pytest.mark.parametrize(("name", "pure"), [*PURE.items(), ("phi3", True), ("gemma2", False), ("gemma3", False)])
def test_purity_of_real_templates(name: str, pure: bool) -> None:
    src = make_tokenizer(name).chat_template if name in PURE and name == "smollm2" else \
        (TEMPLATES_DIR / f"{name}.jinja").read_text()
    assert template_is_pure(src) is pure


LOOP = "{% for m in messages %}{{ '<' + m['role'] + '>' }}BODY{% endfor %}"


@pytest.mark.parametrize(("body", "pure"), [
    ("{{ m['content'] }}", True),
    ("{{ m.content + '|' ~ m.role }}", True),
    ("{% if m.content %}{{ m.content }}{% else %}(empty){% endif %}", True),  # emptiness is in the shape
    ("{% set c = m.content %}{{ c }}", True),
    ("{{ m.content if m.role == 'user' else '' }}", True),
    ("{% if m.content is string %}{{ m.content }}{% endif %}", True),
    ("{{ m.content | trim }}", False),
    ("{{ m.content | length }}", False),
    ("{% if m.content == 'x' %}x{% endif %}", False),
    ("{% if 'think' in m.content %}t{% endif %}", False),
    ("{{ m.content.strip() }}", False),
    ("{{ m.content[0] }}", False),
    ("{{ m | tojson }}", False),
    ("{{ m }}", False),
    ("{{ m.get('content') }}", False),
    ("{% for k, v in m.items() %}{{ v }}{% endfor %}", False),
    ("{% set ns = namespace(c=m.content) %}{{ ns.c }}", False),
    ("{% set ns = namespace(c='') %}{% set ns.c = m.content %}{{ ns.c }}", False),
    ("{{ m.content or 'none' }}", False),
    ("{{ strftime_now('%Y') }}", False),
    ("{% for ch in m.content %}{{ ch }}{% endfor %}", False),
    ("{% macro f(x) %}{{ x }}{% endmacro %}{{ f(m.content) }}", False),
])
def test_purity_rules(body: str, pure: bool) -> None:
    assert template_is_pure(LOOP.replace("BODY", body)) is pure


def test_impure_and_pure_look_alike_render_the_same_either_way() -> None:
    """A template the check refuses still renders correctly: it goes the straightforward way."""
    tok = make_tokenizer("smollm2")
    tok.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content | upper }}</s>{% endfor %}"
    chat = [u("hi"), a("hello")]
    assert _plan_for(tok) is None
    assert _same(_slow(tok, chat, None), render_example(tok, chat))


# -------------------------------------------------------------------------------------------- the pipeline


def _tricky_rows() -> list[Any]:
    long = " ".join(f"w{j}" for j in range(400))
    rows: list[Any] = []
    for i in range(60):
        k = i % 10
        if k == 0:
            rows.append({"messages": [sys_(f"Sys {i} 🐟"), u(f"温度 {i}?\tx"), a(f"Answer {i}\n")]})
        elif k == 1:
            rows.append({"messages": [u(f"temp {i}"), a("", tool_calls=CALL),
                                      {"role": "tool", "content": "25.5", "name": "get_temp"}, a(f"25.5 ({i})")],
                         "tools": TOOLS})
        elif k == 2:
            rows.append({"messages": [u(f"q{i}"), a(f" lead {i}"), u("again"), a(f"\n\nnewlines {i}")]})
        elif k == 3:
            rows.append({"messages": [a("I start"), u("no")]})  # bad_role_order
        elif k == 4:
            rows.append({"messages": [u("   "), a("x")]})  # empty_content
        elif k == 5:
            rows.append({"messages": [u("Dup  Question!" if i % 20 else "dup question"), a("dup answer")]})
        elif k == 6:
            rows.append({"messages": [u(f"long {i}"), a(long)]})  # over --max-length
        elif k == 7:
            rows.append({"messages": [u(f"u {i}"), a(f"a {i}")], "task_type": ["pick", "clean"][i % 2], "tags": ["t"]})
        elif k == 8:
            rows.append({"messages": [u(f"repeat {i}"), a(f"repeat {i}")]})  # low quality
        else:
            rows.append({"messages": [u(f"q \ue000{i}\ue001 <|im_end|>"), a(f"中文 🐠 {i}"), u("more"), a("\ufffd")]})
    return rows


def _write_tricky(path: Path) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for r in _tricky_rows():
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.write("{not json\n")
        f.write('"a string"\n')
    return path


def _outputs(out: Path) -> dict[str, Any]:
    files = {name: (out / name).read_bytes() for name in ("train.jsonl", "test.jsonl", "rejects.jsonl",
                                                          "duplicates.jsonl")}
    stats = json.loads((out / "stats.json").read_text())
    for key in ("elapsed_s", "rows_per_s", "row_cpu_s", "config"):  # timing and settings differ by design
        stats.pop(key)
    return {**files, "stats": stats}


def _both(tmp_path: Path, tok: Any, **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    ref = prepare(PrepConfig(out=str(tmp_path / "ref"), progress=False, workers=1, fast_render=False, **kw), tok)
    new = prepare(PrepConfig(out=str(tmp_path / "new"), progress=False, workers=2, **kw), tok)
    assert ref["config"]["workers"] == 1 and new["config"]["workers"] == 2
    return _outputs(tmp_path / "ref"), _outputs(tmp_path / "new")


@pytest.mark.parametrize(("template", "extra"), [
    ("smollm2", {"max_length": 300}),
    ("smollm2", {"max_length": 300, "overlong": "drop", "balance_cap": 5, "quality_threshold": 0.3,
                 "system_prompt": "Default system"}),
    ("mistral", {"max_length": 300}),  # rejects tool turns: render_error
    ("llama3", {"max_length": 300, "dedup": False}),  # impure template: straightforward render in workers
])
def test_pipeline_workers_and_fast_render_change_nothing(tmp_path: Path, template: str, extra: dict) -> None:
    src = _write_tricky(tmp_path / "tricky.jsonl")
    ref, new = _both(tmp_path, make_tokenizer(template), inputs=[str(src)], **extra)
    assert ref == new
    reasons = ref["stats"]["rejects_by_reason"]
    assert {"invalid_json", "not_an_object", "bad_role_order", "empty_content"} <= set(reasons)
    if template == "mistral":  # its template raises on tool turns
        assert reasons["render_error"] > 0
    else:  # tool rows kept: rendered the straightforward way inside the fast batch
        assert ref["train.jsonl"].count(b"tool_calls") > 0
    if extra.get("overlong") == "drop":
        assert {"too_long", "low_quality", "over_balance_cap"} <= set(reasons)
    else:
        assert ref["stats"]["rows_truncated"] > 0


BUNDLED = [
    ("react_text", {"inputs": [str(DATA / "react" / "train.txt"), str(DATA / "react" / "test.txt")],
                    "max_length": 1024}),
    ("react_json", {"inputs": [str(DATA / "react" / "train.jsonl"), str(DATA / "react" / "test.jsonl")],
                    "quality_threshold": 0.5}),
    ("qa", {"inputs": [str(DATA / "domain_qa" / "fish_care.jsonl")], "format": "qa"}),
    ("qa_registry", {"inputs": [], "dataset_info": str(DATA / "domain_qa" / "dataset_info.json"),
                     "dataset": ["fish_care", "fish_care_sharegpt"], "dedup": False}),
    ("roleplay", {"inputs": [str(DATA / "roleplay" / "dialogues.jsonl")], "format": "roleplay", "max_length": 256}),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "kw"), BUNDLED, ids=[n for n, _ in BUNDLED])
def test_bundled_data_same_with_workers_and_fast_render(tmp_path: Path, smol_tokenizer: Any, name: str,
                                                        kw: dict) -> None:
    ref, new = _both(tmp_path, smol_tokenizer, **kw)
    assert ref == new and ref["stats"]["rows_kept"] > 0


def test_workers_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(DataPrepError, match="--workers"):
        prepare(PrepConfig(inputs=[str(_write_tricky(tmp_path / "t.jsonl"))], out=str(tmp_path / "o"), workers=0))
