"""The tokenizer part of a GGUF file: BPE vocab, token types, merges, pre-tokenizer, special tokens, template.

llama.cpp picks its pre-tokenizer regex from ``tokenizer.ggml.pre``. Its converter identifies the name by
hashing the tokenization of a fixed text; we read the pre-tokenizer definition in ``tokenizer.json``
instead, which says the same thing for the families we support:

- ``Digits(individual) + ByteLevel`` -> ``smollm`` (SmolLM/SmolLM2);
- a ``Split`` regex with ``\\p{N}{1,3}`` -> ``llama-bpe`` (Llama 3.x);
- a ``Split`` regex with single ``\\p{N}`` and ``[^\\r\\n\\p{L}\\p{N}]?\\p{L}+`` -> ``qwen2`` (Qwen2/2.5);
- a bare ``ByteLevel`` with its own regex -> ``gpt-2``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import gguf

_DIGITS = frozenset("0123456789")

# End-of-turn tokens of the chat formats we support (llama.cpp also treats these as end-of-generation).
EOT_CANDIDATES = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


@dataclass
class GGUFVocab:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    pre: str
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    pad_id: int | None
    unk_id: int | None
    add_bos: bool
    add_eos: bool
    chat_template: str | None
    end_of_turn: list[str] = field(default_factory=list)  # token texts that end an assistant turn

    def write(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        writer.add_token_merges(self.merges)
        for key, value in (
            ("bos", self.bos_id),
            ("eos", self.eos_id),
            ("eot", self.eot_id),
            ("pad", self.pad_id),
            ("unk", self.unk_id),
        ):
            if value is not None:
                getattr(writer, f"add_{key}_token_id")(value)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


def detect_pre_tokenizer(tokenizer_json: dict[str, Any]) -> str:
    """The llama.cpp pre-tokenizer name for a ``tokenizer.json`` (see module docstring).

    A bare ``ByteLevel`` whose vocab never merges digits (no token like ``Ġ1`` or ``12``) was trained with
    single-digit splitting: that is SmolLM's tokenizer as transformers rebuilds it from a GGUF, and
    llama.cpp's ``smollm`` (GPT-2 regex plus single digits) tokenizes it identically.
    """
    pre = tokenizer_json.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    types = [p.get("type") for p in parts]
    if "Digits" in types and "ByteLevel" in types:
        digits = next(p for p in parts if p.get("type") == "Digits")
        if digits.get("individual_digits", False):
            return "smollm"
    regexes = [str((p.get("pattern") or {}).get("Regex", "")) for p in parts if p.get("type") == "Split"]
    for rx in regexes:
        if r"\p{N}{1,3}" in rx:
            return "llama-bpe"
        if r"[^\r\n\p{L}\p{N}]?\p{L}+" in rx and r"\p{N}" in rx:
            return "qwen2"
    if types == ["ByteLevel"] and parts[0].get("use_regex", True):
        vocab = (tokenizer_json.get("model") or {}).get("vocab") or {}
        merged_digits = any(len(t) > 1 and t.lstrip("\u0120")[:1] in _DIGITS for t in vocab)
        return "gpt-2" if merged_digits else "smollm"
    raise ValueError(
        f"unrecognized pre-tokenizer {json.dumps(pre)[:200]}: supported are SmolLM2 (smollm), Llama 3 "
        "(llama-bpe), Qwen2 (qwen2) and GPT-2 style BPE tokenizers"
    )


def _looks_special(text: str) -> bool:
    return (text.startswith("<|") and text.endswith("|>")) or text in ("<s>", "</s>", "<unk>", "<pad>")


def build_vocab(tokenizer: Any, vocab_size: int | None = None) -> GGUFVocab:
    """GGUF vocab from a HF *fast* BPE tokenizer (the one used in training, with its chat template)."""
    tj = _bpe_tokenizer_json(tokenizer)
    pre = detect_pre_tokenizer(tj)
    vocab: dict[str, int] = tokenizer.get_vocab()
    n = max(vocab_size or 0, max(vocab.values()) + 1)
    tokens, types = _token_table(tokenizer, vocab, n)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj.get("model", {}).get("merges", [])]

    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    bos_id = tokenizer.bos_token_id
    eos_id = tokenizer.eos_token_id
    add_bos = bos_id is not None and len(probe) > 0 and probe[0] == bos_id
    add_eos = eos_id is not None and len(probe) > 1 and probe[-1] == eos_id
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    end_of_turn = _end_of_turn(tokenizer, vocab, template)
    eot_id = vocab[end_of_turn[0]] if end_of_turn else None
    return GGUFVocab(
        tokens=tokens,
        token_types=[int(t) for t in types],
        merges=merges,
        pre=pre,
        bos_id=bos_id,
        eos_id=eos_id,
        eot_id=eot_id,
        pad_id=tokenizer.pad_token_id,
        unk_id=tokenizer.unk_token_id,
        add_bos=bool(add_bos),
        add_eos=bool(add_eos),
        chat_template=template,
        end_of_turn=end_of_turn,
    )


def _bpe_tokenizer_json(tokenizer: Any) -> dict[str, Any]:
    """The fast tokenizer's ``tokenizer.json``, checked to be a byte-level BPE model."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise ValueError("GGUF export needs a fast tokenizer (tokenizer.json); got a slow one")
    tj: dict[str, Any] = json.loads(backend.to_str())
    model = tj.get("model", {})
    if model.get("type") != "BPE":
        raise ValueError(
            f"tokenizer model {model.get('type')!r} is not supported; only byte-level BPE (GPT-2 style)"
        )
    if model.get("byte_fallback") and "ByteLevel" not in json.dumps(tj.get("pre_tokenizer")):
        raise ValueError(
            "SentencePiece-style BPE with byte_fallback (Mistral v0.x / Llama 2 tokenizers) is not "
            "supported yet; use a byte-level BPE model (Llama 3, Qwen2.5, SmolLM2)"
        )
    return tj


def _token_table(tokenizer: Any, vocab: dict[str, int], n: int) -> tuple[list[str], list[int]]:
    """Token texts and GGUF token types for ids ``0..n-1``; ids the tokenizer lacks become ``[PADi]``."""
    reverse = {i: t for t, i in vocab.items()}
    added = {tok.content: (i, tok) for i, tok in tokenizer.added_tokens_decoder.items()}
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n):
        text = reverse.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif text in added:
            tok = added[text][1]
            if tok.special or _looks_special(text):
                types.append(gguf.TokenType.CONTROL)
            else:
                types.append(gguf.TokenType.USER_DEFINED)
                if not tok.normalized:
                    text = tokenizer.decode(tokenizer.encode(text, add_special_tokens=False))
            tokens.append(text)
        else:
            tokens.append(text)
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _end_of_turn(tokenizer: Any, vocab: dict[str, int], template: str | None) -> list[str]:
    """Known end-of-turn tokens the chat template uses, then the EOS token (the first one is ``eot_id``)."""
    end_of_turn = [t for t in EOT_CANDIDATES if t in vocab and template and t in template]
    if tokenizer.eos_token and tokenizer.eos_token not in end_of_turn:
        end_of_turn.append(tokenizer.eos_token)
    return end_of_turn
