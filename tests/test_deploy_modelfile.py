"""Ollama TEMPLATE (executed by our Go-template emulator) equals apply_chat_template; Modelfile quoting."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_template_corpus import CORPUS_DIR, corpus_tokenizer, hf_text
from tiny import TEMPLATES_DIR, make_tokenizer

from deploy.chat_structure import derive_structure
from deploy.gotemplate import GoTemplate, TemplateError, collate, ollama_values, render_ollama
from deploy.modelfile import (
    SAMPLE_TOOLS,
    build_modelfile,
    canonical_json,
    check_system_prompt,
    gguf_chat_template,
    go_template,
    parse_modelfile,
    render_ollama_tools,
    write_modelfile,
)
from deploy.tokenizer_gguf import build_vocab

CONVERSATIONS = {
    "one_user": [{"role": "user", "content": "Hello!"}],
    "system_user": [
        {"role": "system", "content": "You are a robot.\nAnswer briefly."},
        {"role": "user", "content": "Where is the mug?"},
    ],
    "multi_turn": [
        {"role": "user", "content": "You are in the kitchen. Your task is to: find a mug."},
        {"role": "assistant", "content": "think: I should look around."},
        {"role": "user", "content": "OK."},
        {"role": "assistant", "content": "go to countertop 1"},
        {"role": "user", "content": "On the countertop 1, you see a mug 1."},
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


@pytest.mark.parametrize("add_bos", [False, True])
@pytest.mark.parametrize("conv", sorted(CONVERSATIONS))
@pytest.mark.parametrize("template", ["smollm2", "qwen2_5", "llama3", "mistral"])
def test_template_matches_apply_chat_template(template: str, conv: str, add_bos: bool) -> None:
    tok = make_tokenizer(template)
    st = derive_structure(tok)
    msgs = CONVERSATIONS[conv]
    got = render_ollama(go_template(st, add_bos), msgs)
    if add_bos:
        got = st.bos_text + got  # llama.cpp adds the BOS token itself
    if msgs[-1]["role"] == "assistant":  # Ollama leaves the last assistant turn open (prefill)
        want = tok.apply_chat_template(msgs, tokenize=False, continue_final_message=True)
    else:
        want = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert got == want


@pytest.mark.parametrize("template", ["smollm2", "qwen2_5", "llama3", "mistral"])
def test_modelfile_system_is_injected_like_a_system_message(template: str) -> None:
    """Ollama prepends the Modelfile SYSTEM as a system message; the result equals training with that system."""
    tok = make_tokenizer(template)
    st = derive_structure(tok)
    system = 'You are a household robot. Say "done" when finished.'
    msgs = CONVERSATIONS["multi_turn"]
    got = st.bos_text + render_ollama(go_template(st, True), msgs, system=system)
    assert got == tok.apply_chat_template(
        [{"role": "system", "content": system}, *msgs], tokenize=False, add_generation_prompt=True
    )


def test_default_system_prompts_are_read_from_the_template() -> None:
    assert (
        derive_structure(make_tokenizer("smollm2")).default_system
        == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    )
    assert (
        derive_structure(make_tokenizer("qwen2_5")).default_system
        == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    )
    assert derive_structure(make_tokenizer("llama3")).default_system is None


def test_structure_comes_from_the_template_not_the_name() -> None:
    tok = make_tokenizer("llama3")  # Llama-3 special tokens, but trained with a ChatML template
    tok.chat_template = (TEMPLATES_DIR / "qwen2_5.jinja").read_text()
    assert derive_structure(tok).generation == "<|im_end|>\n<|im_start|>assistant\n"
    # an unknown plain-text format is translated like any other
    tok.chat_template = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    spec = build_modelfile(tok, "m.gguf", add_bos=False, end_of_turn=[])
    assert render_ollama(spec.template, CONVERSATIONS["multi_turn"]) == tok.apply_chat_template(
        CONVERSATIONS["multi_turn"], tokenize=False, add_generation_prompt=True
    )
    assert "### user:" in spec.stops  # a format without special tokens stops at the next turn's opener
    # numbered turns cannot be written as a TEMPLATE: a one-line refusal, not a traceback
    tok.chat_template = "{% for m in messages %}{{ loop.index }}. {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(ValueError, match="differently by position") as err:
        build_modelfile(tok, "m.gguf", add_bos=False, end_of_turn=[])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("template", ["smollm2", "qwen2_5", "llama3", "mistral"])
def test_modelfile_stops_params_and_roundtrip(tmp_path: Path, template: str) -> None:
    tok = make_tokenizer(template)
    vocab = build_vocab(tok)
    system = 'Use "quotes", triple """quotes""" inside a line,\nand a last line ending in """'
    spec = build_modelfile(
        tok,
        "m-q8_0.gguf",
        add_bos=vocab.add_bos,
        end_of_turn=vocab.end_of_turn,
        system=system,
        scenario="react",
    )
    path = write_modelfile(spec, tmp_path / "Modelfile")
    parsed = parse_modelfile(path.read_text())
    cmds = dict(parsed)
    assert cmds["from"] == "./m-q8_0.gguf"
    assert cmds["system"] == system
    assert cmds["template"] == spec.template
    stops = [v for k, v in parsed if k == "stop"]
    assert tok.eos_token in stops
    if template in ("smollm2", "qwen2_5"):
        assert "<|im_end|>" in stops
    if template == "llama3":
        assert "<|eot_id|>" in stops
    assert cmds["temperature"] == "0" and cmds["top_k"] == "1"


