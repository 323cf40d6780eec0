"""The five steps of one training run, in the order the scenario scripts call them:

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

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from fileio.atomic import write_text_atomic
from models import registry
from models.generate import sampling_for
from models.loading import check_weights, load_tokenizer
from train import planner
from train.backend import BackendInfo, bnb_available, load_trainable
from train.callbacks import CountersCheckpoint, GracefulInterrupt
from train.config import TrainConfig, save_config, validate_sft_keys
from train.cpu_speed import FrozenWeightsDtype, attention_for
from train.data import TokenStats, check_trainable, prepare_data, read_jsonl, tokenize_rows
from train.metrics import Counters, run_metrics, write_metrics
from train.model_choice import params_billions, pick_model
from train.plots import plot_loss, plot_preference
from train.run_dir import latest_checkpoint, resolve_run_dir, save_adapter
from train.samples import sample_generations
from train.sft_args import build_sft_config, choose_batching, effective_batching, trainer_fields
from train.sft_trainer import RecipeTrainer
from train.stage_run import (
    build_preference_trainer,
    load_stage_data,
    persona_final,
    persona_start,
    stage_metrics,
)
from train.stages import build_preference_config, check_stage, config_class, is_preference


class PlanError(RuntimeError):
    """The hardware plan does not fit; the message lists what to change."""


@dataclass
class RunResult:
    run_dir: Path
    adapter_dir: Path | None
    metrics: dict[str, Any]
    interrupted: bool = False
    samples: list[dict[str, str]] = field(default_factory=list)


@dataclass
class RunSession:
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
class PreparedData:
    """The prepared data of a run, tokenized with assistant-only labels."""

    dir: Path
    tokenizer: Any
    train_ds: Any
    eval_ds: Any
    train_stats: TokenStats
    eval_stats: TokenStats | None
    test_rows: list[dict[str, Any]]


@dataclass
class BuiltTrainer:
    trainer: RecipeTrainer
    counters: Counters
    interrupt: GracefulInterrupt
    batching: str  # what we asked SFTConfig for
    ran: dict[str, Any]  # what the built trainer runs (sft_args.effective_batching, head_loss)
    frozen: FrozenWeightsDtype | None = None  # bf16 frozen weights during train() (CPU plan), else None


def plan_run(
    cfg: TrainConfig, info: BackendInfo, *, explicit_model: bool = False, console: Console | None = None
) -> RunSession:
    """Pick the model (the offline fallback without a GPU or network) and plan the hardware; print the plan.

    Raises :class:`PlanError` with what to change when the plan cannot fit (unless ``run.force``).
    """
    console = console or Console()
    main_proc = int(os.environ.get("RANK", "0")) == 0
    if cfg.run.threads and not info.cuda:
        torch.set_num_threads(cfg.run.threads)
    check_stage(cfg.run.stage)
    validate_sft_keys(cfg.sft, config_class=config_class(cfg.run.stage))  # the stage's TRL config fields
    if cfg.model.init_adapter:  # the resolved folder goes into config.yaml, so a repeat trains the same start
        from train.init_adapter import resolve

        cfg.model.init_adapter = str(resolve(cfg.model.init_adapter, Path(__file__).resolve().parents[1]))
    model_name = pick_model(cfg, cuda=info.cuda, explicit=explicit_model, console=console)
    cfg.model.name = model_name
    source = registry.resolve_source(model_name)
    params_b = params_billions(model_name, source)
    hw = planner.detect_hardware()
    plan = planner.plan(hw, params_b, cfg.model.max_seq_length, cfg.lora.method, bnb_available=bnb_available())
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
    return RunSession(cfg, info, console, model_name, source, params_b, plan, main_proc=main_proc)


def open_run_dir(session: RunSession, *, resume: bool = False) -> Path:
    """Make (or, with ``resume``, reopen) the run folder and save the resolved config into it."""
    session.resume = resume
    session.run_dir = resolve_run_dir(session.cfg, resume)
    session.cfg.run.run_dir = str(session.run_dir)
    ckpt_dir = session.run_dir / "checkpoints"
    session.last_ckpt = latest_checkpoint(ckpt_dir) if resume else None
    if session.last_ckpt is not None:  # the Trainer loads its adapter weights on resume
        check_weights(Path(session.last_ckpt), allow_pickle=session.cfg.model.allow_pickle)
    if resume and session.last_ckpt is None:
        session.console.print(f"[yellow]--resume: no checkpoint in {ckpt_dir}; starting from step 0[/yellow]")
    if session.main_proc:
        session.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(session.cfg, session.run_dir / "config.yaml")
        session.console.print(f"run folder: {session.run_dir}")
    return session.run_dir


def load_data(session: RunSession) -> PreparedData:
    """data_prep on the raw inputs into ``run/data`` (the main process prepares, the others wait), then
    tokenize with assistant-only labels. Refuses data with no supervised token."""
    from accelerate import PartialState

    cfg, seq_len = session.cfg, session.plan.seq_len
    with PartialState().main_process_first():
        console = session.console if session.main_proc else None
        data_dir = prepare_data(cfg, session.run_dir, session.model_name, reuse=session.resume, console=console)
    tokenizer = load_tokenizer(session.model_name)
    train_rows = read_jsonl(data_dir / "train.jsonl")
    test_rows = read_jsonl(data_dir / "test.jsonl") if (data_dir / "test.jsonl").is_file() else []
    if cfg.run.stage != "sft":  # pt: packed text; dpo/orpo/kto: TRL's preference rows
        return PreparedData(data_dir, tokenizer, *load_stage_data(session, data_dir, tokenizer, train_rows, test_rows))
    train_ds, train_stats = tokenize_rows(train_rows, tokenizer, seq_len)
    check_trainable(train_stats, str(data_dir / "train.jsonl"))
    eval_rows = test_rows[: cfg.data.max_eval_examples] if cfg.data.max_eval_examples else test_rows
    eval_ds, eval_stats = tokenize_rows(eval_rows, tokenizer, seq_len) if eval_rows else (None, None)
    if eval_ds is not None and len(eval_ds) == 0:
        eval_ds = None
    if session.main_proc:
        dropped = len(train_stats.dropped_unsupervised)
        session.console.print(
            f"train: {train_stats.examples} examples, {train_stats.tokens} tokens, "
            f"trained-token share {train_stats.share:.1%} (assistant tokens only)"
            + (f"; {dropped} rows with no assistant token left dropped" if dropped else "")
        )
    return PreparedData(data_dir, tokenizer, train_ds, eval_ds, train_stats, eval_stats, test_rows)


def build_trainer(session: RunSession, data: PreparedData) -> BuiltTrainer:
    """The LoRA model on the chosen backend, ``SFTConfig`` (our defaults < hardware plan < ``sft``), callbacks
    (Ctrl-C checkpoint, token counters, TensorBoard, early stopping), the optimizer (LoRA+ when asked) and
    the plan's CPU speed levers (per-example attention, bf16 frozen weights, fused head loss)."""
    cfg, plan = session.cfg, session.plan
    seed = int(cfg.sft.get("seed", 42))
    torch.manual_seed(seed)
    # Preference trainers pad (they concatenate chosen and rejected); the CPU attention lever is for flat rows.
    batching = "padded" if is_preference(cfg.run.stage) else choose_batching(cfg, plan.batch_size)
    attention = attention_for(plan.attention, batching, cfg.model.attn_implementation)
    model = _trainable_model(session, data, attention, seed)
    steps_hint = _steps_hint(cfg, plan, data)
    if is_preference(cfg.run.stage):  # DPOConfig / ORPOConfig / KTOConfig from the same defaults and plan
        fields = trainer_fields(cfg, plan, session.run_dir, batching, data.eval_ds is not None, steps_hint)
        args = build_preference_config(cfg.run.stage, fields, cfg.sft, plan.seq_len)
    else:
        args = build_sft_config(cfg, plan, session.run_dir, batching, data.eval_ds is not None, steps_hint)
    counters = Counters.load(Path(session.last_ckpt)) if session.last_ckpt else Counters()
    interrupt = GracefulInterrupt()
    callbacks = _callbacks(session, data, interrupt, counters)
    frozen = FrozenWeightsDtype(torch.bfloat16) if plan.use_cpu and plan.base_weights == "bf16" else None
    optimizers: tuple[Any, Any] = (None, None)
    if cfg.lora.loraplus_lr_ratio:
        from train.optim import loraplus_optimizer

        optimizers = (loraplus_optimizer(model, args, cfg.lora.loraplus_lr_ratio), None)
    if is_preference(cfg.run.stage):
        trainer = build_preference_trainer(
            session, data, model, args, callbacks + ([frozen] if frozen else []), optimizers, counters
        )
        ran = {"batching": "padded", "padding_free": False, "packing": False,
               "max_length": trainer.args.max_length, "head_loss": "trl"}
        return BuiltTrainer(trainer, counters, interrupt, batching, ran, frozen)
    trainer = RecipeTrainer(
        model=model, args=args, train_dataset=data.train_ds, eval_dataset=data.eval_ds,
        processing_class=data.tokenizer, callbacks=callbacks + ([frozen] if frozen else []),
        optimizers=optimizers, counters=counters, fused_head=plan.head_loss == "fused",
    )
    ran = {**effective_batching(trainer.args), "head_loss": trainer.head_loss}
    if ran["batching"] != batching and session.main_proc:
        session.console.print(
            f"[yellow]batching: {batching} was asked for, the trainer runs {ran['batching']} "
            f"(padding_free={ran['padding_free']}, packing={ran['packing']}, max_length={ran['max_length']})[/yellow]"
        )
    return BuiltTrainer(trainer, counters, interrupt, batching, ran, frozen)


