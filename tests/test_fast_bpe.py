"""Byte-level BPE without the tokenizer's encode call (``data_prep.fast_bpe``): the same ids, or refused."""

from __future__ import annotations

import json
import random

import pytest
from tokenizers import Tokenizer

from data_prep import fast_bpe
from data_prep.fast_bpe import AsciiBPE, FastBPEMismatch
from data_prep.render import _encode_many
from data_prep.token_bytes import byte_decoder

# the regex's edge cases: contractions (case-sensitive), apostrophe runs, whitespace runs before a word or at
# the end, digit runs, punctuation runs glued to a space, added tokens whole and cut, every control it takes
PIECES = [" ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", "\r", " \n ", "a", "Hello", " world", "'s", "'S", "'ll",
          "'re", "'ve", "'m", "'d", "'t", "''", " '", "'", "x'", "123", " 4567", "0", "!!", " ?", "...", "-", "#",
          "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start", "|>", "<", "user\n", "don't", "~`^", "{}",
          "e.g.", " (1)", "_x_", "\\", "\"", " CamelCase", "ALLCAPS", "x2y", "  9", "'RE", "'Ll", "?\n\n", " \r\n",
          "!\r", "\t\n", "(x", "12345678"]


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 60))) for _ in range(n)]


def test_ids_equal_the_tokenizers_own(smol_tokenizer) -> None:
    backend = smol_tokenizer.backend_tokenizer
    fast = AsciiBPE.build(backend)
    assert fast is not None  # SmolLM2: ByteLevel with its regex, no normalizer, plain added tokens
    texts = _texts(4000)
    for text, enc in zip(texts, backend.encode_batch(texts, add_special_tokens=False), strict=True):
        assert fast._ids(text) == enc.ids, text  # the fast path itself, without the run-time check
    assert fast.cache  # pieces were cached, and the second use of each came from the cache


QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
         r"|\s+(?!\S)|\s+")  # Qwen2/2.5/3's tokenizer.json; Llama 3's has \p{N}{1,3}
LLAMA3 = QWEN2.replace(r"\p{N}|", r"\p{N}{1,3}|")


def _qwen_like(pattern: str, behavior: str = "Isolated", invert: bool = False, use_regex: bool = False) -> dict:
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pattern}, "behavior": behavior, "invert": invert},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": use_regex}]}


def _variant(smol_tokenizer, pattern: str | None) -> Tokenizer:
    spec = json.loads(smol_tokenizer.backend_tokenizer.to_str())
    if pattern is not None:
        spec["normalizer"] = {"type": "NFC"}
        spec["pre_tokenizer"] = _qwen_like(pattern)
    return Tokenizer.from_str(json.dumps(spec))


@pytest.mark.parametrize("pattern", [None, QWEN2, LLAMA3], ids=["gpt2", "qwen2", "llama3"])
def test_our_split_is_the_pre_tokenizers_own(smol_tokenizer, pattern: str | None) -> None:
    """Pieces compared with the engine's pre-tokenizer directly: SmolLM2's vocabulary has no multi-digit
    tokens, so ids alone could not tell one digit a piece from three."""
    backend = _variant(smol_tokenizer, pattern)
    fast = AsciiBPE.build(backend)
    rng = random.Random(3)
    alphabet = "\t\n\r" + "".join(map(chr, range(0x20, 0x7F)))
    to_ascii = {ord(c): b for c, b in byte_decoder().items()}
    texts = _texts(2000, seed=4) + ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80)))
                                    for _ in range(3000)]
    for text in texts:
        for k, part in enumerate(fast.split_added.split(text)):
            if k % 2 == 0 and part:
                want = [piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(part)]
                want = [w.translate(to_ascii) for w in want]  # ByteLevel returns pieces in its byte alphabet
                assert fast.split.findall(part) == want, part


@pytest.mark.parametrize("pattern", [QWEN2, LLAMA3], ids=["qwen2", "llama3"])
def test_split_patterns_of_qwen_and_llama3_give_the_tokenizers_ids(smol_tokenizer, pattern: str) -> None:
    """SmolLM2's vocabulary behind Qwen2's / Llama 3's pre-tokenizer: the real engine runs their regex."""
    backend = _variant(smol_tokenizer, pattern)
    spec = json.loads(backend.to_str())
    fast = AsciiBPE.build(backend)
    assert fast is not None
    texts = _texts(4000, seed=2)
    for text, enc in zip(texts, backend.encode_batch(texts, add_special_tokens=False), strict=True):
        assert fast._ids(text) == enc.ids, text
    other = {**spec, "pre_tokenizer": {**spec["pre_tokenizer"], "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": pattern.replace("|\\s+", "")}, "behavior": "Isolated",
         "invert": False}, spec["pre_tokenizer"]["pretokenizers"][1]]}}
    assert AsciiBPE.build(Tokenizer.from_str(json.dumps(other))) is None  # an unknown pattern


