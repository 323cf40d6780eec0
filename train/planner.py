"""Hardware planner: (device, VRAM, bf16, model size, seq len, method) -> precision, batch, checkpointing.

A pure function over the source documents' VRAM figures (docs/sources.md#vram-table; in the code they
live only here). The table gives the GPU memory a LoRA / QLoRA fine-tune needs at batch 1 and the reference
sequence length of 2048 tokens with gradient checkpointing (0.5B LoRA 4-6 GB, 1.5B 6 GB, 3B 8-12 GB,
7B LoRA 16-20 GB, 7B QLoRA 10-14 GB, 14B QLoRA 18-24 GB, 0.5B QLoRA 1-2 GB; the rest is our estimate).
Extra samples per batch and longer sequences add activation memory, estimated as :func:`activation_gb`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models.cpu_info import cpu_flags

# (params in B, method) -> (low, high) GB at batch 1, seq 2048, gradient checkpointing on.
# Where each row comes from: docs/sources.md#vram-table.
VRAM_TABLE_GB: dict[tuple[float, str], tuple[float, float]] = {
    (0.5, "lora"): (4.0, 6.0),
    (1.5, "lora"): (6.0, 7.0),
    (3.0, "lora"): (8.0, 12.0),
    (7.0, "lora"): (16.0, 20.0),
    (14.0, "lora"): (32.0, 36.0),  # ours, in no source: bf16 weights (28 GB) + the 7B row's overhead
    (0.5, "qlora"): (1.0, 2.0),
    (1.5, "qlora"): (2.5, 4.0),  # ours: interpolated between the 0.5B and 7B QLoRA rows
    (3.0, "qlora"): (5.0, 8.0),  # ours; source 000 fits 3B QLoRA (cutoff 1024, batch 1) in 12 GB
    (7.0, "qlora"): (10.0, 14.0),
    (14.0, "qlora"): (18.0, 24.0),
}
REFERENCE_SEQ = 2048
EFFECTIVE_BATCH = 16  # source 000's presets: 1x16 (3060), 2x8 (4090), 4x4 (A100); see MAX_BATCH
MAX_BATCH = 4  # source 000's presets never go above 4 per device (docs/sources.md#batch-presets)


@dataclass(frozen=True)
class Hardware:
    device: str  # "cpu" or the GPU name, e.g. "Tesla T4"
    vram_gb: float = 0.0  # 0 for CPU
    bf16: bool = False  # GPU: bf16 supported; CPU: bf16 matrix units (AMX / AVX512-BF16) present

    @property
    def is_cpu(self) -> bool:
        return self.vram_gb <= 0 or self.device.lower() == "cpu"


@dataclass
class Plan:
    device: str
    precision: str  # fp32 | fp16 | bf16
    batch_size: int
    grad_accum: int
    gradient_checkpointing: bool
    seq_len: int
    method: str
    use_cpu: bool
    need_gb: float = 0.0  # estimated peak VRAM of this plan (0 on CPU)
    vram_gb: float = 0.0
    fits: bool = True
    advice: list[str] = field(default_factory=list)  # what to change when it does not fit
    notes: list[str] = field(default_factory=list)
    # CPU speed levers (train/cpu_speed.py, train/head_loss.py); the GPU path keeps the defaults.
    base_weights: str = ""  # frozen base weights in training: "" (as the backend loads them) | fp32 | bf16
    attention: str = ""  # "" (the model's default) | sdpa_segments (per-example attention, padding-free rows)
    head_loss: str = "trl"  # trl (TRL's chunked_nll) | fused (frozen head + CE, gradient made in the forward)

    def sft_fields(self) -> dict[str, object]:
        """The SFTConfig fields this plan decides."""
        return {
            "per_device_train_batch_size": self.batch_size,
            "gradient_accumulation_steps": self.grad_accum,
            "gradient_checkpointing": self.gradient_checkpointing,
            "bf16": self.precision == "bf16",
            "fp16": self.precision == "fp16",
            "use_cpu": self.use_cpu,
        }


def with_explicit(p: Plan, sft: dict[str, object]) -> Plan:
    """The plan after the settings the config names explicitly (they win; the table shows what will run)."""
    changed = []
    if "per_device_train_batch_size" in sft:
        p.batch_size = int(sft["per_device_train_batch_size"])  # type: ignore[call-overload]
        changed.append("batch size")
    if "gradient_accumulation_steps" in sft:
        p.grad_accum = int(sft["gradient_accumulation_steps"])  # type: ignore[call-overload]
        changed.append("accumulation")
    if "gradient_checkpointing" in sft:
        p.gradient_checkpointing = bool(sft["gradient_checkpointing"])
        changed.append("checkpointing")
    if sft.get("bf16"):
        p.precision = "bf16"
        changed.append("precision")
    elif sft.get("fp16"):
        p.precision = "fp16"
        changed.append("precision")
    elif "bf16" in sft or "fp16" in sft:  # explicitly off
        p.precision = "fp32"
        changed.append("precision")
    if p.use_cpu and p.precision != "bf16":
        p.base_weights = "fp32"  # bf16 weights only under bf16 autocast
    if changed:
        p.notes.append(f"from the config: {', '.join(changed)}")
    return p


class DtypeConflict(ValueError):
    """The model dtype and the trainer precision cannot both hold; the message says what to change."""


def with_model_dtype(p: Plan, dtype: str, hw: Hardware, sft: dict[str, object]) -> Plan:
    """Make the trainer precision agree with an explicit ``--model.dtype`` (or refuse, in our words).

    fp16 weights under bf16 autocast (or bf16 weights under fp16 loss scaling) fail inside the trainer with
    a TypeError; float32 weights suit either autocast. So an explicit 16-bit dtype sets the precision.
    """
    want = {"float16": "fp16", "fp16": "fp16", "bfloat16": "bf16", "bf16": "bf16"}.get(dtype)
    if p.use_cpu and dtype != "auto":  # the weights are what the config says, not the plan's choice
        p.base_weights = "bf16" if want == "bf16" else "fp32"
    if want is None or p.precision == want:
        return p
    asked = "bf16" if sft.get("bf16") else "fp16" if sft.get("fp16") else None
    if asked is not None and asked != want:
        raise DtypeConflict(
            f"--model.dtype {dtype} and --sft.{asked} true contradict each other: "
            f"{dtype} weights train under {want} (drop one of the two)"
        )
    if want == "fp16" and p.use_cpu:
        raise DtypeConflict(
            f"--model.dtype {dtype}: float16 weights train only on a GPU; on CPU use float32 or bfloat16"
        )
    if want == "bf16" and not hw.bf16:
        raise DtypeConflict(
            f"--model.dtype {dtype}: {hw.device} has no native bf16 (a GPU needs compute capability 8.0+); "
            "use --model.dtype float16 or auto"
        )
    p.notes.append(f"--model.dtype {dtype}: trainer precision {want} to match the weights")
    p.precision = want
    return p


def table_gb(params_b: float, method: str) -> tuple[float, float]:
    """(low, high) GB at batch 1 / seq 2048, interpolated linearly in model size between table rows."""
    rows = sorted((p, v) for (p, m), v in VRAM_TABLE_GB.items() if m == method)
    if not rows:
        raise ValueError(f"unknown method '{method}' (lora or qlora)")
    if params_b <= rows[0][0]:
        scale = max(params_b / rows[0][0], 0.25)
        return rows[0][1][0] * scale, rows[0][1][1] * scale
    for (p0, (l0, h0)), (p1, (l1, h1)) in zip(rows, rows[1:], strict=False):
        if params_b <= p1:
            t = (params_b - p0) / (p1 - p0)
            return l0 + t * (l1 - l0), h0 + t * (h1 - h0)
    p_last, (l_last, h_last) = rows[-1]
    scale = params_b / p_last
    return l_last * scale, h_last * scale


def activation_gb(params_b: float, seq_len: int, checkpointing: bool = True) -> float:
    """Activation memory of one sample (GB); about 2 GB for a 7B model at 2048 tokens with checkpointing."""
    per = 0.3 * params_b * seq_len / REFERENCE_SEQ
    return per if checkpointing else per * 4


def need_gb(params_b: float, method: str, seq_len: int, batch: int, checkpointing: bool = True) -> float:
    """Typical peak GB (mid-range of the table's row) for this model/method at ``seq_len`` and ``batch``."""
    low, high = table_gb(params_b, method)
    base = (low + high) / 2 - activation_gb(params_b, REFERENCE_SEQ)
    return base + batch * activation_gb(params_b, seq_len, checkpointing)


def _largest_fitting_model(vram: float, method: str, seq_len: int) -> float | None:
    sizes = sorted({p for (p, m) in VRAM_TABLE_GB if m == method}, reverse=True)
    for p in sizes:
        if need_gb(p, method, seq_len, 1) <= vram:
            return p
    return None


def plan(
    hw: Hardware, params_b: float, seq_len: int, method: str = "lora", *, bnb_available: bool = True
) -> Plan:
    """Decide precision, batch size, accumulation, checkpointing and sequence length for one run."""
    if method not in ("lora", "qlora"):
        raise ValueError(f"unknown method '{method}' (lora or qlora)")
    if hw.is_cpu:
        return _plan_cpu(hw, seq_len, method, bnb_available)
    precision = "bf16" if hw.bf16 else "fp16"
    notes = [] if hw.bf16 else [f"{hw.device} has no bf16: training in fp16"]
    usable = hw.vram_gb * 0.95  # driver and allocator overhead
    need1 = need_gb(params_b, method, seq_len, 1)
    if need1 > usable:
        return Plan(
            device=hw.device, precision=precision, batch_size=1, grad_accum=EFFECTIVE_BATCH,
            gradient_checkpointing=True, seq_len=seq_len, method=method, use_cpu=False, need_gb=need1,
            vram_gb=hw.vram_gb, fits=False, advice=_advice(params_b, seq_len, method, usable), notes=notes,
        )
    act = activation_gb(params_b, seq_len)
    batch = 1
    while batch * 2 <= MAX_BATCH and need1 + (batch * 2 - 1) * act <= usable:
        batch *= 2
    # Checkpointing off only when the batch at full activation memory (about 4x) still fits comfortably.
    checkpointing = need_gb(params_b, method, seq_len, batch, checkpointing=False) > usable * 0.8
    return Plan(
        device=hw.device, precision=precision, batch_size=batch, grad_accum=max(1, EFFECTIVE_BATCH // batch),
        gradient_checkpointing=checkpointing, seq_len=seq_len, method=method, use_cpu=False,
        need_gb=need_gb(params_b, method, seq_len, batch, checkpointing), vram_gb=hw.vram_gb, notes=notes,
    )


def _plan_cpu(hw: Hardware, seq_len: int, method: str, bnb_available: bool) -> Plan:
    notes = []
    if method == "qlora" and not bnb_available:
        notes.append("QLoRA needs bitsandbytes, which is not installed: training LoRA in fp32 instead")
        method = "lora"
    batch = 4 if seq_len <= 256 else 2 if seq_len <= 1024 else 1
    precision = base_weights = "fp32"
    if hw.bf16:
        # bf16 autocast: ~1.8x faster steps on AMX. The frozen base weights are stored in bf16 (the values
        # autocast computes with anyway, without re-casting them every step); LoRA, norms, embeddings and the
        # optimizer stay fp32.
        precision = base_weights = "bf16"
        notes.append("CPU has bf16 matrix units: bf16 compute, frozen base weights in bf16, LoRA + optimizer fp32")
    # Per-example attention and the fused head loss pay on every CPU (measured: bench/train_throughput.py).
    notes.append("padding-free rows: attention per example (sdpa_segments); fused output-head loss")
    # Small effective batch on CPU: few examples per demo; more optimizer steps beat smoother ones.
    return Plan(
        device=hw.device, precision=precision, batch_size=batch, grad_accum=1, gradient_checkpointing=False,
        seq_len=seq_len, method=method, use_cpu=True, notes=notes, base_weights=base_weights,
        attention="sdpa_segments", head_loss="fused",
    )


def _advice(params_b: float, seq_len: int, method: str, usable: float) -> list[str]:
    """What to change when batch 1 does not fit: QLoRA, shorter sequences, a smaller model."""
    advice = []
    if method == "lora" and need_gb(params_b, "qlora", seq_len, 1) <= usable:
        advice.append(f"use QLoRA (--lora.method qlora): needs ~{need_gb(params_b, 'qlora', seq_len, 1):.0f} GB")
    for s in (seq_len // 2, seq_len // 4):
        if s >= 256 and need_gb(params_b, method, s, 1) <= usable:
            advice.append(
                f"shorten sequences (--model.max_seq_length {s}): needs ~{need_gb(params_b, method, s, 1):.0f} GB"
            )
            break
    smaller = _largest_fitting_model(usable, method, seq_len)
    if smaller is not None and smaller < params_b:
        advice.append(f"use a smaller model (<= {smaller:g}B with {method})")
    return advice or ["no listed setting fits; use a GPU with more memory"]


def detect_hardware() -> Hardware:
    """The GPU this process sees, or the CPU (imports torch)."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return Hardware(device=props.name, vram_gb=props.total_memory / 1024**3, bf16=gpu_has_native_bf16())
    return Hardware(device="cpu", bf16=cpu_has_bf16_units())


def gpu_has_native_bf16() -> bool:
    """bf16 in hardware (compute capability 8.0+: Ampere and newer). torch's own check counts emulation by
    default and says True on a T4 (7.5), where bf16 runs emulated and slowly; fp16 is the T4's precision."""
    import torch

    return torch.cuda.get_device_capability(0) >= (8, 0)


def cpu_has_bf16_units() -> bool:
    """True when the CPU multiplies bf16 in hardware (Intel AMX or AVX512-BF16); Linux only, else False."""
    return any(flag in cpu_flags().split() for flag in ("amx_bf16", "avx512_bf16"))


def render(p: Plan, params_b: float, model: str) -> object:
    """The plan as a rich Table (printed before training)."""
    from rich.table import Table

    t = Table(title=f"Hardware plan: {model} ({params_b:g}B) on {p.device}", show_header=True)
    t.add_column("setting")
    t.add_column("value")
    rows = [
        ("method", p.method),
        ("precision", p.precision),
        ("batch size x accumulation", f"{p.batch_size} x {p.grad_accum}"),
        ("gradient checkpointing", "on" if p.gradient_checkpointing else "off"),
        ("sequence length", str(p.seq_len)),
    ]
    if p.use_cpu:
        rows.append(("frozen weights / attention / head loss", f"{p.base_weights} / {p.attention} / {p.head_loss}"))
    if not p.use_cpu:
        rows.append(("VRAM needed / available", f"~{p.need_gb:.1f} / {p.vram_gb:.1f} GB"))
    rows.append(("fits", "yes" if p.fits else "NO"))
    for k, v in rows:
        t.add_row(k, v)
    for n in p.notes:
        t.add_row("note", n)
    for a in p.advice:
        t.add_row("change", a)
    return t
