"""Score a policy on household ReAct episodes.

::

    python -m eval.react_eval --policy expert --split valid_unseen --out runs/x/eval
    python -m eval.react_eval --policy hf --model smollm2-135m-instruct --adapter runs/x/adapter \\
        --split valid_seen --episodes 20 --batch-size 8 --out runs/x/eval
    python -m eval.react_eval --policy openai --base-url http://127.0.0.1:11434 --api-model my-agent ...

Writes ``results.json``, ``episodes.jsonl``, ``report.md`` and ``success_by_task.png`` into ``--out``.
``episodes.jsonl`` grows as episodes end, so ``--resume`` after a crash or a kill plays only the rest
(:mod:`eval.resume`). Episodes the policy could not answer (a server failing past its retries) end as
``error`` and are counted apart from failures; the run goes on.
Exit codes: 0 done, 1 bad input or a policy that cannot run, 2 ``--env alfworld`` without ALFWorld.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from eval.policies.base import Policy, PolicyError

SPLITS = ("valid_seen", "valid_unseen", "train")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.react_eval", description=__doc__.split("\n")[0])
    p.add_argument("--policy", required=True, choices=("expert", "random", "hf", "llamacpp", "openai"))
    p.add_argument("--model", help="hf: registry name, folder or Hub id; llamacpp: .gguf file or registry name")
    p.add_argument("--adapter", help="hf: LoRA adapter folder to apply on --model")
    p.add_argument("--tokenizer", help="llamacpp: tokenizer name or folder (default: read from the GGUF)")
    p.add_argument("--base-url", help="openai: server URL, e.g. http://127.0.0.1:11434 or .../v1")
    p.add_argument("--api-model", help="openai: model name the server knows")
    p.add_argument("--split", default="valid_unseen", choices=SPLITS)
    p.add_argument("--episodes", type=int, help="number of episodes (default: the whole split)")
    p.add_argument("--batch-size", type=int, default=8, help="episodes played side by side (default 8)")
    p.add_argument("--max-steps", type=int, default=50)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="hf: weights dtype (bfloat16 is much faster on CPUs with AMX/AVX512-BF16)")
    p.add_argument("--grammar", default="2.1.1", choices=("2.1.1", "2.1.2"))
    p.add_argument("--fuzzy", action="store_true", help="map free text to the closest admissible command")
    p.add_argument("--env", default="household", choices=("household", "alfworld"))
    p.add_argument("--seed", type=int, default=0, help="scene generator seed (and the random policy's)")
    p.add_argument("--timeout", type=float, default=60.0, help="openai: seconds per request")
    p.add_argument("--retries", type=int, default=3, help="openai: retries per request after a fault (default 3)")
    p.add_argument("--backoff", type=float, default=1.0,
                   help="openai: seconds before the first retry, doubled each time (default 1)")
    p.add_argument("--concurrency", type=int,
                   help="openai: episodes (and requests) in flight at once (default: --batch-size)")
    p.add_argument("--resume", action="store_true",
                   help="keep the episodes already in --out/episodes.jsonl and play only the rest")
    p.add_argument("--allow-pickle", action="store_true",
                   help="hf: also load pickle weights (pytorch_model.bin, *.pt), which can run code; trusted files only")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, type=Path)
    return p


def check_args(args: argparse.Namespace) -> None:
    """Raise ValueError with a one-line message for combinations that cannot work."""
    if args.policy in ("hf", "llamacpp") and not args.model:
        raise ValueError(f"--policy {args.policy} needs --model (a registry name, folder or file)")
    if args.policy == "openai" and not args.base_url:
        raise ValueError("--policy openai needs --base-url (for example http://127.0.0.1:11434)")
    if args.policy == "openai" and not (args.api_model or args.model):
        raise ValueError("--policy openai needs --api-model (the model name the server serves)")
    if args.adapter and args.policy != "hf":
        raise ValueError("--adapter works with --policy hf only (merge and convert it for llamacpp/openai)")
    if args.adapter and not Path(args.adapter).is_dir():
        raise ValueError(f"--adapter {args.adapter}: no such folder")
    if args.episodes is not None and args.episodes < 1:
        raise ValueError("--episodes must be at least 1")
    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    if args.concurrency is not None and args.concurrency < 1:
        raise ValueError("--concurrency must be at least 1")
    if args.retries < 0 or args.backoff < 0 or args.timeout <= 0:
        raise ValueError("--retries and --backoff must be >= 0, --timeout > 0")
    if args.max_steps < 1:
        raise ValueError("--max-steps must be at least 1")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file; pass a folder")


def build_policy(args: argparse.Namespace) -> Policy:
    if args.policy == "expert":
        from eval.policies.expert import ExpertPolicy

        return ExpertPolicy()
    if args.policy == "random":
        from eval.policies.baseline import RandomPolicy

        return RandomPolicy(seed=args.seed)
    if args.policy == "hf":
        from eval.policies.hf import HFPolicy

        try:
            return HFPolicy.load(args.model, args.adapter, dtype=args.dtype, max_new_tokens=args.max_new_tokens,
                                 allow_pickle=args.allow_pickle)
        except (OSError, ValueError) as exc:
            raise PolicyError(f"--model {args.model}: {str(exc).splitlines()[0]}") from exc
    if args.policy == "llamacpp":
        from eval.policies.llamacpp import LlamaCppPolicy, require_llama_cpp, resolve_gguf

        require_llama_cpp()  # before resolving (and maybe assembling) a GGUF for nothing
        tokenizer = None
        if args.tokenizer or not Path(args.model).is_file():
            from models.loading import load_tokenizer

            tokenizer = load_tokenizer(args.tokenizer or args.model)
        return LlamaCppPolicy(resolve_gguf(args.model), tokenizer, max_new_tokens=args.max_new_tokens)
    from eval.policies.openai import OpenAIPolicy

    return OpenAIPolicy(
        args.base_url,
        args.api_model or args.model,
        timeout=args.timeout,
        retries=args.retries,
        backoff=args.backoff,
        max_tokens=args.max_new_tokens,
        concurrency=args.concurrency or args.batch_size,
    )


def load_episodes(args: argparse.Namespace) -> tuple[list[Any], list[str], Any]:
    """(scenes or games, episode ids, make_env or None for the simulator)."""
    if args.env == "alfworld":
        from eval.alfworld_env import list_games, make_alfworld_env

        games = list_games(args.split, args.episodes)
        return games, [g.id for g in games], make_alfworld_env
    from eval.household import generate_scenes

    scenes = generate_scenes(args.split, n=args.episodes, seed=args.seed)
    return scenes, [f"{args.split}-{args.seed}-{i:04d}" for i in range(len(scenes))], None


def run(args: argparse.Namespace) -> dict[str, Any]:
    from eval.metrics import compute_metrics
    from eval.report import write_react_outputs
    from eval.resume import EpisodeLog, finished_episodes, run_identity

    scenes, ids, make_env = load_episodes(args)
    if args.policy == "expert" and args.env != "household":
        raise ValueError("--policy expert plans on simulator scenes; use --env household")
    ident = run_identity(args)
    done = finished_episodes(args.out, ident, ids) if args.resume else {}
    if done:
        print(f"resuming: {len(done)} of {len(ids)} episodes already in {args.out}/episodes.jsonl", file=sys.stderr)
    log = EpisodeLog(args.out, ident, [done[i] for i in sorted(done)])
    start = time.perf_counter()
    try:
        played, stats = _play(args, scenes, ids, make_env, set(done), log.append)
    finally:
        log.close()
    elapsed = time.perf_counter() - start
    results = sorted([*done.values(), *played], key=lambda r: r.index)
    metrics = compute_metrics(
        results,
        policy=args.policy,
        split=args.split,
        fuzzy=args.fuzzy,
        elapsed_s=elapsed,
        extra={
            "env": args.env,
            "grammar": args.grammar,
            "max_steps": args.max_steps,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "model": args.model or args.api_model,
            "adapter": args.adapter,
            "dtype": args.dtype if args.policy == "hf" else None,
            "policy_stats": stats,
        },
    )
    write_react_outputs(args.out, results, metrics, env_name=args.env)
    return metrics


def _play(
    args: argparse.Namespace, scenes: list[Any], ids: list[str], make_env: Any, skip: set[int], on_result: Any
) -> tuple[list[Any], dict[str, Any]]:
    """Play the episodes not in ``skip``: (their results, the policy's stats). No policy is built if none is left."""
    from eval.runner import run_episodes

    if len(skip) == len(scenes):
        return [], {}
    policy = build_policy(args)
    try:
        results = run_episodes(
            policy, scenes, grammar=args.grammar, max_steps=args.max_steps, batch_size=args.batch_size,
            fuzzy=args.fuzzy, make_env=make_env, ids=ids, progress=not args.no_progress, skip=skip,
            on_result=on_result,
        )
    finally:
        close = getattr(policy, "close", None)
        if close is not None:
            close()
    return results, dict(getattr(policy, "stats", {}))


def main(argv: list[str] | None = None) -> int:
    from models.quiet import quiet_dependency_noise

    quiet_dependency_noise()
    args = build_parser().parse_args(argv)
    from eval.alfworld_env import AlfworldUnavailable

    try:
        check_args(args)
        metrics = run(args)
    except AlfworldUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, PolicyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{metrics['policy']} on {metrics['split']}: success {100 * metrics['success_rate']:.1f}% "
        f"over {metrics['episodes']} episodes, avg steps {metrics['avg_steps']:.1f}, "
        f"invalid {100 * metrics['invalid_action_rate']:.1f}%, errors {metrics['errors']}, "
        f"matching {metrics['matching']}; "
        f"wrote {args.out}/results.json, report.md, episodes.jsonl, success_by_task.png"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
