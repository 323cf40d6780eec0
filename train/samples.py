"""Replies to held-out prompts after training (and the base model's, adapter off, for comparison).

Decoded by :func:`models.generate.generate_reply` with the scenario's settings, the ones the exported
Modelfile gives Ollama, so what training prints is what the deployed model will say.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

from models.generate import Sampling, generate_reply
from train.data import prompt_and_reference


def sample_generations(
    model: Any, tokenizer: Any, rows: list[dict[str, Any]], n: int, max_new_tokens: int, *, with_base: bool,
    sampling: Sampling, seed: int = 0,
) -> list[dict[str, str]]:
    """Replies to the first ``n`` held-out prompts (and the base model's, adapter off, when asked).

    Sampled decoding restarts from ``seed`` for each reply, so before and after see the same random draws.
    """
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
            "after": generate_reply(model, tokenizer, prompt, max_new_tokens, sampling, seed),
        }
        if with_base:
            with model.disable_adapter():
                entry["before"] = generate_reply(model, tokenizer, prompt, max_new_tokens, sampling, seed)
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
