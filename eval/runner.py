"""The episode runner: plays many household episodes at once with one policy.

Each loop iteration asks the policy for one reply per running episode (a batch of up to
``batch_size`` episodes), turns each reply into an action, steps that episode's environment and
refills the batch from the queue as episodes end. An episode ends on a win, at the step limit, or in
a repetition loop: the same action three times in a row, each time with the same observation (no state
change), or as an ``error`` when the policy could not produce a reply at all (a server that kept failing
after the policy's own retries): such an episode is neither won nor failed, and the run goes on. Results
come back in the order of the scenes, whatever the batching.

A reply whose first line never ended (the model hit its token limit mid-line: endless text without a
newline) is a format error, unless it is a thought: long thoughts are normal and the environment answers
any thought with "OK.", so a cut one loses nothing.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

from tqdm import tqdm

from data_prep.react import goal_from_observation, parse_goal
from eval.policies.base import EpisodeState, Policy, Reply

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
    end_reason: str = ""  # won | step_limit | loop | error
    n_invalid: int = 0  # steps answered "Nothing happens."
    n_format_errors: int = 0  # replies with no parseable action
    tokens_encoded: int = 0  # tokens fed to the model over the episode (prefill + generated)
    actions: list[str] = field(default_factory=list)
    observations: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)  # raw policy replies, before parsing
    errors: list[str] = field(default_factory=list)  # policy transport/decoding errors, with the step
    error: str | None = None  # why the episode ended as "error" (the policy's reason)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> EpisodeResult:
        """The inverse of :meth:`to_dict` (a row of ``episodes.jsonl``); unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})


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


class EpisodeFeed:
    """Where a policy gets episodes and sends replies; the runner's bookkeeping, shared by both loops.

    ``start()`` begins the next queued episode (``None`` when none is left). ``reply(state, reply)`` applies
    one reply: it steps that episode's environment, updates ``state`` in place (new observation, admissible
    commands) and returns True while the episode goes on, False once it has ended (won, step limit, loop).
    A continuously batching policy calls these itself, one episode at a time, so a finished reply is
    answered at once and a waiting episode starts the moment a slot frees. Both methods may be called from
    several threads (the openai policy runs one thread per episode); a lock keeps the bookkeeping whole.
    Episodes whose index is in ``skip`` are never started (a resumed run has them already); ``on_result``
    gets each finished episode at once (the resumable ``episodes.jsonl`` log).
    """

    def __init__(
        self, scenes: Sequence[Any], *, ids: Sequence[str] | None, make_env: Callable[[Any, str, int], Env],
        grammar: str, max_steps: int, fuzzy: bool, bar: Any, release: Callable[[EpisodeState], None] | None,
        skip: Collection[int] = (), on_result: Callable[[EpisodeResult], None] | None = None,
    ) -> None:
        self._queue = [(i, s) for i, s in enumerate(scenes) if i not in skip][::-1]
        self._ids, self._make_env, self._grammar = ids, make_env, grammar
        self._max_steps, self._fuzzy, self._bar, self._release = max_steps, fuzzy, bar, release
        self._on_result = on_result
        self._running: dict[int, _Running] = {}
        self.results: list[EpisodeResult | None] = [None] * len(scenes)
        self._won = 0
        self._lock = threading.Lock()

    def start(self) -> EpisodeState | None:
        with self._lock:
            if not self._queue:
                return None
            index, scene = self._queue.pop()
        episode_id = self._ids[index] if self._ids is not None else _episode_id(scene, index)
        # Environments are independent: build and step them outside the lock.
        run = _start(self._make_env(scene, self._grammar, self._max_steps), scene, index, self._grammar, episode_id)
        with self._lock:
            self._running[index] = run
        return run.state

    def reply(self, state: EpisodeState, reply: Reply) -> bool:
        with self._lock:
            run = self._running[state.index]
        if not _advance(run, reply, max_steps=self._max_steps, fuzzy=self._fuzzy):
            return True
        if self._release is not None:
            self._release(state)
        with self._lock:
            del self._running[state.index]
            self.results[state.index] = run.result
            if self._on_result is not None:
                self._on_result(run.result)
            self._won += run.result.won
            self._bar.update(1)
            self._bar.set_postfix(success=f"{self._won / max(1, self._bar.n):.2f}")
        return False


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
    continuous: bool = True,
    skip: Collection[int] = (),
    on_result: Callable[[EpisodeResult], None] | None = None,
) -> list[EpisodeResult]:
    """Play one episode per scene with ``policy``; up to ``batch_size`` episodes share each policy call.

    ``make_env(scene, grammar, max_steps)`` builds an environment (default: ``HouseholdEnv``); ``ids`` names
    the episodes (default: the scene's ``id`` attribute, else ``episode-NNNN``). A policy with
    ``act_continuous(feed, batch_size)`` (the hf policy) batches at the token level unless ``continuous`` is
    False: an episode whose reply is done steps and rejoins at the next decoding step instead of waiting
    for the batch's longest reply. Scenes whose index is in ``skip`` are not played (and not returned);
    ``on_result(result)`` is called as each episode ends, in the order they end.
    """
    if ids is not None and len(ids) != len(scenes):
        raise ValueError(f"got {len(ids)} ids for {len(scenes)} scenes")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if max_steps < 1:
        raise ValueError("max_steps must be at least 1")
    bar = tqdm(total=len(scenes) - len(set(skip)), desc=f"episodes ({policy.name})", unit="ep", disable=not progress)
    release = getattr(policy, "release", None)  # optional hook: an episode ended, free what it held
    feed = EpisodeFeed(
        scenes, ids=ids, make_env=make_env or _default_env, grammar=grammar, max_steps=max_steps, fuzzy=fuzzy,
        bar=bar, release=release, skip=set(skip), on_result=on_result,
    )
    try:
        act_continuous = getattr(policy, "act_continuous", None)
        if continuous and act_continuous is not None:
            act_continuous(feed, batch_size)
        else:
            _turn_loop(policy, feed, batch_size)
    finally:
        bar.close()
    return [r for r in feed.results if r is not None]