def test_scenario_sampling_params() -> None:
    tok = make_tokenizer("smollm2")
    rp = build_modelfile(tok, "m.gguf", add_bos=False, end_of_turn=["<|im_end|>"], scenario="roleplay").params
    assert rp["temperature"] == 0.8 and rp["top_p"] == 0.9 and rp["repeat_penalty"] == 1.1
    qa = build_modelfile(tok, "m.gguf", add_bos=False, end_of_turn=["<|im_end|>"], scenario="qa").params
    assert qa["temperature"] == 0.3


def test_unrepresentable_system_prompt_is_rejected() -> None:
    with pytest.raises(ValueError, match="line 1"):
        check_system_prompt('ends with """\nnext line')
    with pytest.raises(ValueError, match="control characters"):
        check_system_prompt("bell \x07")
    assert check_system_prompt('fine """ in the middle\nlast line may end with """') is not None


def test_ollama_parser_emulation_ends_at_an_inner_triple_quote_line() -> None:
    with pytest.raises(ValueError, match="invalid command"):
        parse_modelfile('FROM x\nSYSTEM """a\nb"""\nc"""\n')
    assert parse_modelfile('FROM x\nPARAMETER stop "<|im_end|>"\n') == [("from", "x"), ("stop", "<|im_end|>")]


def test_go_template_emulator_semantics() -> None:
    t = GoTemplate(
        "{{- $x := 1 }}  a {{- if eq $x 2 }}two{{ else if eq $x 1 }} one {{- else }}other{{ end -}}  b"
    )
    assert t.execute({}) == "  a oneb"  # trim markers eat only the whitespace next to them
    t = GoTemplate("{{ range $i, $m := .Items }}{{ $i }}={{ $m.Name }};{{ else }}empty{{ end }}")
    assert t.execute({"Items": [{"Name": "x"}, {"Name": "y"}]}) == "0=x;1=y;"
    assert t.execute({"Items": []}) == "empty"
    t = GoTemplate("{{ if and .A (not .B) }}yes{{ end }}{{ len (slice .L 1) }}{{ index .L 0 }}")
    assert t.execute({"A": "x", "B": "", "L": [5, 6, 7]}) == "yes25"
    with pytest.raises(TemplateError):
        GoTemplate("{{ with .A }}x{{ end }}")
    with pytest.raises(TemplateError):
        GoTemplate("{{ if .A }}x").execute({})
    with pytest.raises(TemplateError):
        GoTemplate('{{ eq 1 "1" }}').execute({})  # Go refuses to compare different kinds