def _trainable_model(session: RunSession, data: PreparedData, attention: str | None, seed: int) -> Any:
    """The PEFT model on the chosen backend: a fresh LoRA, or (``model.init_adapter``) one shaped like the saved
    adapter with its weights loaded, so training continues that adapter."""
    from train import init_adapter

    cfg, plan = session.cfg, session.plan
    start = Path(cfg.model.init_adapter) if cfg.model.init_adapter else None
    lora = init_adapter.lora_like(cfg.lora, start) if start else cfg.lora
    model, data.tokenizer = load_trainable(
        session.info, session.source, dataclasses.replace(cfg.model, attn_implementation=attention), lora,
        precision="fp32" if plan.use_cpu else plan.precision,  # CPU: fp32 load, frozen weights cast by `frozen`
        gradient_checkpointing=plan.gradient_checkpointing, seed=seed, tokenizer=data.tokenizer,
        work_dir=session.run_dir,
    )
    if start is not None:
        n = init_adapter.load_weights(model, start)
        if session.main_proc:
            session.console.print(f"start adapter: {start} ({n} tensors, r={lora.r}, alpha={lora.alpha})")
    return model


def _steps_hint(cfg: TrainConfig, plan: planner.Plan, data: PreparedData) -> int:
    """Optimizer steps the run will take (for eval/save/logging intervals)."""
    from accelerate import PartialState

    steps = int(cfg.sft.get("max_steps", -1))
    if steps > 0:
        return steps
    per_step = plan.batch_size * plan.grad_accum * max(1, PartialState().num_processes)
    return max(1, int(len(data.train_ds) * float(cfg.sft.get("num_train_epochs", 3)) / per_step))


