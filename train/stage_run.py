"""The recipe steps that differ by stage (see :mod:`train.stages`): the data of a pt or preference run, the
preference trainer, the persona check of the start and final adapter, and the stage's part of metrics.json.

:mod:`train.recipe` calls these; an ``sft`` run never reaches them. Import only after the backend is active.
"""

from __future__ import annotations

import json
from typing import Any

from fileio.atomic import write_text_atomic
from train.data import TokenStats, TrainDataError, check_trainable, read_jsonl
from train.metrics import last_logged
from train.pretrain import pack_texts, texts_of
from train.stages import is_preference, trainer_class

# The preference metrics TRL logs (DPO/ORPO/KTO; KTO has no accuracies), kept in metrics.json and plotted.
PREFERENCE_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                   "logps/chosen", "logps/rejected", "kl", "nll_loss", "log_odds_ratio")


def load_stage_data(
    session: Any, data_dir: Any, tokenizer: Any, train_rows: list[dict[str, Any]], test_rows: list[dict[str, Any]]
) -> tuple[Any, Any, TokenStats, TokenStats | None, list[dict[str, Any]]]:
    """(train_ds, eval_ds, train_stats, eval_stats, sample rows) of a pt or preference run."""
    cfg = session.cfg
    eval_rows = test_rows[: cfg.data.max_eval_examples] if cfg.data.max_eval_examples else test_rows
    train_path, test_path = str(data_dir / "train.jsonl"), str(data_dir / "test.jsonl")
    if cfg.run.stage == "pt":
        train_ds, train_stats = pack_texts(texts_of(train_rows, train_path), tokenizer, session.plan.seq_len)
        check_trainable(train_stats, train_path)
        eval_ds, eval_stats = (pack_texts(texts_of(eval_rows, test_path), tokenizer, session.plan.seq_len)
                               if eval_rows else (None, None))
        if session.main_proc:
            session.console.print(f"pt: {len(train_rows)} documents -> {train_stats.examples} blocks of up to "
                                  f"{session.plan.seq_len} tokens, {train_stats.tokens} tokens (all trained)")
        return train_ds, eval_ds if eval_ds is not None and len(eval_ds) else None, train_stats, eval_stats, []
    from train.preference import to_dataset, to_trl_rows

    stage = cfg.run.stage
    train, train_pref = to_trl_rows(train_rows, stage, train_path)
    if not train:
        raise TrainDataError(f"{train_path}: no preference rows to train on")
    evals, eval_pref = to_trl_rows(eval_rows, stage, test_path) if eval_rows else ([], None)
    if session.main_proc:
        extra = f" ({train_pref.desirable} desirable)" if stage == "kto" else ""
        session.console.print(f"{stage}: {train_pref.examples} training examples{extra}, {len(evals)} held out")
    samples = [{"messages": r["prompt"] + r["chosen"]} for r in test_rows if r.get("kind") == "preference"]
    return (to_dataset(train), to_dataset(evals) if evals else None, TokenStats(examples=len(train)),
            TokenStats(examples=len(evals)) if evals else None, samples)


def build_preference_trainer(
    session: Any, data: Any, model: Any, args: Any, callbacks: list[Any], optimizers: tuple[Any, Any], counters: Any
) -> Any:
    """TRL's DPO/ORPO/KTO trainer over the PEFT model. With a PEFT model and no ``ref_model``, TRL's DPO and KTO
    copy the adapter as it is now (the start adapter) into a frozen ``ref`` adapter and score the reference
    with it, so the reference is the starting policy, not the base model."""
    from train.backend import patch_preference_trainers

    patch_preference_trainers(session.info)  # Unsloth's patched trainers on its GPU path
    trainer = trainer_class(session.cfg.run.stage)(
        model=model, args=args, train_dataset=data.train_ds, eval_dataset=data.eval_ds,
        processing_class=data.tokenizer, callbacks=callbacks, optimizers=optimizers,
    )
    trainer.counters = counters
    _token_stats(trainer.train_dataset, data.train_stats, args.max_length)
    if data.eval_stats is not None and trainer.eval_dataset is not None:
        _token_stats(trainer.eval_dataset, data.eval_stats, args.max_length)
    return trainer