def _turn_loop(policy: Policy, feed: EpisodeFeed, batch_size: int) -> None:
    """One policy call per turn for up to ``batch_size`` episodes; ended episodes are refilled between turns."""
    running: list[EpisodeState] = []
    while True:
        while len(running) < batch_size and (state := feed.start()) is not None:
            running.append(state)
        if not running:
            return
        replies = policy.act(running)
        if len(replies) != len(running):
            raise RuntimeError(f"policy {policy.name} returned {len(replies)} replies for {len(running)} episodes")
        running = [s for s, r in zip(running, replies, strict=True) if feed.reply(s, r)]


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


def _reply_action(reply: Reply) -> str:
    """The action of a reply, ``""`` for a format error (no line, or a cut line that is not a thought)."""
    action = parse_action(reply.text)
    if reply.truncated and "\n" not in reply.text.strip() and not action.lower().startswith("think:"):
        return ""
    return action


def _advance(run: _Running, reply: Reply, *, max_steps: int, fuzzy: bool) -> bool:
    """Apply one reply to one episode. Returns True when the episode has ended."""
    res, state = run.result, run.state
    res.tokens_encoded += reply.tokens_encoded
    if reply.error is not None:  # the policy already retried; nothing to score, the run goes on
        res.errors.append(f"step {res.steps + 1}: {reply.error}")
        res.error, res.end_reason = reply.error, "error"
        return True
    action = _reply_action(reply)
    if not action:
        res.n_format_errors += 1
    elif fuzzy:
        action = fuzzy_match(action, state.admissible)
    observation, done, info = run.env.step(action)
    res.steps += 1
    res.replies.append(reply.text)
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
