"""The steps of one training run, in the order the scenario scripts call them:

- :func:`plan_run`: pick the model (offline fallback) and plan the hardware;
- :func:`open_run_dir`: make (or reopen, to resume) the run folder and save the resolved config;
- :func:`load_data`: data_prep into ``run/data``, tokenized with assistant-only labels;
- :func:`build_trainer`: the LoRA model on the chosen backend, ``SFTConfig`` (our defaults < hardware plan <
  the ``sft`` mapping), callbacks and optimizer;
- :func:`train_and_save`: the base model's held-out loss, training (from the latest checkpoint when resuming),
  then the adapter with its tokenizer and chat template, ``metrics.json``, ``loss.png`` and sample replies.

Import this module only after :func:`train.backend.activate` (it imports transformers and TRL).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from trl import SFTConfig, SFTTrainer

from data_prep import registry
from data_prep.io import write_text_atomic
from train import planner
from train.backend import BackendInfo, attention_backend, bnb_available, load_model
from train.callbacks import CountersCheckpoint, GracefulInterrupt
from train.config import ConfigError, TrainConfig, save_config, validate_sft_keys
from train.data import IGNORE, DataError, check_trainable, prompt_and_reference, read_jsonl, tokenize_rows
from train.metrics import (
    Counters,
    device_name,
    last_logged,
    peak_ram_mb,
    peak_vram_mb,
    versions,
    write_metrics,
)
from train.plots import plot_loss


class _DropKnownSafeWarning(logging.Filter):
    """TRL warns that padding-free needs flash-attention. With transformers >= 5, sdpa/eager build a
    block-diagonal causal mask from the reset position_ids, so sequences stay isolated
    (tests/test_train_packing.py
    checks packed loss == unpacked loss)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (
            "Padding-free training is enabled, but the attention implementation" in msg
            or "You are using packing, but the attention implementation" in msg
        )


logging.getLogger("trl.trainer.sft_trainer").addFilter(_DropKnownSafeWarning())


class PlanError(RuntimeError):
    """The hardware plan does not fit; the message lists what to change."""


class AllMaskedBatchError(RuntimeError):
    """A training batch had no supervised token."""


@dataclass
class RunResult:
    run_dir: Path
    adapter_dir: Path | None
    metrics: dict[str, Any]
    interrupted: bool = False
    samples: list[dict[str, str]] = field(default_factory=list)


class RecipeTrainer(SFTTrainer):
    """SFTTrainer that counts trained/supervised tokens and refuses batches whose labels are all masked."""

    def __init__(self, *args: Any, counters: Counters, **kwargs: Any) -> None:
        self.counters = counters
        super().__init__(*args, **kwargs)

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        if model.training:
            labels = inputs["labels"]
            supervised = int((labels[..., 1:] != IGNORE).sum())
            if supervised == 0:
                raise AllMaskedBatchError(
                    f"step {self.state.global_step}: every label of this batch is masked (-100), so it "
                    "trains nothing; check the data's assistant turns and max_seq_length"
                )
            if "attention_mask" in inputs:
                tokens = int(inputs["attention_mask"].sum())
            else:  # padding-free: one flattened row
                tokens = int(inputs["input_ids"].numel())
            self.counters.tokens += tokens
            self.counters.supervised += supervised
        return super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )


# ---------------------------------------------------------------- model and run folder


def pick_model(cfg: TrainConfig, *, cuda: bool, explicit: bool, console: Console) -> str:
    """The model to train: the configured one, or the offline fallback without a GPU or network."""
    name = cfg.model.name
    local = Path(name).expanduser().exists()
    spec = registry.lookup(name)
    packaged = spec is not None and spec.gguf_package is not None
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if explicit or local or packaged or (cuda and not offline):
        return name
    why = "no network (HF_HUB_OFFLINE=1)" if offline else "no GPU"
    console.print(
        f"[yellow]{why}: training {cfg.model.offline_fallback} instead of {name}[/yellow] "
        f"(pass --model {name} to insist)"
    )
    return cfg.model.offline_fallback


def params_billions(name: str, source: str) -> float:
    """Model size for the planner: the registry's figure, else estimated from config.json."""
    spec = registry.lookup(name)
    if spec is not None and spec.params_b:
        return spec.params_b
    cfg_path = Path(source) / "config.json"
    if cfg_path.is_file():
        c = json.loads(cfg_path.read_text())
        h, layers = c.get("hidden_size", 0), c.get("num_hidden_layers", 0)
        inter, vocab = c.get("intermediate_size", 4 * h), c.get("vocab_size", 0)
        return (layers * (4 * h * h + 3 * h * inter) + vocab * h) / 1e9
    return 7.0  # unknown Hub model: plan conservatively


