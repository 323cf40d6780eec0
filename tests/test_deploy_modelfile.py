"""Ollama TEMPLATE (executed by our Go-template emulator) equals apply_chat_template; Modelfile quoting."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny import TEMPLATES_DIR, make_tokenizer

from deploy.gotemplate import GoTemplate, TemplateError, render_ollama
from deploy.modelfile import (
    build_modelfile,
    check_system_prompt,
    detect_format,
    expected_text,
    go_template,
    parse_modelfile,
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
    fmt = detect_format(tok)
    go = go_template(fmt, add_bos)
    msgs = CONVERSATIONS[conv]
    got = render_ollama(go, msgs)
    if add_bos and fmt.bos_text:
        got = fmt.bos_text + got  # llama.cpp adds the BOS token itself
    if msgs[-1]["role"] == "assistant":  # Ollama leaves the last assistant turn open (prefill)
        want = expected_text(tok, msgs, False, fmt)
    else:
        want = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert got == want


@pytest.mark.parametrize("template", ["smollm2", "qwen2_5", "llama3", "mistral"])
def test_modelfile_system_is_injected_like_a_system_message(template: str) -> None:
    """Ollama prepends the Modelfile SYSTEM as a system message; the result equals training with that system."""
    tok = make_tokenizer(template)
    fmt = detect_format(tok)
    system = 'You are a household robot. Say "done" when finished.'
    msgs = CONVERSATIONS["multi_turn"]
    got = fmt.bos_text + render_ollama(go_template(fmt, True), msgs, system=system)
    assert got == tok.apply_chat_template(
        [{"role": "system", "content": system}, *msgs], tokenize=False, add_generation_prompt=True
    )


def test_default_system_prompts_are_read_from_the_template() -> None:
    assert (
        detect_format(make_tokenizer("smollm2")).default_system
        == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    )
    assert (
        detect_format(make_tokenizer("qwen2_5")).default_system
        == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    )
    assert detect_format(make_tokenizer("llama3")).default_system is None


def test_family_comes_from_the_template_not_the_name() -> None:
    tok = make_tokenizer("llama3")  # Llama-3 special tokens, but trained with a ChatML template
    tok.chat_template = (TEMPLATES_DIR / "qwen2_5.jinja").read_text()
    assert detect_format(tok).family == "chatml"
    tok.chat_template = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(ValueError, match="not recognised"):
        detect_format(tok)


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
