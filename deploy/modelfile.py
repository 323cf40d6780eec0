"""Ollama Modelfile whose TEMPLATE is a Go translation of the chat template used in training.

The structure comes from the template itself (:mod:`deploy.chat_structure` renders probe conversations
with it), never from the model name, so any family works that the structure can describe: BOS, the text
around the system prompt (its own block, merged into the first or the last user turn, or no system role),
the turn changes, the open last assistant turn, the generation prompt (and its ``enable_thinking=False``
form), and for the ChatML/Qwen ``<tool_call>`` form the tool list, calls and results. :func:`go_template`
writes one TEMPLATE in Ollama's ``.Messages`` form from it. Before it is used, the TEMPLATE is executed with
:mod:`deploy.gotemplate` on sample conversations and must equal ``apply_chat_template`` byte for byte (tool
chats: up to the JSON spacing Ollama's ``json.Marshal`` uses), else a one-line ValueError says what differs.
Stop words are the structure's end-of-turn texts and the next turn's opener.

Which template Ollama uses (ollama/ollama fb307609): a Modelfile TEMPLATE wins (``server/routes.go``
``shouldUseGoTemplate``) unless the GGUF's ``tokenizer.chat_template`` shows more capabilities, i.e. it
mentions tools or ``<think>``/``</think>`` while the TEMPLATE has no ``.Tools``/``.Thinking``
(``server/images.go`` ``shouldPreferChatTemplate``, ``chatTemplateCapabilities``, ``thinking.InferTags``);
then llama-server renders the GGUF's jinja template (``OLLAMA_GO_TEMPLATE=1`` forces the TEMPLATE). Without
a TEMPLATE, ``ollama create`` picks a stock one from ``template/index.json`` by edit distance
(``server/model.go`` ``detectChatTemplate``). So the GGUF must carry a template that renders the trained
format as well: :func:`gguf_chat_template`.

Ollama's Modelfile parser has no escape sequences: ``\"\"\"...\"\"\"`` takes everything verbatim and ends at
the first line whose trimmed end is ``\"\"\"``. So quotes and triple quotes inside SYSTEM are written as they
are; the only prompt that cannot be represented (an inner line ending in ``\"\"\"``) is rejected with a message.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.chat_structure import (
    DATE_PATTERN,
    MERGED_SYSTEM_SEPARATOR,
    ChatStructure,
    ChatStructureError,
    ProbeFailed,
    derive_structure,
    json_spans,
    render,
)
from deploy.gotemplate import GoTemplate, collate, ollama_values, render_ollama
from fileio.atomic import write_text_atomic
from models.generate import DEFAULT_SAMPLING, SCENARIO_SAMPLING

NUM_CTX = 4096  # a context that holds a whole ReAct episode
# The scenario's decoding (models.generate), the same that training's samples and chat_eval use.
SCENARIO_PARAMS: dict[str, dict[str, float | int]] = {
    kind: {**sampling.ollama_params(), "num_ctx": NUM_CTX} for kind, sampling in SCENARIO_SAMPLING.items()
}
DEFAULT_PARAMS: dict[str, float | int] = {**DEFAULT_SAMPLING.ollama_params(), "num_ctx": NUM_CTX}


def _go_text(text: str) -> str:
    """Literal text for a Go template; text holding action delimiters is written as a Go string."""
    if "{{" in text or "}}" in text or text.endswith("{"):  # a trailing "{" would open the next action
        esc = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
        return '{{ "' + esc + '" }}'
    return text


def _without_bos(text: str, st: ChatStructure, add_bos: bool) -> str:
    """llama.cpp adds the BOS token itself when ``add_bos``: the TEMPLATE must not write it again."""
    if add_bos and st.bos_text and text.startswith(st.bos_text):
        return text[len(st.bos_text) :]
    return text


def _either(cond: str, yes: str, no: str) -> str:
    """``yes`` when the Go condition holds, else ``no`` (a plain literal when both are the same)."""
    if yes == no:
        return _go_text(yes)
    return "{{ if " + cond + " }}" + _go_text(yes) + "{{ else }}" + _go_text(no) + "{{ end }}"


def _user_branch(st: ChatStructure, add_bos: bool) -> str:
    """The text before a user message's content: the lead (first message; with the tool list when there are
    tools), the system prompt where the template puts it, or the turn change after an assistant/tool."""
    lead = _go_text(_without_bos(st.lead, st, add_bos))
    sys_open, sys_close = _without_bos(st.system_open, st, add_bos), st.system_close
    later = _go_text(st.user_after_assistant)
    if st.tools is not None:
        later = _either('eq $prev "tool"', st.tools.user_after_tool, st.user_after_assistant)
    if st.system == "last_user":
        return (
            "{{- if and $.System (eq $i $lastUser) }}"
            + _either('eq $prev ""', sys_open, st.system_last_open)
            + "{{ $.System }}"
            + _either('eq $prev ""', sys_close, st.system_last_close)
            + '{{ else if eq $prev "" }}'
            + lead
            + "{{ else }}"
            + later
            + "{{ end }}"
        )
    first = "{{ if $.System }}" + _go_text(sys_open) + "{{ $.System }}" + _go_text(sys_close)
    first += "{{ else }}" + lead + "{{ end }}"
    if st.tools is not None:
        first = "{{ if $.Tools }}" + _tool_list(st, add_bos) + "{{ else }}" + first + "{{ end }}"
    return '{{- if eq $prev "" }}' + first + "\n{{- else }}" + later + "{{ end }}"


def _tool_list(st: ChatStructure, add_bos: bool) -> str:
    tf = st.tools
    before, after = tf.lead_system
    return (
        "{{ if $.System }}"
        + _go_text(_without_bos(before, st, add_bos))
        + "{{ $.System }}"
        + _go_text(after)
        + "{{ else }}"
        + _go_text(_without_bos(tf.lead, st, add_bos))
        + "{{ end }}"
        + "{{ range $k, $t := $.Tools }}{{ if $k }}"
        + _go_text(tf.separator)
        + "{{ end }}{{ $t }}{{ end }}"
        + _go_text(tf.after_tools)
    )


def _assistant_branch(st: ChatStructure) -> str:
    plain = _either("$last", st.assistant_open, st.assistant_after_user)
    if st.tools is None:
        return plain + '{{ .Content }}\n{{- $prev = "assistant" }}\n'
    tf = st.tools
    after_tool = _either("$last", tf.assistant_open_after_tool, tf.assistant_after_tool)
    before = _either('eq $prev "tool"', tf.assistant_after_tool, st.assistant_after_user)
    call = '{"name": "{{ $c.Function.Name }}", "' + tf.args_key + '": {{ $c.Function.Arguments }}}'
    return (
        "\n{{- if .ToolCalls }}{{ if .Content }}"
        + before
        + "{{ .Content }}"
        + _go_text(tf.calls_after_content)
        + '{{ else if eq $prev "tool" }}'
        + _go_text(tf.calls_after_tool)
        + "{{ else }}"
        + _go_text(tf.calls_after_user)
        + "{{ end }}\n"
        + "{{- range $k, $c := .ToolCalls }}{{ if $k }}"
        + _go_text(tf.call_separator)
        + "{{ end }}"
        + call
        + '{{ end }}\n{{- $prev = "calls" }}\n'
        + '{{- else }}{{ if eq $prev "tool" }}'
        + after_tool
        + "{{ else }}"
        + plain
        + "{{ end }}{{ .Content }}\n"
        + '{{- $prev = "assistant" }}{{ end }}\n'
    )


def _tool_branch(st: ChatStructure) -> str:
    if st.tools is None:
        return ""
    tf = st.tools
    return (
        '{{- else if eq .Role "tool" }}'
        + _either('eq $prev "tool"', tf.tool_after_tool, tf.tool_after_calls)
        + '{{ .Content }}\n{{- $prev = "tool" }}\n'
    )


def _generation(st: ChatStructure) -> str:
    out = '{{- if eq $prev "user" }}' + _think(st.generation, st.generation_no_think)
    if st.tools is not None:
        tf = st.tools
        out += '{{ else if eq $prev "tool" }}' + _think(
            tf.generation_after_tool, tf.generation_after_tool_no_think
        )
    return out + "{{ end }}"


def _think(prompt: str, no_think: str | None) -> str:
    if no_think is None:
        return _go_text(prompt)
    # Ollama's think=false request gets the template's enable_thinking=False prompt
    return _either("and $.IsThinkSet (not $.Think)", no_think, prompt)


def go_template(st: ChatStructure, add_bos: bool) -> str:
    """The Ollama TEMPLATE (``.Messages`` form) for ``st``. ``add_bos``: llama.cpp adds BOS itself."""
    head = ""
    if st.system == "last_user":  # the index of the last user message, where the system prompt goes
        head = (
            '{{- $lastUser := -1 }}{{- range $i, $m := .Messages }}{{ if eq $m.Role "user" }}'
            "{{ $lastUser = $i }}{{ end }}{{ end }}\n"
        )
    return (
        head + '{{- $prev := "" }}\n{{- range $i, $m := .Messages }}\n'
        "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
        '{{- if eq .Role "user" }}\n' + _user_branch(st, add_bos) + "{{ .Content }}\n"
        '{{- $prev = "user" }}\n'
        '{{- else if eq .Role "assistant" }}'
        + _assistant_branch(st)
        + _tool_branch(st)
        + "{{- end }}\n{{- end }}\n"
        + _generation(st)
    )


def _merge_system(msgs: list[dict[str, str]]) -> list[dict[str, str]]:
    """A leading system message merged into the first user message (for templates without a system role)."""
    if len(msgs) < 2 or msgs[0]["role"] != "system" or msgs[1]["role"] != "user":
        return msgs
    first = {**msgs[1], "content": msgs[0]["content"] + MERGED_SYSTEM_SEPARATOR + msgs[1]["content"]}
    return [first, *msgs[2:]]


SAMPLE_CONVERSATIONS: tuple[tuple[dict[str, str], ...], ...] = (
    ({"role": "user", "content": "Hello!"},),
    ({"role": "system", "content": "You are a robot.\nBe brief."}, {"role": "user", "content": "Hi there"}),
    (
        {"role": "user", "content": "look"},
        {"role": "assistant", "content": "think: I need a mug."},
        {"role": "user", "content": "OK."},
    ),
    (
        {"role": "system", "content": 'Sys "quoted"'},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
        {"role": "user", "content": "e\nf"},
    ),
    ({"role": "user", "content": "Count to three"}, {"role": "assistant", "content": "1, 2, 3"}),
)


def expected_text(tokenizer: Any, msgs: list[dict[str, str]], add_bos: bool, st: ChatStructure) -> str:
    """What Ollama should produce for ``msgs``: HF's rendering (a trailing assistant turn left open, as Ollama
    continues it), minus the BOS text llama.cpp adds itself; without a system role the system prompt is
    merged into the first user message."""
    if st.system == "unsupported":
        msgs = _merge_system(msgs)
    if msgs[-1]["role"] == "assistant":
        text = render(tokenizer, msgs, False, continue_final_message=True)
    else:
        text = render(tokenizer, msgs, True)
    return _without_bos(text, st, add_bos)


def _first_difference(got: str, want: str) -> str:
    i = next((k for k, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
    return f"at character {i}: TEMPLATE gives {got[i : i + 40]!r}, training {want[i : i + 40]!r}"


def check_template(template: str, tokenizer: Any, st: ChatStructure, add_bos: bool) -> None:
    """Raise a one-line ValueError if the TEMPLATE does not reproduce ``apply_chat_template`` on the samples."""
    for conv in SAMPLE_CONVERSATIONS:
        msgs = list(conv)
        try:
            want = expected_text(tokenizer, msgs, add_bos, st)
        except ProbeFailed as e:
            raise ValueError(f"the training template cannot render a {_shape(msgs)} chat ({e})") from None
        got = render_ollama(template, msgs)
        if got != want:
            raise ValueError(
                f"Ollama TEMPLATE differs from the training template on a {_shape(msgs)} chat "
                + _first_difference(got, want)
            )


def _shape(msgs: list[dict[str, str]]) -> str:
    return "-".join(m["role"] for m in msgs)


SAMPLE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Find where an object is",
            "parameters": {
                "type": "object",
                "required": ["item"],
                "properties": {"item": {"type": "string", "description": "the object"}},
            },
        },
    }
]
_CALL = {"type": "function", "function": {"name": "lookup", "arguments": {"item": "mug"}}}
_CALL2 = {"type": "function", "function": {"name": "lookup", "arguments": {"item": "cup"}}}
SAMPLE_TOOL_CONVERSATIONS: tuple[tuple[dict[str, Any], ...], ...] = (
    (
        {"role": "user", "content": "Where is the mug?"},
        {"role": "assistant", "content": "", "tool_calls": [_CALL]},
        {"role": "tool", "content": "mug 1 is on the table"},
        {"role": "assistant", "content": "On the table."},
        {"role": "user", "content": "Thanks"},
    ),
    (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Find both"},
        {"role": "assistant", "content": "Looking.", "tool_calls": [_CALL, _CALL2]},
        {"role": "tool", "content": "on the table"},
        {"role": "tool", "content": "in the sink"},
    ),
    (
        {"role": "user", "content": "Mug?"},
        {"role": "assistant", "content": "", "tool_calls": [_CALL]},
        {"role": "tool", "content": "not found"},
        {"role": "assistant", "content": "", "tool_calls": [_CALL2]},
        {"role": "tool", "content": "in the sink"},
    ),
)


class _GoJSON:
    """A tool as Ollama prints it: its templateTool's String method, json.Marshal in struct field order."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def go_string(self) -> str:
        text = json.dumps(self.value, ensure_ascii=False, separators=(",", ":"))
        return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")  # json.Marshal


