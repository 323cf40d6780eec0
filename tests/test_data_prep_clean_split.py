"""Dedup keys, quality score, balance cap, and the deterministic stratified split."""

from __future__ import annotations

import random

import pytest

from data_prep.clean import (
    BalanceCap,
    Deduper,
    check_length,
    digest64,
    exact_text,
    normalized_text,
    pack_source,
    quality_score,
    unpack_source,
)
from data_prep.conversation import Conversation, Message
from data_prep.split import Splitter, allocate, split_hash
from data_prep.validate import RowError


def conv(user: str, assistant: str, **kw: object) -> Conversation:
    return Conversation([Message("user", user), Message("assistant", assistant)], **kw)  # type: ignore[arg-type]


def test_exact_and_normalized_keys() -> None:
    a = conv("What is pH?", "A measure of acidity.")
    b = conv("what is   PH", "a measure of acidity")
    c = conv("What is pH?", "A measure of alkalinity.")
    assert exact_text(a) != exact_text(b)
    assert normalized_text(a) == normalized_text(b) != normalized_text(c)
    assert normalized_text(conv("ＡＢＣ", "x")) == normalized_text(conv("abc", "x"))  # full-width folds
    # roles matter: the same words from the other speaker are different
    swapped = Conversation([Message("user", "A measure of acidity."), Message("assistant", "What is pH?")])
    assert normalized_text(swapped) != normalized_text(a)


def test_deduper_counts_and_remembers_first_source() -> None:
    d = Deduper()
    rows = [conv("Hi", "Hello!"), conv("Hi", "Hello!"), conv("hi", "hello"), conv("Bye", "See you.")]
    results = [d.check(digest64(exact_text(r)), digest64(normalized_text(r)), pack_source(1, i + 10))
               for i, r in enumerate(rows)]
    assert results[0] is None and results[3] is None
    assert results[1] == ("exact", pack_source(1, 10))
    assert results[2] == ("normalized", pack_source(1, 10))
    # an exact copy of a row that was itself a normalized duplicate points at the first kept row, as normalized
    assert d.check(digest64(exact_text(rows[2])), digest64(normalized_text(rows[2])), 99) == ("normalized",
                                                                                               pack_source(1, 10))
    assert unpack_source(pack_source(3, 123456)) == (3, 123456)
    only_exact = Deduper(normalized=False)
    assert [only_exact.check(digest64(exact_text(r)), digest64(normalized_text(r)), i) for i, r in
            enumerate(rows)].count(None) == 3


def test_length_limits() -> None:
    assert check_length(conv("abc", "de"), 1, 10) == 5
    with pytest.raises(RowError) as e:
        check_length(conv("a", "b"), 5)
    assert e.value.reason == "too_short"
    with pytest.raises(RowError) as e:
        check_length(conv("a" * 20, "b"), 1, 10)
    assert e.value.reason == "too_long"


def test_quality_score() -> None:
    good = conv("How often should I change aquarium water?", "About 20 to 30 percent once a week works for most tanks.")
    assert quality_score(good) == 1.0
    assert quality_score(conv("为什么金鱼需要过滤器？", "过滤器能去除氨和杂质，保持水质稳定。")) == 1.0
    assert quality_score(conv("Repeat after me: hello", "Repeat after me: hello")) == 0.0
    assert quality_score(conv("Tell me a story", "ha " * 200)) < 0.5
    assert quality_score(conv("Anything?", "#$%^&*()!!@@##$$%%^^&&**")) < 0.5
    assert quality_score(conv("Anything?", "Ã¤Ã¶Ã¼ \ufffd\ufffd broken text here")) < 1.0
    assert quality_score(good, won=False) == 0.0


def test_balance_cap_per_stratum() -> None:
    cap = BalanceCap(2)
    for _ in range(2):
        cap.admit("heat")
    cap.admit("cool")
    with pytest.raises(RowError) as e:
        cap.admit("heat")
    assert e.value.reason == "over_balance_cap"


def test_allocate_is_proportional_and_exact() -> None:
    assert allocate({"a": 60, "b": 30, "c": 10}, 0.1) == {"a": 6, "b": 3, "c": 1}
    alloc = allocate({"a": 7, "b": 7, "c": 7}, 0.2)  # 4.2 -> 4 test rows in all
    assert sum(alloc.values()) == 4 and max(alloc.values()) - min(alloc.values()) <= 1
    assert allocate({"a": 5}, 0.0) == {"a": 0}
    assert allocate({"a": 1}, 0.5) == {"a": 0}  # a single row stays in train
    assert allocate({"a": 3}, 0.01) == {"a": 1}  # at least one test row from 2 rows on
    assert allocate({"a": 2}, 0.9) == {"a": 1}  # and at least one train row


def _split(rows: list[tuple[str, str]], seed: int, test_size: float = 0.2) -> list[str]:
    sp = Splitter(seed, test_size)
    hashes = [(k, split_hash(seed, text)) for k, text in rows]
    for k, h in hashes:
        sp.add(k, h)
    sp.finalize()
    return [sp.assign(k, h) for k, h in hashes]


def test_split_is_deterministic_order_free_and_stratified() -> None:
    rng = random.Random(0)
    types = ["heat"] * 50 + ["cool"] * 30 + ["clean"] * 20
    rows = [(t, f"{t} trajectory {i} {rng.random()}") for i, t in enumerate(types)]
    a = _split(rows, seed=42)
    assert a == _split(rows, seed=42)
    b = _split(rows, seed=7)
    assert a != b
    # the split of a row depends on its content, not on where it is in the file
    shuffled = rows[:]
    rng.shuffle(shuffled)
    by_row = dict(zip(rows, a, strict=True))
    assert [by_row[r] for r in shuffled] == _split(shuffled, seed=42)
    # each task type gets exactly its share of the test set
    for t, n in (("heat", 50), ("cool", 30), ("clean", 20)):
        assert sum(1 for (k, _), s in zip(rows, a, strict=True) if k == t and s == "test") == n * 0.2
    # pinned hash (blake2b): the same on every machine and Python version, unlike hash()
    assert split_hash(42, "x") == 0x6B9DEB26818759F5


def test_split_ties_from_identical_rows_keep_the_exact_count() -> None:
    rows = [("", "same")] * 10
    assert _split(rows, seed=1, test_size=0.3).count("test") == 3


def test_splitter_rejects_bad_test_size() -> None:
    with pytest.raises(ValueError):
        Splitter(1, 1.0)


def test_digest_map_agrees_with_a_dict() -> None:
    import random

    from data_prep.clean import DigestMap

    rng = random.Random(7)
    table, want = DigestMap(capacity=8), {}
    edge = [0, 1, 2**64 - 1, 2**63, 8, 16, 7]  # 0 is a key like any other; 8 and 16 collide in 8 slots, 7 wraps
    for step in range(50_000):
        key = rng.choice(edge) if step % 10 == 0 else rng.getrandbits(64)
        if key not in want:
            want[key] = (rng.getrandbits(40), rng.getrandbits(64))
            table.put(key, *want[key])
        assert table.get(key) == want[key]
    assert len(table) == len(want) and all(table.get(k) == v for k, v in want.items())
    assert table.get(rng.getrandbits(64)) is None