def _callbacks(session: RunSession, data: PreparedData, interrupt: GracefulInterrupt, counters: Counters) -> list[Any]:
    callbacks: list[Any] = [interrupt, CountersCheckpoint(counters)]
    if session.main_proc:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        tensorboard = TensorBoardCallback(SummaryWriter(log_dir=str(session.run_dir / "logs")))
        tensorboard.logging_dir = str(session.run_dir / "logs")  # where it reopens after train() (final eval)
        callbacks.append(tensorboard)
    if session.cfg.run.early_stopping_patience and data.eval_ds is not None:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(early_stopping_patience=session.cfg.run.early_stopping_patience))
    return callbacks


def train_and_save(session: RunSession, data: PreparedData, built: BuiltTrainer) -> RunResult:
    """Measure the base model's held-out loss, train (resuming when asked), then save the adapter with its
    tokenizer and chat template, ``metrics.json``, ``loss.png`` and before/after sample replies."""
    base_eval_loss = None if is_preference(session.cfg.run.stage) else _base_eval_loss(session, data, built)
    start_persona = persona_start(session, data, built)  # the start adapter's persona score (dpo/orpo/kto)
    wall0 = time.perf_counter()
    out = built.trainer.train(resume_from_checkpoint=session.last_ckpt)
    wall = time.perf_counter() - wall0
    if built.interrupt.requested:
        if session.main_proc:
            session.console.print(
                f"[yellow]stopped; checkpoint saved in {session.run_dir / 'checkpoints'}. Continue with: "
                f"--config {session.run_dir / 'config.yaml'} --resume[/yellow]"
            )
        return RunResult(run_dir=session.run_dir, adapter_dir=None, metrics={}, interrupted=True)
    final_eval = _final_eval(data, built)
    tokens, supervised = (int(built.trainer.accelerator.reduce(torch.tensor(n), reduction="sum"))
                          for n in (built.counters.tokens, built.counters.supervised))
    adapter_dir = session.run_dir / "adapter"
    if not built.trainer.is_world_process_zero():
        return RunResult(run_dir=session.run_dir, adapter_dir=adapter_dir, metrics={})
    save_adapter(built.trainer.model, data.tokenizer, adapter_dir)
    metrics = run_metrics(
        session, data, built, train_loss=float(out.training_loss), train_call_s=wall, tokens=tokens,
        supervised=supervised, final_eval=final_eval, base_eval_loss=base_eval_loss,
    )
    metrics.update(stage_metrics(session, built, final_eval, start_persona, persona_final(session, data, built)))
    write_metrics(session.run_dir / "metrics.json", metrics)
    history = built.trainer.state.log_history
    plot_loss(
        history + ([{"step": built.trainer.state.global_step, **final_eval}] if final_eval else []),
        session.run_dir / "loss.png", base_eval_loss=base_eval_loss, title=f"{session.cfg.run.scenario}: {session.model_name}",
        ylabel=f"{session.cfg.run.stage} loss" if is_preference(session.cfg.run.stage) else None,
    )
    if is_preference(session.cfg.run.stage):
        plot_preference(history, session.run_dir / "preference.png", title=f"{session.cfg.run.scenario}: rewards")
    samples = _samples(session, data, built)
    return RunResult(run_dir=session.run_dir, adapter_dir=adapter_dir, metrics=metrics, samples=samples)


