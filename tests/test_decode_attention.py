"""models.decode_attention: the compiled CPU decode kernel against SDPA on the same slots."""

from __future__ import annotations

import shutil

import pytest
import torch

from models import decode_attention as da


@pytest.fixture(scope="module")
def kernel():
    ext = da.load()
    if ext is None:
        # CI and every dev box have a C++ compiler (build-essential); only a box without one may skip
        assert shutil.which("c++") is None, "a C++ compiler is here but the decode kernel did not build"
        pytest.skip("no C++ compiler: the decode kernel cannot be built (SDPA is used)")
    return ext


def _case(dtype, slots=5, kv_heads=3, group=3, cap=300, tokens=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    heads, dim = kv_heads * group, 64
    # buffers larger than what is attended, as SlotCache's views are
    key = torch.randn(slots, kv_heads, cap + 40, dim, generator=g).to(dtype)[:, :, :cap]
    value = torch.randn(slots, kv_heads, cap + 40, dim, generator=g).to(dtype)[:, :, :cap]
    query = torch.randn(1, tokens, heads, dim, generator=g).to(dtype).transpose(1, 2)  # as HF passes it
    return query, key, value


def _reference(query, key, value, slot, row, length, scale):
    q = query[:, :, row : row + 1].float()
    k, v = key[slot : slot + 1, :, :length].float(), value[slot : slot + 1, :, :length].float()
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=True)[0, :, 0]


@pytest.mark.parametrize(
    ("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 3e-3)], ids=str
)
@pytest.mark.parametrize("group", [1, 3, 4])
def test_matches_sdpa_per_slot_over_ragged_lengths(kernel, dtype, tol, group):
    query, key, value = _case(dtype, group=group)
    slots, rows, lens = [3, 0, 4, 1], [1, 4, 6, 2], [17, 300, 1, 123]  # a full cache and a one-key slot
    out = torch.full((1, query.shape[2], query.shape[1], 64), 7.0, dtype=dtype)
    scale = 0.11
    assert da.decode_attention(
        query, key, value, torch.tensor(slots), torch.tensor(rows), torch.tensor(lens), out, scale
    )
    for slot, row, length in zip(slots, rows, lens, strict=True):
        ref = _reference(query, key, value, slot, row, length, scale)
        torch.testing.assert_close(out[0, row].float(), ref, atol=tol, rtol=tol)
    untouched = [r for r in range(query.shape[2]) if r not in rows]
    assert bool((out[0, untouched] == 7.0).all())  # rows not named keep what they held


def test_each_slot_reads_only_its_own_keys(kernel):
    """Keys past a slot's length and other slots' keys must not leak in: poison them and compare."""
    query, key, value = _case(torch.float32)
    args = torch.tensor([2]), torch.tensor([0]), torch.tensor([50])
    out = torch.zeros(1, 7, 9, 64)
    da.decode_attention(query, key, value, *args, out, 0.125)
    before = out.clone()
    key2, value2 = key.clone(), value.clone()
    key2[:, :, 50:] = 1e4
    value2[:, :, 50:] = 1e4
    key2[[0, 1, 3, 4]] = -1e4
    value2[[0, 1, 3, 4]] = 1e4
    da.decode_attention(query, key2, value2, *args, out, 0.125)
    torch.testing.assert_close(out, before)


def test_refuses_lengths_outside_the_cache_and_mixed_dtypes(kernel):
    query, key, value = _case(torch.float32)
    out = torch.zeros(1, 7, 9, 64)
    with pytest.raises(RuntimeError, match="lengths outside the cache"):
        kernel.decode_attention(
            query, key, value, torch.tensor([0]), torch.tensor([0]), torch.tensor([301]), out, 1.0
        )
    with pytest.raises(RuntimeError, match="lengths outside the cache"):
        kernel.decode_attention(
            query, key, value, torch.tensor([0]), torch.tensor([0]), torch.tensor([0]), out, 1.0
        )
    with pytest.raises(RuntimeError, match="a slot or row outside"):
        kernel.decode_attention(query, key, value, torch.tensor([5]), torch.tensor([0]), torch.tensor([3]), out, 1.0)
    with pytest.raises(RuntimeError, match="a slot or row outside"):
        kernel.decode_attention(query, key, value, torch.tensor([0]), torch.tensor([7]), torch.tensor([3]), out, 1.0)
    with pytest.raises(RuntimeError, match="one dtype"):
        kernel.decode_attention(
            query, key.bfloat16(), value, torch.tensor([0]), torch.tensor([0]), torch.tensor([3]), out, 1.0
        )


def test_switch_off_and_non_cpu_dtypes_fall_back(kernel, monkeypatch):
    query, key, value = _case(torch.float32)
    args = torch.tensor([0]), torch.tensor([0]), torch.tensor([3])
    out = torch.zeros(1, 7, 9, 64)
    monkeypatch.setenv(da.SWITCH, "0")
    assert not da.decode_attention(query, key, value, *args, out, 1.0)
    assert bool((out == 0).all())
    monkeypatch.delenv(da.SWITCH)
    q64 = query.double()
    assert not da.decode_attention(q64, key.double(), value.double(), *args, out.double(), 1.0)


def test_parallel_threads_give_the_same_result(kernel):
    query, key, value = _case(torch.bfloat16, slots=8, tokens=8)
    args = torch.arange(8), torch.arange(8), torch.tensor([300, 1, 77, 5, 300, 250, 9, 128])
    outs = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            out = torch.zeros(1, 8, 9, 64, dtype=torch.bfloat16)
            da.decode_attention(query, key, value, *args, out, 0.125)
            outs.append(out)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(outs[0], outs[1])  # work items are independent: no reduction order depends on threads
