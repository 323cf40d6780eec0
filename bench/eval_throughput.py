"""Eval throughput: simulator steps/s, and batched vs sequential episodes/s for the hf policy.

    python bench/eval_throughput.py [--model smollm2-135m-instruct] [--episodes 32] [--max-steps 10]
                                    [--batch-size 8] [--max-new-tokens 48]

The same episodes (the first N of valid_seen) are played by the same runner and policy twice: batched
(``--batch-size`` slots decoded together with token-level continuous batching: a finished reply steps its
episode and rejoins at the next decoding step, an ended episode's slot takes the next one, as in a real
eval of 134 games) and sequential (one episode at a time, KV cache kept too). ``--per-turn`` also times
the older per-turn batching, where a batch waits for its longest reply; ``--gguf`` plays the same
episodes with the llamacpp policy. N is several times the batch size, so the measurement is of a full batch rather than of
the tail where the last episodes run alone. It prints episodes/s and tokens encoded per episode for each, the tokens a full
re-encode of every turn would have needed (counted with the tokenizer, not run), and checks that both
runs chose the same actions. The last line is ``sim_steps_per_s=<n> batched_over_sequential=<ratio>``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _full_reencode_tokens(tokenizer, results) -> float:
    """Tokens the same episodes would feed if every turn re-encoded the whole chat (prompt + reply)."""
    from data_prep.react import react_messages
    from data_prep.render import render_prompt

    total = 0
    for r in results:
        steps = list(zip(r.actions, r.observations, strict=True))
        for t, reply in enumerate(r.replies):
            prompt = render_prompt(tokenizer, react_messages(r.first_observation, steps[:t]))
            total += len(prompt) + len(tokenizer(reply, add_special_tokens=False)["input_ids"])
    return total / max(1, len(results))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--episodes", type=int, default=32)
    ap.add_argument("--max-steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--adapter", default=None, help="a LoRA adapter folder (e.g. runs/<run>/adapter)")
    ap.add_argument("--per-turn", action="store_true",
                    help="also time the per-turn batched loop (a batch waits for its longest reply)")
    ap.add_argument("--gguf", default=None, help="also play the episodes with the llamacpp policy on this GGUF")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from eval.household import generate_scenes
    from eval.household.bench import sim_steps_per_s
    from eval.policies.hf import HFPolicy
    from eval.runner import run_episodes

    sim = sim_steps_per_s()
    print(f"simulator: {sim:.0f} steps/s")
    policy = HFPolicy.load(args.model, args.adapter, dtype=args.dtype, max_new_tokens=args.max_new_tokens)
    scenes = generate_scenes("valid_seen", n=args.episodes)
    runs = {}
    modes = [("batched", args.batch_size, True), ("per-turn", args.batch_size, False), ("sequential", 1, False)]
    for label, bs, continuous in modes if args.per_turn else [modes[0], modes[2]]:
        t0 = time.perf_counter()
        results = run_episodes(
            policy, scenes, max_steps=args.max_steps, batch_size=bs, progress=True, continuous=continuous
        )
        elapsed = time.perf_counter() - t0
        runs[label] = (results, elapsed)
        tokens = sum(r.tokens_encoded for r in results) / len(results)
        steps = sum(r.steps for r in results) / len(results)
        print(
            f"hf {args.dtype} {label} (batch {bs}): {len(results) / elapsed:.4f} episodes/s, {elapsed:.1f} s, "
            f"{tokens:.0f} tokens encoded/episode, {steps:.1f} steps/episode, "
            f"success {sum(r.won for r in results)}/{len(results)}"
        )
    same = [r.actions for r in runs["batched"][0]] == [r.actions for r in runs["sequential"][0]]
    full = _full_reencode_tokens(policy.tokenizer, runs["sequential"][0])
    print(f"shared system-prompt prefix: {policy.stats['shared_prefix_tokens']} tokens, encoded once per run")
    print(f"full re-encode every turn would feed {full:.0f} tokens/episode; same actions batched/sequential: {same}")
    if args.gguf:
        from eval.policies.llamacpp import LlamaCppPolicy

        gguf = LlamaCppPolicy(args.gguf, max_new_tokens=args.max_new_tokens)
        t0 = time.perf_counter()
        results = run_episodes(gguf, scenes, max_steps=args.max_steps, batch_size=args.batch_size, progress=True)
        elapsed = time.perf_counter() - t0
        gguf.close()
        same_gguf = [r.actions for r in results] == [r.actions for r in runs["sequential"][0]]
        print(
            f"llamacpp {args.gguf}: {len(results) / elapsed:.4f} episodes/s, {elapsed:.1f} s "
            f"({runs['batched'][1] / elapsed:.2f}x the hf batched speed), same actions as hf: {same_gguf}"
        )
    ratio = runs["sequential"][1] / runs["batched"][1]
    print(f"sim_steps_per_s={sim:.0f} batched_over_sequential={ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
