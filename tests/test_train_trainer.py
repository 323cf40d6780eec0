"""The trainer on tiny random models: assistant-only labels, loss goes down, guards, adapter kinds."""

from __future__ import annotations

import pytest
import torch
from tiny import make_tokenizer, tiny_model

from data_prep.render import IGNORE_INDEX
from train.backend import BackendInfo, load_trainable
from train.config import LoraConfig, ModelConfig
from train.data import TrainDataError, check_trainable, tokenize_rows
from train.metrics import Counters
from train.sft_trainer import AllMaskedBatchError, RecipeTrainer

SYSTEM = "You are Mira, an airship pilot."
ROWS = [
    {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Where are we headed?"},
            {"role": "assistant", "content": "North, past the cloud reefs!"},
            {"role": "user", "content": "Is the storm dangerous?"},
            {"role": "assistant", "content": "Only if you forget to tie down."},
        ]
    },
    {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "What do you eat on board?"},
            {"role": "assistant", "content": "Hardtack and pickled fish, mostly."},
        ]
    },
    {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Can I steer?"},
            {"role": "assistant", "content": "Hands at ten and two, and do not sneeze."},
        ]
    },
]
PROMPT_TEXTS = [
    SYSTEM,
    "Where are we headed?",
    "Is the storm dangerous?",
    "What do you eat on board?",
    "Can I steer?",
]
REPLIES = [
    "North, past the cloud reefs!",
    "Only if you forget to tie down.",
    "Hardtack and pickled fish, mostly.",
    "Hands at ten and two, and do not sneeze.",
]


def _lora_model(tok, family="llama", r=8, init=0.02, **lora_kw):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    # A larger init range gives the random model enough signal for LoRA to move the loss within a few steps.
    model = tiny_model(tok, family=family, initializer_range=init).train()
    return get_peft_model(
        model,
        PeftLoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", task_type="CAUSAL_LM", **lora_kw),
    )


def _trainer(tmp_path, tok, dataset, counters=None, init=0.02, **sft):
    from trl import SFTConfig

    args = dict(
        output_dir=str(tmp_path / "ckpt"),
        report_to="none",
        use_cpu=True,
        max_length=None,
        padding_free=True,
        per_device_train_batch_size=3,
        learning_rate=1e-2,
        max_steps=4,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        lr_scheduler_type="constant",
    )
    args.update(sft)
    return RecipeTrainer(
        model=_lora_model(tok, init=init),
        args=SFTConfig(**args),
        train_dataset=dataset,
        processing_class=tok,
        counters=counters or Counters(),
    )


@pytest.mark.parametrize("template", ["smollm2", "qwen2_5", "llama3"])
def test_only_assistant_tokens_carry_labels_in_the_collated_batch(tmp_path, template):
    tok = make_tokenizer(template)
    ds, stats = tokenize_rows(ROWS, tok, max_length=512)
    assert stats.examples == 3 and 0 < stats.share < 0.6
    trainer = _trainer(tmp_path, tok, ds, shuffle_dataset=False)
    batch = next(iter(trainer.get_train_dataloader()))
    ids, labels, pos = batch["input_ids"][0], batch["labels"][0], batch["position_ids"][0]
    starts = [i for i, p in enumerate(pos.tolist()) if p == 0] + [len(pos)]
    seen_rows = []
    for a, b in zip(starts, starts[1:], strict=False):
        seq_ids, seq_labels = ids[a:b].tolist(), labels[a:b].tolist()
        row = next(i for i, r in enumerate(ds) if r["input_ids"] == seq_ids)  # order may be shuffled
        seen_rows.append(row)
        expected = ds[row]["labels"]
        for t, (tid, lab, exp) in enumerate(zip(seq_ids, seq_labels, expected, strict=True)):
            assert lab in (IGNORE_INDEX, tid), f"label at {t} is not the token itself"
            assert lab == exp or (t == 0 and lab == IGNORE_INDEX), f"mask changed at token {t}"
        trained = tok.decode([t for t, lab in zip(seq_ids, seq_labels, strict=True) if lab != IGNORE_INDEX])
        untrained = tok.decode([t for t, lab in zip(seq_ids, seq_labels, strict=True) if lab == IGNORE_INDEX])
        for reply in REPLIES:
            if reply in tok.decode(seq_ids):
                assert reply in trained and reply not in untrained
        for text in PROMPT_TEXTS:
            assert text not in trained
        assert tok.eos_token in trained  # the end-of-turn token is learned, so the model learns to stop
        assert "assistant" not in trained.replace(
            "Hardtack", ""
        )  # the assistant header is prompt, not target
    assert sorted(seen_rows) == [0, 1, 2]


