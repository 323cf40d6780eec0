"""Held-out loss, perplexity and side-by-side samples for the chat scenarios (QA, roleplay).

::

    python -m eval.chat_eval --model smollm2-135m-instruct --adapter runs/x/adapter \\
        --data runs/x/data/test.jsonl --out runs/x/eval --samples 5 --character data/roleplay/character.json

Loss is the mean cross-entropy over assistant tokens only (the labels of ``data_prep.render.render_example``,
exactly as in training), for the base model and, with ``--adapter``, the fine-tuned one. Samples are replies
to the conversation up to its last assistant turn, decoded by ``models.generate`` with the scenario's
settings (those its Modelfile writes; greedy when the scenario is unknown). With ``--character``, every sample reply is
checked against the card's ``consistency`` rules (``eval.persona``). Writes ``results.json``, ``report.md``
and ``perplexity.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from eval.persona import PersonaRules, persona_score
from eval.report import save_bar_png, write_json
from fileio.atomic import write_text_atomic
from models.generate import GREEDY, Sampling, generate_reply, sampling_for, scenario_kind


@dataclass
class Row:
    source: str  # file:line
    messages: list[dict[str, Any]]


def read_rows(path: Path) -> list[Row]:
    """Conversations from a JSONL file (``{"messages": [...]}`` per line); ValueError names file:line:field."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: invalid JSON ({exc.msg})") from exc
        msgs = doc.get("messages") if isinstance(doc, dict) else None
        if not isinstance(msgs, list) or not msgs:
            raise ValueError(f"{path}:{n}: field 'messages' must be a non-empty list")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ValueError(f"{path}:{n}: field 'messages[{i}]' needs string 'role' and 'content'")
        rows.append(Row(f"{path.name}:{n}", [{"role": m["role"], "content": m["content"]} for m in msgs]))
    if not rows:
        raise ValueError(f"{path}: no conversations")
    return rows


def load_models(model: str, adapter: str | None, allow_pickle: bool = False) -> tuple[Any, Any, bool]:
    """(model, tokenizer, has_adapter). With an adapter the model is a PeftModel, so the base is one
    ``disable_adapter()`` away. Pickle weights are refused unless ``allow_pickle``."""
    from models.loading import load_model

    try:
        lm, tokenizer = load_model(model, adapter, allow_pickle=allow_pickle)
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None  # the message names the missing folder or model
    return lm, tokenizer, bool(adapter)


def _variants(model: Any, has_adapter: bool) -> list[tuple[str, Any]]:
    """(label, context manager factory) for base and, with an adapter, fine-tuned."""
    import contextlib

    if not has_adapter:
        return [("base", contextlib.nullcontext)]
    return [("base", model.disable_adapter), ("finetuned", contextlib.nullcontext)]


def heldout_loss(model: Any, tokenizer: Any, rows: list[Row], max_length: int, desc: str) -> dict[str, Any]:
    """Token-weighted mean cross-entropy over assistant tokens, and its perplexity."""
    import torch

    from data_prep.render import IGNORE_INDEX, RenderError, render_example

    total, tokens, skipped = 0.0, 0, []
    for row in tqdm(rows, desc=desc, unit="row"):
        try:
            ex = render_example(tokenizer, row.messages, max_length=max_length)
        except RenderError as exc:
            skipped.append(f"{row.source}: {exc}")
            continue
        labels = torch.tensor([ex.labels])
        if int((labels[:, 1:] != IGNORE_INDEX).sum()) == 0:
            skipped.append(f"{row.source}: no assistant tokens within {max_length} tokens")
            continue
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([ex.input_ids])).logits[:, :-1].float()
        target = labels[:, 1:]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        total += float(loss)
        tokens += int((target != IGNORE_INDEX).sum())
    loss = total / tokens if tokens else None
    return {
        "loss": loss,
        "perplexity": math.exp(loss) if loss is not None else None,
        "tokens": tokens,
        "rows": len(rows) - len(skipped),
        "skipped": skipped,
    }


def sample_prompts(rows: list[Row], n: int) -> list[tuple[Row, list[dict[str, Any]], str]]:
    """(row, conversation up to its last assistant turn, that turn's reference text) for the first n rows."""
    out = []
    for row in rows:
        last = max((i for i, m in enumerate(row.messages) if m["role"] == "assistant"), default=None)
        if last is None or last == 0:
            continue
        out.append((row, row.messages[:last], row.messages[last]["content"]))
        if len(out) == n:
            break
    return out