# ---------------------------------------------------------------- real templates with a twist (tests/fixtures/chat_templates)


def _corpus(name: str) -> object:
    return corpus_tokenizer(CORPUS_DIR / f"{name}.json")


def _checked(tok: object, system: bool = True) -> str:
    """build_modelfile's TEMPLATE, re-checked here against apply_chat_template on every sample chat."""
    spec = build_modelfile(tok, "m.gguf", add_bos=False, end_of_turn=[])
    st = derive_structure(tok)
    for name, msgs in CONVERSATIONS.items():
        if system or msgs[0]["role"] != "system":
            assert render_ollama(spec.template, msgs) == hf_text(tok, msgs, "", st.system == "unsupported"), (
                name
            )
    return spec.template


def test_llama31_date_header_is_rendered_once_as_in_training() -> None:
    tok = _corpus("meta-llama--Llama-3.1-8B-Instruct")
    st = derive_structure(tok)
    header = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
    assert st.system == "block" and st.system_open.endswith(header) and header in st.lead
    template = _checked(tok)
    out = render_ollama(template, CONVERSATIONS["multi_turn_system"])
    assert "<|eot_id|><|eot_id|>" not in out and out.count("Today Date: 26 Jul 2024") == 1
    assert any("26 Jul 2024" in n for n in build_modelfile(tok, "m", add_bos=True, end_of_turn=[]).notes)


def test_llama2_sys_block_is_merged_into_the_first_user_turn() -> None:
    tok = _corpus("meta-llama--Llama-2-7b-chat-hf")
    st = derive_structure(tok)
    assert (st.system, st.system_open, st.system_close) == (
        "first_user",
        "<s>[INST] <<SYS>>\n",
        "\n<</SYS>>\n\n",
    )
    assert st.assistant_after_user == " [/INST] " and st.user_after_assistant == " </s><s>[INST] "
    _checked(tok)
    with_bos = build_modelfile(tok, "m", add_bos=True, end_of_turn=["</s>"])
    out = render_ollama(with_bos.template, CONVERSATIONS["multi_turn"])
    assert out.startswith("[INST] ") and out.count("<s>[INST]") == 2  # only the first BOS is llama.cpp's
    assert with_bos.stops[0] == "</s>"


@pytest.mark.parametrize(
    "name, system, close",
    [
        ("google--gemma-3-270m-it", "first_user", "\n\n"),  # Gemma 3 merges the system prompt itself
        ("google--gemma-2-2b-it", "unsupported", "\n\n"),  # Gemma 2 raises: we merge it the same way
        ("mistralai--Mistral-7B-Instruct-v0.1", "unsupported", "\n\n"),  # raises (roles must alternate)
    ],
)
def test_system_prompt_merged_into_the_first_user_message(name: str, system: str, close: str) -> None:
    tok = _corpus(name)
    st = derive_structure(tok)
    assert (st.system, st.system_close) == (system, close)
    template = _checked(tok)
    out = render_ollama(template, CONVERSATIONS["system_user"])
    assert "You are a robot.\nAnswer briefly.\n\nWhere is the mug?" in out
    notes = build_modelfile(tok, "m", add_bos=False, end_of_turn=[]).notes
    assert (system == "unsupported") == any("rejects a system message" in n for n in notes)


def test_mistral_v3_puts_the_system_prompt_in_the_last_user_turn() -> None:
    tok = _corpus("mistralai--Mistral-7B-Instruct-v0.3")
    st = derive_structure(tok)
    assert (st.system, st.system_last_open, st.system_last_close) == ("last_user", "</s>[INST] ", "\n\n")
    template = _checked(tok)
    out = render_ollama(template, CONVERSATIONS["multi_turn_system"])
    assert out.endswith('[INST] Stay in character: "Captain" Rex.\n\nWhere to?[/INST]')
    assert set(build_modelfile(tok, "m", add_bos=True, end_of_turn=["</s>"]).stops) >= {
        "</s>",
        "[INST]",
        "[/INST]",
    }


