"""The CPU plan's speed levers on tiny models: per-example attention, bf16 frozen weights, fused head loss.

Each lever must compute what the plain path computes (loss, gradients, generations), and the planner must
choose it only where it applies (bf16 weights on CPUs with bf16 units, never on the GPU path).
"""

from __future__ import annotations

import torch
from tiny import make_tokenizer, tiny_model
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from data_prep.render import IGNORE_INDEX, render_example
from train import head_loss, planner
from train.cpu_speed import (
    SEGMENT_ATTENTION,
    FrozenWeightsDtype,
    attention_for,
    cast_frozen_weights,
    register_segment_attention,
    restore_weights,
    segment_bounds,
)

CHATS = [
    [{"role": "user", "content": "Hi there, how are you today?"}, {"role": "assistant", "content": "Fine, thanks!"}],
    [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "Four."},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "Six, of course."},
    ],
    [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Orange, like dusk."}],
]


def _examples(tok):
    return [{"input_ids": (ex := render_example(tok, c)).input_ids, "labels": ex.labels} for c in CHATS]


def _noisy(model, seed=0):
    """Random weights large enough that attention and the head matter."""
    torch.manual_seed(seed)
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    return model


# ---------------------------------------------------------------- planner


def test_cpu_plan_with_bf16_units_stores_frozen_weights_in_bf16():
    p = planner.plan(planner.Hardware("cpu", bf16=True), 0.135, 384)
    assert (p.precision, p.base_weights, p.attention, p.head_loss) == ("bf16", "bf16", SEGMENT_ATTENTION, "fused")


def test_cpu_plan_without_bf16_units_keeps_fp32_weights():
    p = planner.plan(planner.Hardware("cpu", bf16=False), 0.135, 384)
    assert (p.precision, p.base_weights, p.attention, p.head_loss) == ("fp32", "fp32", SEGMENT_ATTENTION, "fused")


def test_explicit_settings_turn_bf16_frozen_weights_off():
    cpu = planner.Hardware("cpu", bf16=True)
    assert planner.with_explicit(planner.plan(cpu, 0.135, 384), {"bf16": False}).base_weights == "fp32"
    as_asked = planner.with_model_dtype(planner.plan(cpu, 0.135, 384), "float32", cpu, {})
    assert (as_asked.precision, as_asked.base_weights) == ("bf16", "fp32")  # fp32 weights, as the config says


def test_gpu_plans_use_none_of_the_cpu_levers():
    p = planner.plan(planner.Hardware("NVIDIA A100", 40.0, bf16=True), 0.5, 1024)
    assert (p.base_weights, p.attention, p.head_loss) == ("", "", "trl")


def test_segment_attention_only_for_flattened_rows_and_never_over_the_config():
    assert attention_for(SEGMENT_ATTENTION, "padding_free", None) == SEGMENT_ATTENTION
    assert attention_for(SEGMENT_ATTENTION, "packing", None) == SEGMENT_ATTENTION
    assert attention_for(SEGMENT_ATTENTION, "padded", None) is None
    assert attention_for(SEGMENT_ATTENTION, "padding_free", "eager") == "eager"
    assert attention_for("", "padding_free", None) is None


# ---------------------------------------------------------------- per-example attention


def test_segment_bounds_of_padding_free_rows_only():
    assert segment_bounds(torch.tensor([[0, 1, 2, 3, 0, 1, 2, 0]])) == [0, 4, 7, 8]
    assert segment_bounds(torch.arange(5)[None]) == [0, 5]
    assert segment_bounds(torch.tensor([[1, 1, 0, 1, 2]])) is None  # generate's left padding: keep the mask
    assert segment_bounds(torch.tensor([[0, 1, 3, 4]])) is None


def test_segment_attention_generates_what_sdpa_generates():
    """Eval paths (left-padded batch, KV cache, single prompt) fall back to sdpa with its mask."""
    tok = make_tokenizer("smollm2")
    tok.padding_side = "left"
    prompts = [tok.apply_chat_template(c[:1], tokenize=False, add_generation_prompt=True) for c in CHATS[:2]]
    outs = []
    for attn in ("sdpa", register_segment_attention()):
        model = _noisy(tiny_model(tok, attn_implementation=attn)).eval()
        for batch in (prompts, prompts[:1]):
            enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                outs.append(model.generate(**enc, max_new_tokens=6, do_sample=False))
    assert all(torch.equal(a, b) for a, b in zip(outs[:2], outs[2:], strict=True))


# ---------------------------------------------------------------- fused head loss


def _flat(tok):
    return DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(_examples(tok))


