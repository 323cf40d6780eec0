"""Ollama Modelfile whose TEMPLATE is a Go translation of the chat template used in training.

The family is read from the template itself (by rendering probe conversations with it), never from the
model name: ChatML (SmolLM2, Qwen2.5; with their default system prompts), Llama-3 and Mistral ``[INST]``.
The TEMPLATE uses Ollama's ``.Messages`` form (multi-turn, generation prompt after a user turn, an open
assistant turn when the last message is the assistant's). Before it is written, the TEMPLATE is executed
with :mod:`deploy.gotemplate` on sample conversations and must equal ``apply_chat_template`` exactly.

Ollama's Modelfile parser has no escape sequences: ``\"\"\"...\"\"\"`` takes everything verbatim and ends at
the first line whose trimmed end is ``\"\"\"``. So quotes and triple quotes inside SYSTEM are written as they
are; the only prompt that cannot be represented (an inner line ending in ``\"\"\"``) is rejected with a message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.gotemplate import render_ollama
from fileio.atomic import write_text_atomic
from models.generate import DEFAULT_SAMPLING, SCENARIO_SAMPLING

NUM_CTX = 4096  # a context that holds a whole ReAct episode
# The scenario's decoding (models.generate), the same that training's samples and chat_eval use.
SCENARIO_PARAMS: dict[str, dict[str, float | int]] = {
    kind: {**sampling.ollama_params(), "num_ctx": NUM_CTX} for kind, sampling in SCENARIO_SAMPLING.items()
}
DEFAULT_PARAMS: dict[str, float | int] = {**DEFAULT_SAMPLING.ollama_params(), "num_ctx": NUM_CTX}

_S = "\u00abSYSTEM\u00bb"
_U1, _A1, _U2 = "\u00abUSER1\u00bb", "\u00abASSISTANT1\u00bb", "\u00abUSER2\u00bb"

_TURN_START = {"chatml": "<|im_start|>", "llama3": "<|start_header_id|>", "mistral": "[INST]"}


@dataclass
class ChatFormat:
    family: str  # chatml | llama3 | mistral
    bos_text: str  # literal the template renders first ("" if none)
    system_prefix: str = ""  # text inside the system block before the system prompt
    system_suffix: str = ""
    default_system: str | None = None  # system block content when there is no system message
    eos_text: str = ""  # mistral: what closes an assistant turn
    trims_content: bool = False
    notes: list[str] = field(default_factory=list)


def _render(tok: Any, msgs: list[dict[str, str]], gen: bool = True) -> str:
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)


def detect_format(tokenizer: Any) -> ChatFormat:
    """Which chat format the tokenizer's template renders (probing it, not looking at the model name)."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise ValueError("the tokenizer has no chat_template; the Modelfile TEMPLATE must match training")
    u = _render(tokenizer, [{"role": "user", "content": _U1}])
    su = _render(tokenizer, [{"role": "system", "content": _S}, {"role": "user", "content": _U1}])
    trims = "| trim" in template or "|trim" in template
    if f"<|im_start|>user\n{_U1}<|im_end|>" in u:
        family, open_, close = "chatml", "<|im_start|>system\n", "<|im_end|>\n"
    elif f"<|start_header_id|>user<|end_header_id|>\n\n{_U1}<|eot_id|>" in u:
        family, open_, close = "llama3", "<|start_header_id|>system<|end_header_id|>\n\n", "<|eot_id|>"
    elif f"[INST] {_U1}[/INST]" in u or f"[INST]{_U1}[/INST]" in u:
        family, open_, close = "mistral", "", ""
    else:
        raise ValueError(
            f"chat template not recognised as ChatML, Llama-3 or Mistral; it renders {u[:120]!r}"
        )
    bos = tokenizer.bos_token or ""
    bos_text = bos if bos and "bos_token" in template and u.startswith(bos) and su.startswith(bos) else ""
    fmt = ChatFormat(family=family, bos_text=bos_text, trims_content=trims)
    if family == "mistral":
        fmt.eos_text = tokenizer.eos_token or "</s>"
        if f"[INST] {_S}\n\n{_U1}[/INST]" not in su:
            raise ValueError("Mistral-style template puts the system prompt in an unsupported place")
        return fmt
    body_u = u[len(bos_text) :]
    if body_u.startswith(open_):
        fmt.default_system = body_u[len(open_) : body_u.index(close)]
    body_su = su[len(bos_text) :]
    if not body_su.startswith(open_) or _S not in body_su:
        raise ValueError("the chat template does not render the system message as a leading system block")
    content = body_su[len(open_) : body_su.index(close)]
    fmt.system_prefix, fmt.system_suffix = content.split(_S, 1)
    return fmt


def _go_text(text: str) -> str:
    """Literal text for a Go template (actions delimiters escaped)."""
    if "{{" in text or "}}" in text:
        esc = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return '{{ "' + esc + '" }}'
    return text


