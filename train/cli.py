"""The command line every scenario script shares.

    python train/<script>.py [--preset NAME | --config FILE] [--resume] [--plan-only] [OVERRIDES...]

OVERRIDES are dotted paths with a value: ``--lora.r 8``, ``--sft.warmup_steps=0.1``, ``run.samples=2``;
short forms: ``--lr``, ``--epochs``, ``--max-steps``, ``--batch-size``, ``--grad-accum``, ``--seed``,
``--model``,
``--seq``, ``--data``, ``--system-prompt``, ``--backend``, ``--run-dir``, ``--method``. ``--allow-pickle``
(``model.allow_pickle``) also loads pickle weights, refused by default since unpickling can run code.

Bad input ends with one line on stderr and exit code 2; no traceback. The backend is chosen and activated
(Unsloth imported first) before the trainer module, and with it transformers, is imported.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from train.backend import BackendError, BackendInfo, activate, choose
from train.config import (
    ALIASES,
    ConfigError,
    TrainConfig,
    apply_overrides,
    load_config,
    preset_path,
)

if TYPE_CHECKING:
    from rich.console import Console

    from train.recipe import RunResult

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


@dataclass
class CliArgs:
    cfg: TrainConfig
    resume: bool
    plan_only: bool
    explicit_model: bool  # the user named the model: no offline fallback


def parse(argv: list[str] | None, *, scenario: str, default_preset: str, doc: str | None = None) -> CliArgs:
    from models.quiet import quiet_dependency_noise

    quiet_dependency_noise()
    parser = argparse.ArgumentParser(
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
        epilog="Overrides: --section.field VALUE (sections: model, lora, data, run, "
        "sft=any SFTConfig field, also bare: --learning_rate 1e-4, --output_dir DIR). Short forms: "
        + ", ".join(f"--{k}" for k in ALIASES),
    )
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--preset", default=None, help=f"preset name or YAML file (default: {default_preset})")
    src.add_argument("--config", default=None, help="a saved run/config.yaml: repeat (or --resume) that run")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the latest checkpoint of the run"
    )
    parser.add_argument("--plan-only", action="store_true", help="print the hardware plan and exit")
    parser.add_argument(
        "--allow-pickle", action="store_true",
        help="also load pickle weights (pytorch_model.bin, *.pt), which can run code: trusted files only "
        "(= --model.allow_pickle true)",
    )
    args, rest = parser.parse_known_args(argv)
    try:  # a bad preset or override ends with one line, exit code 2
        if args.config:
            cfg = load_config(args.config)
            saved_dir = Path(args.config).resolve().parent
            # Repeating a run makes a new folder; resuming continues the one the config came from.
            cfg.run.run_dir = str(saved_dir) if args.resume else None
        else:
            cfg = load_config(preset_path(args.preset or default_preset, scenario))
            cfg.run.run_dir = None
        if not cfg.run.scenario or cfg.run.scenario == "run":
            cfg.run.scenario = scenario
        before = cfg.model.name
        apply_overrides(cfg, rest)
        cfg.model.allow_pickle = cfg.model.allow_pickle or args.allow_pickle
        explicit = any(t.split("=")[0].lstrip("-") in ("model", "model.name") for t in rest) or (
            bool(args.config) and before == cfg.model.name
        )
    except ConfigError as e:
        fail(str(e))
    return CliArgs(cfg=cfg, resume=args.resume, plan_only=args.plan_only, explicit_model=explicit)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def start_backend(cli: CliArgs) -> BackendInfo:
    """Choose the backend (Unsloth on an NVIDIA GPU, else transformers + PEFT) and import it first."""
    try:
        info = choose(cli.cfg.run.backend)
        activate(info, cli.cfg.run.runs_dir)
    except (ConfigError, BackendError) as e:
        fail(str(e))
    return info


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Bad input (config, data, a plan that cannot fit) ends with one line and exit code 2; Ctrl-C with 130."""
    from data_prep.io import DataPrepError
    from models.loading import UnsafeWeightsError
    from train.data import TrainDataError
    from train.recipe import PlanError
    from train.sft_trainer import AllMaskedBatchError

    try:
        yield
    except (
        ConfigError, TrainDataError, DataPrepError, PlanError, AllMaskedBatchError, FileNotFoundError,
        UnsafeWeightsError,
    ) as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)


def report(result: RunResult, console: Console | None = None) -> int:
    """Sample replies, held-out loss against the base model, speed and where everything was written."""
    from rich.console import Console

    from train.samples import print_samples

    console = console or Console()
    if result.interrupted:
        return EXIT_INTERRUPTED
    m = result.metrics
    if not m:  # not the main process of a multi-process run: rank 0 reports
        return 0
    print_samples(console, result.samples)
    console.rule("done")
    base, final = m.get("base_eval_loss"), m.get("final_eval_loss")
    if final is not None:
        change = f" (base model: {base:.4f}, {100 * (final - base) / base:+.1f}%)" if base else ""
        console.print(f"held-out loss: {final:.4f}{change}")
    pref = (m.get("preference") or {}).get("eval") or {}
    if "rewards/margins" in pref:  # dpo / orpo / kto: the held-out pairs as the reward scores them
        acc = f"accuracy {pref['rewards/accuracies']:.2f}, " if "rewards/accuracies" in pref else ""
        console.print(f"held-out rewards ({m['stage']}): {acc}margin {pref['rewards/margins']:.3f}")
    if m.get("persona"):
        p = m["persona"]
        console.print(f"persona check ({p['n']} prompts): start adapter {p['start']:.0%} -> {p['final']:.0%} in character")
    console.print(
        f"{m['steps']} steps, {m['trained_tokens']} tokens ({m['supervised_tokens']} supervised) in "
        f"{m['train_time_s']} s of training steps: {m['tokens_per_s']} tokens/s, "
        f"{m['supervised_tokens_per_s']} supervised tokens/s; wall {m['wall_time_s']} s; "
        f"peak RAM {m['peak_ram_mb']:.0f} MB"
    )
    console.print(
        f"adapter: {result.adapter_dir}\nmetrics: {result.run_dir / 'metrics.json'}  "
        f"loss curve: {result.run_dir / 'loss.png'}  TensorBoard: {result.run_dir / 'logs'}"
    )
    return 0
