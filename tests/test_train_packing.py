"""Padding-free / packed batches keep sequences isolated: same loss and gradients as one padded batch.

TRL's collator flattens a batch into one row and resets ``position_ids`` per sequence; transformers builds a
block-diagonal causal mask from them for sdpa and eager attention. If a sequence could see its neighbour, the
packed loss would differ from the padded one.
"""

from __future__ import annotations

import pytest
import torch
from tiny import make_tokenizer, tiny_model
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from data_prep.render import IGNORE_INDEX, render_example
from train.cpu_speed import SEGMENT_ATTENTION, register_segment_attention

register_segment_attention()  # the CPU plan's per-example attention (train/cpu_speed.py)

CHATS = [
    [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Ahoy, matey! What brings ye here?"},
    ],
    [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "Four."},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "Six, of course."},
    ],
    [
        {"role": "user", "content": "Name a colour of the sky at dusk, and say why."},
        {"role": "assistant", "content": "Orange: sunlight crosses more air and the blue scatters away."},
    ],
]


def _examples(tok):
    out = []
    for chat in CHATS:
        ex = render_example(tok, chat)
        out.append({"input_ids": ex.input_ids, "labels": ex.labels})
    return out


def _loss_sum(model, batch):
    """Sum of next-token losses over supervised positions (and their count).

    ``use_cache=False`` as in SFTTrainer.compute_loss: transformers detects packed rows from ``position_ids``
    only when no KV cache is passed.
    """
    out = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False)
    logits = out.logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    lsum = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return lsum, int((labels != -100).sum())


@pytest.mark.parametrize("attn", ["sdpa", "eager", SEGMENT_ATTENTION])
def test_padding_free_loss_equals_padded_loss(attn):
    tok = make_tokenizer("smollm2")
    model = tiny_model(tok, family="llama", attn_implementation=attn).train()
    torch.manual_seed(0)
    for p in model.parameters():  # make attention non-trivial: random weights, no dropout
        p.data.normal_(0, 0.2)
    examples = _examples(tok)

    padded = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(examples)
    flat = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(examples)
    assert flat["input_ids"].shape[0] == 1 and "attention_mask" not in flat
    assert flat["input_ids"].shape[1] == sum(len(e["input_ids"]) for e in examples)  # no pad token at all

    l_pad, n_pad = _loss_sum(model, padded)
    l_flat, n_flat = _loss_sum(model, flat)
    assert n_pad == n_flat > 0
    assert torch.allclose(l_pad, l_flat, rtol=1e-5, atol=1e-5), (l_pad.item(), l_flat.item())

    # And each sequence alone gives the same sum: nothing leaks between neighbours.
    alone = sum(
        _loss_sum(model, DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)([e]))[0]
        for e in examples
    )
    assert torch.allclose(alone, l_flat, rtol=1e-5, atol=1e-5)

    # Gradients agree too.
    model.zero_grad()
    (l_pad / n_pad).backward()
    g_pad = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    (l_flat / n_flat).backward()
    g_flat = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(g_pad, g_flat, strict=True))


@pytest.mark.parametrize("attn", ["sdpa", SEGMENT_ATTENTION])
def test_without_position_reset_sequences_leak(attn):
    """The check above can fail: flattening without position resets lets sequences attend to each other."""
    tok = make_tokenizer("smollm2")
    model = tiny_model(tok, family="llama", attn_implementation=attn).train()
    torch.manual_seed(0)
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    examples = _examples(tok)
    padded = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(examples)
    flat = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(examples)
    leaky = {"input_ids": flat["input_ids"], "labels": flat["labels"]}  # plain causal mask over the whole row
    l_pad, _ = _loss_sum(model, padded)
    l_leak, _ = _loss_sum(model, leaky)
    assert not torch.allclose(l_pad, l_leak, rtol=1e-3, atol=1e-3)


def test_bfd_packed_dataset_matches_padded_loss():
    """TRL's best-fit-decreasing packing (the ``packing`` batching mode) gives the same loss as padding."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    tok = make_tokenizer("smollm2")
    model = tiny_model(tok, family="llama").train()
    torch.manual_seed(1)
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    examples = _examples(tok)
    ds = Dataset.from_list(examples)
    packed = pack_dataset(ds, seq_length=max(len(e["input_ids"]) for e in examples) * 2, strategy="bfd")
    assert len(packed) < len(examples)  # something was actually packed together
    collate = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)
    total = torch.tensor(0.0)
    for row in packed:
        total = total + _loss_sum(model, collate([row]))[0]
    l_pad, _ = _loss_sum(model, DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(examples))
    assert torch.allclose(total, l_pad, rtol=1e-5, atol=1e-5)