def go_template(fmt: ChatFormat, add_bos: bool) -> str:
    """The Ollama TEMPLATE for ``fmt``. ``add_bos``: llama.cpp adds BOS itself, so the text must not."""
    head = "" if add_bos else _go_text(fmt.bos_text)
    last = "{{- $last := eq (len (slice $.Messages $i)) 1 }}"
    if fmt.family == "mistral":
        return (
            head + "{{- range $i, $_ := .Messages }}\n" + last + "\n"
            '{{- if eq .Role "user" }}[INST] {{ if and $.System (eq $i 1) }}{{ $.System }}\n\n{{ end }}'
            "{{ .Content }}[/INST]\n"
            '{{- else if eq .Role "assistant" }} {{ .Content }}{{ if not $last }}'
            + _go_text(fmt.eos_text)
            + "{{ end }}\n{{- end }}\n{{- end }}"
        )
    if fmt.family == "chatml":
        sys_open, sys_close = "<|im_start|>system\n", "<|im_end|>\n"
        turn_open, turn_close = "<|im_start|>{{ .Role }}\n", "<|im_end|>\n"
        gen = "<|im_start|>assistant\n"
    else:
        sys_open, sys_close = "<|start_header_id|>system<|end_header_id|>\n\n", "<|eot_id|>"
        turn_open, turn_close = "<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n", "<|eot_id|>"
        gen = "<|start_header_id|>assistant<|end_header_id|>\n\n"
    out = head + "{{- range $i, $_ := .Messages }}\n"
    if fmt.default_system is not None:
        out += (
            '{{- if and (eq $i 0) (ne .Role "system") }}'
            + sys_open
            + _go_text(fmt.default_system)
            + sys_close
            + "{{ end }}\n"
        )
    out += last
    if fmt.system_prefix or fmt.system_suffix:
        out += (
            '{{- if eq .Role "system" }}'
            + sys_open
            + _go_text(fmt.system_prefix)
            + "{{ .Content }}"
            + _go_text(fmt.system_suffix)
            + sys_close
            + "{{ else }}"
            + turn_open
            + "{{ .Content }}"
            + "{{ end }}\n"
        )
    else:
        out += turn_open + "{{ .Content }}\n"
    out += (
        '{{- if or (not $last) (ne .Role "assistant") }}' + turn_close + "{{ end }}\n"
        '{{- if and $last (ne .Role "assistant") }}' + gen + "{{ end }}\n{{- end }}"
    )
    return out


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
)


def expected_text(tokenizer: Any, msgs: list[dict[str, str]], add_bos: bool, fmt: ChatFormat) -> str:
    """What Ollama should produce for ``msgs``: HF's rendering, minus the BOS text llama.cpp adds itself,
    and with a trailing assistant turn left open (Ollama continues it)."""
    if msgs[-1]["role"] == "assistant":
        text = _render(tokenizer, msgs, gen=False)
        closers = {"chatml": "<|im_end|>\n", "llama3": "<|eot_id|>", "mistral": fmt.eos_text}
        closer = closers[fmt.family]
        if not text.endswith(closer):
            raise ValueError(f"assistant turn does not end with {closer!r}")
        text = text[: -len(closer)]
    else:
        text = _render(tokenizer, msgs, gen=True)
    if add_bos and fmt.bos_text and text.startswith(fmt.bos_text):
        text = text[len(fmt.bos_text) :]
    return text


def check_template(template: str, tokenizer: Any, fmt: ChatFormat, add_bos: bool) -> None:
    """Raise if the TEMPLATE does not reproduce ``apply_chat_template`` on the sample conversations."""
    for conv in SAMPLE_CONVERSATIONS:
        msgs = list(conv)
        if fmt.family == "mistral" and any(m["role"] == "system" for m in msgs[1:]):
            continue
        want = expected_text(tokenizer, msgs, add_bos, fmt)
        got = render_ollama(template, msgs)
        if got != want:
            raise ValueError(
                f"Ollama TEMPLATE does not match the training chat template for {msgs!r}:\n"
                f"  template: {got!r}\n  training: {want!r}"
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
            *[f"# {n}" for n in self.notes],
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


def build_modelfile(
    tokenizer: Any,
    gguf_name: str,
    *,
    add_bos: bool,
    end_of_turn: list[str],
    system: str | None = None,
    scenario: str | None = None,
) -> ModelfileSpec:
    fmt = detect_format(tokenizer)
    template = go_template(fmt, add_bos)
    check_template(template, tokenizer, fmt, add_bos)
    stops = list(dict.fromkeys([*end_of_turn, _TURN_START[fmt.family]]))
    if fmt.family == "llama3":
        stops.append("<|end_header_id|>")
    if fmt.family == "mistral":
        stops = list(dict.fromkeys([fmt.eos_text, "[INST]", "[/INST]"]))
    params = dict(SCENARIO_PARAMS.get((scenario or "").lower(), DEFAULT_PARAMS))
    notes = [
        f"chat format: {fmt.family}"
        + (f", default system prompt: {fmt.default_system!r}" if fmt.default_system else "")
    ]
    if fmt.trims_content:
        notes.append("the training template trims message content; Ollama does not, so send trimmed messages")
    return ModelfileSpec(gguf_name, template, stops, system, params, notes)


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
