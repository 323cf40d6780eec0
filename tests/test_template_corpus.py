"""Real chat templates of released models (tests/fixtures/chat_templates/) through deploy.modelfile.

Each fixture holds one model's ``chat_template`` and its BOS/EOS/special tokens, with the source the string
came from. For every one: no traceback; either a Modelfile whose TEMPLATE, executed as Ollama would (our
emulator, and Go's own text/template when ``go`` is installed), gives exactly what ``apply_chat_template``
gives for single-turn, multi-turn, with-system and without-system chats (and one ending with an assistant
turn, which Ollama leaves open), or a one-line refusal. The expected text is rendered here with
``apply_chat_template`` directly, not taken from the translator's own check.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deploy.chat_structure import derive_structure
from deploy.gotemplate import render_ollama
from deploy.modelfile import (
    SAMPLE_TOOLS,
    build_modelfile,
    canonical_json,
    parse_modelfile,
    render_ollama_tools,
    write_modelfile,
)

CORPUS_DIR = Path(__file__).parent / "fixtures" / "chat_templates"
CORPUS = sorted(CORPUS_DIR.glob("*.json"))
GO_DIR = Path(__file__).parent / "go"

CHATS: dict[str, list[dict[str, Any]]] = {
    "single_turn": [{"role": "user", "content": "Where is the mug?"}],
    "with_system": [
        {"role": "system", "content": "You are a household robot.\nAnswer in one line."},
        {"role": "user", "content": "Where is the mug?"},
    ],
    "multi_turn": [
        {"role": "user", "content": "You are in the kitchen. Find a mug."},
        {"role": "assistant", "content": "think: look on the counter"},
        {"role": "user", "content": "OK."},
        {"role": "assistant", "content": "go to countertop 1"},
        {"role": "user", "content": "You see a mug 1."},
    ],
    "multi_turn_system": [
        {"role": "system", "content": 'Stay in character: "Captain" Rex.'},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Ahoy!"},
        {"role": "user", "content": "Where to?"},
    ],
    "ends_with_assistant": [
        {"role": "user", "content": "Count to three"},
        {"role": "assistant", "content": "1, 2, 3"},
    ],
}
TOOL_CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Where is the mug?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "lookup", "arguments": {"item": "mug"}}}],
    },
    {"role": "tool", "content": "on the table"},
    {"role": "assistant", "content": "It is on the table."},
    {"role": "user", "content": "And the cup?"},
]


@functools.lru_cache(maxsize=1)
def _smollm2() -> Any:
    from models.loading import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")


def corpus_tokenizer(path: Path) -> Any:
    """SmolLM2's tokenizer carrying the fixture's chat template, BOS/EOS and special tokens."""
    rec = json.loads(path.read_text())
    tok = copy.deepcopy(_smollm2())
    specials = [t for t in (rec["bos_token"], rec["eos_token"], *rec["extra_special_tokens"]) if t]
    new = [t for t in dict.fromkeys(specials) if t not in tok.get_added_vocab()]
    if new:
        tok.add_special_tokens({"additional_special_tokens": new})
    tok.chat_template = rec["chat_template"]
    tok.bos_token, tok.eos_token = rec["bos_token"], rec["eos_token"]
    return tok


def hf_text(tok: Any, msgs: list[dict[str, Any]], strip_bos: str, merge_system: bool, **kw: Any) -> str:
    """``apply_chat_template`` as Ollama should reproduce it: the last assistant turn left open; without a
    system role, the system prompt is the first user message's first paragraph; the BOS llama.cpp adds removed."""
    if merge_system and msgs[0]["role"] == "system":
        msgs = [{**msgs[1], "content": msgs[0]["content"] + "\n\n" + msgs[1]["content"]}, *msgs[2:]]
    if msgs[-1]["role"] == "assistant":
        text = tok.apply_chat_template(msgs, tokenize=False, continue_final_message=True, **kw)
    else:
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, **kw)
    return text[len(strip_bos) :] if strip_bos and text.startswith(strip_bos) else text


@dataclass
class Outcome:
    model: str
    structure: str
    result: str  # "Modelfile" or the refusal
    templates: dict[bool, str]  # add_bos -> TEMPLATE
    tools: bool = False


