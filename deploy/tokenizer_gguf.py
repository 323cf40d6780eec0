"""The tokenizer part of a GGUF file: vocab, token types, merges or scores, special tokens, chat template.

Two tokenizer models, told apart by the *live* fast tokenizer's ``tokenizer.json`` (transformers 5 rebuilds the
pipeline from the tokenizer class and its config, so the file on disk may say something else):

- byte-level BPE (GPT-2 style: ``ByteLevel`` pre-tokenizer or decoder) -> ``tokenizer.ggml.model = gpt2``
  with merges. SmolLM2's tokenizer as transformers rebuilds it also says ``byte_fallback: true``; ByteLevel
  decides, so it stays BPE (llama.cpp's converter misreads it as SentencePiece).
- SentencePiece BPE (Llama 2, Mistral v0.x, Phi-3, Gemma: BPE with ``byte_fallback`` on ``▁``-escaped text)
  -> ``tokenizer.ggml.model = llama`` with scores and types, as llama.cpp's converter writes them from
  ``tokenizer.model``. llama.cpp's SentencePiece tokenizer merges the adjacent pair whose merged piece has the
  highest score; a BPE ``tokenizer.json`` has ranked merges instead of scores, so a piece's score is minus the
  rank of the first merge that makes it, which gives llama.cpp the same merge order.
- SentencePiece Unigram models are refused: llama.cpp's ``llama`` tokenizer merges pieces by score instead of
  finding Unigram's most likely segmentation (on a tiny Unigram model trained on our bundled data, 261 of 400
  lines tokenized differently), so the GGUF would not see the text the model was trained on.

``add_space_prefix``: llama.cpp puts a space before the text at the start and after every special token.
That is the legacy SentencePiece behaviour (a ``Prepend("▁")`` normalizer, Metaspace ``always``). A
Metaspace ``first`` pre-tokenizer (transformers 5's default for Llama-style tokenizers) prefixes only a
text that starts the input, and Gemma prefixes nothing: both are written as ``false``, which tokenizes
exactly like transformers whenever the text starts with a special token (every chat prompt that opens
with BOS or a role token), and the parity gate checks the rendered prompts token for token.

llama.cpp picks its BPE pre-tokenizer regex from ``tokenizer.ggml.pre``. Its converter identifies the name by
hashing the tokenization of a fixed text; we read the pre-tokenizer definition in ``tokenizer.json``
instead, which says the same thing for the families we support:

- ``Digits(individual) + ByteLevel`` -> ``smollm`` (SmolLM/SmolLM2);
- a ``Split`` regex with ``\\p{N}{1,3}`` -> ``llama-bpe`` (Llama 3.x);
- a ``Split`` regex with single ``\\p{N}`` and ``[^\\r\\n\\p{L}\\p{N}]?\\p{L}+`` -> ``qwen2`` (Qwen2/2.5/3);
- a bare ``ByteLevel`` with its own regex -> ``gpt-2``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import gguf

_DIGITS = frozenset("0123456789")
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")
_SPACE = "\u2581"  # SentencePiece's escaped space
# Scores llama.cpp's converter gives added tokens and padding (they never win a merge).
_ADDED_SCORE = -1000.0

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
    model: str = "gpt2"  # "llama": a SentencePiece vocabulary (scores instead of merges)
    scores: list[float] = field(default_factory=list)
    add_space_prefix: bool | None = None
    strips_after_special: bool = False  # HF special tokens eat the whitespace after them (Phi-3's rstrip)

    def pad_to(self, n: int) -> None:
        """Pad with unused ``[PADi]`` tokens up to ``n`` (the model's embedding rows); never truncate."""
        if len(self.tokens) > n:
            raise ValueError(f"tokenizer has {len(self.tokens)} tokens but the model only {n} rows")
        extra = n - len(self.tokens)
        self.tokens += [f"[PAD{i}]" for i in range(len(self.tokens), n)]
        self.token_types += [int(gguf.TokenType.UNUSED)] * extra
        if self.model == "llama":
            self.scores += [_ADDED_SCORE] * extra

    def write(self, writer: gguf.GGUFWriter) -> None:
        writer.add_tokenizer_model(self.model)
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        if self.model == "llama":
            writer.add_token_scores(self.scores)
        writer.add_token_types(self.token_types)
        if self.model == "gpt2":
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
        if self.add_space_prefix is not None:
            writer.add_add_space_prefix(self.add_space_prefix)
        if self.chat_template:
            writer.add_chat_template(self.chat_template)


@dataclass
class _TokenTable:
    """The model-specific part of a vocab: what differs between BPE and SentencePiece."""

    model: str
    pre: str
    tokens: list[str]
    token_types: list[int]
    merges: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    add_space_prefix: bool | None = None


def detect_pre_tokenizer(tokenizer_json: dict[str, Any]) -> str:
    """The llama.cpp pre-tokenizer name for a ``tokenizer.json`` (see module docstring).

    A bare ``ByteLevel`` whose vocab never merges digits (no token like ``Ġ1`` or ``12``) was trained with
    single-digit splitting: that is SmolLM's tokenizer as transformers rebuilds it from a GGUF, and
    llama.cpp's ``smollm`` (GPT-2 regex plus single digits) tokenizes it identically.
    """
    pre = tokenizer_json.get("pre_tokenizer") or {}
    parts = _parts(pre, "pretokenizers")
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


def _parts(node: dict[str, Any] | None, key: str) -> list[dict[str, Any]]:
    """The steps of a normalizer / pre-tokenizer, flattening a ``Sequence``."""
    if not node:
        return []
    return list(node.get(key) or []) if node.get("type") == "Sequence" else [node]


def tokenizer_model(tokenizer_json: dict[str, Any]) -> str:
    """``gpt2`` (byte-level BPE) or ``llama`` (SentencePiece) for a ``tokenizer.json`` (module docstring)."""
    model = tokenizer_json.get("model") or {}
    kind = model.get("type")
    byte_level = "ByteLevel" in json.dumps(
        [tokenizer_json.get("pre_tokenizer"), tokenizer_json.get("decoder")]
    )
    if kind == "BPE" and byte_level:
        return "gpt2"
    if kind == "BPE" and model.get("byte_fallback") and _escapes_spaces(tokenizer_json):
        return "llama"
    if kind == "Unigram":
        raise ValueError(
            "SentencePiece Unigram tokenizers are not supported for GGUF export: llama.cpp's SentencePiece "
            "tokenizer merges pieces by score and does not reproduce Unigram's segmentation"
        )
    raise ValueError(
        f"tokenizer model {kind!r} (byte_fallback={model.get('byte_fallback')}) is not supported; GGUF "
        "export handles byte-level BPE (Llama 3, Qwen, SmolLM2) and SentencePiece BPE (Llama 2, Mistral, "
        "Phi-3, Gemma)"
    )


def _escapes_spaces(tj: dict[str, Any]) -> bool:
    """Does the pipeline turn spaces into ``▁`` (Metaspace, or a normalizer replacing them)?"""
    if any(p.get("type") == "Metaspace" for p in _parts(tj.get("pre_tokenizer"), "pretokenizers")):
        return True
    return any(
        p.get("type") == "Replace" and p.get("content") == _SPACE
        for p in _parts(tj.get("normalizer"), "normalizers")
    )


def space_prefix(tokenizer_json: dict[str, Any]) -> bool:
    """llama.cpp's ``add_space_prefix`` for a SentencePiece ``tokenizer.json`` (see module docstring)."""
    for p in _parts(tokenizer_json.get("normalizer"), "normalizers"):
        if p.get("type") == "Prepend" and p.get("prepend") == _SPACE:
            return True
    for p in _parts(tokenizer_json.get("pre_tokenizer"), "pretokenizers"):
        if p.get("type") == "Metaspace":
            default = "always" if p.get("add_prefix_space", True) else "never"
            return p.get("prepend_scheme", default) == "always"
    return False


def _looks_special(text: str) -> bool:
    return (
        (text.startswith("<|") and text.endswith("|>"))
        or text in ("<s>", "</s>", "<unk>", "<pad>", "<mask>")
        or (text.startswith("<unused") and text.endswith(">"))
    )


def build_vocab(tokenizer: Any, vocab_size: int | None = None) -> GGUFVocab:
    """GGUF vocab from a HF *fast* tokenizer (the one used in training, with its chat template), or from the
    same tokenizer's files read without transformers (:class:`deploy.tokenizer_files.TokenizerFiles`)."""
    tj = _tokenizer_json(tokenizer)
    vocab: dict[str, int] = tokenizer.get_vocab()
    n = max(vocab_size or 0, max(vocab.values()) + 1)
    table = (
        _spm_table(tokenizer, tj, vocab, n)
        if tokenizer_model(tj) == "llama"
        else _bpe_table(tokenizer, tj, vocab, n)
    )

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
        tokens=table.tokens,
        token_types=[int(t) for t in table.token_types],
        merges=table.merges,
        pre=table.pre,
        bos_id=bos_id,
        eos_id=eos_id,
        eot_id=eot_id,
        pad_id=tokenizer.pad_token_id,
        unk_id=tokenizer.unk_token_id,
        add_bos=bool(add_bos),
        add_eos=bool(add_eos),
        chat_template=_gguf_template(tokenizer, template),
        end_of_turn=end_of_turn,
        model=table.model,
        scores=table.scores,
        add_space_prefix=table.add_space_prefix,
        strips_after_special=any(t.special and t.rstrip for t in tokenizer.added_tokens_decoder.values()),
    )