def _go_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool in the field order of Ollama's Go structs (maps, such as properties, sorted by key)."""
    fn = tool["function"]
    params = fn.get("parameters") or {}
    go_params: dict[str, Any] = {"type": params.get("type", "")}
    if params.get("required"):
        go_params["required"] = params["required"]
    go_params["properties"] = dict(sorted((params.get("properties") or {}).items()))
    return {
        "type": tool["type"],
        "function": {"name": fn["name"], "description": fn.get("description", ""), "parameters": go_params},
    }


def render_ollama_tools(template: str, msgs: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
    """What Ollama renders for a chat request with ``tools`` (their JSON and the calls' arguments as Go prints them)."""
    values = ollama_values(*collate(msgs))
    values["Tools"] = [_GoJSON(_go_tool(t)) for t in tools]
    return GoTemplate(template).execute(values)


def canonical_json(text: str) -> str:
    """``text`` with every JSON object rewritten canonically (sorted keys, no spaces): Ollama writes tool JSON
    compactly where HF's ``tojson`` puts spaces; nothing else may differ."""
    out, pos = [], 0
    for start, end, value in json_spans(text):
        out += [text[pos:start], json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))]
        pos = end
    return "".join(out) + text[pos:]


def check_tools(template: str, tokenizer: Any, st: ChatStructure, add_bos: bool) -> None:
    """Raise a one-line ValueError unless tool chats render as training did (up to JSON spacing)."""
    for conv in SAMPLE_TOOL_CONVERSATIONS:
        msgs = list(conv)
        want = _without_bos(render(tokenizer, msgs, True, tools=SAMPLE_TOOLS), st, add_bos)
        got = render_ollama_tools(template, msgs, SAMPLE_TOOLS)
        if canonical_json(got) != canonical_json(want):
            raise ValueError(
                f"a {_shape(msgs)} chat with tools renders differently "
                + _first_difference(canonical_json(got), canonical_json(want))
            )


