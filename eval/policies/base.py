"""What the episode runner gives a policy and what it gets back.

A policy sees a batch of :class:`EpisodeState` objects (one per running episode) and returns one
:class:`Reply` per state. The runner owns the states; a policy may keep per-episode data (a KV cache,
a planner, a random generator) in ``state.memory`` and must not keep it anywhere else, so that
episodes never leak into each other and a batch may hold any mix of episodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from data_prep.react import react_messages


@dataclass
class EpisodeState:
    """One running episode as a policy sees it."""

    episode_id: str
    first_observation: str  # the full first observation, welcome line included
    grammar: str = "2.1.1"
    task_type: str | None = None
    steps: list[tuple[str, str]] = field(default_factory=list)  # (action sent to the env, observation)
    admissible: list[str] = field(default_factory=list)  # admissible commands now
    scene: Any = None  # the simulator scene, for policies that plan (the expert)
    index: int = 0  # position of the episode in the run, for seeding
    memory: dict[str, Any] = field(default_factory=dict)  # policy-private per-episode data

    def messages(self) -> list[dict[str, str]]:
        """The chat a model sees now: built by the same code as the training data, ending on a user turn."""
        return react_messages(self.first_observation, self.steps, grammar=self.grammar, include_final_observation=True)


@dataclass
class Reply:
    """A policy's raw answer for one episode and turn."""

    text: str
    tokens_encoded: int = 0  # tokens fed through the model for this turn (prefill + generated)
    error: str | None = None  # transport problem left after the policy's retries: the episode ends as "error"
    truncated: bool = False  # generation hit its token limit before the first line ended


class Policy(Protocol):
    """Anything with a name and a batched ``act``.

    A policy may also define ``release(state)``: the runner calls it once when that episode ends.
    """

    name: str

    def act(self, states: list[EpisodeState]) -> list[Reply]:
        """One reply per state, in order."""
        ...


class PolicyError(RuntimeError):
    """A policy cannot run at all (server down, model missing). The CLI prints it as one line."""
