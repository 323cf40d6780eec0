"""The small-batch linear forward: same numbers as ``F.linear``, used only where it was measured faster."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny import make_tokenizer, tiny_model
from torch.profiler import ProfilerActivity, profile

from models.cpu_linear import MAX_ROWS, use_small_batch_linear


def _layer(bias: bool, dtype: torch.dtype, seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    layer = torch.nn.Linear(96, 160, bias=bias).to(dtype)
    if bias:
        torch.nn.init.normal_(layer.bias)  # the default init is small; a visible bias catches a dropped one
    return layer


def _mm_shapes(fn) -> list[list[int]]:
    """The first operand shape of every aten::mm / aten::addmm the call ran (which side holds the weight)."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    shapes = []
    for ev in prof.events():
        if ev.name in ("aten::mm", "aten::addmm") and ev.input_shapes:
            shapes.append(list(ev.input_shapes[1 if ev.name == "aten::addmm" else 0]))
    return shapes


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("rows", [1, 2, 7, 8, 16, 64, MAX_ROWS, MAX_ROWS + 1, 300])
def test_same_numbers_as_f_linear_for_every_row_count(rows, bias, dtype):
    layer = _layer(bias, dtype)
    ref = copy.deepcopy(layer)
    assert use_small_batch_linear(layer) == 1
    x = torch.randn(rows, 96).to(dtype)
    with torch.no_grad():
        got, want = layer(x), ref(x)
    assert got.shape == want.shape == (rows, 160) and got.is_contiguous()
    tol = {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 0.1, "rtol": 0.02}
    torch.testing.assert_close(got, want, **tol)


@pytest.mark.parametrize("shape", [(2, 8, 96), (1, 16, 96), (4, 2, 96), (3, 1, 5, 96)])
def test_batched_inputs_keep_their_leading_dims(shape):
    layer = _layer(True, torch.float32)
    ref = copy.deepcopy(layer)
    use_small_batch_linear(layer)
    x = torch.randn(*shape)
    with torch.inference_mode():
        got = layer(x)
    torch.testing.assert_close(got, ref(x).detach(), atol=1e-4, rtol=1e-4)
    assert got.shape == (*shape[:-1], 160)


@pytest.mark.parametrize(
    ("dtype", "rows", "weight_first"),
    [
        (torch.float32, 7, False),  # below the fp32 window: the stock x @ W^T
        (torch.float32, 8, True),
        (torch.float32, MAX_ROWS, True),
        (torch.float32, MAX_ROWS + 1, False),
        (torch.bfloat16, 1, False),
        (torch.bfloat16, 2, True),
    ],
)
def test_the_weight_side_product_runs_only_inside_the_window(dtype, rows, weight_first):
    layer = _layer(True, dtype)
    use_small_batch_linear(layer)
    x = torch.randn(rows, 96).to(dtype)
    with torch.no_grad():
        shapes = _mm_shapes(lambda: layer(x))
    assert shapes, "no matrix product recorded"
    assert (shapes[0] == [160, 96]) is weight_first, shapes


def test_training_keeps_the_stock_layer_and_its_gradients():
    layer = _layer(True, torch.float32)
    ref = copy.deepcopy(layer)
    use_small_batch_linear(layer)
    x = torch.randn(16, 96)
    shapes = _mm_shapes(lambda: layer(x).square().sum().backward())
    ref(x).square().sum().backward()
    assert shapes[0] != [160, 96], shapes  # the forward took F.linear while autograd recorded
    torch.testing.assert_close(layer.weight.grad, ref.weight.grad)
    torch.testing.assert_close(layer.bias.grad, ref.bias.grad)


def test_only_plain_linears_of_a_cpu_model_are_switched():
    class Custom(torch.nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) * 2

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), Custom(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    assert use_small_batch_linear(model) == 2
    assert "forward" not in vars(model[1])  # a subclass keeps its own forward (LoRA, quantized layers)
    x = torch.randn(8, 4)
    with torch.no_grad():
        torch.testing.assert_close(model[1](x), torch.nn.functional.linear(x, model[1].weight, model[1].bias) * 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_gpu_model_is_left_alone():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4)).cuda()
    assert use_small_batch_linear(model) == 0


def test_a_whole_model_gives_the_same_logits_and_greedy_text():
    tok = make_tokenizer("smollm2")
    model = tiny_model(tok, tie_word_embeddings=False, initializer_range=0.2).eval()
    ref = copy.deepcopy(model)
    n_linear = sum(type(m) is torch.nn.Linear for m in model.modules())
    assert use_small_batch_linear(model) == n_linear > 0
    ids = tok(["You are in the middle of a room. Looking quickly around you, you see a cabinet 1."] * 2,
              return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits, atol=1e-4, rtol=1e-4)
        kw = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": tok.pad_token_id}
        assert model.generate(ids, **kw).tolist() == ref.generate(ids, **kw).tolist()