def stop_words(tokenizer: Any, st: ChatStructure, end_of_turn: list[str]) -> list[str]:
    """End-of-turn texts and the next turn's opener: the special tokens between turns (after an assistant
    message, then after a user message), or the plain-text turn change when it has none."""
    # Special tokens only: Gemma's vocabulary also has added tokens for runs of newlines and spaces, and a
    # stop on one of those would end every reply at its first line break.
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    names = {t.content for t in added.values() if getattr(t, "special", False)} | set(tokenizer.all_special_tokens)
    specials = sorted((t for t in names if t.strip()), key=len, reverse=True)
    found: list[str] = []
    for text in (st.user_after_assistant, st.assistant_after_user):
        hits = sorted((text.find(t), t) for t in specials if t and t in text)
        found += [t for _, t in hits if not any(t in o and t != o for _, o in hits)]
    if not any(t in st.user_after_assistant for t in found) and st.user_after_assistant.strip():
        found.append(st.user_after_assistant.strip())
    return list(dict.fromkeys([*(t for t in end_of_turn if t), *found]))


def gguf_chat_template(tokenizer: Any) -> str | None:
    """What the GGUF's ``tokenizer.chat_template`` should hold so that Ollama's jinja route (llama-server)
    renders as training did: the training template, with a date llama.cpp would replace pinned (llama.cpp
    passes ``date_string`` = today; HF training did not) and, for a template without a system role, the
    system prompt merged into the first user message as the Go TEMPLATE does. None without a template."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return None
    try:
        st = derive_structure(tokenizer)
    except ChatStructureError:
        return template  # nothing to adjust that we can see; the training template as it is
    out = template
    date = next((d for d in DATE_PATTERN.findall(st.system_open + st.lead)), None)
    if date and "date_string" in template:
        out = '{%- set date_string = "' + date + '" %}' + out
    if st.system == "unsupported":
        out = _MERGE_SYSTEM_JINJA + out
    return out


# A leading system message joins the first user message. Rendered by HF's jinja in the tests; llama.cpp's
# engine (common/jinja) parses list/dict literals and a top-level set, but is not run here.
_MERGE_SYSTEM_JINJA = (
    "{%- if messages|length > 1 and messages[0]['role'] == 'system' and messages[1]['role'] == 'user' %}"
    "{%- set messages = [{'role': 'user', 'content': messages[0]['content'] + '\\n\\n' + messages[1]['content']}]"
    " + messages[2:] %}{%- endif %}"
)


def check_system_prompt(text: str) -> str:
    """Validate that ``text`` survives Ollama's ``\"\"\"`` quoting verbatim; return it."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for i, line in enumerate(lines[:-1], start=1):
        if line.rstrip(" \t\u00a0\u0085").endswith('"""'):
            raise ValueError(
                f"system prompt line {i} ends with three double quotes; Ollama's Modelfile parser "
                "would end SYSTEM there (it has no escapes). Reword that line."
            )
    bad = [c for c in text if not c.isprintable() and c not in "\n\t"]
    if bad:
        raise ValueError(f"system prompt has control characters {sorted(set(bad))!r}; Ollama drops them")
    return text


