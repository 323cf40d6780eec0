"""Parity gate: does the GGUF in llama.cpp behave like transformers (base + adapter)?

For each fixed prompt (rendered with the training chat template):

- the token ids llama.cpp makes from the prompt text must equal the HF tokenizer's;
- f32 / f16 / bf16: the greedy continuation of 32 tokens must be identical (EOS does not stop either side);
  the max |logit diff| over prompt + continuation is reported;
- quantized types: top-1 agreement >= 90% on the positions where HF's top-2 margin exceeds 1.0 (with at
  least ``min_decisive`` such positions, else the gate cannot tell and fails).

Results go to ``parity.json`` (one entry per GGUF). A failed gate renames the file to ``*.failed.gguf``.
Without llama-cpp-python the result is ``skipped`` with the reason; it is never reported as passed.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deploy.llamacpp import llama_cpp_available, load_llama
from fileio.atomic import write_text_atomic

PROMPTS: tuple[tuple[dict[str, str], ...], ...] = (
    ({"role": "user", "content": "What is the capital of France?"},),
    (
        {"role": "system", "content": "You are a careful household robot."},
        {
            "role": "user",
            "content": "You are in the kitchen. Your task is to: put a clean mug in the cabinet.",
        },
    ),
    (
        {"role": "user", "content": "Write one sentence about the sea."},
        {"role": "assistant", "content": "The sea is wide and blue."},
        {"role": "user", "content": "Now one about the moon, please."},
    ),
)
FLOAT_TYPES = ("f32", "f16", "bf16")


@dataclass
class PromptResult:
    n_prompt: int
    tokens_match: bool
    greedy_identical: bool
    first_divergence: int | None
    divergence_margin: float | None  # HF top-2 margin where the continuations split
    max_abs_logit_diff: float
    max_abs_logit: float  # HF logit scale
    decisive: int
    agree: int


@dataclass
class ParityResult:
    gguf: str
    qtype: str
    status: str  # passed | failed | skipped
    reason: str = ""
    max_abs_logit_diff: float | None = None
    greedy_identical: bool | None = None
    top1_agreement: float | None = None
    decisive_positions: int = 0
    note: str = ""
    prompts: list[PromptResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def load_reference(base_dir: Path, adapter_dir: Path | None) -> Any:
    """transformers model (float32, CPU): the base with the adapter applied unmerged, as in training."""
    from models.loading import load_causal_lm

    return load_causal_lm(str(base_dir), adapter_dir)


def _hf_greedy(model: Any, ids: list[int], n: int) -> tuple[list[int], np.ndarray]:
    """Greedy continuation (n tokens, EOS ignored) and the logits for every position of prompt + continuation."""
    import torch

    out: list[int] = []
    with torch.no_grad():
        res = model(torch.tensor([ids]), use_cache=True)
        past = res.past_key_values
        nxt = int(res.logits[0, -1].argmax())
        for _ in range(n):
            out.append(nxt)
            res = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
            past = res.past_key_values
            nxt = int(res.logits[0, -1].argmax())
        full = model(torch.tensor([ids + out])).logits[0].float().numpy()
    return out, full


def _llama_greedy(llm: Any, ids: list[int], n: int, forced: list[int]) -> tuple[list[int], np.ndarray]:
    """Greedy continuation (n tokens, EOS ignored), and the logits on ``ids + forced`` (HF's continuation),
    so both sides are compared on the same sequence."""
    llm.reset()
    llm.eval(ids)
    out: list[int] = []
    for _ in range(n):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        llm.eval([nxt])
    llm.reset()
    llm.eval(ids + forced)
    return out, np.array(llm.scores[: len(ids) + len(forced)], dtype=np.float32)


def compare(
    gguf_path: Path,
    qtype: str,
    model: Any,
    tokenizer: Any,
    *,
    n_new: int = 32,
    margin: float = 1.0,
    min_agreement: float = 0.9,
    min_decisive: int = 8,
    lora_path: Path | None = None,
) -> ParityResult:
    """Run the gate for one GGUF (optionally with a LoRA GGUF on top) against ``model``."""
    ok, why = llama_cpp_available()
    if not ok:
        return ParityResult(gguf_path.name, qtype, "skipped", reason=why)
    prompts = render_prompts(tokenizer)
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in prompts]
    n_ctx = max(len(e) for e in encoded) + n_new + 8
    llm = load_llama(gguf_path, n_ctx=n_ctx, lora_path=lora_path)
    results: list[PromptResult] = []
    arrays: list[tuple[np.ndarray, np.ndarray]] = []  # per prompt: HF top-2 margins, top-1 agreement
    try:
        for text, ids in zip(prompts, encoded, strict=True):
            result, margins, same = _compare_prompt(llm, model, text, ids, n_new=n_new, margin=margin)
            results.append(result)
            arrays.append((margins, same))
    finally:
        llm.close()
    res = _summary(gguf_path.name, qtype, results)
    reasons = []
    if not all(r.tokens_match for r in results):
        reasons.append(
            "llama.cpp tokenizes the prompts differently from the HF tokenizer (pre-tokenizer/specials)"
        )
    if qtype in FLOAT_TYPES:
        reasons += _float_rule(res, arrays, qtype)
    else:
        reasons += _quant_rule(res, margin=margin, min_agreement=min_agreement, min_decisive=min_decisive)
    if reasons:
        res.status = "failed"
        res.reason = "; ".join(reasons)
    return res


def render_prompts(tokenizer: Any) -> list[str]:
    """The fixed prompts in the training chat template. A template that refuses a system role (Gemma,
    Mistral v0.1) gets the system prompt's conversation without it, so every model is checked on three."""
    from jinja2 import TemplateError

    out = []
    for conv in PROMPTS:
        msgs = list(conv)
        try:
            text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        except TemplateError:
            if msgs[0]["role"] != "system":
                raise
            text = tokenizer.apply_chat_template(msgs[1:], tokenize=False, add_generation_prompt=True)
        out.append(text)
    return out


def _compare_prompt(
    llm: Any, model: Any, text: str, ids: list[int], *, n_new: int, margin: float
) -> tuple[PromptResult, np.ndarray, np.ndarray]:
    """One prompt on both sides: its result, HF's top-2 margin per position and where the top-1 agree."""
    lids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    hf_out, hf_logits = _hf_greedy(model, ids, n_new)
    ll_out, ll_logits = _llama_greedy(llm, ids, n_new, hf_out)
    div = next((i for i, (a, b) in enumerate(zip(hf_out, ll_out, strict=True)) if a != b), None)
    top2 = np.sort(hf_logits, axis=-1)[:, -2:]
    margins = top2[:, 1] - top2[:, 0]
    same = hf_logits.argmax(-1) == ll_logits.argmax(-1)
    decisive = margins > margin
    result = PromptResult(
        n_prompt=len(ids),
        tokens_match=list(lids) == list(ids),
        greedy_identical=div is None,
        first_divergence=div,
        divergence_margin=None if div is None else float(margins[len(ids) - 1 + div]),
        max_abs_logit_diff=float(np.abs(hf_logits - ll_logits).max()),
        max_abs_logit=float(np.abs(hf_logits).max()),
        decisive=int(decisive.sum()),
        agree=int((same & decisive).sum()),
    )
    return result, margins, same


def _summary(gguf_name: str, qtype: str, results: list[PromptResult]) -> ParityResult:
    """A ``passed`` result with the totals over all prompts; the rules below may fail it."""
    res = ParityResult(gguf_name, qtype, "passed", prompts=results)
    res.max_abs_logit_diff = max(r.max_abs_logit_diff for r in results)
    res.greedy_identical = all(r.greedy_identical for r in results)
    res.decisive_positions = sum(r.decisive for r in results)
    res.top1_agreement = (
        (sum(r.agree for r in results) / res.decisive_positions) if res.decisive_positions else None
    )
    return res


def _quant_rule(res: ParityResult, *, margin: float, min_agreement: float, min_decisive: int) -> list[str]:
    """Quantized types: enough decisive positions, and top-1 agreement on them of at least ``min_agreement``."""
    if res.decisive_positions < min_decisive:
        return [
            f"only {res.decisive_positions} positions with HF top-2 margin > {margin}; "
            f"need {min_decisive} to judge"
        ]
    if (res.top1_agreement or 0.0) < min_agreement:
        return [
            f"top-1 agreement {res.top1_agreement:.1%} < {min_agreement:.0%} on "
            f"{res.decisive_positions} decisive positions"
        ]
    return []


# Rounding of each float type: unit roundoff, and the logit error allowed (fraction of the logit scale, floor).
_FLOAT_EPS = {"f32": 1.2e-7, "f16": 9.8e-4, "bf16": 7.8e-3}
_FLOAT_BOUND = {"f32": (1e-3, 0.01), "f16": (2e-2, 0.1), "bf16": (8e-2, 0.4)}


def _float_rule(res: ParityResult, arrays: list[tuple[np.ndarray, np.ndarray]], qtype: str) -> list[str]:
    """f32/f16/bf16 differ from transformers only by rounding.

    - max |logit diff| must stay under the type's bound;
    - the 32-token greedy continuation must be identical. The one exception is a split at an exact tie:
      where HF's top-2 margin is below the rounding noise (``tie_tol``) either choice is correct, so the
      split is reported in ``note``; then every teacher-forced position whose margin exceeds ``tie_tol`` must
      still pick HF's top-1 token.
    """
    reasons: list[str] = []
    scale = max(r.max_abs_logit for r in res.prompts)
    rel, floor = _FLOAT_BOUND[qtype]
    bound = max(rel * scale, floor)
    diff = res.max_abs_logit_diff or 0.0
    tie_tol = min(max(4 * _FLOAT_EPS[qtype] * scale, 2 * diff), bound)
    if diff > bound:
        reasons.append(
            f"max |logit diff| {diff:.4g} exceeds {bound:.3g} allowed for {qtype} (logit scale {scale:.3g})"
        )
    for i, (r, (margins, same)) in enumerate(zip(res.prompts, arrays, strict=True)):
        wrong = int((~same & (margins > tie_tol)).sum())
        if wrong:
            reasons.append(
                f"prompt {i}: {wrong} positions where llama.cpp's top-1 differs from HF's although "
                f"HF's margin exceeds the rounding noise {tie_tol:.3g}"
            )
        if not r.greedy_identical:
            where = f"prompt {i}, token {r.first_divergence}, HF top-2 margin {r.divergence_margin:.3g}"
            if (r.divergence_margin or 0.0) < tie_tol:
                res.note += f"greedy split at a tie ({where} < {tie_tol:.3g}); "
            else:
                reasons.append(f"greedy continuation differs ({where})")
    return reasons


def failed_name(path: Path) -> Path:
    return path.with_name(path.name[: -len(".gguf")] + ".failed.gguf")


def record(results: list[ParityResult], out: Path) -> None:
    """Merge results into ``out`` (parity.json), atomically; rename failed GGUFs to ``*.failed.gguf``."""
    data: dict[str, Any] = {}
    if out.is_file():
        with contextlib.suppress(ValueError):
            data = json.loads(out.read_text())
    files = data.setdefault("files", {})
    for r in results:
        entry = r.to_json()
        if r.status == "failed":
            src = out.parent / r.gguf
            if src.is_file():
                dst = failed_name(src)
                os.replace(src, dst)
                entry["renamed_to"] = dst.name
        files[r.gguf] = entry
    data["status"] = (
        "failed"
        if any(f["status"] == "failed" for f in files.values())
        else "skipped"
        if any(f["status"] == "skipped" for f in files.values())
        else "passed"
    )
    write_text_atomic(out, json.dumps(data, indent=2))
