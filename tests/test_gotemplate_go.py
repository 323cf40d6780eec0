"""deploy.gotemplate (our Go text/template emulator) against the real Go engine, byte for byte.

``tests/go/render_template.go`` executes a template the way Ollama executes a Modelfile TEMPLATE: Ollama's
FuncMap and ``missingkey=zero``, its ``collate``, and data with the same Go types and field names
(``[]*templateMessage`` with Role/Content/Thinking/ToolCalls..., ``.Tools``, ``.Think``...). Each case here
is rendered by both engines from the same chat messages; ``render_ollama`` is what ``deploy.modelfile``'s
check runs, so this tests exactly that check.

Cases: every TEMPLATE ``build_modelfile`` writes for tiny.py's templates and for the chat-template corpus
under ``tests/fixtures/chat_templates/`` (found at run time), on many conversations; hand-written templates
for each construct the emulator claims (both engines must render the same text), templates that must fail
(both must fail), and constructs the emulator does not support (it must refuse rather than differ).
Skipped, with the reason, when ``go`` is not on PATH; ``.ci/run`` installs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_deploy_modelfile import CONVERSATIONS as MODELFILE_CONVERSATIONS
from tiny import TEMPLATE_NAMES, make_tokenizer

from deploy.gotemplate import TemplateError, render_ollama
from deploy.modelfile import build_modelfile

GO_DIR = Path(__file__).parent / "go"
CHAT_TEMPLATES_DIR = Path(__file__).parent / "fixtures" / "chat_templates"
CORPUS = sorted(CHAT_TEMPLATES_DIR.glob("*.json")) if CHAT_TEMPLATES_DIR.is_dir() else []

Messages = list[dict[str, Any]]
GoRun = Callable[[list[tuple[str, Messages]]], list[dict[str, Any]]]

_TOOL_CALL = {"function": {"name": "lookup", "arguments": {"q": "mug", "n": 2, "deep": {"k": [1, "a"]}}}}

# The shapes test_deploy_modelfile checks, plus edge cases only the engine comparison needs.
CONVERSATIONS: dict[str, Messages] = {
    **MODELFILE_CONVERSATIONS,
    "empty_contents": [
        {"role": "system", "content": ""},
        {"role": "user", "content": ""},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": ""},
    ],
    "template_syntax_in_content": [
        {"role": "system", "content": "{{ .System }} {{- end }}"},
        {"role": "user", "content": "Print {{ .Content }} and }} and {{"},
        {"role": "assistant", "content": '{{ "x" }}{{/* c */}}'},
        {"role": "user", "content": "<no value>"},
    ],
    "quotes_and_whitespace": [
        {"role": "user", "content": "He said \"hi\" and 'bye'\n\tC:\\path\\n \r\n"},
        {"role": "assistant", "content": "  leading and trailing  \n\n"},
        {"role": "user", "content": '"""triple"""\n'},
    ],
    "unicode": [
        {"role": "system", "content": "Réponds en français. 中文 😀"},
        {"role": "user", "content": "naïve café \u2028 \u00a0nbsp \u202eRTL \U0001f916"},
    ],
    "same_role_merged": [
        {"role": "user", "content": "first"},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "third"},
    ],
    "two_systems": [
        {"role": "system", "content": "one"},
        {"role": "user", "content": "u1"},
        {"role": "system", "content": "two"},
        {"role": "user", "content": "u2"},
    ],
    "tools_and_thinking": [
        {"role": "user", "content": "find the mug"},
        {"role": "assistant", "content": "", "thinking": "use the tool", "tool_calls": [_TOOL_CALL]},
        {"role": "tool", "content": "mug 1 is on the table", "tool_name": "lookup"},
        {"role": "tool", "content": "second result", "tool_name": "lookup", "tool_call_id": "c1"},
        {"role": "user", "content": "thanks"},
    ],
    "capitalised_roles": [{"role": "User", "content": "hi"}, {"role": "ASSISTANT", "content": "yo"}],
    "no_messages": [],
}

RICH = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "héllo {{ x }}"},
    {"role": "assistant", "content": "Hi!", "thinking": "greet", "tool_calls": [_TOOL_CALL]},
    {"role": "tool", "content": "found", "tool_name": "lookup", "tool_call_id": "c1"},
    {"role": "user", "content": "ok"},
]


# ---------------------------------------------------------------- the Go side


def _source_digest() -> str:
    h = hashlib.sha256()
    for path in sorted(GO_DIR.iterdir()):
        if path.is_file():
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def go_run(tmp_path_factory: pytest.TempPathFactory) -> GoRun:
    """Build tests/go once per session (named by its source hash); returns a batch runner."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("Go is not installed (`apt-get install golang-go`); .ci/run installs it for CI")
    exe = tmp_path_factory.mktemp("go-render") / f"render_template-{_source_digest()}"
    # Standard library only: never reach for a module proxy or a newer toolchain.
    env = {**os.environ, "GOPROXY": "off", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    build = subprocess.run(
        [go, "build", "-o", str(exe), "."], cwd=GO_DIR, env=env, capture_output=True, text=True, timeout=600
    )
    assert build.returncode == 0, f"go build of {GO_DIR} failed:\n{build.stderr}"

    def run(cases: list[tuple[str, Messages]]) -> list[dict[str, Any]]:
        payload = [{"template": t, "data": {"messages": m}} for t, m in cases]
        proc = subprocess.run(
            [str(exe)], input=json.dumps(payload), capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, f"render_template failed:\n{proc.stderr}"
        results: list[dict[str, Any]] = json.loads(proc.stdout)
        assert len(results) == len(cases)
        return results

    return run


# ---------------------------------------------------------------- comparing


@dataclass
class Emulated:
    output: str | None
    error: str | None


def emulate(template: str, messages: Messages) -> Emulated:
    """Our emulator's result; any exception other than TemplateError propagates (a crash is a bug)."""
    try:
        return Emulated(render_ollama(template, messages), None)
    except TemplateError as e:
        return Emulated(None, str(e))


def disagreement(
    template: str, messages: Messages, go: dict[str, Any], may_refuse: bool = False
) -> str | None:
    """None when the engines agree: same text, or both fail (or, with ``may_refuse``, the emulator refuses)."""
    emu = emulate(template, messages)
    if emu.output is not None:
        if "error" in go:
            return f"emulator renders {emu.output!r} but Go fails: {go['error']}"
        if emu.output != go["output"]:
            return f"emulator renders {emu.output!r}, Go {go['output']!r}"
        return None
    if "output" in go and not may_refuse:
        return f"emulator fails ({emu.error}) but Go renders {go['output']!r}"
    return None


# ---------------------------------------------------------------- generated TEMPLATEs


def _corpus_tokenizer(path: Path) -> Any:
    """SmolLM2's tokenizer carrying a corpus entry's chat template and special tokens."""
    entry = json.loads(path.read_text())
    template = entry.get("chat_template") if isinstance(entry, dict) else None
    if isinstance(template, list):  # HF's named-template form
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    if not isinstance(template, str):
        pytest.skip(f"{path.name}: no chat_template string")
    tok = make_tokenizer("smollm2")
    tok.chat_template = template
    specials = {}
    for key in ("bos_token", "eos_token"):
        value = entry.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str) and value:
            specials[key] = value
    if specials:
        tok.add_special_tokens({"additional_special_tokens": sorted(set(specials.values()))})
        for key, value in specials.items():
            setattr(tok, key, value)
    return tok


def _generated_template(source: str, add_bos: bool) -> str:
    if source in TEMPLATE_NAMES:
        tok = make_tokenizer(source)
        return build_modelfile(tok, "m.gguf", add_bos=add_bos, end_of_turn=[tok.eos_token]).template
    tok = _corpus_tokenizer(CHAT_TEMPLATES_DIR / f"{source}.json")
    try:
        return build_modelfile(tok, "m.gguf", add_bos=add_bos, end_of_turn=[tok.eos_token or ""]).template
    except Exception as e:  # a corpus template build_modelfile refuses (unknown family, jinja error, ...)
        pytest.skip(f"build_modelfile refuses {source}: {type(e).__name__}: {str(e)[:160]}")


@pytest.mark.parametrize("add_bos", [False, True], ids=["text_bos", "llama_adds_bos"])
@pytest.mark.parametrize("source", [*TEMPLATE_NAMES, *(p.stem for p in CORPUS)])
def test_generated_template_renders_as_in_go(go_run: GoRun, source: str, add_bos: bool) -> None:
    template = _generated_template(source, add_bos)
    convs = sorted(CONVERSATIONS.items())
    results = go_run([(template, msgs) for _, msgs in convs])
    assert all(r["messages_path"] for r in results), "Ollama would not take its .Messages path"
    problems = [
        f"{name}: {d}"
        for (name, msgs), r in zip(convs, results, strict=True)
        if (d := disagreement(template, msgs, r))
    ]
    assert not problems, f"TEMPLATE:\n{template}\n" + "\n".join(problems)
    assert "output" in results[0], f"Go cannot execute the TEMPLATE: {results[0]['error']}"


# ---------------------------------------------------------------- hand-written constructs

# Both engines must render these, identically (on RICH unless a conversation is named).
RENDER: dict[str, str | tuple[str, Messages]] = {
    "text_only": "plain text, no actions\n",
    "trim_both": "a  {{- 1 -}}  b",
    "trim_left": "a \n{{- 1 }} b",
    "trim_right": "a {{ 1 -}} \n b",
    "trim_all_go_spaces": "a\n\t\r {{- 1 -}} \r\n\t b",
    "trim_keeps_nbsp": "x\u00a0{{- 1 -}}\u00a0y",
    "trim_then_text_action": '{{- "a" -}}  b  {{- "c" }}',
    "negative_number_not_trim": "x {{-3}} y",
    "comment": "{{/* a comment */}}x",
    "comment_trimmed": "a  {{- /* c */ -}}  b",
    "comment_with_braces": "{{/* a }} b {{ */}}c",
    "multiline_action": "{{ if\n  eq 1 1\n}}yes{{ end }}",
    "string_with_braces": '{{ "}}" }}{{ "{{" }}',
    "raw_string": '{{ `raw }} {{ "x" \\n` }}',
    "raw_string_drops_cr": "{{ `a\r\nb` }}",
    "string_escapes": '{{ "a\\tb\\n\\"q\\" \\\\ \\u00e9 \\U0001F600 \\x41 \\101 \\a\\b\\f\\v\\r" }}',
    "string_byte_escapes_utf8": '{{ "\\xc3\\xa9\\303\\251" }}',
    "values": "{{ .System }}|{{ .Response }}|{{ .Think }}|{{ .ThinkLevel }}|{{ .IsThinkSet }}|{{ .Tools }}",
    "missing_key_is_no_value": "{{ .Missing }}|{{ $.Nope }}",
    "message_fields": (
        "{{ range .Messages }}[{{ .Role }}|{{ .Content }}|{{ .Thinking }}|{{ .ToolName }}|{{ .ToolCallID }}|"
        "{{ len .ToolCalls }}|{{ len .Images }}]{{ end }}"
    ),
    "tool_calls": (
        "{{ range .Messages }}{{ range .ToolCalls }}{{ .ID }}#{{ .Function.Index }} {{ .Function.Name }}("
        "{{ range $k, $v := .Function.Arguments }}{{ $k }};{{ end }}) q={{ .Function.Arguments.q }} "
        "n={{ .Function.Arguments.n }} none={{ .Function.Arguments.none }}{{ end }}{{ end }}"
    ),
    "tool_args_are_floats": (
        "{{ $a := (index (index .Messages 2).ToolCalls 0).Function.Arguments }}"
        "{{ if eq $a.n 2.0 }}float{{ end }}{{ range $a.deep.k }}[{{ . }}]{{ end }}"
    ),
    "vars_declare_assign": (
        "{{ $x := 1 }}{{ $x }}{{ $x = 2 }}{{ $x }}{{ if true }}{{ $x = 3 }}{{ $y := 4 }}{{ $y }}{{ end }}"
        "{{ $x }}{{ $x := 5 }}{{ $x }}"
    ),
    "var_assigned_in_range": '{{ $r := "none" }}{{ range .Messages }}{{ $r = .Role }}{{ end }}{{ $r }}',
    "var_declared_in_if_seen_in_else": "{{ if true }}{{ $a := 1 }}{{ else }}{{ $a }}{{ end }}",
    "dollar_is_root": "{{ $.System }}{{ range .Messages }}{{ $.System }}{{ end }}",
    "var_fields": "{{ $m := index .Messages 1 }}{{ $m.Content }}/{{ $m.Role }}",
    "range_index_value": "{{ range $i, $m := .Messages }}{{ $i }}:{{ $m.Role }},{{ end }}",
    "range_value_only": "{{ range $m := .Messages }}{{ $m.Role }}{{ end }}",
    "range_else": ("{{ range .Messages }}{{ .Role }}{{ else }}none{{ end }}", []),
    "range_else_vars_are_the_collection": "{{ range $i, $v := .Missing }}x{{ else }}{{ $v }}{{ end }}",
    "range_nil_slice": "{{ range .Tools }}t{{ else }}no tools{{ end }}",
    "range_nested_dollar": (
        "{{ range $i, $_ := .Messages }}{{ range $j, $_ := $.Messages }}{{ if eq $i $j }}{{ $i }}{{ end }}"
        "{{ end }}{{ end }}"
    ),
    "range_map_sorted": (
        "{{ range $k, $v := (index (index .Messages 2).ToolCalls 0).Function.Arguments }}{{ $k }} {{ end }}"
    ),
    "if_else_if_chain": (
        "{{ if .System }}S{{ end }}{{ if .Missing }}M{{ else }}m{{ end }}"
        "{{ if .Tools }}T{{ else if .Think }}K{{ else if .Messages }}G{{ else }}E{{ end }}"
    ),
    "truthiness": (
        '{{ if 0 }}a{{ end }}{{ if 1 }}b{{ end }}{{ if "" }}c{{ end }}{{ if "x" }}d{{ end }}{{ if 0.0 }}e{{ end }}'
        "{{ if false }}f{{ end }}{{ if index .Messages 0 }}g{{ end }}{{ if (index .Messages 0).ToolCalls }}h"
        "{{ end }}{{ if (index .Messages 2).ToolCalls }}i{{ end }}{{ if .Messages }}j{{ end }}"
    ),
    "and_or_not_values": (
        '{{ and 1 2 }}{{ and 0 2 }}|{{ or 0 "" }}|{{ or 0 "x" }}|{{ and .Missing 1 }}|{{ or .Missing }}|'
        '{{ not 0 }}{{ not "a" }}{{ not .Missing }}'
    ),
    "and_or_short_circuit": "{{ and false (index .Messages 99) }}{{ or true (index .Messages 99) }}",
    "eq_ne": (
        '{{ eq 1 1 }}{{ eq 1 2 3 1 }}{{ eq "a" "a" 1 }}{{ eq "a" "b" }}{{ eq .Missing "x" }}'
        '{{ eq .Missing .Missing }}{{ ne .Missing "x" }}{{ eq true true }}{{ ne 1 2 }}{{ eq 1.5 1.5 }}'
    ),
    "eq_structs_by_identity": (
        "{{ eq (index .Messages 0) (index .Messages 0) }}{{ eq (index .Messages 0) (index .Messages 1) }}"
    ),
    "eq_roles": '{{ range .Messages }}{{ if eq .Role "user" "tool" }}{{ .Role }},{{ end }}{{ end }}',
    "ordering": (
        '{{ lt 1 2 }}{{ le 2 2 }}{{ gt 3 2 }}{{ ge 2 3 }}{{ lt "a" "b" }}{{ lt 1.5 2.5 }}{{ gt "b" "a" }}'
        '{{ ge "a" "a" }}{{ le "b" "a" }}{{ gt 2 2 }}'
    ),
    "len_counts_bytes": (
        '{{ len .Messages }} {{ len .System }} {{ len "héllo" }} {{ len .Tools }} '
        "{{ len (index .Messages 2).ToolCalls }} {{ len (index (index .Messages 2).ToolCalls 0).Function.Arguments }}"
    ),
    "index": (
        '{{ (index .Messages 1).Content }} {{ index "abc" 1 }} {{ index "é" 0 }} {{ index $ "System" }} '
        '{{ index $ "Nope" }} {{ (index (index .Messages 2).ToolCalls 0).Function.Name }} {{ index "x" }}'
    ),
    "slice": (
        "{{ len (slice .Messages 1) }}{{ len (slice .Messages 1 3) }}{{ len (slice .Messages 0 0) }}"
        '{{ len (slice .Messages 5) }}{{ slice "héllo" 0 1 }}{{ slice "héllo" 1 3 }}[{{ slice "abc" 3 }}]'
        "{{ (index (slice .Messages 2) 0).Role }}{{ len (slice .Messages) }}{{ len (slice .Messages 1 2 3) }}"
    ),
    "print": (
        '{{ print }}|{{ print 1 2 }}|{{ print "a" 1 }}|{{ print 1 "a" 2 }}|{{ print true false }}|'
        '{{ print .Missing }}|{{ print "a" "b" }}|{{ print 1.5 2 }}|{{ print .Tools }}|{{ print .Missing 1 }}'
    ),
    "numbers": (
        "{{ 0 }} {{ -7 }} {{ 42 }} {{ 1.0 }} {{ 1.5 }} {{ -0.25 }} {{ 100000.0 }} {{ 1000000.0 }} {{ 123456.7 }}"
        " {{ 1234567.0 }} {{ 0.0001 }} {{ 0.00001 }} {{ 3.14159265358979 }} {{ 9223372036854775807 }} {{ 0.1 }}"
    ),
    "booleans": "{{ true }}{{ false }}",
    "parentheses": (
        '{{ (1) }}{{ ("a") }}{{ (index .Messages 1).Role }}{{ (eq 1 1) }}{{ not (eq 1 2) }}'
        "{{ (len (slice .Messages 1)) }}{{ (index (index .Messages 2).ToolCalls 0).Function.Arguments.q }}"
    ),
    "last_message_idiom": (
        "{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
        "{{ if $last }}last={{ .Role }}{{ end }}{{ end }}"
    ),
}

# Both engines must fail on these (parse or execution).
FAIL: dict[str, str] = {
    "field_of_slice": "{{ .Messages.Foo }}",
    "unknown_message_field": "{{ range .Messages }}{{ .Foo }}{{ end }}",
    "lowercase_field": "{{ (index .Messages 0).role }}",
    "field_of_string": "{{ .System.Foo }}",
    "field_of_nil": "{{ .Missing.Foo }}",
    "python_str_method": "{{ range .Messages }}{{ .Content.upper }}{{ end }}",
    "python_list_method": "{{ .Messages.copy }}",
    "missing_end": "{{ if .System }}x",
    "stray_end": "{{ end }}",
    "stray_else": "{{ else }}",
    "empty_if": "{{ if }}x{{ end }}",
    "empty_range": "{{ range }}x{{ end }}",
    "end_with_argument_if": "{{ if true }}x{{ end 1 }}",
    "end_with_argument_range": "{{ range .Messages }}x{{ end 1 }}",
    "else_if_in_range": "{{ range .Messages }}a{{ else if .System }}b{{ end }}",
    "two_elses": "{{ if true }}a{{ else }}b{{ else }}c{{ end }}",
    "unclosed_action": "{{ .System",
    "unterminated_string": '{{ "abc }}',
    "string_with_newline": '{{ "a\nb" }}',
    "unterminated_raw": "{{ `abc }}",
    "spaced_comment": "{{ /* c */ }}",
    "comment_then_code": "{{/* c */ 1 }}",
    "unclosed_comment": "{{/* c }}",
    "bad_escape_q": '{{ "\\q" }}',
    "bad_escape_quote": '{{ "\\\'" }}',
    "bad_octal": '{{ "\\777" }}',
    "surrogate_escape": '{{ "\\ud800" }}',
    "undefined_variable": "{{ $y }}",
    "undefined_variable_in_dead_branch": "{{ if false }}{{ $y }}{{ end }}",
    "range_variable_after_end": "{{ range $i, $v := .Messages }}{{ end }}{{ $i }}",
    "if_variable_after_end": "{{ if true }}{{ $z := 1 }}{{ end }}{{ $z }}",
    "integer_overflow": "{{ 99999999999999999999 }}",
    "number_then_dash": "{{ 1-}}",
    "unknown_function": "{{ nosuchfunc 1 }}",
    "argument_to_string": '{{ "x" .System }}',
    "empty_action": "{{}}",
    "unbalanced_paren": "{{ ( 1 }}",
    "extra_paren": "{{ 1 ) }}",
    "eq_one_arg": "{{ eq 1 }}",
    "eq_int_float": "{{ eq 1 1.0 }}",
    "eq_bool_int": "{{ eq true 1 }}",
    "eq_later_kind_mismatch": '{{ eq "a" "b" 1 }}',
    "eq_slices": "{{ eq .Messages .Messages }}",
    "eq_tool_arg_float_vs_int": "{{ eq (index (index .Messages 2).ToolCalls 0).Function.Arguments.n 2 }}",
    "ne_three_args": "{{ ne 1 2 3 }}",
    "not_two_args": "{{ not 1 2 }}",
    "not_no_args": "{{ not }}",
    "and_no_args": "{{ and }}",
    "or_no_args": "{{ or }}",
    "lt_int_float": "{{ lt 1 1.5 }}",
    "lt_bools": "{{ lt true false }}",
    "lt_nil": "{{ lt .Missing 1 }}",
    "lt_one_arg": "{{ lt 1 }}",
    "len_of_int": "{{ len 3 }}",
    "len_of_nil": "{{ len .Missing }}",
    "len_of_bool": "{{ len true }}",
    "index_out_of_range": "{{ index .Messages 99 }}",
    "index_negative": "{{ index .Messages -1 }}",
    "index_float": "{{ index .Messages 1.0 }}",
    "index_nil": "{{ index .Missing 0 }}",
    "index_int": "{{ index 5 0 }}",
    "index_string_out_of_range": '{{ index "abc" 3 }}',
    "slice_out_of_range": "{{ slice .Messages 9 }}",
    "slice_reversed": "{{ slice .Messages 2 1 }}",
    "slice_string_three_indexes": "{{ slice .System 0 1 1 }}",
    "slice_negative": "{{ slice .Messages -1 }}",
    "slice_string_out_of_range": '{{ slice "abc" 4 }}',
    "range_string": "{{ range .System }}x{{ end }}",
    "assign_undeclared_at_runtime": "{{ range .Messages }}{{ $x = 1 }}{{ end }}",
    "argument_to_field": "{{ .System 1 }}",
}

# Outside the emulator's subset (or Go-version dependent): it must refuse (TemplateError), never differ.
UNSUPPORTED: dict[str, str] = {
    "with": "{{ with .System }}{{ . }}{{ end }}",
    "printf": '{{ printf "%d" 1 }}',
    "pipe": "{{ .System | len }}",
    "html": '{{ html "<a>" }}',
    "define_template": '{{ define "x" }}a{{ end }}{{ template "x" }}',
    "block": '{{ block "x" . }}a{{ end }}',
    "break": "{{ range .Messages }}{{ break }}{{ end }}",
    "char_constant": "{{ 'a' }}",
    "hex_number": "{{ 0x10 }}",
    "exponent_number": "{{ 1e3 }}",
    "leading_dot_number": "{{ .5 }}",
    "nil": "{{ eq .Missing nil }}",
    "print_slice": "{{ .Messages }}",
    "print_struct": "{{ index .Messages 0 }}",
    "print_struct_via_print": "{{ print (index .Messages 0) }}",
    "print_root_map": "{{ $ }}",
    "print_tool_arguments_json": "{{ (index (index .Messages 2).ToolCalls 0).Function.Arguments }}",
    "range_int": "{{ range 3 }}x{{ end }}",  # Go 1.22+ iterates; Debian's 1.19 fails
    "if_without_space": "{{ if(eq 1 1) }}x{{ end }}",
    "json": "{{ json .System }}",
    "current_date": "{{ currentDate }}",
    "to_typescript_type": "{{ toTypeScriptType 1 }}",
}


def _case(spec: str | tuple[str, Messages]) -> tuple[str, Messages]:
    return spec if isinstance(spec, tuple) else (spec, RICH)


@pytest.fixture(scope="session")
def go_handwritten(go_run: GoRun) -> dict[str, dict[str, Any]]:
    """Go's result for every hand-written case, from one run of the program."""
    specs = {**{f"render:{k}": v for k, v in RENDER.items()}, **{f"fail:{k}": v for k, v in FAIL.items()}}
    specs.update({f"unsupported:{k}": v for k, v in UNSUPPORTED.items()})
    cases = {k: _case(v) for k, v in specs.items()}
    return dict(zip(cases, go_run(list(cases.values())), strict=True))


@pytest.mark.parametrize("name", sorted(RENDER))
def test_construct_renders_as_in_go(go_handwritten: dict[str, dict[str, Any]], name: str) -> None:
    template, msgs = _case(RENDER[name])
    go = go_handwritten[f"render:{name}"]
    assert "output" in go, f"case should render in Go but fails: {go['error']}"
    emu = emulate(template, msgs)
    assert emu.error is None, f"emulator fails ({emu.error}); Go renders {go['output']!r}"
    assert emu.output == go["output"]


@pytest.mark.parametrize("name", sorted(FAIL))
def test_invalid_template_fails_in_both(go_handwritten: dict[str, dict[str, Any]], name: str) -> None:
    go = go_handwritten[f"fail:{name}"]
    assert "error" in go, f"case should fail in Go but renders {go['output']!r}"
    emu = emulate(*_case(FAIL[name]))
    assert emu.error is not None, f"emulator renders {emu.output!r}; Go fails: {go['error']}"


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_construct_is_refused_not_misrendered(
    go_handwritten: dict[str, dict[str, Any]], name: str
) -> None:
    template, msgs = _case(UNSUPPORTED[name])
    problem = disagreement(template, msgs, go_handwritten[f"unsupported:{name}"], may_refuse=True)
    assert problem is None, problem