def _rel(name: str) -> str:
    return name if os.path.isabs(name) else f"./{name}"


def _quote(text: str) -> str:
    return '"""' + text + '"""'


def _param_value(v: float | int) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v)) if abs(v) > 1 else f"{v:g}"
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass
class ModelfileSpec:
    gguf_name: str  # path relative to the Modelfile (or absolute)
    template: str
    stops: list[str]
    system: str | None
    params: dict[str, float | int]
    notes: list[str] = field(default_factory=list)
    adapter: str | None = None  # a LoRA GGUF for an ADAPTER line (FROM is then the base GGUF)

    def render(self) -> str:
        lines = [
            "# Generated by unsloth-recipes deploy; TEMPLATE checked against the training chat template.",
            *[f"# {' '.join(n.splitlines())}" for n in self.notes],  # a note must stay one comment line
            f"FROM {_rel(self.gguf_name)}",
            *([f"ADAPTER {_rel(self.adapter)}"] if self.adapter else []),
            "",
            f"TEMPLATE {_quote(self.template)}",
            "",
        ]
        for stop in self.stops:
            needs_quotes = " " in stop or '"' in stop
            lines.append(f"PARAMETER stop {_quote(stop) if needs_quotes else stop}")
        for k, v in self.params.items():
            lines.append(f"PARAMETER {k} {_param_value(v)}")
        if self.system:
            lines += ["", f"SYSTEM {_quote(check_system_prompt(self.system))}"]
        return "\n".join(lines) + "\n"