def _frozen_head_model(tok, attn="sdpa"):
    model = _noisy(tiny_model(tok, attn_implementation=attn)).train()
    model.get_output_embeddings().weight.requires_grad_(False)  # tied: the embeddings freeze with it
    return model


def _grads(model):
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_fused_head_gives_the_loss_gradients_and_metrics_of_the_plain_head(monkeypatch):
    monkeypatch.setattr(head_loss, "CHUNK_ROWS", 4)  # several chunks, the last one partial
    tok = make_tokenizer("smollm2")
    batch = _flat(tok)
    model = _frozen_head_model(tok)
    ref = model(**batch, use_cache=False)
    ref.loss.backward()
    ref_grads = _grads(model)
    model.zero_grad()

    assert head_loss.install(model)
    out = model(**batch, use_cache=False)
    out.loss.backward()
    assert out.logits is None
    assert torch.allclose(out.loss, ref.loss, rtol=1e-5), (out.loss.item(), ref.loss.item())
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(_grads(model), ref_grads, strict=True))

    logits, labels = ref.logits[0, :-1].detach(), batch["labels"][0, 1:]
    keep = labels != IGNORE_INDEX
    log_p = logits[keep].log_softmax(-1)
    assert int(out.num_valid_tokens) == int(keep.sum()) > 4
    assert int(out.num_correct_tokens) == int((logits[keep].argmax(-1) == labels[keep]).sum())
    assert torch.allclose(out.entropy_sum, -(log_p.exp() * log_p).sum(), rtol=1e-4)


def test_fused_head_divides_by_the_trainers_token_count():
    tok = make_tokenizer("smollm2")
    batch = _flat(tok)
    model = _frozen_head_model(tok)
    head_loss.install(model)
    mean = model(**batch).loss
    n = int((batch["labels"][0, 1:] != IGNORE_INDEX).sum())
    halved = model(**batch, num_items_in_batch=torch.tensor(2 * n)).loss
    assert torch.allclose(halved, mean / 2, rtol=1e-5)


def test_fused_head_is_refused_for_a_trainable_head():
    tok = make_tokenizer("smollm2")
    model = tiny_model(tok)  # tied embeddings that train: the head needs its own gradient
    assert "trains" in head_loss.supported(model)
    assert not head_loss.install(model)
    assert model(**_flat(tok)).logits is not None  # the plain forward is left alone


def test_fused_head_under_bf16_autocast_stays_close_to_the_plain_head():
    tok = make_tokenizer("smollm2")
    batch = _flat(tok)
    model = _frozen_head_model(tok)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = model(**batch, use_cache=False).loss
        head_loss.install(model)
        fused = model(**batch, use_cache=False).loss
    assert fused.dtype == torch.float32
    assert abs(fused.item() - ref.item()) < 0.02 * ref.item()


# ---------------------------------------------------------------- bf16 frozen weights


def _lora(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))


