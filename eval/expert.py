"""The expert planner: solves household tasks from observations alone, with ReAct-style thoughts.

It knows what the first observation says (the room's receptacles and the goal) and what it has seen
since; it never reads the scene's hidden contents. To find an object it checks receptacles in a
"likely places" order (:data:`eval.household.vocab.PLACES`, as in the ReAct paper's thoughts), opening
closed ones, remembers what it has seen, then heats/cools/cleans or uses a lamp as the task needs, and
puts the object at the target. Its thoughts:

- a plan: ``think: To solve the task, I need to find and take an apple, then heat it with microwave, then
  put it in fridge.``
- before searching: ``think: First I need to find an apple. An apple is more likely to appear in fridge
  (1), diningtable (1), countertop (1-3). I can check one by one, starting with fridge 1.``
- a progress note after each milestone: ``think: Now I find an apple (1). Next, I need to take it.``

Two ways to use it:

- ``solve(scene, grammar) -> SolveResult`` plays a whole episode in :class:`HouseholdEnv`.
- ``ExpertPolicy().act(state) -> str`` is a policy for the episode runner. The planner is a pure function
  of the transcript (first observation, then (action, observation) pairs), so ``act`` replays it; the
  transcript must be the expert's own (a different action raises ``ValueError``).
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from data_prep.react import Goal, goal_from_observation, parse_goal
from eval.household.env import NOTHING, HouseholdEnv
from eval.household.scene import Scene
from eval.household.vocab import PLACES, TREATMENTS, article, number_of, parse_list, type_of

_ROOM = re.compile(r"Looking quickly around you, you see (.*)\.")
_ARRIVE = re.compile(r"^You arrive at [a-z]+ \d+\. ")
_ON = re.compile(r"^On the ([a-z]+ \d+), you see (.*)\.$")
_OPEN = re.compile(r"^(?:You open the [a-z]+ \d+\. )?The ([a-z]+ \d+) is open\. In it, you see (.*)\.$")
_CLOSED = re.compile(r"^The ([a-z]+ \d+) is closed\.$")
_TAKE = re.compile(r"^You pick up the ([a-z]+ \d+) from the ([a-z]+ \d+)\.$")
_PUT = re.compile(r"^You (?:put|move) the ([a-z]+ \d+) (?:in/on|to) the ([a-z]+ \d+)\.$")


def _a(word: str) -> str:
    return f"{article(word)} {word}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _ranges(nums: Sequence[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``1-3, 5``."""
    nums = sorted(nums)
    parts: list[str] = []
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        parts.append(str(nums[i]) if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    return ", ".join(parts)


class _Knowledge:
    """What the agent has observed: the room, seen contents, open/closed, location, hands."""

    def __init__(self, receptacles: list[str]) -> None:
        self.receptacles = receptacles
        self.by_type: dict[str, list[str]] = {}
        for r in sorted(receptacles, key=lambda n: (type_of(n), number_of(n))):
            self.by_type.setdefault(type_of(r), []).append(r)
        self.contents: dict[str, list[str]] = {}
        self.closed: dict[str, bool] = {}
        self.at: str | None = None
        self.held: str | None = None
        # Receptacles found to share a location (real ALFWorld rooms have some): "go to" one of them while
        # standing at another answers "Nothing happens.", and the agent can act on it from where it is.
        self.spot: dict[str, set[str]] = {}

    def here(self, r: str) -> bool:
        """``r`` is where the agent stands, or known to share that location."""
        return self.at is not None and (r == self.at or r in self.spot.get(self.at, ()))

    def update(self, action: str, obs: str) -> None:
        obs = obs.strip()
        if obs == NOTHING:
            if action.startswith("go to ") and self.at is not None and action[6:] in self.receptacles:
                spot = self.spot.setdefault(self.at, {self.at})
                spot.add(action[6:])
                for r in spot:
                    self.spot[r] = spot
            return
        if action.startswith("go to "):
            self.at = action[6:]
            obs = _ARRIVE.sub("", obs)
        if (m := _ON.match(obs)) or (m := _OPEN.match(obs)):
            self.contents[m.group(1)] = parse_list(m.group(2))
            self.closed[m.group(1)] = False
        elif m := _CLOSED.match(obs):
            self.closed[m.group(1)] = True
        elif m := _TAKE.match(obs):
            o, r = m.groups()
            if o in self.contents.get(r, []):
                self.contents[r].remove(o)
            self.held = o
        elif m := _PUT.match(obs):
            o, r = m.groups()
            self.contents.setdefault(r, []).append(o)
            self.held = None

    def find_seen(self, otype: str, exclude: Iterable[str] = ()) -> tuple[str, str] | None:
        """An observed object of ``otype`` (not in ``exclude``) and where it is."""
        excl = set(exclude)
        for r in self.search_order(otype):
            for o in self.contents.get(r, []):
                if type_of(o) == otype and o not in excl:
                    return o, r
        return None

    def likely_types(self, otype: str) -> list[str]:
        return [t for t in PLACES.get(otype, ()) if t in self.by_type]

    def search_order(self, otype: str) -> list[str]:
        likely = self.likely_types(otype)
        order = [r for t in likely for r in self.by_type[t]]
        rest = [r for t in sorted(self.by_type) if t not in likely for r in self.by_type[t]]
        return order + rest

    def pick(self, rtype: str) -> str:
        """Which instance of ``rtype`` to use: where we are, else one seen open, else the lowest number."""
        names = self.by_type[rtype]
        for r in names:
            if self.here(r):
                return r
        for r in names:
            if self.closed.get(r) is False:
                return r
        return names[0]


Plan = Generator[str, str, Any]


def _plan(first_observation: str, grammar: str = "2.1.1") -> Plan:
    """The expert as a generator: yields actions, receives each action's observation."""
    m = _ROOM.search(first_observation)
    goal_text = goal_from_observation(first_observation)
    goal = parse_goal(goal_text) if goal_text else None
    if m is None or goal is None:
        raise ValueError("the first observation needs the room line and a task line with a known goal")
    kb = _Knowledge(parse_list(m.group(1)))
    yield from _solve(kb, goal, goal_text or "", grammar)
    while True:  # stuck (or done): keep answering with a harmless command
        yield "look"


def _do(kb: _Knowledge, action: str) -> Plan:
    obs = yield action
    kb.update(action, obs)
    return obs


def _search_sentence(kb: _Knowledge, otype: str, exclude: Iterable[str] = ()) -> str:
    seen = kb.find_seen(otype, exclude)
    if seen is not None:
        return f"I can directly go to {seen[1]}."
    likely = kb.likely_types(otype)
    order = [r for r in kb.search_order(otype) if r not in kb.contents]
    start = order[0] if order else kb.receptacles[0]
    if not likely:
        return f"I can check every receptacle one by one, starting with {start}."
    where = ", ".join(f"{t} ({_ranges([number_of(r) for r in kb.by_type[t]])})" for t in likely)
    return f"{_cap(_a(otype))} is more likely to appear in {where}. I can check one by one, starting with {start}."


def _search(
    kb: _Knowledge, otype: str, exclude: Iterable[str] = ()
) -> Generator[str, str, tuple[str, str] | None]:
    """Go to (and open) receptacles until an object of ``otype`` is seen; return (object, receptacle)."""
    excl = set(exclude)
    seen = kb.find_seen(otype, excl)
    if seen is not None:
        if not kb.here(seen[1]):
            yield from _do(kb, f"go to {seen[1]}")
        return seen
    for r in kb.search_order(otype):
        if r in kb.contents:
            continue  # already looked inside, nothing there
        if not kb.here(r):
            obs = yield from _do(kb, f"go to {r}")
            if obs.strip() == NOTHING:  # r shares this location: look at it from here
                yield from _do(kb, f"examine {r}")
        if kb.closed.get(r):
            yield from _do(kb, f"open {r}")
        for o in kb.contents.get(r, []):
            if type_of(o) == otype and o not in excl:
                return o, r
    return None


def _goto_open(kb: _Knowledge, r: str) -> Plan:
    if not kb.here(r):
        yield from _do(kb, f"go to {r}")
    if kb.closed.get(r):
        yield from _do(kb, f"open {r}")


def _put(kb: _Knowledge, o: str, r: str, grammar: str) -> Plan:
    yield from _goto_open(kb, r)
    yield from _do(kb, f"move {o} to {r}" if grammar == "2.1.2" else f"put {o} in/on {r}")


_THINK = "think: "


def _solve(kb: _Knowledge, goal: Goal, goal_text: str, grammar: str) -> Plan:
    """Check that the room has what the task needs, then run the plan of the goal's task type."""
    obj, tt = goal.obj, goal.task_type
    needed = [TREATMENTS[tt].appliance] if tt in TREATMENTS else []
    if tt != "look_at_obj_in_light":
        needed.append(goal.recep)
    missing = [t for t in needed if t not in kb.by_type]
    if missing:
        yield f"think: There is no {missing[0]} here, so I cannot solve the task."
        return
    prep = "on" if " on " in f" {goal_text} " else "in"
    if tt == "look_at_obj_in_light":
        yield from _solve_look(kb, obj, goal.recep)
    elif tt == "pick_two_obj_and_place":
        yield from _solve_two(kb, obj, goal.recep, prep, grammar)
    else:
        yield from _solve_place(kb, obj, tt, goal.recep, prep, grammar)


def _find_and_take(kb: _Knowledge, obj: str) -> Generator[str, str, tuple[str, str] | None]:
    """Say where to look, search until ``obj`` is seen, take it; (object, receptacle), or None if nowhere."""
    yield _THINK + f"First I need to find {_a(obj)}. {_search_sentence(kb, obj)}"
    found = yield from _search(kb, obj)
    if found is None:
        return None
    o, r = found
    yield _THINK + f"Now I find {_a(obj)} ({number_of(o)}). Next, I need to take it."
    yield from _do(kb, f"take {o} from {r}")
    return found


def _solve_look(kb: _Knowledge, obj: str, lamp: str) -> Plan:
    """Find and take ``obj``, then find and use ``lamp``."""
    think = _THINK
    yield think + f"To solve the task, I need to find and take {_a(obj)}, then find and use {_a(lamp)}."
    found = yield from _find_and_take(kb, obj)
    if found is None:
        return
    o, r = found
    yield (
        think
        + f"Now I take {_a(obj)} ({number_of(o)}). Next, I need to find {_a(lamp)}. "
        + _search_sentence(kb, lamp)
    )
    lamp_found = yield from _search(kb, lamp)
    if lamp_found is None:
        return
    yield think + f"Now I find {_a(lamp)} ({number_of(lamp_found[0])}). Next, I need to use it."
    yield from _do(kb, f"use {lamp_found[0]}")


def _solve_two(kb: _Knowledge, obj: str, target_type: str, prep: str, grammar: str) -> Plan:
    """Find, take and put two objects of type ``obj``, one after the other, at one ``target_type``."""
    think = _THINK
    yield think + (
        f"To solve the task, I need to find and take the first {obj}, then put it {prep} {target_type}, "
        f"then find and take the second {obj}, then put it {prep} {target_type}."
    )
    yield think + f"First I need to find the first {obj}. {_search_sentence(kb, obj)}"
    placed: list[str] = []
    target = ""
    for nth in ("first", "second"):
        found = yield from _search(kb, obj, placed)
        if found is None:
            return
        o, r = found
        yield think + f"Now I find the {nth} {obj} ({number_of(o)}). Next, I need to take it."
        yield from _do(kb, f"take {o} from {r}")
        target = target or kb.pick(target_type)
        yield (
            think + f"Now I take the {nth} {obj} ({number_of(o)}). Next, I need to put it in/on {target}."
        )
        yield from _put(kb, o, target, grammar)
        placed.append(o)
        if nth == "first":
            yield think + (
                f"Now I put the first {obj} in/on {target}. Next, I need to find the second {obj}. "
                + _search_sentence(kb, obj, placed)
            )


def _solve_place(kb: _Knowledge, obj: str, tt: str, target_type: str, prep: str, grammar: str) -> Plan:
    """Find and take ``obj``, heat/cool/clean it when the task type says so, then put it at the target."""
    think = _THINK
    treat = (TREATMENTS[tt].verb, TREATMENTS[tt].appliance) if tt in TREATMENTS else None
    plan = f"To solve the task, I need to find and take {_a(obj)}, then "
    if treat is not None:
        plan += f"{treat[0]} it with {treat[1]}, then "
    yield think + plan + f"put it {prep} {target_type}."
    found = yield from _find_and_take(kb, obj)
    if found is None:
        return
    o, r = found
    if treat is not None:
        verb, appliance_type = treat
        appliance = kb.pick(appliance_type)
        todo = f"{verb} it with {appliance}" if kb.here(appliance) else f"go to {appliance} and {verb} it"
        yield think + f"Now I take {_a(obj)} ({number_of(o)}). Next, I need to {todo}."
        if not kb.here(appliance):
            yield from _do(kb, f"go to {appliance}")
        yield from _do(kb, f"{verb} {o} with {appliance}")
        target = kb.pick(target_type)
        yield (
            think + f"Now I {verb} {_a(obj)} ({number_of(o)}). Next, I need to put it in/on {target}."
        )
    else:
        target = kb.pick(target_type)
        yield think + f"Now I take {_a(obj)} ({number_of(o)}). Next, I need to put it in/on {target}."
    yield from _put(kb, o, target, grammar)


def expert_next_action(
    first_observation: str, steps: Iterable[tuple[str, str]] = (), grammar: str = "2.1.1"
) -> str:
    """The expert's next action after ``steps`` (its own earlier (action, observation) pairs)."""
    plan = _plan(first_observation, grammar)
    action = next(plan)
    for i, (done_action, obs) in enumerate(steps):
        if done_action.strip() != action:
            raise ValueError(
                f"step {i}: the transcript has {done_action!r} where the expert chose {action!r}"
            )
        action = plan.send(obs)
    return action


@dataclass
class SolveResult:
    first_observation: str
    actions: list[str] = field(default_factory=list)
    observations: list[str] = field(default_factory=list)
    won: bool = False

    @property
    def steps(self) -> list[tuple[str, str]]:
        return list(zip(self.actions, self.observations, strict=True))


def solve(scene: Scene, grammar: str = "2.1.1", max_steps: int = 50) -> SolveResult:
    """Play ``scene`` with the expert; returns the transcript and whether it won."""
    env = HouseholdEnv(scene, grammar=grammar, max_steps=max_steps)
    first = env.reset()
    result = SolveResult(first)
    plan = _plan(first, grammar)
    action = next(plan)
    while True:
        obs, done, info = env.step(action)
        result.actions.append(action)
        result.observations.append(obs)
        if done:
            result.won = bool(info["won"])
            return result
        action = plan.send(obs)


def _get(state: Any, *names: str) -> Any:
    for n in names:
        if isinstance(state, Mapping) and n in state:
            return state[n]
        if not isinstance(state, Mapping) and hasattr(state, n):
            return getattr(state, n)
    return None


def _as_pairs(steps: Iterable[Any]) -> list[tuple[str, str]]:
    out = []
    for s in steps:
        if isinstance(s, Mapping):
            out.append((s["action"], s["observation"]))
        else:
            a, o = s
            out.append((a, o))
    return out


def _from_messages(messages: Sequence[Mapping[str, str]]) -> tuple[str, list[tuple[str, str]]]:
    msgs = [m for m in messages if m["role"] != "system"]
    if not msgs or msgs[0]["role"] != "user":
        raise ValueError("a ReAct chat must start (after the system message) with the first observation")
    first = msgs[0]["content"]
    pairs = [
        (msgs[i]["content"], msgs[i + 1]["content"])
        for i in range(1, len(msgs) - 1, 2)
        if msgs[i]["role"] == "assistant" and msgs[i + 1]["role"] == "user"
    ]
    return first, pairs


class ExpertPolicy:
    """Policy interface for the episode runner: ``act(episode_state) -> action``.

    ``episode_state`` may be an object or a mapping with ``first_observation`` (or ``observation``) and
    ``steps`` (or ``history``: ``(action, observation)`` pairs or ``{"action", "observation"}`` dicts), a
    :class:`data_prep.react.Trajectory`, or a ReAct chat (a list of ``{"role", "content"}`` messages as
    built by :func:`data_prep.react.react_messages`, ending on the latest observation). A ``grammar``
    attribute/key, when present, overrides the policy's grammar.
    """

    name = "expert"

    def __init__(self, grammar: str = "2.1.1") -> None:
        self.grammar = grammar

    def act(self, episode_state: Any) -> str:
        if isinstance(episode_state, Sequence) and not isinstance(episode_state, str):
            first, pairs = _from_messages(episode_state)
            return expert_next_action(first, pairs, self.grammar)
        messages = _get(episode_state, "messages")
        if callable(messages):  # e.g. Trajectory.messages()
            messages = None
        first = _get(episode_state, "first_observation", "observation")
        if first is None and messages is not None:
            first, pairs = _from_messages(messages)
        else:
            if not isinstance(first, str):
                raise TypeError("episode_state needs 'first_observation' (or 'observation') or 'messages'")
            pairs = _as_pairs(_get(episode_state, "steps", "history") or [])
        grammar = _get(episode_state, "grammar") or self.grammar
        return expert_next_action(first, pairs, grammar)

    def act_batch(self, states: Sequence[Any]) -> list[str]:
        return [self.act(s) for s in states]
