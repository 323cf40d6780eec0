"""A Hugging Face tokenizer folder read without transformers (and so without torch), for the GGUF export.

:class:`TokenizerFiles` offers the part of a transformers *fast* tokenizer that :func:`deploy.tokenizer_gguf.
build_vocab` and :mod:`deploy.chat_structure` read: ``backend_tokenizer`` (the ``tokenizers`` pipeline of
``tokenizer.json``), ``get_vocab``, ``added_tokens_decoder``, the named special tokens and their ids,
``__call__`` / ``encode`` / ``decode``, ``chat_template`` and ``apply_chat_template``. So one ``build_vocab``
serves both, and a GGUF written from the files is byte-identical to one written from transformers' tokenizer
(``tests/test_export_torch_free.py``).

What it reads, as transformers 5 does for a saved folder:

- ``tokenizer.json``: vocab, added tokens, normalizer, pre-tokenizer, post-processor (BOS/EOS on encode);
- ``tokenizer_config.json``: ``bos_token`` ... ``mask_token`` (a string or an AddedToken dict),
  ``clean_up_tokenization_spaces``, ``chat_template`` (a string or a list of named templates);
  ``special_tokens_map.json`` fills named tokens the config lacks;
- ``chat_template.jinja`` and ``additional_chat_templates/*.jinja``, which win over the config's template.

transformers may rebuild a tokenizer differently from its files (a tokenizer class that builds its own
pipeline, class defaults for special tokens absent from the config); :func:`differences` lists where a
transformers tokenizer and the files disagree, so the exporter can check before trusting the files.

Chat templates render as ``apply_chat_template`` renders them (transformers 5.x
``utils/chat_template_utils.py``): a sandboxed jinja2 environment with ``trim_blocks`` and ``lstrip_blocks``,
the ``loopcontrols`` extension, a ``{% generation %}`` block tag, ``tojson`` without HTML escaping,
``raise_exception`` and ``strftime_now``; the named special tokens are template variables, and
``continue_final_message`` cuts the text after the final message's content.
"""

from __future__ import annotations

import datetime
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The named special tokens transformers passes to chat templates (SPECIAL_TOKENS_ATTRIBUTES).
SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "
# transformers' clean_up_tokenization: spaces before punctuation and contractions removed on decode.
_CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