def test_only_frozen_linear_weights_go_to_bf16_and_come_back():
    tok = make_tokenizer("smollm2")
    model = _lora(tiny_model(tok))
    layers = cast_frozen_weights(model, torch.bfloat16)
    assert len(layers) == 2 * 7  # q k v o gate up down in each of the 2 layers
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert all(d == torch.bfloat16 for n, d in dtypes.items() if "base_layer" in n)
    assert all(d == torch.float32 for n, d in dtypes.items() if "lora_" in n or "norm" in n or "embed" in n)
    assert model.get_output_embeddings().weight.dtype == torch.float32
    restore_weights(layers)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_short_and_long_examples_attend_alike(monkeypatch):
    """The two-matmul path (short examples) and SDPA's flash kernel (long ones) agree, GQA and bf16 included."""
    import train.cpu_speed as cs

    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 40, 16), torch.randn(1, 2, 40, 16), torch.randn(1, 2, 40, 16)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 2, True
    pos = torch.cat([torch.arange(25), torch.arange(15)])[None]
    short, _ = cs.sdpa_segments_forward(module, q, k, v, None, scaling=0.25, position_ids=pos)
    monkeypatch.setattr(cs, "MAX_SCORES", 0)
    long, _ = cs.sdpa_segments_forward(module, q, k, v, None, scaling=0.25, position_ids=pos)
    assert short.shape == long.shape == (1, 40, 4, 16)
    assert torch.allclose(short, long, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = cs.causal_attention(q[:, :, :25], k[:, :, :25], v[:, :, :25].bfloat16(), 0.25)
    assert bf16.dtype == torch.bfloat16 and torch.allclose(bf16.float(), short[:, :25], atol=3e-2)


def test_attention_with_a_sliding_window_keeps_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    import train.cpu_speed as cs

    torch.manual_seed(0)
    q, k, v = torch.randn(1, 2, 12, 8), torch.randn(1, 2, 12, 8), torch.randn(1, 2, 12, 8)
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = 1, True
    pos = torch.cat([torch.arange(6), torch.arange(6)])[None]
    out, _ = cs.sdpa_segments_forward(module, q, k, v, None, scaling=0.3, position_ids=pos, sliding_window=4)
    plain, _ = sdpa_attention_forward(module, q, k, v, None, scaling=0.3)
    split, _ = cs.sdpa_segments_forward(module, q, k, v, None, scaling=0.3, position_ids=pos)
    assert torch.equal(out, plain) and not torch.allclose(split, plain)


def test_bf16_frozen_weights_compute_what_bf16_autocast_computes():
    """Autocast rounds each fp32 weight to bf16 per matmul; storing them rounded gives the same numbers."""
    tok = make_tokenizer("smollm2")
    model = _lora(_noisy(tiny_model(tok))).train()
    batch = _flat(tok)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        before = model(**batch, use_cache=False).logits
        cast_frozen_weights(model, torch.bfloat16)
        after = model(**batch, use_cache=False).logits
    assert torch.equal(before, after)


def test_a_training_run_with_every_cpu_lever_learns(tmp_path):
    """bf16 autocast + bf16 frozen weights + per-example attention + fused head: loss goes down."""
    from peft import LoraConfig, get_peft_model
    from transformers import TrainerCallback
    from trl import SFTConfig

    from train.data import tokenize_rows
    from train.metrics import Counters
    from train.sft_trainer import RecipeTrainer

    tok = make_tokenizer("smollm2")
    ds, _ = tokenize_rows([{"messages": c} for c in CHATS] * 2, tok, 512)
    base = tiny_model(tok, attn_implementation=register_segment_attention(), initializer_range=0.2).train()
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    seen: list[tuple[torch.dtype, torch.dtype, bool]] = []

    class Dtypes(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            up = model.base_model.model.model.layers[0].mlp.up_proj
            seen.append((up.base_layer.weight.dtype, up.lora_A.default.weight.dtype, up.cast_input_dtype_enabled))

    frozen = FrozenWeightsDtype(torch.bfloat16)
    args = SFTConfig(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=True, max_length=None, padding_free=True,
        per_device_train_batch_size=3, learning_rate=1e-2, max_steps=12, logging_steps=1, save_strategy="no",
        disable_tqdm=True, seed=0, lr_scheduler_type="constant",
    )
    trainer = RecipeTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, counters=Counters(),
                            callbacks=[frozen, Dtypes()], fused_head=True)
    assert trainer.head_loss == "fused"
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    losses = [e["loss"] for e in logs]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    assert all("mean_token_accuracy" in e and "entropy" in e for e in logs)
    assert set(seen) == {(torch.bfloat16, torch.float32, False)}  # frozen bf16, LoRA fp32, no input round trip
    assert frozen.cast_layers == 2 * 7
    assert all(p.dtype == torch.float32 for p in model.parameters())  # back to fp32 after train()
    assert model.base_model.model.model.layers[0].mlp.up_proj.cast_input_dtype_enabled


def test_another_loss_type_keeps_its_own_head(tmp_path):
    from peft import LoraConfig, get_peft_model
    from trl import SFTConfig

    from train.data import tokenize_rows
    from train.metrics import Counters
    from train.sft_trainer import RecipeTrainer

    tok = make_tokenizer("smollm2")
    ds, _ = tokenize_rows([{"messages": c} for c in CHATS], tok, 512)
    model = get_peft_model(tiny_model(tok), LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    args = SFTConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, max_length=None, padding_free=True,
                     loss_type="nll", max_steps=1, save_strategy="no", disable_tqdm=True)
    trainer = RecipeTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, counters=Counters(),
                            fused_head=True)
    assert trainer.head_loss == "nll"


def test_the_cached_bf16_head_follows_the_weight():
    """The per-step cast of a frozen head is cached, but never outlives a change or another tensor."""
    w = torch.randn(8, 4)
    first = head_loss._weight_as(w, torch.bfloat16)
    assert head_loss._weight_as(w, torch.bfloat16) is first
    w.mul_(2)  # in place: version counter moves
    assert torch.equal(head_loss._weight_as(w, torch.bfloat16), (w * 1).bfloat16())
    other = w * 3
    assert torch.equal(head_loss._weight_as(other, torch.bfloat16), other.bfloat16())
