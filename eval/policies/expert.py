"""The expert planner (``eval.expert``) behind the runner's batched policy interface."""

from __future__ import annotations

from eval.expert import expert_next_action
from eval.policies.base import EpisodeState, Reply


class ExpertPolicy:
    """Replays the planner over the episode's own transcript; it sees observations only, never the scene."""

    name = "expert"

    def act(self, states: list[EpisodeState]) -> list[Reply]:
        return [Reply(text=expert_next_action(s.first_observation, s.steps, s.grammar)) for s in states]