@dataclass
class TokenizerFiles:
    """A fast tokenizer from its files (see the module docstring); ``load(folder)`` builds one."""

    backend_tokenizer: Any  # tokenizers.Tokenizer
    special_tokens: dict[str, str] = field(default_factory=dict)  # bos_token -> "<s>", ...
    chat_template: str | dict[str, str] | None = None
    clean_up_tokenization_spaces: bool = False

    @classmethod
    def load(cls, folder: Path | str) -> TokenizerFiles:
        from tokenizers import Tokenizer

        folder = Path(folder)
        tj = folder / "tokenizer.json"
        if not tj.is_file():
            raise FileNotFoundError(f"{tj}: missing; GGUF export needs a fast tokenizer (tokenizer.json)")
        config = _read_json(folder / "tokenizer_config.json")
        return cls(
            backend_tokenizer=Tokenizer.from_file(str(tj)),
            special_tokens=_special_tokens(config, _read_json(folder / "special_tokens_map.json")),
            chat_template=_chat_template(folder, config),
            clean_up_tokenization_spaces=bool(config.get("clean_up_tokenization_spaces", False)),
        )

    # -- the vocabulary
    def get_vocab(self) -> dict[str, int]:
        vocab: dict[str, int] = self.backend_tokenizer.get_vocab(with_added_tokens=True)
        return vocab

    @functools.cached_property
    def added_tokens_decoder(self) -> dict[int, Any]:
        return dict(sorted(self.backend_tokenizer.get_added_tokens_decoder().items()))

    def _id(self, name: str) -> int | None:
        text = self.special_tokens.get(name)
        return None if text is None else self.backend_tokenizer.token_to_id(text)

    def __getattr__(self, name: str) -> Any:
        """``bos_token`` ... ``mask_token`` (text or None) and ``bos_token_id`` ... (id or None)."""
        if name in SPECIAL_NAMES:
            return self.special_tokens.get(name)
        if name.endswith("_id") and name[:-3] in SPECIAL_NAMES:
            return self._id(name[:-3])
        raise AttributeError(name)

    # -- encoding
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids: list[int] = self.backend_tokenizer.encode(text, add_special_tokens=add_special_tokens).ids
        return ids

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, add_special_tokens=add_special_tokens)}

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        text: str = self.backend_tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        # transformers skips the clean-up for BPE models: it would delete real spaces before punctuation
        if self.clean_up_tokenization_spaces and type(self.backend_tokenizer.model).__name__ != "BPE":
            for old, new in _CLEANUPS:
                text = text.replace(old, new)
        return text

    # -- chat templates
    def apply_chat_template(
        self,
        conversation: list[dict[str, Any]],
        tokenize: bool = False,
        add_generation_prompt: bool = False,
        continue_final_message: bool = False,
        tools: list[dict[str, Any]] | None = None,
        documents: list[dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> str:
        """The rendered chat as text (``tokenize=True`` is not offered: the export only needs text)."""
        if tokenize:
            raise NotImplementedError("TokenizerFiles.apply_chat_template renders text only (tokenize=False)")
        if not conversation:
            raise ValueError("cannot apply a chat template to an empty conversation")
        if continue_final_message and add_generation_prompt:
            raise ValueError("continue_final_message and add_generation_prompt are not compatible")
        template = self._template(tools)
        variables = {**self.special_tokens, **kwargs}
        return render_chat(template, conversation, add_generation_prompt=add_generation_prompt,
                           continue_final_message=continue_final_message, tools=tools, documents=documents,
                           **variables)

    def _template(self, tools: list[dict[str, Any]] | None) -> str:
        """The template to render (a named set picks ``tool_use`` with tools, else ``default``)."""
        template = self.chat_template
        if isinstance(template, dict):
            chosen = template.get("tool_use") if tools is not None else None
            template = chosen or template.get("default")
        if not template:
            raise ValueError("the tokenizer has no chat template (chat_template.jinja / tokenizer_config.json)")
        return template


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    loaded = json.loads(path.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else {}


def _token_text(value: Any) -> str | None:
    """A special token as the config stores it: a string, or an AddedToken dict with ``content``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _special_tokens(config: dict[str, Any], special_map: dict[str, Any]) -> dict[str, str]:
    """Named special tokens; ``extra_special_tokens`` as a dict (Gemma 3's ``image_token``...) adds names,
    which templates see as variables too."""
    out: dict[str, str] = {}
    for name in SPECIAL_NAMES:
        text = _token_text(config.get(name)) or _token_text(special_map.get(name))
        if text is not None:
            out[name] = text
    extra = config.get("extra_special_tokens")
    for name, value in (extra.items() if isinstance(extra, dict) else ()):
        text = _token_text(value)
        if text is not None:
            out.setdefault(name, text)
    return out


def _chat_template(folder: Path, config: dict[str, Any]) -> str | dict[str, str] | None:
    """Template files first (``chat_template.jinja``, ``additional_chat_templates/``), else the config's."""
    templates: dict[str, str] = {}
    main = folder / "chat_template.jinja"
    if main.is_file():
        templates["default"] = main.read_text(encoding="utf-8")
    extra = folder / "additional_chat_templates"
    if extra.is_dir():
        for f in sorted(extra.glob("*.jinja")):
            templates[f.stem] = f.read_text(encoding="utf-8")
    if templates:
        return templates["default"] if list(templates) == ["default"] else templates
    value = config.get("chat_template")
    if isinstance(value, list):  # the older form: [{"name": ..., "template": ...}, ...]
        return {t["name"]: t["template"] for t in value}
    return value if isinstance(value, str) else None


# ---------------------------------------------------------------- rendering


@functools.lru_cache(maxsize=32)
def _compiled(template: str) -> Any:
    """The template compiled in an environment set up as transformers' (see the module docstring)."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}`` marks assistant text for training masks; it renders
        its body unchanged (this is all rendering needs of it)."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return str(caller())

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        # jinja's own tojson escapes <, >, & and ' for HTML; chat templates want plain JSON
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        return datetime.datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(template)


def render_chat(
    template: str,
    messages: list[dict[str, Any]],
    *,
    add_generation_prompt: bool = False,
    continue_final_message: bool = False,
    tools: list[dict[str, Any]] | None = None,
    documents: list[dict[str, Any]] | None = None,
    **variables: Any,
) -> str:
    """``template`` rendered on ``messages`` as ``apply_chat_template(..., tokenize=False)`` renders it."""
    final: str | None = None
    if continue_final_message:
        messages, final = _tag_final(messages, template)
    text: str = _compiled(template).render(messages=messages, tools=tools, documents=documents,
                                           add_generation_prompt=add_generation_prompt, **variables)
    return text if final is None else _cut_at_tag(text, final)


def _tag_final(messages: list[dict[str, Any]], template: str) -> tuple[list[dict[str, Any]], str]:
    """A copy of ``messages`` whose final text carries the continue tag, and that final text."""
    import copy

    messages = copy.deepcopy(messages)
    content = messages[-1].get("content")
    if content is None or "content" not in template:
        raise ValueError("continue_final_message: the final message has no content the template renders")
    if isinstance(content, (list, tuple)):
        block = next((b for b in reversed(content) if "text" in b), None)
        if block is None:
            raise ValueError("continue_final_message: the final message has no text to continue")
        final, block["text"] = block["text"], block["text"] + _CONTINUE_TAG
    else:
        final = content
        messages[-1]["content"] = content + _CONTINUE_TAG
    return messages, final


def _cut_at_tag(text: str, final: str) -> str:
    """The render up to the continue tag (transformers: rstripped when the template trimmed after it)."""
    tag = _CONTINUE_TAG.strip()
    if final.strip() not in text or tag not in text:
        raise ValueError("continue_final_message: the final message does not appear in the rendered chat")
    at = text.rindex(tag)
    return text[:at] if text[at : at + len(_CONTINUE_TAG)] == _CONTINUE_TAG else text[:at].rstrip()


# ---------------------------------------------------------------- agreement with transformers


def _added(decoder: dict[int, Any]) -> dict[int, tuple[Any, ...]]:
    return {i: (t.content, t.special, t.normalized, t.lstrip, t.rstrip, t.single_word) for i, t in decoder.items()}


def differences(hf_tokenizer: Any, files: TokenizerFiles) -> list[str]:
    """Where a transformers fast tokenizer and ``files`` disagree on what the GGUF reads (empty: they agree)."""
    out: list[str] = []
    live_text, disk_text = hf_tokenizer.backend_tokenizer.to_str(), files.backend_tokenizer.to_str()
    if live_text != disk_text:
        live, disk = json.loads(live_text), json.loads(disk_text)
        out += [f"tokenizer.json {k}" for k in sorted(set(live) | set(disk)) if live.get(k) != disk.get(k)]
    if _added(hf_tokenizer.added_tokens_decoder) != _added(files.added_tokens_decoder):
        out.append("added tokens")
    if dict(hf_tokenizer.special_tokens_map) != files.special_tokens:
        out.append(f"special tokens ({hf_tokenizer.special_tokens_map} vs {files.special_tokens})")
    out += [f"{name}_id" for name in SPECIAL_NAMES
            if getattr(hf_tokenizer, f"{name}_id", None) != getattr(files, f"{name}_id")]
    if hf_tokenizer.chat_template != files.chat_template:
        out.append("chat_template")
    return out