def _token_stats(ds: Any, stats: TokenStats, max_length: int | None) -> None:
    """Tokens per example after TRL's tokenization: prompt + chosen + prompt + rejected (pairs), prompt +
    completion (KTO); the completions are what the loss is on."""
    cols = set(ds.column_names)
    if {"prompt_ids", "chosen_ids", "rejected_ids"} <= cols:
        seqs = [(len(p), [len(c), len(r)]) for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"],
                                                                 strict=True)]
    elif {"prompt_ids", "completion_ids"} <= cols:
        seqs = [(len(p), [len(c)]) for p, c in zip(ds["prompt_ids"], ds["completion_ids"], strict=True)]
    elif {"prompt_input_ids", "chosen_input_ids", "rejected_input_ids"} <= cols:  # ORPO: full sequences
        seqs = [(len(p), [len(c) - len(p), len(r) - len(p)])
                for p, c, r in zip(ds["prompt_input_ids"], ds["chosen_input_ids"], ds["rejected_input_ids"],
                                   strict=True)]
    else:
        return
    stats.examples = len(seqs)
    stats.tokens = sum(p * len(cs) + sum(cs) for p, cs in seqs)
    stats.supervised = sum(sum(cs) for _, cs in seqs)
    stats.truncated = sum(1 for p, cs in seqs if max_length and p + max(cs) > max_length)


def _persona_prompts(session: Any, data: Any) -> tuple[Any, list[list[dict[str, Any]]]] | None:
    cfg = session.cfg
    if not (is_preference(cfg.run.stage) and cfg.run.character and cfg.run.persona_samples > 0):
        return None
    from train.preference import load_rules, prompts_of, repo_path

    source = repo_path(cfg.run.persona_prompts) if cfg.run.persona_prompts else data.dir / "test.jsonl"
    if cfg.run.persona_prompts and not source.is_file():
        raise TrainDataError(f"run.persona_prompts: {cfg.run.persona_prompts}: no such file")
    prompts = prompts_of(read_jsonl(source) if source.is_file() else [], cfg.run.persona_samples)
    if not prompts:
        session.console.print(f"[yellow]persona check skipped: no prompts in {source}[/yellow]")
        return None
    return load_rules(cfg.run.character), prompts


def _persona(session: Any, data: Any, built: Any, label: str) -> dict[str, Any] | None:
    """Replies of the model as it is now to the held-out prompts, checked against the card's rules."""
    found = _persona_prompts(session, data)
    if found is None or not session.main_proc:
        return None
    from models.generate import generate_reply, sampling_for
    from train.preference import persona_check

    rules, prompts = found
    run = session.cfg.run
    model, tok, sampling = built.trainer.model, data.tokenizer, sampling_for(run.scenario)
    seed = int(session.cfg.sft.get("seed", 42))
    was_training = model.training
    model.eval()
    doc = persona_check(lambda p: generate_reply(model, tok, p, run.persona_max_new_tokens, sampling, seed),
                        prompts, rules)
    model.train(was_training)
    doc["adapter"] = label
    session.console.print(f"persona check ({label} adapter): {doc['pass_rate']:.0%} of {doc['n']} replies in character")
    return doc


def persona_start(session: Any, data: Any, built: Any) -> dict[str, Any] | None:
    """The start adapter's persona check, before training (kept in persona_start.json across resumes)."""
    path = session.run_dir / "persona_start.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    if session.last_ckpt is not None:  # resumed without one: the start adapter is gone
        return None
    doc = _persona(session, data, built, "start")
    if doc is not None:
        write_text_atomic(path, json.dumps(doc, indent=2, ensure_ascii=False))
    return doc


def persona_final(session: Any, data: Any, built: Any) -> dict[str, Any] | None:
    return _persona(session, data, built, "final")


def stage_metrics(
    session: Any, built: Any, final_eval: dict[str, Any], start: dict[str, Any] | None, final: dict[str, Any] | None
) -> dict[str, Any]:
    """metrics.json's stage part: the stage, its start adapter, preference metrics, persona before/after."""
    cfg = session.cfg
    out: dict[str, Any] = {"stage": cfg.run.stage, "init_adapter": cfg.model.init_adapter}
    if not is_preference(cfg.run.stage):
        return out
    history = built.trainer.state.log_history
    first = next((e for e in history if "loss" in e and any(k in e for k in PREFERENCE_KEYS)), {})
    out["preference"] = {
        "eval": {k[len("eval_"):]: v for k, v in final_eval.items() if k[len("eval_"):] in PREFERENCE_KEYS},
        "train_last": {k: v for k in PREFERENCE_KEYS if (v := last_logged(history, k)) is not None},
        "train_first": {k: first[k] for k in PREFERENCE_KEYS if k in first} | ({"step": first["step"]} if first else {}),
    }
    if start is not None and final is not None:
        out["persona"] = {"start": start["pass_rate"], "final": final["pass_rate"], "n": final["n"],
                          "character": cfg.run.character}
        doc = {"start": start, "final": final}
        write_text_atomic(session.run_dir / "persona.json", json.dumps(doc, indent=2, ensure_ascii=False))
    return out