def _base_eval_loss(session: RunSession, data: PreparedData, built: BuiltTrainer) -> float | None:
    """The base model's held-out loss, measured once per run (kept in base_eval.json across resumes)."""
    path = session.run_dir / "base_eval.json"
    if path.is_file():
        return json.loads(path.read_text()).get("eval_loss")
    if not (session.cfg.run.base_eval and data.eval_ds is not None and session.last_ckpt is None):
        return None
    # A fresh LoRA adapter is the identity (B = 0), so this is the base model's held-out loss.
    loss = built.trainer.evaluate()["eval_loss"]
    if session.main_proc:
        write_text_atomic(path, json.dumps({"eval_loss": loss}))
        session.console.print(f"base model held-out loss: {loss:.4f}")
    return loss


def _final_eval(data: PreparedData, built: BuiltTrainer) -> dict[str, Any]:
    """The held-out metrics of the final adapter (the last logged eval when it was at the last step)."""
    if data.eval_ds is None:
        return {}
    trainer = built.trainer
    last = [e for e in trainer.state.log_history if "eval_loss" in e]
    if last and last[-1].get("step") == trainer.state.global_step and not trainer.args.load_best_model_at_end:
        return {k: v for k, v in last[-1].items() if k.startswith("eval_")}  # just evaluated
    return trainer.evaluate()


def _samples(session: RunSession, data: PreparedData, built: BuiltTrainer) -> list[dict[str, str]]:
    """Replies to held-out prompts, decoded as the scenario's Modelfile will decode them; samples.json."""
    run = session.cfg.run
    if not run.samples or not data.test_rows:
        return []
    samples = sample_generations(
        built.trainer.model, data.tokenizer, data.test_rows, run.samples, run.sample_max_new_tokens,
        with_base=run.before_after, sampling=sampling_for(run.scenario), seed=int(session.cfg.sft.get("seed", 42)),
    )
    write_text_atomic(session.run_dir / "samples.json", json.dumps(samples, indent=2, ensure_ascii=False))
    return samples
