"""The training config: dataclasses, YAML presets, and dotted CLI overrides.

A config has five sections. ``model``, ``lora``, ``data`` and ``run`` are our dataclasses; ``sft`` is a free
mapping whose keys must be fields of TRL's ``SFTConfig`` (checked by :func:`validate_sft_keys` once the
backend
is active, because importing TRL pulls in transformers, and Unsloth must be imported first).

Override scheme (one, everywhere): a dotted path and a value, either ``--lora.r 8``, ``--lora.r=8`` or
``lora.r=8``. Values are parsed as YAML scalars (``1e-4`` -> float, ``true`` -> bool, ``null`` -> None,
``[a,b]`` -> list). A few short aliases exist for the knobs people change most (:data:`ALIASES`), and a bare
TRL / HF Trainer name (``--learning_rate``, ``--num-train-epochs``) means ``sft.<name>`` (``--output_dir`` is
the run folder: :data:`TRAINER_FLAGS`).

This module imports no torch/transformers: scripts use it before choosing the backend.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fileio.atomic import write_text_atomic

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"


class ConfigError(ValueError):
    """Bad preset, config file or override; the message names the file/flag and the field."""


@dataclass
class ModelConfig:
    name: str = "smollm2-135m-instruct"  # registry name, Hub id or local folder
    offline_fallback: str = "smollm2-135m-instruct"  # used when there is no GPU or no network
    max_seq_length: int = 1024
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16 (auto: from the hardware plan)
    attn_implementation: str | None = None  # None: sdpa (CPU) / backend default
    # A LoRA adapter folder to train further (preference stages start from the SFT adapter); a "*" in it picks
    # the newest matching folder. None: a fresh adapter.
    init_adapter: str | None = None
    allow_pickle: bool = False  # also load pickle weights (pytorch_model.bin, *.pt), which can run code


@dataclass
class LoraConfig:
    method: str = "lora"  # lora | qlora
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: Any = "all-linear"  # "all-linear", a list of module names, or "q_proj,v_proj" from the CLI
    use_dora: bool = False
    use_rslora: bool = False
    loraplus_lr_ratio: float | None = None  # LoRA+: lr(B) = ratio * lr(A); None = plain LoRA


@dataclass
class DataConfig:
    inputs: list[str] = field(default_factory=list)  # raw files/folders for data_prep
    format: str = "auto"
    system_prompt: str | None = None
    test_size: float = 0.1
    overlong: str = "truncate"  # truncate | drop
    question_field: str | None = None
    answer_field: str | None = None
    dataset_info: str | None = None  # LLaMA-Factory dataset_info.json
    dataset: list[str] | None = None  # dataset names inside dataset_info
    max_eval_examples: int | None = None  # cap the held-out set used for eval_loss (CPU budget)


@dataclass
class RunConfig:
    scenario: str = "run"
    runs_dir: str = "runs"
    run_dir: str | None = None  # None: runs/<scenario>-<YYYYmmdd-HHMMSS>
    backend: str = "auto"  # auto | unsloth | hf
    batching: str = "auto"  # auto | padding_free | packing | padded
    early_stopping_patience: int | None = None  # evals without improvement before stopping; None = off
    samples: int = 3  # sample generations from held-out prompts after training
    sample_max_new_tokens: int = 64
    before_after: bool = False  # also generate with the base model (adapter off) for comparison
    base_eval: bool = True  # held-out loss of the base model before training
    force: bool = False  # start even if the hardware plan says it does not fit
    threads: int | None = None  # torch threads on CPU; None = leave as is
    stage: str = "sft"  # sft | pt (continued pretraining on text) | dpo | orpo | kto (train/stages.py)
    character: str | None = None  # a character card: persona check of the start and final adapter (dpo/orpo/kto)
    persona_samples: int = 16  # prompts the persona check generates replies to
    persona_prompts: str | None = None  # JSONL of {"messages": [..., user]} to check on; None: held-out prompts
    persona_max_new_tokens: int = 96  # room to break max_reply_chars; more: slower check


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)
    sft: dict[str, Any] = field(default_factory=dict)  # any SFTConfig field

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {"model": ModelConfig, "lora": LoraConfig, "data": DataConfig, "run": RunConfig}

# Short flags for the knobs changed most often -> dotted path.
ALIASES: dict[str, str] = {
    "lr": "sft.learning_rate",
    "epochs": "sft.num_train_epochs",
    "max-steps": "sft.max_steps",
    "batch-size": "sft.per_device_train_batch_size",
    "grad-accum": "sft.gradient_accumulation_steps",
    "seed": "sft.seed",
    "model": "model.name",
    "seq": "model.max_seq_length",
    "data": "data.inputs",
    "system-prompt": "data.system_prompt",
    "backend": "run.backend",
    "run-dir": "run.run_dir",
    "method": "lora.method",
    "stage": "run.stage",
    "init-adapter": "model.init_adapter",
}


def _from_mapping(cfg: TrainConfig, data: dict[str, Any], origin: str) -> TrainConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: top level must be a mapping with sections model/lora/data/run/sft")
    for section, values in data.items():
        if values is None:
            continue
        if section == "sft":
            if not isinstance(values, dict):
                raise ConfigError(f"{origin}: 'sft' must be a mapping of SFTConfig fields")
            cfg.sft.update(values)
            continue
        if section not in SECTIONS:
            raise ConfigError(
                f"{origin}: unknown section '{section}' (expected one of model, lora, data, run, sft)"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"{origin}: section '{section}' must be a mapping")
        for key, value in values.items():
            if (section, key) == ("model", "load_in_4bit"):  # config.yaml of older runs: now lora.method
                if value:
                    cfg.lora.method = "qlora"
                continue
            set_path(cfg, f"{section}.{key}", value, origin)
    return cfg


def set_path(cfg: TrainConfig, path: str, value: Any, origin: str = "override") -> None:
    """Set ``section.field`` on ``cfg``; ``sft.<field>`` goes into the SFTConfig mapping unchecked."""
    parts = path.split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"{origin}: '{path}' must look like section.field (e.g. lora.r, sft.learning_rate)")
    section, key = parts
    if section == "sft":
        cfg.sft[key] = value
        return
    if section not in SECTIONS:
        raise ConfigError(f"{origin}: unknown section '{section}' in '{path}' (model, lora, data, run, sft)")
    obj = getattr(cfg, section)
    names = {f.name: f for f in dataclasses.fields(obj)}
    if key not in names:
        raise ConfigError(f"{origin}: unknown field '{path}'; {section} has: {', '.join(sorted(names))}")
    if isinstance(value, str) and "list[" in str(names[key].type):  # a list field unset by default (None)
        value = [v for v in value.split(",") if v]
    value = _coerce(value, getattr(obj, key), path, origin)
    if path == "lora.target_modules":
        value = lora_targets(value, origin)
    setattr(obj, key, value)


def lora_targets(value: Any, origin: str = "lora.target_modules") -> str | list[str]:
    """``"all-linear"`` or a list of module names. A comma string (``q_proj,v_proj`` from the CLI) becomes a
    list: PEFT would read any other string as one regular expression, and ``list()`` would split it into
    characters."""
    if value is None or value == "all-linear":
        return "all-linear"
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(
            f"{origin}: 'lora.target_modules' must be all-linear or module names such as q_proj,v_proj, "
            f"got {value!r}"
        )
    return [str(v) for v in value]


def _coerce(value: Any, current: Any, path: str, origin: str) -> Any:
    """Light type check against the current value's type; lists accept a single string."""
    if value is None or current is None:
        return value
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{origin}: '{path}' must be true or false, got {value!r}")
    if isinstance(current, int) and not isinstance(current, bool):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{origin}: '{path}' must be an integer, got {value!r}")
    if isinstance(current, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{origin}: '{path}' must be a number, got {value!r}")
    if isinstance(current, list):
        if isinstance(value, str):
            return [v for v in value.split(",") if v]
        if isinstance(value, list):
            return value
        raise ConfigError(f"{origin}: '{path}' must be a list, got {value!r}")
    return value


def parse_value(text: str) -> Any:
    """A CLI value as a YAML scalar: ``1e-4`` -> 1e-4, ``true`` -> True, ``[a, b]`` -> list."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    # YAML 1.1 reads "1e-4" as a string; accept it as a float.
    if isinstance(value, str):
        try:
            return (
                float(value)
                if any(c in value.lower() for c in "e.") and value[:1] in "+-.0123456789"
                else value
            )
        except ValueError:
            return value
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        raise ConfigError(f"{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    return data or {}


def preset_path(name: str, scenario: str | None = None) -> Path:
    """``cpu_demo`` -> configs/<scenario>_cpu_demo.yaml if it exists, else configs/cpu_demo.yaml."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    candidates = ([CONFIGS_DIR / f"{scenario}_{name}.yaml"] if scenario else []) + [
        CONFIGS_DIR / f"{name}.yaml"
    ]
    for c in candidates:
        if c.is_file():
            return c
    known = sorted(f.stem for f in CONFIGS_DIR.glob("*.yaml"))
    raise ConfigError(
        f"preset '{name}' not found (looked for {', '.join(str(c) for c in candidates)}); "
        f"presets: {', '.join(known)}"
    )