@functools.cache
def outcome(path: Path) -> Outcome:
    rec = json.loads(path.read_text())
    tok = corpus_tokenizer(path)
    try:
        specs = {
            b: build_modelfile(tok, "m.gguf", add_bos=b, end_of_turn=[rec["eos_token"] or ""]) for b in (0, 1)
        }
    except ValueError as e:
        return Outcome(rec["model"], "-", f"refused: {e}", {})
    notes = specs[False].notes
    tools = any(n.startswith("tools,") for n in notes)
    return Outcome(
        rec["model"],
        notes[0].removeprefix("chat format: "),
        "Modelfile",
        {bool(b): s.template for b, s in specs.items()},
        tools,
    )


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_template_is_translated_exactly_or_refused(path: Path, tmp_path: Path) -> None:
    out = outcome(path)
    if out.result != "Modelfile":
        assert "\n" not in out.result and len(out.result) < 400, out.result
        return
    tok = corpus_tokenizer(path)
    st = derive_structure(tok)
    merge = st.system == "unsupported"
    for add_bos, template in out.templates.items():
        bos = st.bos_text if add_bos else ""
        for name, msgs in CHATS.items():
            assert render_ollama(template, msgs) == hf_text(tok, msgs, bos, merge), (name, add_bos)
    if out.tools:
        want = hf_text(tok, TOOL_CHAT, "", merge, tools=SAMPLE_TOOLS)
        assert canonical_json(
            render_ollama_tools(out.templates[False], TOOL_CHAT, SAMPLE_TOOLS)
        ) == canonical_json(want)
    rec = json.loads(path.read_text())
    spec = build_modelfile(
        tok, "m.gguf", add_bos=False, end_of_turn=[rec["eos_token"] or ""], system="Be a robot."
    )
    parsed = dict(parse_modelfile(write_modelfile(spec, tmp_path / "Modelfile").read_text()))
    assert parsed["template"] == out.templates[False] and parsed["system"] == "Be a robot."


@pytest.mark.slow
def test_most_of_the_corpus_gets_a_modelfile(capsys: pytest.CaptureFixture[str]) -> None:
    outcomes = [outcome(p) for p in CORPUS]
    models = {o.model for o in outcomes}
    assert len(models) == len(CORPUS) >= 35, "the corpus must hold at least 35 distinct models"
    table = ["| model | structure | result |", "|---|---|---|"]
    table += [f"| {o.model} | {o.structure}{' (+tools)' if o.tools else ''} | {o.result} |" for o in outcomes]
    with capsys.disabled():
        print("\n" + "\n".join(table))
    good = sum(o.result == "Modelfile" for o in outcomes)
    assert good >= 0.9 * len(outcomes), f"only {good}/{len(outcomes)} get a Modelfile"


def test_corpus_fixtures_name_their_source() -> None:
    for path in CORPUS:
        rec = json.loads(path.read_text())
        assert path.name == rec["model"].replace("/", "--") + ".json"
        assert rec["source"] and isinstance(rec["chat_template"], str) and rec["chat_template"]
        assert isinstance(rec["extra_special_tokens"], list)


# ---------------------------------------------------------------- Go's own text/template engine


@pytest.fixture(scope="module")
def go_render(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """tests/go's renderer (Ollama's FuncMap, collate and value types), built once."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("Go is not installed; the emulator check above still runs")
    exe = tmp_path_factory.mktemp("go") / "render_template"
    env = {**os.environ, "GOPROXY": "off", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    built = subprocess.run(
        [go, "build", "-o", str(exe), "."], cwd=GO_DIR, env=env, capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr

    def run(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
        proc = subprocess.run(
            [str(exe)], input=json.dumps(cases), capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    return run


@pytest.mark.slow
def test_corpus_templates_render_the_same_in_go(go_render: Any) -> None:
    cases, wants = [], []
    for path in CORPUS:
        out = outcome(path)
        if out.result != "Modelfile":
            continue
        tok = corpus_tokenizer(path)
        st = derive_structure(tok)
        for add_bos, template in out.templates.items():
            for name, msgs in CHATS.items():
                cases.append({"template": template, "data": {"messages": msgs}})
                wants.append(
                    (
                        out.model,
                        add_bos,
                        name,
                        hf_text(tok, msgs, st.bos_text if add_bos else "", st.system == "unsupported"),
                    )
                )
        if out.tools:
            cases.append(
                {"template": out.templates[False], "data": {"messages": TOOL_CHAT, "tools": SAMPLE_TOOLS}}
            )
            wants.append((out.model, False, "tools", hf_text(tok, TOOL_CHAT, "", False, tools=SAMPLE_TOOLS)))
    bad = []
    for (model, add_bos, name, want), got in zip(wants, go_render(cases), strict=True):
        text = got.get("output")
        if name == "tools" and text is not None:
            text, want = canonical_json(text), canonical_json(want)
        if text != want:
            bad.append(
                f"{model} add_bos={add_bos} {name}: Go gives {text!r:.200} ({got.get('error')}), HF {want!r:.200}"
            )
    assert not bad, "\n".join(bad[:10])