def latest_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest *complete* checkpoint: a kill during a save leaves a folder without trainer_state.json."""
    if not ckpt_dir.is_dir():
        return None
    found = []
    for d in ckpt_dir.glob("checkpoint-*"):
        if d.name.split("-")[-1].isdigit() and (d / "trainer_state.json").is_file():
            found.append((int(d.name.split("-")[-1]), d))
    return str(max(found)[1]) if found else None


def _distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def resolve_run_dir(cfg: TrainConfig, resume: bool) -> Path:
    """runs/<scenario>-<YYYYmmdd-HHMMSS>, the configured folder, or (resume) the newest checkpointed run."""
    if cfg.run.run_dir:
        return Path(cfg.run.run_dir)
    if resume:
        runs = sorted(
            p.parents[2]
            for p in Path(cfg.run.runs_dir).glob(
                f"{cfg.run.scenario}-*/checkpoints/checkpoint-*/trainer_state.json"
            )
        )
        if not runs:
            raise ConfigError(
                f"--resume: no checkpoint under {cfg.run.runs_dir}/{cfg.run.scenario}-*/; "
                "pass --run-dir runs/<run> or --config runs/<run>/config.yaml"
            )
        return runs[-1]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if _distributed():  # every rank must agree on the folder
        from accelerate import PartialState
        from accelerate.utils import broadcast_object_list

        PartialState()
        stamp = broadcast_object_list([stamp])[0]
    return Path(cfg.run.runs_dir) / f"{cfg.run.scenario}-{stamp}"


# ---------------------------------------------------------------- data


def prepare_data(
    cfg: TrainConfig, run_dir: Path, model_name: str, reuse: bool, console: Console | None = None
) -> Path:
    """data_prep on the raw inputs into run/data (kept as is when resuming); its stats go to ``console``."""
    out = run_dir / "data"
    if reuse and (out / "train.jsonl").is_file():
        return out
    if not cfg.data.inputs and not cfg.data.dataset_info:
        raise ConfigError("no training data: set data.inputs (--data FILE) or data.dataset_info")
    from data_prep.pipeline import PrepConfig, prepare

    d = cfg.data
    root = Path(__file__).resolve().parents[1]

    def locate(p: str) -> str:  # bundled data paths also work from outside the repository
        return p if Path(p).exists() or not (root / p).exists() else str(root / p)

    kwargs: dict[str, Any] = dict(
        inputs=[locate(p) for p in d.inputs],
        out=str(out),
        format=d.format,
        tokenizer=model_name,
        max_length=cfg.model.max_seq_length,
        overlong=d.overlong,
        test_size=d.test_size,
        seed=int(cfg.sft.get("seed", 42)),
        system_prompt=d.system_prompt,
    )
    for key in ("question_field", "answer_field", "dataset_info", "dataset"):
        if getattr(d, key) is not None:
            kwargs[key] = locate(getattr(d, key)) if key == "dataset_info" else getattr(d, key)
    stats = prepare(PrepConfig(**kwargs))
    if console is not None:
        from data_prep.stats import print_summary

        print_summary(stats, str(out), console)
    return out


# ---------------------------------------------------------------- SFTConfig


def choose_batching(cfg: TrainConfig, batch_size: int) -> str:
    if cfg.run.batching != "auto":
        if cfg.run.batching not in ("padding_free", "packing", "padded"):
            raise ConfigError(
                f"run.batching must be auto, padding_free, packing or padded, not '{cfg.run.batching}'"
            )
        return cfg.run.batching
    if batch_size == 1:
        return "padded"  # one row per step: nothing to pad or flatten
    # padding-free: no pad tokens at all; sequences stay isolated through position_ids (flash-attn varlen on
    # GPU, a block-diagonal mask built by transformers from the position_ids with sdpa/eager on CPU).
    return "padding_free"


def build_sft_config(
    cfg: TrainConfig, plan: planner.Plan, run_dir: Path, batching: str, has_eval: bool, steps_hint: int
) -> SFTConfig:
    """Our defaults, overridden by the plan's decisions, overridden by every explicit ``sft`` key."""
    eval_every = max(1, steps_hint // 5)
    base: dict[str, Any] = {
        "output_dir": str(run_dir / "checkpoints"),
        "report_to": "none",  # TensorBoard is added as a callback writing to run/logs
        "logging_steps": max(1, min(10, steps_hint // 20)),
        "save_strategy": "steps",
        "save_steps": eval_every,
        "save_total_limit": 2,
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": eval_every,
        "per_device_eval_batch_size": plan.batch_size,
        "max_length": None,  # rows are already rendered and truncated by data_prep
        "packing": batching == "packing",
        "padding_free": batching == "padding_free",
        "dataset_num_proc": None,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.05,
        "weight_decay": 0.01,
        "seed": 42,
        "dataloader_num_workers": 0,
        "save_only_model": False,
    }
    base.update(plan.sft_fields())
    if batching == "packing":
        base["max_length"] = plan.seq_len
        base["packing_strategy"] = "bfd"
    if cfg.run.early_stopping_patience:
        base.update(load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False)
    merged = {**base, **cfg.sft}
    if merged.get("padding_free") and not merged.get("packing"):
        merged["max_length"] = None  # TRL enforces no max_length in padding-free mode; data_prep truncated
    validate_sft_keys(cfg.sft)
    return SFTConfig(**merged)


# ---------------------------------------------------------------- generation


@torch.no_grad()
def generate_reply(model: Any, tokenizer: Any, messages: list[dict[str, Any]], max_new_tokens: int) -> str:
    from data_prep.render import render_prompt

    ids = torch.tensor([render_prompt(tokenizer, messages)], device=model.device)
    was_training = model.training
    model.eval()
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        repetition_penalty=1.1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if was_training:
        model.train()
    reply = out[0, ids.shape[1] :]
    return tokenizer.decode(reply, skip_special_tokens=True, clean_up_tokenization_spaces=False).strip()


def sample_generations(
    model: Any, tokenizer: Any, rows: list[dict[str, Any]], n: int, max_new_tokens: int, *, with_base: bool
) -> list[dict[str, str]]:
    """Replies to the first ``n`` held-out prompts (and the base model's, adapter off, when asked)."""
    samples = []
    for row in rows:
        if len(samples) >= n:
            break
        pr = prompt_and_reference(row)
        if pr is None or not pr[0]:
            continue
        prompt, reference = pr
        entry = {
            "prompt": prompt[-1]["content"],
            "reference": reference,
            "after": generate_reply(model, tokenizer, prompt, max_new_tokens),
        }
        if with_base:
            with model.disable_adapter():
                entry["before"] = generate_reply(model, tokenizer, prompt, max_new_tokens)
        samples.append(entry)
    return samples


def print_samples(console: Console, samples: list[dict[str, str]]) -> None:
    for i, s in enumerate(samples, 1):
        console.rule(f"sample {i}")
        console.print(f"[bold]prompt:[/bold] {s['prompt']}")
        if "before" in s:
            console.print(f"[bold]before:[/bold] {s['before']}")
        console.print(f"[bold]after:[/bold]  {s['after']}")
        console.print(f"[dim]reference: {s['reference']}[/dim]")


# ---------------------------------------------------------------- the run


@dataclass
class Session:
    """What the steps of one run share: the config, the backend, the chosen model and its hardware plan."""

    cfg: TrainConfig
    info: BackendInfo
    console: Console
    model_name: str
    source: str
    params_b: float
    plan: planner.Plan
    main_proc: bool = True
    run_dir: Path = Path(".")
    resume: bool = False
    last_ckpt: str | None = None
    t_start: float = field(default_factory=time.perf_counter)


@dataclass
class Data:
    """The prepared data of a run, tokenized with assistant-only labels."""

    dir: Path
    tokenizer: Any
    train_ds: Any
    eval_ds: Any
    train_stats: Any
    eval_stats: Any
    test_rows: list[dict[str, Any]]


@dataclass
class Training:
    trainer: RecipeTrainer
    counters: Counters
    interrupt: GracefulInterrupt
    batching: str  # what we asked SFTConfig for
    ran: dict[str, Any]  # what the built trainer runs (effective_batching)


def plan_run(
    cfg: TrainConfig, info: BackendInfo, *, explicit_model: bool = False, console: Console | None = None
) -> Session:
    """Pick the model (the offline fallback without a GPU or network) and plan the hardware; print the plan.

    Raises :class:`PlanError` with what to change when the plan cannot fit (unless ``run.force``).
    """
    console = console or Console()
    main_proc = int(os.environ.get("RANK", "0")) == 0
    if cfg.run.threads and not info.cuda:
        torch.set_num_threads(cfg.run.threads)
    validate_sft_keys(cfg.sft)
    model_name = pick_model(cfg, cuda=info.cuda, explicit=explicit_model, console=console)
    cfg.model.name = model_name
    source = registry.resolve_source(model_name)
    params_b = params_billions(model_name, source)
    hw = planner.detect_hardware()
    plan = planner.plan(
        hw, params_b, cfg.model.max_seq_length, cfg.lora.method, bnb_available=bnb_available()
    )
    cfg.lora.method = plan.method
    plan = planner.with_explicit(plan, cfg.sft)
    try:
        plan = planner.with_model_dtype(plan, cfg.model.dtype, hw, cfg.sft)
    except planner.DtypeConflict as e:
        raise PlanError(str(e)) from None
    if main_proc:
        console.print(planner.render(plan, params_b, model_name))
        console.print(f"backend: [bold]{info.name}[/bold] ({info.reason})")
    if not plan.fits and not cfg.run.force:
        raise PlanError(
            f"this run does not fit on {hw.device}: " + "; ".join(plan.advice) + " (or --run.force true to try anyway)"
        )
    return Session(cfg, info, console, model_name, source, params_b, plan, main_proc=main_proc)


def open_run_dir(s: Session, *, resume: bool = False) -> Path:
    """Make (or, with ``resume``, reopen) the run folder and save the resolved config into it."""
    s.resume = resume
    s.run_dir = resolve_run_dir(s.cfg, resume)
    s.cfg.run.run_dir = str(s.run_dir)
    ckpt_dir = s.run_dir / "checkpoints"
    s.last_ckpt = latest_checkpoint(ckpt_dir) if resume else None
    if resume and s.last_ckpt is None:
        s.console.print(f"[yellow]--resume: no checkpoint in {ckpt_dir}; starting from step 0[/yellow]")
    if s.main_proc:
        s.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(s.cfg, s.run_dir / "config.yaml")
        s.console.print(f"run folder: {s.run_dir}")
    return s.run_dir


def load_data(s: Session) -> Data:
    """data_prep on the raw inputs into ``run/data`` (the main process prepares, the others wait), then
    tokenize with assistant-only labels. Refuses data with no supervised token."""
    from accelerate import PartialState

    cfg, plan = s.cfg, s.plan
    with PartialState().main_process_first():
        data_dir = prepare_data(
            cfg, s.run_dir, s.model_name, reuse=s.resume, console=s.console if s.main_proc else None
        )
    tokenizer = registry.load_tokenizer(s.model_name)
    train_rows = read_jsonl(data_dir / "train.jsonl")
    test_rows = read_jsonl(data_dir / "test.jsonl") if (data_dir / "test.jsonl").is_file() else []
    train_ds, train_stats = tokenize_rows(train_rows, tokenizer, plan.seq_len)
    check_trainable(train_stats, str(data_dir / "train.jsonl"))
    eval_rows = test_rows[: cfg.data.max_eval_examples] if cfg.data.max_eval_examples else test_rows
    eval_ds, eval_stats = tokenize_rows(eval_rows, tokenizer, plan.seq_len) if eval_rows else (None, None)
    if eval_ds is not None and len(eval_ds) == 0:
        eval_ds = None
    if s.main_proc:
        s.console.print(
            f"train: {train_stats.examples} examples, {train_stats.tokens} tokens, "
            f"trained-token share {train_stats.share:.1%} (assistant tokens only)"
            + (
                f"; {len(train_stats.dropped_unsupervised)} rows with no assistant token left dropped"
                if train_stats.dropped_unsupervised
                else ""
            )
        )
    return Data(data_dir, tokenizer, train_ds, eval_ds, train_stats, eval_stats, test_rows)


def build_trainer(s: Session, data: Data) -> Training:
    """The LoRA model on the chosen backend, ``SFTConfig`` (our defaults < hardware plan < ``sft``), callbacks
    (Ctrl-C checkpoint, token counters, TensorBoard, early stopping) and the optimizer (LoRA+ when asked)."""
    from accelerate import PartialState

    cfg, plan = s.cfg, s.plan
    seed = int(cfg.sft.get("seed", 42))
    torch.manual_seed(seed)
    weights = "fp32" if plan.use_cpu else plan.precision  # CPU bf16 is autocast over fp32 weights
    model, tokenizer = load_model(
        s.info,
        s.source,
        cfg.model,
        cfg.lora,
        precision=weights,
        gradient_checkpointing=plan.gradient_checkpointing,
        seed=seed,
        tokenizer=data.tokenizer,
        work_dir=s.run_dir,
    )
    data.tokenizer = tokenizer
    batching = choose_batching(cfg, plan.batch_size)
    per_step = plan.batch_size * plan.grad_accum * max(1, PartialState().num_processes)
    epochs = float(cfg.sft.get("num_train_epochs", 3))
    steps_hint = int(cfg.sft.get("max_steps", -1))
    if steps_hint <= 0:
        steps_hint = max(1, int(len(data.train_ds) * epochs / per_step))
    args = build_sft_config(cfg, plan, s.run_dir, batching, data.eval_ds is not None, steps_hint)

    counters = Counters.load(Path(s.last_ckpt)) if s.last_ckpt else Counters()
    interrupt = GracefulInterrupt()
    callbacks: list[Any] = [interrupt, CountersCheckpoint(counters)]
    if s.main_proc:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        tensorboard = TensorBoardCallback(SummaryWriter(log_dir=str(s.run_dir / "logs")))
        tensorboard.logging_dir = str(s.run_dir / "logs")  # where it reopens after train() (final eval)
        callbacks.append(tensorboard)
    if cfg.run.early_stopping_patience and data.eval_ds is not None:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.run.early_stopping_patience))
    optimizers: tuple[Any, Any] = (None, None)
    if cfg.lora.loraplus_lr_ratio:
        from train.optim import loraplus_optimizer

        optimizers = (loraplus_optimizer(model, args, cfg.lora.loraplus_lr_ratio), None)
    trainer = RecipeTrainer(
        model=model,
        args=args,
        train_dataset=data.train_ds,
        eval_dataset=data.eval_ds,
        processing_class=tokenizer,
        callbacks=callbacks,
        optimizers=optimizers,
        counters=counters,
    )
    ran = effective_batching(trainer.args)
    if ran["batching"] != batching and s.main_proc:
        s.console.print(
            f"[yellow]batching: {batching} was asked for, the trainer runs {ran['batching']} "
            f"(padding_free={ran['padding_free']}, packing={ran['packing']}, max_length={ran['max_length']})[/yellow]"
        )
    return Training(trainer, counters, interrupt, batching, ran)


def effective_batching(args: Any) -> dict[str, Any]:
    """The batching the built trainer will run, read from its args (Unsloth may have changed what we asked)."""
    padding_free, packing = bool(getattr(args, "padding_free", False)), bool(getattr(args, "packing", False))
    name = "packing" if packing else "padding_free" if padding_free else "padded"
    return {"batching": name, "padding_free": padding_free, "packing": packing, "max_length": args.max_length}


def train_and_save(s: Session, data: Data, t: Training) -> RunResult:
    """Measure the base model's held-out loss, train (resuming when asked), then save the adapter with its
    tokenizer and chat template, ``metrics.json``, ``loss.png`` and before/after sample replies."""
    base_eval_file = s.run_dir / "base_eval.json"
    base_eval_loss = None
    if base_eval_file.is_file():
        base_eval_loss = json.loads(base_eval_file.read_text()).get("eval_loss")
    elif s.cfg.run.base_eval and data.eval_ds is not None and s.last_ckpt is None:
        # A fresh LoRA adapter is the identity (B = 0), so this is the base model's held-out loss.
        base_eval_loss = t.trainer.evaluate()["eval_loss"]
        if s.main_proc:
            write_text_atomic(base_eval_file, json.dumps({"eval_loss": base_eval_loss}))
            s.console.print(f"base model held-out loss: {base_eval_loss:.4f}")

    wall0 = time.perf_counter()
    out = t.trainer.train(resume_from_checkpoint=s.last_ckpt)
    wall = time.perf_counter() - wall0
    interrupted = t.interrupt.requested
    if interrupted:
        if s.main_proc:
            s.console.print(
                f"[yellow]stopped; checkpoint saved in {s.run_dir / 'checkpoints'}. Continue with: "
                f"--config {s.run_dir / 'config.yaml'} --resume[/yellow]"
            )
        return RunResult(run_dir=s.run_dir, adapter_dir=None, metrics={}, interrupted=True)

    final_eval: dict[str, Any] = {}
    if data.eval_ds is not None:
        last = [e for e in t.trainer.state.log_history if "eval_loss" in e]
        if last and last[-1].get("step") == t.trainer.state.global_step and not t.trainer.args.load_best_model_at_end:
            final_eval = {k: v for k, v in last[-1].items() if k.startswith("eval_")}  # just evaluated
        else:
            final_eval = t.trainer.evaluate()
    tokens = int(t.trainer.accelerator.reduce(torch.tensor(t.counters.tokens), reduction="sum"))
    supervised = int(t.trainer.accelerator.reduce(torch.tensor(t.counters.supervised), reduction="sum"))
    adapter_dir = s.run_dir / "adapter"
    samples: list[dict[str, str]] = []
    metrics: dict[str, Any] = {}
    if t.trainer.is_world_process_zero():
        save_adapter(t.trainer.model, data.tokenizer, adapter_dir)
        history = t.trainer.state.log_history
        train_seconds = t.counters.train_seconds or wall
        metrics = {
            "scenario": s.cfg.run.scenario,
            "backend": s.info.name,
            "model": s.model_name,
            "device": device_name(),
            "processes": t.trainer.accelerator.num_processes,
            "versions": versions(),
            "plan": asdict(s.plan),
            "batching": t.ran["batching"],
            "batching_requested": t.batching,
            "sft_effective": {k: t.ran[k] for k in ("padding_free", "packing", "max_length")},
            "attention": attention_backend(s.info.name, t.trainer.model),
            "wall_time_s": round(time.perf_counter() - s.t_start, 2),  # this session: load, data, train, eval
            "train_call_s": round(wall, 2),
            "train_time_s": round(train_seconds, 2),
            "steps": t.trainer.state.global_step,
            "epochs": round(float(t.trainer.state.epoch or 0), 3),
            "trained_tokens": tokens,
            "supervised_tokens": supervised,
            "trained_token_share": round(supervised / tokens, 4) if tokens else 0.0,
            "supervised_tokens_per_s": round(supervised / train_seconds, 2) if train_seconds else 0.0,
            "tokens_per_s": round(tokens / train_seconds, 2) if train_seconds else 0.0,
            "peak_ram_mb": round(peak_ram_mb(), 1),
            "peak_vram_mb": round(peak_vram_mb(), 1),
            "final_train_loss": last_logged(history, "loss"),
            "mean_train_loss": round(float(out.training_loss), 4),
            "final_eval_loss": final_eval.get("eval_loss"),
            "base_eval_loss": base_eval_loss,
            "data": {"train": data.train_stats.to_dict(), "eval": data.eval_stats.to_dict() if data.eval_stats else None},
            "resumed_from": s.last_ckpt,
        }
        write_metrics(s.run_dir / "metrics.json", metrics)
        plot_loss(
            history + ([{"step": t.trainer.state.global_step, **final_eval}] if final_eval else []),
            s.run_dir / "loss.png",
            base_eval_loss=base_eval_loss,
            title=f"{s.cfg.run.scenario}: {s.model_name}",
        )
        if s.cfg.run.samples and data.test_rows:
            samples = sample_generations(
                t.trainer.model,
                data.tokenizer,
                data.test_rows,
                s.cfg.run.samples,
                s.cfg.run.sample_max_new_tokens,
                with_base=s.cfg.run.before_after,
            )
            write_text_atomic(s.run_dir / "samples.json", json.dumps(samples, indent=2, ensure_ascii=False))
    return RunResult(run_dir=s.run_dir, adapter_dir=adapter_dir, metrics=metrics, samples=samples)


def save_adapter(model: Any, tokenizer: Any, adapter_dir: Path) -> Path:
    """Adapter + tokenizer + chat template into ``adapter_dir``, written to a temp folder and moved in."""
    adapter_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = adapter_dir.parent / f".{adapter_dir.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    if tokenizer.chat_template and not (tmp / "chat_template.jinja").is_file():
        (tmp / "chat_template.jinja").write_text(tokenizer.chat_template, encoding="utf-8")
    if adapter_dir.exists():
        old = adapter_dir.parent / f".{adapter_dir.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(adapter_dir, old)
        os.replace(tmp, adapter_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, adapter_dir)
    return adapter_dir


__all__ = [
    "AllMaskedBatchError",
    "Data",
    "DataError",
    "PlanError",
    "RecipeTrainer",
    "RunResult",
    "Session",
    "Training",
    "build_trainer",
    "load_data",
    "open_run_dir",
    "plan_run",
    "save_adapter",
    "train_and_save",
]