def test_loss_decreases_and_tokens_are_counted(tmp_path):
    tok = make_tokenizer("smollm2")
    ds, stats = tokenize_rows(ROWS * 2, tok, max_length=512)
    counters = Counters()
    trainer = _trainer(
        tmp_path, tok, ds, counters=counters, init=0.2, max_steps=12, per_device_train_batch_size=2
    )
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses  # e.g. 12.2 -> 5.9
    # 12 steps x 2 rows = 4 passes over the 6 rows.
    assert counters.tokens == 4 * stats.tokens
    assert counters.supervised <= 4 * stats.supervised and counters.supervised > 0.9 * 4 * stats.supervised


def test_a_batch_with_every_label_masked_is_refused(tmp_path):
    from datasets import Dataset

    tok = make_tokenizer("smollm2")
    ds, _ = tokenize_rows(ROWS, tok, max_length=512)
    masked = Dataset.from_dict(
        {"input_ids": ds["input_ids"], "labels": [[IGNORE_INDEX] * len(x) for x in ds["input_ids"]]}
    )
    trainer = _trainer(tmp_path, tok, masked)
    with pytest.raises(AllMaskedBatchError, match="every label of this batch is masked"):
        trainer.train()


def test_rows_without_assistant_tokens_left_are_dropped_then_refused():
    tok = make_tokenizer("smollm2")
    ds, stats = tokenize_rows(ROWS, tok, max_length=12)  # truncation leaves only the system prompt
    assert stats.examples == 0 and len(stats.dropped_unsupervised) == 3
    with pytest.raises(TrainDataError, match="no example has an assistant token"):
        check_trainable(stats, "train.jsonl")


def test_loraplus_gives_b_matrices_a_higher_learning_rate():
    from trl import SFTConfig

    from train.optim import loraplus_optimizer

    tok = make_tokenizer("smollm2")
    model = _lora_model(tok)
    args = SFTConfig(output_dir="unused", learning_rate=1e-4, report_to="none", use_cpu=True)
    opt = loraplus_optimizer(model, args, ratio=16)
    b_params = {id(p) for n, p in model.named_parameters() if "lora_B" in n}
    a_params = {id(p) for n, p in model.named_parameters() if "lora_A" in n}
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert b_params and a_params
    assert all(lr_of[i] == pytest.approx(16e-4) for i in b_params)
    assert all(lr_of[i] == pytest.approx(1e-4) for i in a_params)
    with pytest.raises(ValueError, match=">= 1"):
        loraplus_optimizer(model, args, ratio=0.5)


@pytest.mark.parametrize("kind", ["lora", "dora", "rslora"])
def test_hf_backend_builds_each_adapter_kind(tiny_llama_dir, kind):
    tok = make_tokenizer("smollm2")
    lora = LoraConfig(r=4, alpha=8, dropout=0.0, use_dora=kind == "dora", use_rslora=kind == "rslora")
    model, _ = load_trainable(
        BackendInfo("hf", False, "test"),
        str(tiny_llama_dir),
        ModelConfig(),
        lora,
        precision="fp32",
        gradient_checkpointing=False,
        seed=0,
        tokenizer=tok,
    )
    cfg = model.peft_config["default"]
    assert (cfg.use_dora, cfg.use_rslora) == (kind == "dora", kind == "rslora")
    targets = {t.split(".")[-1] for t in cfg.target_modules}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= targets
    assert "lm_head" not in targets
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    x = torch.tensor([[1, 2, 3]])
    with torch.no_grad(), model.disable_adapter():
        base = model(input_ids=x).logits
    with torch.no_grad():
        fresh = model(input_ids=x).logits
    assert torch.allclose(base, fresh, atol=1e-5)  # a fresh adapter is the identity: base eval loss is exact


def test_qlora_trains_in_4bit_on_cpu(tiny_llama_dir):
    """QLoRA on the hf backend: nf4 base weights (bitsandbytes CPU kernels), trainable LoRA, loss goes down."""
    from bitsandbytes.nn import Linear4bit

    tok = make_tokenizer("smollm2")
    model, _ = load_trainable(
        BackendInfo("hf", False, "test"),
        str(tiny_llama_dir),
        ModelConfig(),
        LoraConfig(method="qlora", r=8, alpha=16, dropout=0.0),
        precision="fp32",
        gradient_checkpointing=False,
        seed=0,
        tokenizer=tok,
    )
    assert any(isinstance(m, Linear4bit) for m in model.modules())
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=5e-3)
    ids = torch.tensor([tok("The jasmine tea is ready. " * 4)["input_ids"]])
    losses = []
    for _ in range(6):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05