def _tokenizer_json(tokenizer: Any) -> dict[str, Any]:
    """The fast tokenizer's live ``tokenizer.json``."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise ValueError("GGUF export needs a fast tokenizer (tokenizer.json); got a slow one")
    tj: dict[str, Any] = json.loads(backend.to_str())
    return tj


def _bpe_table(tokenizer: Any, tj: dict[str, Any], vocab: dict[str, int], n: int) -> _TokenTable:
    tokens, types = _token_table(tokenizer, vocab, n)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj.get("model", {}).get("merges", [])]
    return _TokenTable("gpt2", detect_pre_tokenizer(tj), tokens, types, merges=merges)


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


def _spm_table(tokenizer: Any, tj: dict[str, Any], vocab: dict[str, int], n: int) -> _TokenTable:
    """Pieces, scores and types (normal/unknown/control/user-defined/byte) of a SentencePiece vocab."""
    scores = _piece_scores(tj["model"])
    reverse = {i: t for t, i in vocab.items()}
    added = {tok.content: tok for tok in tokenizer.added_tokens_decoder.values()}
    table = _TokenTable("llama", "default", [], [], add_space_prefix=space_prefix(tj))
    for i in range(n):
        text = reverse.get(i)
        ttype, score = gguf.TokenType.NORMAL, scores.get(text or "", 0.0)
        if text is None:
            text, ttype, score = f"[PAD{i}]", gguf.TokenType.UNUSED, _ADDED_SCORE
        elif i == tokenizer.unk_token_id:
            ttype = gguf.TokenType.UNKNOWN
        elif text in added:
            special = added[text].special or _looks_special(text)
            ttype = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
            text = text if special else text.replace(_SPACE, " ")  # llama.cpp matches user tokens in raw text
            score = _ADDED_SCORE
        elif _BYTE_PIECE.fullmatch(text):
            ttype, score = gguf.TokenType.BYTE, 0.0
        table.tokens.append(text)
        table.token_types.append(int(ttype))
        table.scores.append(float(score))
    return table


def _piece_scores(model: dict[str, Any]) -> dict[str, float]:
    """Piece -> score: minus the rank of the first merge making the piece (pieces no merge makes rank below
    every merge, in id order)."""
    merges = model.get("merges") or []
    scores: dict[str, float] = {}
    for rank, merge in enumerate(merges):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        scores.setdefault(left + right, -float(rank))
    floor = -float(len(merges))
    for piece, i in model.get("vocab", {}).items():
        scores.setdefault(piece, floor - i)
    return scores


def _gguf_template(tokenizer: Any, template: str | None) -> str | None:
    """The template the GGUF carries: Ollama renders it instead of the Modelfile's TEMPLATE when it advertises
    tools or thinking, so it is the training template adjusted to render as training did in llama.cpp
    (:func:`deploy.modelfile.gguf_chat_template`)."""
    if not isinstance(getattr(tokenizer, "chat_template", None), str):
        return template
    from deploy.modelfile import gguf_chat_template

    return gguf_chat_template(tokenizer)


def _end_of_turn(tokenizer: Any, vocab: dict[str, int], template: str | None) -> list[str]:
    """Known end-of-turn tokens the chat template uses, then the EOS token (the first one is ``eot_id``)."""
    end_of_turn = [t for t in EOT_CANDIDATES if t in vocab and template and t in template]
    if tokenizer.eos_token and tokenizer.eos_token not in end_of_turn:
        end_of_turn.append(tokenizer.eos_token)
    return end_of_turn
