"""Token offsets from the tokens' bytes (``data_prep.token_bytes``) equal the tokenizer's own, or are refused."""

from __future__ import annotations

import json
import random

from tokenizers import Tokenizer

from data_prep.token_bytes import byte_table, fast_offsets

PIECES = [" ", "  ", "\n", "\n\n", "\t", "\r\n", "   x", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start",
          "|>", "a", "Hello", " world", "'s", "'ll", "123", "4567", "!!", "é", "日本", "\u00a0", "🐟", "user\n"]


def test_byte_offsets_equal_the_tokenizers_own(smol_tokenizer) -> None:
    backend = smol_tokenizer.backend_tokenizer
    table = byte_table(backend)
    assert table is not None  # SmolLM2: byte-level BPE, no normalizer, no offset trimming
    rng = random.Random(0)
    texts = ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 60))) for _ in range(3000)]
    used = refused = 0
    for text, enc in zip(texts, backend.encode_batch(texts, add_special_tokens=False), strict=True):
        fast_ids = backend.encode_batch_fast([text], add_special_tokens=False)[0].ids
        assert fast_ids == enc.ids
        cum = fast_offsets(text, enc.ids, table)
        if cum is None:
            refused += 1
            assert not text.isascii()  # only non-ASCII text goes the tokenizer's way for SmolLM2
            continue
        used += 1
        assert list(zip(cum[:-1], cum[1:], strict=True)) == [tuple(o) for o in enc.offsets], text
    assert used > 200 and refused > 500


def test_tokenizers_that_move_offsets_are_refused(smol_tokenizer) -> None:
    spec = json.loads(smol_tokenizer.backend_tokenizer.to_str())
    variants = {
        "trim_offsets": {**spec, "post_processor": {"type": "ByteLevel", "add_prefix_space": False,
                                                    "trim_offsets": True, "use_regex": True}},
        "lowercase": {**spec, "normalizer": {"type": "Lowercase"}},
        "prefix space": {**spec, "pre_tokenizer": {**spec["pre_tokenizer"], "add_prefix_space": True}},
    }
    for name, variant in variants.items():
        assert byte_table(Tokenizer.from_str(json.dumps(variant))) is None, name


def test_a_text_whose_bytes_differ_is_refused(smol_tokenizer) -> None:
    table = byte_table(smol_tokenizer.backend_tokenizer)
    ids = smol_tokenizer.backend_tokenizer.encode("Hello world", add_special_tokens=False).ids
    assert fast_offsets("Hello world", ids, table) == [0, 5, 11]
    assert fast_offsets("Hello worlds", ids, table) is None
    assert fast_offsets("Hello world", [*ids, 10**9], table) is None
