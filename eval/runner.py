"""The episode runner: plays many household episodes at once with one policy.

Each loop iteration asks the policy for one reply per running episode (a batch of up to
``batch_size`` episodes), turns each reply into an action, steps that episode's environment and
refills the batch from the queue as episodes end. An episode ends on a win, at the step limit, or in
a repetition loop: the same action three times in a row, each time with the same observation (no state
change). Results come back in the order of the scenes, whatever the batching.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from tqdm import tqdm

from data_prep.react import goal_from_observation, parse_goal
from eval.policies.base import EpisodeState, Policy

LOOP_REPEATS = 3
FUZZY_METHOD = "difflib"  # SequenceMatcher ratio against the admissible commands


class Env(Protocol):
    """What the runner needs from an environment (HouseholdEnv, or the ALFWorld adapter)."""

    def reset(self) -> str: ...

    def step(self, command: str) -> tuple[str, bool, dict[str, Any]]: ...

    def admissible_commands(self) -> list[str]: ...


@dataclass
class EpisodeResult:
    episode_id: str
    index: int
    task_type: str | None
    goal: str | None
    first_observation: str
    won: bool = False
    steps: int = 0
    end_reason: str = ""  # won | step_limit | loop
    n_invalid: int = 0  # steps answered "Nothing happens."
    n_format_errors: int = 0  # replies with no parseable action
    tokens_encoded: int = 0  # tokens fed to the model over the episode (prefill + generated)
    actions: list[str] = field(default_factory=list)
    observations: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)  # raw policy replies, before parsing
    errors: list[str] = field(default_factory=list)  # policy transport/decoding errors, with the step

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_action(reply: str) -> str:
    """The first non-empty line of a reply, stripped; ``""`` when there is none (a format error)."""
    for line in reply.splitlines():
        if line.strip():
            return line.strip()
    return ""


def fuzzy_match(action: str, admissible: Sequence[str]) -> str:
    """Map free text to the closest admissible command (difflib ratio); thoughts and exact hits stay."""
    if not action or not admissible or action in admissible or action.lower().startswith("think:"):
        return action
    low = action.lower()
    best, best_score = action, -1.0
    for cmd in admissible:
        score = difflib.SequenceMatcher(None, low, cmd.lower(), autojunk=False).ratio()
        if score > best_score:
            best, best_score = cmd, score
    return best


def is_loop(actions: Sequence[str], observations: Sequence[str], repeats: int = LOOP_REPEATS) -> bool:
    """The last ``repeats`` actions are the same and each got the same observation."""
    if len(actions) < repeats:
        return False
    tail_a, tail_o = actions[-repeats:], observations[-repeats:]
    return len(set(tail_a)) == 1 and len(set(tail_o)) == 1


def _default_env(scene: Any, grammar: str, max_steps: int) -> Env:
    from eval.household import HouseholdEnv

    return HouseholdEnv(scene, grammar=grammar, max_steps=max_steps)


def _episode_id(scene: Any, index: int) -> str:
    for attr in ("id", "name", "scene_id"):
        value = getattr(scene, attr, None)
        if isinstance(value, str) and value:
            return value
    return f"episode-{index:04d}"


@dataclass
class _Running:
    env: Env
    state: EpisodeState
    result: EpisodeResult


def run_episodes(
    policy: Policy,
    scenes: Sequence[Any],
    *,
    grammar: str = "2.1.1",
    max_steps: int = 50,
    batch_size: int = 8,
    fuzzy: bool = False,
    make_env: Callable[[Any, str, int], Env] | None = None,
    ids: Sequence[str] | None = None,
    progress: bool = True,
) -> list[EpisodeResult]:
    """Play one episode per scene with ``policy``; up to ``batch_size`` episodes share each policy call.

    ``make_env(scene, grammar, max_steps)`` builds an environment (default: ``HouseholdEnv``); ``ids`` names
    the episodes (default: the scene's ``id`` attribute, else ``episode-NNNN``).
    """
    if ids is not None and len(ids) != len(scenes):
        raise ValueError(f"got {len(ids)} ids for {len(scenes)} scenes")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if max_steps < 1:
        raise ValueError("max_steps must be at least 1")
    make_env = make_env or _default_env
    queue = list(enumerate(scenes))[::-1]
    results: list[EpisodeResult | None] = [None] * len(scenes)
    running: list[_Running] = []
    bar = tqdm(total=len(scenes), desc=f"episodes ({policy.name})", unit="ep", disable=not progress)
    n_won = 0
    release = getattr(policy, "release", None)  # optional hook: an episode ended, free what it held
    try:
        while queue or running:
            while queue and len(running) < batch_size:
                index, scene = queue.pop()
                episode_id = ids[index] if ids is not None else _episode_id(scene, index)
                running.append(_start(make_env(scene, grammar, max_steps), scene, index, grammar, episode_id))
            replies = policy.act([r.state for r in running])
            if len(replies) != len(running):
                raise RuntimeError(f"policy {policy.name} returned {len(replies)} replies for {len(running)} episodes")
            still: list[_Running] = []
            for run, reply in zip(running, replies, strict=True):
                if _advance(run, reply.text, reply.tokens_encoded, reply.error, max_steps=max_steps, fuzzy=fuzzy):
                    if release is not None:
                        release(run.state)
                    results[run.result.index] = run.result
                    n_won += run.result.won
                    bar.update(1)
                    bar.set_postfix(success=f"{n_won / max(1, bar.n):.2f}")
                else:
                    still.append(run)
            running = still
    finally:
        bar.close()
    return [r for r in results if r is not None]


def _start(env: Env, scene: Any, index: int, grammar: str, episode_id: str) -> _Running:
    first = env.reset()
    goal = goal_from_observation(first)
    parsed = parse_goal(goal) if goal else None
    state = EpisodeState(
        episode_id=episode_id,
        first_observation=first,
        grammar=grammar,
        task_type=parsed.task_type if parsed else None,
        admissible=list(env.admissible_commands()),
        scene=scene,
        index=index,
    )
    result = EpisodeResult(
        episode_id=episode_id, index=index, task_type=state.task_type, goal=goal, first_observation=first
    )
    return _Running(env, state, result)


def _advance(run: _Running, text: str, tokens: int, error: str | None, *, max_steps: int, fuzzy: bool) -> bool:
    """Apply one reply to one episode. Returns True when the episode has ended."""
    res, state = run.result, run.state
    action = parse_action(text) if error is None else ""
    if not action:
        res.n_format_errors += 1
        if error:
            res.errors.append(f"step {res.steps + 1}: {error}")
    elif fuzzy:
        action = fuzzy_match(action, state.admissible)
    observation, done, info = run.env.step(action)
    res.steps += 1
    res.tokens_encoded += tokens
    res.replies.append(text)
    res.actions.append(action)
    res.observations.append(observation)
    res.n_invalid += not info.get("valid", observation.strip() != "Nothing happens.")
    state.steps.append((action, observation))
    state.admissible = list(run.env.admissible_commands())
    if info.get("won"):
        res.won, res.end_reason = True, "won"
    elif is_loop(res.actions, res.observations):
        res.end_reason = "loop"
    elif done or res.steps >= max_steps:
        res.end_reason = "step_limit"
    return bool(res.end_reason)