def test_text_it_cannot_prove_goes_to_the_tokenizer(smol_tokenizer) -> None:
    fast = AsciiBPE.build(smol_tokenizer.backend_tokenizer)
    for text in ["café", "日本", "a\x1cb", "a\x0bb", "a\x0cb", "\u00a0", "\x00"]:
        assert fast.encode(text) is None, repr(text)  # non-ASCII, and controls whose \s class differs in Python
    assert fast.encode("Hello world") == smol_tokenizer.backend_tokenizer.encode("Hello world").ids


def test_other_tokenizer_shapes_are_refused(smol_tokenizer) -> None:
    spec = json.loads(smol_tokenizer.backend_tokenizer.to_str())
    byte_level = spec["pre_tokenizer"]
    lstrip = [dict(spec["added_tokens"][0], lstrip=True), *spec["added_tokens"][1:]]
    variants = {
        "digits first": {**spec, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level]}},
        "prefix space": {**spec, "pre_tokenizer": {**byte_level, "add_prefix_space": True}},
        "no regex": {**spec, "pre_tokenizer": {**byte_level, "use_regex": False}},
        "lowercase": {**spec, "normalizer": {"type": "Lowercase"}},
        "dropout": {**spec, "model": {**spec["model"], "dropout": 0.1}},
        "lstrip added token": {**spec, "added_tokens": lstrip},
        "rstrip added token": {**spec, "added_tokens": [dict(spec["added_tokens"][0], rstrip=True)]},
        "single-word added token": {**spec, "added_tokens": [dict(spec["added_tokens"][0], single_word=True)]},
        "normalized and raw added tokens": {**spec, "added_tokens": [
            *spec["added_tokens"], {"id": 49152, "content": "x<|im", "single_word": False, "lstrip": False,
                                    "rstrip": False, "normalized": True, "special": False}]},
        "split not isolated": {**spec, "pre_tokenizer": _qwen_like(QWEN2, behavior="MergedWithPrevious")},
        "split inverted": {**spec, "pre_tokenizer": _qwen_like(QWEN2, invert=True)},
        "byte level regex after split": {**spec, "pre_tokenizer": _qwen_like(QWEN2, use_regex=True)},
    }
    for name, variant in variants.items():
        assert AsciiBPE.build(Tokenizer.from_str(json.dumps(variant))) is None, name


def test_a_wrong_fast_result_is_caught_not_written(smol_tokenizer, monkeypatch) -> None:
    fast = AsciiBPE.build(smol_tokenizer.backend_tokenizer)
    fast.encode("Hello world")
    fast.cache[" world"] = [0]  # what a bug in the split or the cache would produce
    with pytest.raises(FastBPEMismatch, match="Hello world"):
        fast.encode("Hello world")
    monkeypatch.setattr(fast_bpe, "CHECK_FIRST", 0)
    monkeypatch.setattr(fast_bpe, "CHECK_EVERY", 3)
    fast.seen = 0
    hello = smol_tokenizer.backend_tokenizer.encode("Hello").ids
    assert fast.encode("Hello world") == [*hello, 0]  # not checked: 1 of 3
    with pytest.raises(FastBPEMismatch):
        fast.encode("Hello world")
        fast.encode("Hello world")


def test_the_cache_stays_bounded(smol_tokenizer, monkeypatch) -> None:
    monkeypatch.setattr(fast_bpe, "CACHE_MAX", 10)
    fast = AsciiBPE.build(smol_tokenizer.backend_tokenizer)
    backend = smol_tokenizer.backend_tokenizer
    for text in _texts(200, seed=1):
        assert fast.encode(text) == backend.encode(text, add_special_tokens=False).ids
        assert len(fast.cache) <= 10


def _tokenizer_ids(backend, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]


# past the first texts, which are checked against the tokenizer
TEXTS = ["sayHelloworld", "hi<|im_end|>\n", "x<|endoftext|>y"] * 30


def test_an_added_token_already_in_the_vocabulary_rebuilds_the_fast_path(smol_tokenizer) -> None:
    """Adding a token the vocabulary has keeps its size; the ids must follow the new token anyway."""
    backend = smol_tokenizer.backend_tokenizer
    assert [t.ids for t in _encode_many(smol_tokenizer, TEXTS)] == _tokenizer_ids(backend, TEXTS)
    smol_tokenizer.add_tokens(["Hello"])
    assert [t.ids for t in _encode_many(smol_tokenizer, TEXTS)] == _tokenizer_ids(backend, TEXTS)


def test_special_tokens_read_as_text_are_refused(smol_tokenizer) -> None:
    backend = smol_tokenizer.backend_tokenizer
    assert [t.ids for t in _encode_many(smol_tokenizer, TEXTS)] == _tokenizer_ids(backend, TEXTS)
    backend.encode_special_tokens = True  # what split_special_tokens=True sets
    assert AsciiBPE.build(backend) is None
    assert [t.ids for t in _encode_many(smol_tokenizer, TEXTS)] == _tokenizer_ids(backend, TEXTS)