def _think_values(msgs: list[dict[str, str]], think: bool) -> dict[str, object]:
    values = ollama_values(*collate(msgs))
    values.update(Think=think, IsThinkSet=True)
    return values


def test_qwen3_thinking_switch_and_open_think_block() -> None:
    tok = _corpus("Qwen--Qwen3-0.6B")
    st = derive_structure(tok)
    assert st.generation_no_think == st.generation + "<think>\n\n</think>\n\n"
    assert st.assistant_open.endswith("<think>\n\n</think>\n\n")  # HF writes it into the last assistant turn
    template = _checked(tok)
    msgs = CONVERSATIONS["multi_turn"]
    off = GoTemplate(template).execute(_think_values(msgs, False))
    assert off == tok.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    on = GoTemplate(template).execute(_think_values(msgs, True))
    assert on == tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


TOOL_CHAT = [
    {"role": "user", "content": "Where is the mug?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "lookup", "arguments": {"item": "mug"}}}],
    },
    {"role": "tool", "content": "mug 1 is on the table"},
    {"role": "assistant", "content": "On the table."},
    {"role": "user", "content": "And the cup?"},
]


@pytest.mark.parametrize("name", ["Qwen--Qwen2.5-7B-Instruct", "Qwen--Qwen3-0.6B"])
def test_qwen_tool_calls_render_as_in_training(name: str) -> None:
    tok = _corpus(name)
    spec = build_modelfile(tok, "m", add_bos=False, end_of_turn=[])
    assert "$.Tools" in spec.template and any(n.startswith("tools,") for n in spec.notes)
    got = render_ollama_tools(spec.template, TOOL_CHAT, SAMPLE_TOOLS)
    want = tok.apply_chat_template(TOOL_CHAT, tools=SAMPLE_TOOLS, tokenize=False, add_generation_prompt=True)
    assert got != want  # Ollama writes the tool JSON compactly ...
    assert canonical_json(got) == canonical_json(want)  # ... and nothing else differs
    assert '<tool_call>\n{"name": "lookup", "arguments": {"item":"mug"}}\n</tool_call>' in got


def test_llama31_tools_are_left_to_the_gguf_template() -> None:
    spec = build_modelfile(_corpus("meta-llama--Llama-3.1-8B-Instruct"), "m", add_bos=True, end_of_turn=[])
    assert ".Tools" not in spec.template
    assert any("tool use needs the GGUF's own template" in n for n in spec.notes)


def test_gguf_chat_template_pins_the_training_date() -> None:
    tok = _corpus("meta-llama--Llama-3.1-8B-Instruct")
    gguf = gguf_chat_template(tok)
    assert gguf is not None and gguf.startswith('{%- set date_string = "26 Jul 2024" %}')
    msgs = CONVERSATIONS["multi_turn_system"]
    trained = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    tok.chat_template = gguf
    # llama.cpp passes date_string = today; the pinned template still renders what training saw
    assert (
        tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, date_string="1 Jan 2030")
        == trained
    )


def test_gguf_chat_template_merges_a_system_prompt_the_template_rejects() -> None:
    tok = _corpus("google--gemma-2-2b-it")
    spec = build_modelfile(tok, "m", add_bos=False, end_of_turn=[])
    msgs = CONVERSATIONS["multi_turn_system"]
    go_route = render_ollama(spec.template, msgs)
    tok.chat_template = gguf_chat_template(tok)
    assert tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == go_route
    assert gguf_chat_template(make_tokenizer("smollm2")) == make_tokenizer("smollm2").chat_template


def test_whitespace_added_tokens_never_become_stops():
    """Gemma's vocabulary has plain (non-special) added tokens for newlines; a stop on "\\n" would end every
    reply at its first line break in Ollama."""
    from tiny import family_tokenizer

    tok = family_tokenizer("gemma3")
    tok.add_tokens(["\n", "\n\n", "  "])
    spec = build_modelfile(tok, "m.gguf", add_bos=True, end_of_turn=["<end_of_turn>"])
    assert "<end_of_turn>" in spec.stops and "<start_of_turn>" in spec.stops
    assert all(s.strip() for s in spec.stops), spec.stops