def load_config(path: str | Path) -> TrainConfig:
    """A TrainConfig from a preset or a saved run/config.yaml."""
    return _from_mapping(TrainConfig(), load_yaml(path), str(path))


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``--a.b VALUE`` / ``--a.b=VALUE`` / ``a.b=VALUE`` / ``--alias VALUE`` tokens in order."""
    i = 0
    while i < len(overrides):
        tok = overrides[i]
        flag = tok.startswith("--")
        body = tok[2:] if flag else tok
        if "=" in body:
            key, raw = body.split("=", 1)
            i += 1
        elif flag:
            if i + 1 >= len(overrides):
                raise ConfigError(f"override '{tok}' has no value")
            key, raw = body, overrides[i + 1]
            i += 2
        else:
            raise ConfigError(f"cannot read '{tok}': use --section.field VALUE or section.field=VALUE")
        set_path(cfg, flag_path(key), parse_value(raw), origin=f"--{key}")
    return cfg


# TRL / HF Trainer spellings of what our sections already hold.
TRAINER_FLAGS: dict[str, str] = {"output_dir": "run.run_dir"}


def flag_path(key: str) -> str:
    """The dotted path a flag sets: an alias, ``section.field``, or (a bare TRL / HF Trainer name such as
    ``learning_rate`` or ``num-train-epochs``) ``sft.<field>``, checked against SFTConfig once TRL is loaded."""
    if key in ALIASES:
        return ALIASES[key]
    if "." in key:
        return key
    name = key.replace("-", "_")
    return TRAINER_FLAGS.get(name, f"sft.{name}")


def validate_sft_keys(sft: dict[str, Any], origin: str = "sft", config_class: type | None = None) -> None:
    """Every key of the ``sft`` mapping must be a field of ``config_class`` (the stage's TRL config; default
    SFTConfig). Imports TRL: call after the backend."""
    if config_class is None:
        from trl import SFTConfig as config_class

    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(k for k in sft if k not in names)
    if unknown:
        import difflib

        ours = [f"{sec}.{f.name}" for sec, cls in SECTIONS.items() for f in dataclasses.fields(cls)]
        hints = []
        for k in unknown:
            exact = [o for o in ours if o.split(".")[1] == k]  # our own field, given without its section
            close = exact or difflib.get_close_matches(k, [*names, *ours, *(o.replace(".", "_") for o in ours)], n=1)
            if close and close[0] not in names:  # one of our fields, spelled with "_" or without its section
                close = [next(o for o in ours if close[0] in (o, o.replace(".", "_")))]
            hints.append(f"'{k}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise ConfigError(f"{origin}: unknown {config_class.__name__} field {', '.join(hints)}")


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = "# Resolved config of this run. Repeat it with: --config " + str(p) + "\n"
    text += yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
    write_text_atomic(p, text)