def run_sampling(scenario: str | None, adapter: str | None) -> Sampling:
    """The scenario's decoding (``--scenario``, else the adapter's run config); greedy when neither says,
    so base and tuned replies then compare token for token."""
    if scenario is None and adapter:
        config = Path(adapter).parent / "config.yaml"
        if config.is_file():
            import yaml

            scenario = ((yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("run") or {}).get("scenario")
    return sampling_for(scenario) if scenario_kind(scenario) else GREEDY


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def render_report(doc: dict[str, Any]) -> str:
    labels = [v for v in ("base", "finetuned") if doc.get(v)]
    lines = [
        f"# Chat evaluation: {doc['model']}" + (f" + {doc['adapter']}" if doc.get("adapter") else ""),
        "",
        f"Held-out data: `{doc['data']}`, {doc['rows']} conversations; loss over assistant tokens only.",
        "",
        "| model | loss | perplexity | assistant tokens |" + (" persona pass % |" if doc.get("persona") else ""),
        "|---|---:|---:|---:|" + ("---:|" if doc.get("persona") else ""),
    ]
    for v in labels:
        m = doc[v]
        loss = "-" if m["loss"] is None else f"{m['loss']:.4f}"
        ppl = "-" if m["perplexity"] is None else f"{m['perplexity']:.2f}"
        row = f"| {v} | {loss} | {ppl} | {m['tokens']} |"
        if doc.get("persona"):
            row += f" {100 * doc['persona'][v]['pass_rate']:.1f} |"
        lines.append(row)
    skipped = doc[labels[0]]["skipped"]
    if skipped:
        lines += ["", f"Skipped {len(skipped)} rows: " + "; ".join(skipped[:5])]
    if doc["samples"]:
        lines += ["", f"## Samples ({doc.get('sampling', 'greedy')})", ""]
        head = "| # | prompt (last user turn) | reference | " + " | ".join(labels) + " |"
        lines += [head, "|---|---|---|" + "---|" * len(labels)]
        for i, s in enumerate(doc["samples"], start=1):
            cells = [_cell(s["replies"][v]) for v in labels]
            if doc.get("persona"):
                cells = [
                    c + ("" if s["persona"][v]["passed"] else f"<br>**out of character:** {_cell('; '.join(s['persona'][v]['reasons']))}")
                    for c, v in zip(cells, labels, strict=True)
                ]
            lines.append(f"| {i} | {_cell(s['prompt'])} | {_cell(s['reference'])} | " + " | ".join(cells) + " |")
    if doc.get("persona"):
        lines += ["", f"Persona rules from `{doc['character']}`: forbidden strings, claims the character must not "
                  "make, self-introductions under another name, reply length."]
    lines += ["", "![perplexity](perplexity.png)", ""]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = read_rows(args.data)
    rules = None
    if args.character:
        if not args.character.is_file():
            raise ValueError(f"--character {args.character}: no such file")
        try:
            rules = PersonaRules.from_card(json.loads(args.character.read_text(encoding="utf-8")))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{args.character}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
        except ValueError as exc:
            raise ValueError(f"{args.character}: {exc}") from exc
    model, tokenizer, has_adapter = load_models(args.model, args.adapter, args.allow_pickle)
    sampling = run_sampling(args.scenario, args.adapter)
    start = time.perf_counter()
    doc: dict[str, Any] = {
        "model": args.model,
        "adapter": args.adapter,
        "data": str(args.data),
        "rows": len(rows),
        "character": str(args.character) if args.character else None,
        "base": None,
        "finetuned": None,
        "sampling": sampling.describe(),
    }
    prompts = sample_prompts(rows, args.samples)
    samples: list[dict[str, Any]] = [
        {"source": r.source, "prompt": msgs[-1]["content"], "reference": ref, "replies": {}} for r, msgs, ref in prompts
    ]
    for label, ctx in _variants(model, has_adapter):
        with ctx():
            doc[label] = heldout_loss(model, tokenizer, rows, args.max_length, desc=f"loss ({label})")
            for s, (_, msgs, _) in zip(samples, tqdm(prompts, desc=f"samples ({label})", unit="sample"), strict=True):
                s["replies"][label] = generate_reply(model, tokenizer, msgs, args.max_new_tokens, sampling)
    if rules is not None:
        doc["persona"] = {}
        for label in [v for v in ("base", "finetuned") if doc[v]]:
            rate, checks = persona_score([s["replies"][label] for s in samples], rules)
            doc["persona"][label] = {"pass_rate": rate, "n": len(checks)}
            for s, c in zip(samples, checks, strict=True):
                s.setdefault("persona", {})[label] = {"passed": c.passed, "reasons": c.reasons}
    doc["samples"] = samples
    doc["elapsed_s"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", doc)
    write_text_atomic(args.out / "report.md", render_report(doc))
    labels = [v for v in ("base", "finetuned") if doc[v] and doc[v]["perplexity"] is not None]
    if labels:
        save_bar_png(args.out / "perplexity.png", labels, [doc[v]["perplexity"] for v in labels],
                     title="held-out perplexity (assistant tokens)", ylabel="perplexity", ymax=None, fmt="{:.2f}")
    return doc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.chat_eval", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="registry name, folder or Hub id")
    p.add_argument("--adapter", help="LoRA adapter folder; compared with the base model")
    p.add_argument("--data", required=True, type=Path, help="held-out test.jsonl ({'messages': [...]} per line)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--samples", type=int, default=5, help="side-by-side samples (default 5)")
    p.add_argument("--scenario", help="react | roleplay | qa: decode samples as its Modelfile does "
                   "(default: the adapter's run config; greedy when unknown)")
    p.add_argument("--character", type=Path, help="roleplay character card with a 'consistency' object")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--max-length", type=int, default=2048, help="truncate rows to this many tokens for the loss")
    p.add_argument("--allow-pickle", action="store_true",
                   help="also load pickle weights (pytorch_model.bin, *.pt), which can run code; trusted files only")
    return p


def main(argv: list[str] | None = None) -> int:
    from models.quiet import quiet_dependency_noise

    quiet_dependency_noise()
    args = build_parser().parse_args(argv)
    try:
        if args.samples < 0:
            raise ValueError("--samples must be 0 or more")
        if args.adapter and not Path(args.adapter).is_dir():
            raise ValueError(f"--adapter {args.adapter}: no such folder")
        doc = run(args)
    except (ValueError, OSError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    parts = [f"{v}: loss {doc[v]['loss']:.4f}, ppl {doc[v]['perplexity']:.2f}"
             for v in ("base", "finetuned") if doc[v] and doc[v]["loss"] is not None]
    if doc.get("persona"):
        parts += [f"persona {v} {100 * p['pass_rate']:.0f}%" for v, p in doc["persona"].items()]
    print("; ".join(parts) + f"; wrote {args.out}/results.json, report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
