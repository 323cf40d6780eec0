"""Simulator speed: env.step calls per second, planning excluded.

Action sequences are prepared first (the expert's, and random admissible commands with a seeded
``random.Random``); then each sequence is replayed on a fresh env and only the ``step`` calls are timed.
"""

from __future__ import annotations

import random
import time

from .env import HouseholdEnv
from .generator import generate_scenes


def _random_actions(scene_env: HouseholdEnv, rng: random.Random) -> list[str]:
    scene_env.reset()
    actions: list[str] = []
    done = False
    while not done:
        cmds = scene_env.admissible_commands()
        # a few thoughts and invalid commands too, as a model would produce
        r = rng.random()
        action = (
            "think: where next?" if r < 0.05 else "take moon 1 from sky 1" if r < 0.1 else rng.choice(cmds)
        )
        actions.append(action)
        _, done, _ = scene_env.step(action)
    return actions


def sim_steps_per_s(n_episodes: int = 50, seed: int = 0) -> float:
    """Simulator steps/s over ``n_episodes`` expert and ``n_episodes`` random episodes (valid_seen scenes)."""
    from eval.expert import solve

    scenes = generate_scenes("valid_seen", n_episodes, seed=seed)
    rng = random.Random(seed)
    plays: list[tuple[HouseholdEnv, list[str]]] = []
    for scene in scenes:
        plays.append((HouseholdEnv(scene), solve(scene).actions))
        env = HouseholdEnv(scene)
        plays.append((env, _random_actions(env, rng)))
    steps = 0
    elapsed = 0.0
    for env, actions in plays:
        env.reset()
        step = env.step
        t0 = time.perf_counter()
        for a in actions:
            step(a)
        elapsed += time.perf_counter() - t0
        steps += len(actions)
    return steps / elapsed if elapsed > 0 else float("inf")
