"""The random baseline: a seeded uniform pick among the admissible commands."""

from __future__ import annotations

import random

from eval.policies.base import EpisodeState, Reply

MEMORY_KEY = "random"


class RandomPolicy:
    """Each episode draws from its own generator, seeded by (seed, episode index), so batching changes nothing."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def act(self, states: list[EpisodeState]) -> list[Reply]:
        replies = []
        for state in states:
            rng: random.Random = state.memory.setdefault(MEMORY_KEY, random.Random(self.seed * 1_000_003 + state.index))
            commands = sorted(state.admissible)
            replies.append(Reply(text=rng.choice(commands) if commands else "look"))
        return replies