def _template_with_tools(tokenizer: Any, st: ChatStructure, add_bos: bool) -> str:
    """The TEMPLATE; with tool rendering only if tool chats check out (else plain chat, and a note)."""
    template = go_template(st, add_bos)
    if st.tools is None:
        return template
    try:
        check_tools(template, tokenizer, st, add_bos)
        return template
    except (ValueError, ProbeFailed) as e:
        st.tools = None
        st.notes = [n for n in st.notes if not n.startswith("tools,")]
        st.notes.append(f"tool use needs the GGUF's own template ({e}); this TEMPLATE renders plain chat")
        return go_template(st, add_bos)


def build_modelfile(
    tokenizer: Any,
    gguf_name: str,
    *,
    add_bos: bool,
    end_of_turn: list[str],
    system: str | None = None,
    scenario: str | None = None,
) -> ModelfileSpec:
    """The Modelfile spec; a one-line ValueError when the training template cannot be expressed."""
    try:
        st = derive_structure(tokenizer)
    except ChatStructureError as e:
        raise ValueError(f"cannot write an Ollama TEMPLATE for this chat template: {e}") from None
    template = _template_with_tools(tokenizer, st, add_bos)
    check_template(template, tokenizer, st, add_bos)
    params = dict(SCENARIO_PARAMS.get((scenario or "").lower(), DEFAULT_PARAMS))
    notes = [f"chat format: {st.summary()}", *st.notes]
    if st.trims_content:
        notes.append("the training template trims message content; Ollama does not, so send trimmed messages")
    return ModelfileSpec(gguf_name, template, stop_words(tokenizer, st, end_of_turn), system, params, notes)


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(command, argument) pairs as Ollama's Modelfile parser reads them.

    Its state machine has no escapes: a value quoted with three or one double quotes ends at the first
    newline where the trimmed value is a complete quote; non-printable runes except newline and tab are dropped.
    """
    commands: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            break
        if text[i] == "#":
            while i < n and text[i] not in "\r\n":
                i += 1
            continue
        j = i
        while j < n and text[j].isalpha():
            j += 1
        name = text[i:j].lower()
        if j >= n or text[j] not in " \t":
            raise ValueError(f"invalid command at offset {i}")
        i = j + 1
        if name == "parameter":
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            name, i = text[i:j], j + 1
        buf: list[str] = []
        while True:
            if i >= n or text[i] in "\r\n":
                value = "".join(buf).strip(" \t\r\n\u00a0\u0085")
                done, unq = _unquote(value)
                if done or i >= n:
                    if not done:
                        raise ValueError(f"unterminated quote in {name}")
                    commands.append((name, unq))
                    i += 1
                    break
            if i < n and (text[i].isprintable() or text[i] in "\t\r\n"):
                buf.append(text[i])
            i += 1
    return commands


def _unquote(s: str) -> tuple[bool, str]:
    if s.startswith('"""'):
        return (True, s[3:-3]) if len(s) >= 6 and s.endswith('"""') else (False, "")
    if s.startswith('"'):
        return (True, s[1:-1]) if len(s) >= 2 and s.endswith('"') else (False, "")
    return True, s


def write_modelfile(spec: ModelfileSpec, path: Path) -> Path:
    """Write the Modelfile atomically, after checking that Ollama's parser reads back TEMPLATE and SYSTEM."""
    text = spec.render()
    parsed = dict((k, v) for k, v in parse_modelfile(text) if k in ("template", "system"))
    if parsed.get("template") != spec.template or (spec.system and parsed.get("system") != spec.system):
        raise ValueError("the Modelfile would not round-trip through Ollama's parser (quotes in SYSTEM?)")
    write_text_atomic(path, text)
    return path


def ollama_create(name: str, modelfile: Path) -> str:
    """Run ``ollama create`` if the binary exists; otherwise return the exact command to run."""
    cmd = ["ollama", "create", name, "-f", str(modelfile)]
    printable = f"cd {modelfile.parent} && ollama create {name} -f {modelfile.name}"
    if shutil.which("ollama") is None:
        return f"ollama not found on PATH; to import the model run:\n  {printable}"
    proc = subprocess.run(cmd, cwd=modelfile.parent, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return f"ollama create failed ({proc.returncode}): {proc.stderr.strip()[-400:]}\n  retry: {printable}"
    return f"ollama model '{name}' created; try: ollama run {name}"
