"""The ReAct chat format, shared by training data (``data_prep``) and evaluation (``eval``).

One ALFWorld-style trajectory becomes one multi-turn chat (see ``docs/sources.md#react-chat-format``):

- system: the ReAct instructions (:func:`react_system_prompt`);
- user: the initial observation plus the task line, with the TextWorld welcome paragraph dropped;
- then one assistant message per step (``think: ...`` or an environment command),
- and one user message per observation (``OK.`` after a think).

Because the eval runner calls the same :func:`react_messages`, train and test chats agree token for token.

Two file forms are read and written here:

- JSON (one trajectory per line)::

    {"id": "train-00012", "task_type": "pick_heat_then_place_in_recep",
     "goal": "heat some egg and put it in diningtable",
     "observation": "You are in the middle of a room. ...\\n\\nYour task is to: heat some egg and put it in diningtable.",
     "steps": [{"action": "think: ...", "observation": "OK."}, {"action": "go to fridge 1", "observation": "The fridge 1 is closed."}],
     "won": true, "grammar": "2.1.1", "scene": {...}}

- plain text, as in the ReAct paper's ALFWorld prompts: the room line, the task line, then ``> action`` lines
  each followed by its observation line(s). Several trajectories may share a file; each starts at a
  ``You are in the middle of a room`` line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

WELCOME = "-= Welcome to TextWorld, ALFRED! =-"
ROOM_PREFIX = "You are in the middle of a room."
TASK_PREFIX = "Your task is to: "

TASK_TYPES = (
    "pick_and_place_simple",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "look_at_obj_in_light",
    "pick_two_obj_and_place",
)

_COMMANDS_211 = (
    "go to {recep}, open {recep}, close {recep}, take {obj} from {recep}, put {obj} in/on {recep}, "
    "heat {obj} with {microwave}, cool {obj} with {fridge}, clean {obj} with {sinkbasin}, use {lamp}, "
    "examine {obj or recep}, inventory, look"
)
_COMMANDS_212 = _COMMANDS_211.replace("put {obj} in/on {recep}", "move {obj} to {recep}")


def react_system_prompt(grammar: str = "2.1.1") -> str:
    """The ReAct instructions that open every agent chat."""
    commands = _COMMANDS_212 if grammar == "2.1.2" else _COMMANDS_211
    return (
        "Interact with a household to solve a task. Each turn, reply with exactly one line: "
        "either a thought that starts with \"think:\", or one command for the environment.\n"
        f"Commands: {commands}.\n"
        "Use the exact object and receptacle names you observe, such as \"apple 1\" or \"countertop 2\"."
    )


def strip_welcome(observation: str) -> str:
    """Drop the TextWorld welcome paragraph, as harnesses (and our chats) do."""
    text = observation.strip()
    if text.startswith(WELCOME):
        text = text[len(WELCOME) :].lstrip("\n").lstrip()
    return text


def react_messages(
    first_observation: str,
    steps: Iterable[tuple[str, str]] = (),
    *,
    system: str | None = None,
    grammar: str = "2.1.1",
    include_final_observation: bool = True,
) -> list[dict[str, str]]:
    """Build the ReAct chat.

    ``steps`` are ``(action, observation)`` pairs. For training data pass
    ``include_final_observation=False`` so the chat ends on the last assistant action.
    For evaluation, keep it True: the chat then ends on a user turn, ready for a generation prompt.
    """
    msgs: list[dict[str, str]] = [
        {"role": "system", "content": system if system is not None else react_system_prompt(grammar)},
        {"role": "user", "content": strip_welcome(first_observation)},
    ]
    steps = list(steps)
    for i, (action, observation) in enumerate(steps):
        msgs.append({"role": "assistant", "content": action.strip()})
        if include_final_observation or i < len(steps) - 1:
            msgs.append({"role": "user", "content": observation.strip()})
    return msgs


_GOAL_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (t, re.compile(p))
    for t, p in (
        ("pick_clean_then_place_in_recep", r"^put an? clean (?P<obj>\w+) (?:in|on|in/on) (?P<recep>\w+)$"),
        ("pick_clean_then_place_in_recep", r"^clean (?:some|a|an) (?P<obj>\w+) and put it (?:in|on|in/on) (?P<recep>\w+)$"),
        ("pick_heat_then_place_in_recep", r"^put an? hot (?P<obj>\w+) (?:in|on|in/on) (?P<recep>\w+)$"),
        ("pick_heat_then_place_in_recep", r"^heat (?:some|a|an) (?P<obj>\w+) and put it (?:in|on|in/on) (?P<recep>\w+)$"),
        ("pick_cool_then_place_in_recep", r"^put an? cool (?P<obj>\w+) (?:in|on|in/on) (?P<recep>\w+)$"),
        ("pick_cool_then_place_in_recep", r"^cool (?:some|a|an) (?P<obj>\w+) and put it (?:in|on|in/on) (?P<recep>\w+)$"),
        ("look_at_obj_in_light", r"^look at (?P<obj>\w+) under the (?P<recep>\w+)$"),
        ("look_at_obj_in_light", r"^examine the (?P<obj>\w+) with the (?P<recep>\w+)$"),
        ("pick_two_obj_and_place", r"^put two (?P<obj>\w+) (?:in|on|in/on) (?P<recep>\w+)$"),
        ("pick_two_obj_and_place", r"^find two (?P<obj>\w+) and put them (?:in|on|in/on) (?P<recep>\w+)$"),
        ("pick_and_place_simple", r"^put (?:a|an|some) (?P<obj>\w+) (?:in|on|in/on) (?P<recep>\w+)$"),
        # Real ALFWorld game files also say "find some apple and put it in sidetable" (the ReAct prompts' put_0).
        ("pick_and_place_simple", r"^find (?:a|an|some) (?P<obj>\w+) and put it (?:in|on|in/on) (?P<recep>\w+)$"),
    )
)


@dataclass(frozen=True)
class Goal:
    task_type: str
    obj: str
    recep: str  # the target receptacle type, or the lamp type for look_at_obj_in_light


def parse_goal(goal: str) -> Goal | None:
    """Parse an ALFWorld goal sentence (the 12 goal-library templates and the "find some X and put it in Y"
    form of real game files; "a"/"an"/"some" alike); ``None`` if it is none of them."""
    g = goal.strip().rstrip(".").strip().lower()
    if g.startswith(TASK_PREFIX.lower()):
        g = g[len(TASK_PREFIX) :].strip()
    for task_type, pat in _GOAL_PATTERNS:
        m = pat.match(g)
        if m:
            return Goal(task_type, m.group("obj"), m.group("recep"))
    return None


def goal_from_observation(observation: str) -> str | None:
    """The goal sentence (without the final period) in a first observation."""
    for line in observation.splitlines():
        line = line.strip()
        if line.startswith(TASK_PREFIX):
            return line[len(TASK_PREFIX) :].rstrip(".").strip()
    return None


@dataclass
class Trajectory:
    """One ReAct episode: first observation, then (action, observation) steps."""

    observation: str
    steps: list[tuple[str, str]] = field(default_factory=list)
    id: str = ""
    task_type: str | None = None
    goal: str | None = None
    won: bool | None = None
    grammar: str = "2.1.1"
    scene: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.goal is None:
            self.goal = goal_from_observation(self.observation)
        if self.task_type is None and self.goal:
            parsed = parse_goal(self.goal)
            self.task_type = parsed.task_type if parsed else None

    def messages(self, system: str | None = None) -> list[dict[str, str]]:
        """The training chat: ends on the last action."""
        return react_messages(
            self.observation, self.steps, system=system, grammar=self.grammar, include_final_observation=False
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "task_type": self.task_type,
            "goal": self.goal,
            "observation": self.observation,
            "steps": [{"action": a, "observation": o} for a, o in self.steps],
            "won": self.won,
            "grammar": self.grammar,
        }
        if self.scene is not None:
            d["scene"] = self.scene
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trajectory:
        """Build from our JSON form. Raises ``KeyError``/``TypeError``/``ValueError`` naming the bad field."""
        obs = d["observation"]
        if not isinstance(obs, str) or not obs.strip():
            raise ValueError("field 'observation' must be a non-empty string")
        raw_steps = d["steps"]
        if not isinstance(raw_steps, list):
            raise TypeError("field 'steps' must be a list")
        steps: list[tuple[str, str]] = []
        for i, s in enumerate(raw_steps):
            if not isinstance(s, dict) or not isinstance(s.get("action"), str) or not isinstance(s.get("observation"), str):
                raise ValueError(f"field 'steps[{i}]' needs string 'action' and 'observation'")
            steps.append((s["action"], s["observation"]))
        return cls(
            observation=obs,
            steps=steps,
            id=str(d.get("id", "")),
            task_type=d.get("task_type"),
            goal=d.get("goal"),
            won=d.get("won"),
            grammar=d.get("grammar", "2.1.1"),
            scene=d.get("scene"),
        )


def format_react_text(traj: Trajectory) -> str:
    """The plain-text form of the ReAct paper's prompts (welcome paragraph dropped)."""
    first = strip_welcome(traj.observation).replace("\n\n", "\n")
    lines = [first]
    for action, observation in traj.steps:
        lines.append(f"> {action.strip()}")
        lines.append(observation.strip())
    return "\n".join(lines) + "\n"


def _normalize_first_observation(lines: Sequence[str]) -> str:
    """Room line(s) + task line -> our first-observation form (a blank line before the task)."""
    room = [ln for ln in lines if ln.strip() and not ln.startswith(TASK_PREFIX)]
    task = [ln for ln in lines if ln.startswith(TASK_PREFIX)]
    text = "\n".join(x.strip() for x in room)
    if task:
        text += "\n\n" + task[0].strip()
    return text


def parse_react_text(text: str) -> list[tuple[int, Trajectory]]:
    """Parse plain-text trajectories. Returns ``(first_line_number, trajectory)`` pairs (1-based lines).

    Raises ``ValueError`` with the line number when a block has no task line or no actions.
    """
    blocks: list[tuple[int, list[str]]] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r").lstrip("\ufeff")
        if line.startswith(WELCOME) or not line.strip():
            continue  # the welcome paragraph is dropped, as harnesses do
        if line.startswith(ROOM_PREFIX):
            blocks.append((n, []))
        if not blocks:
            raise ValueError(f"line {n}: text before the first '{ROOM_PREFIX}' line")
        blocks[-1][1].append(line)

    out: list[tuple[int, Trajectory]] = []
    for start, lines in blocks:
        head: list[str] = []
        i = 0
        while i < len(lines) and not lines[i].startswith(">"):
            head.append(lines[i])
            i += 1
        if not any(ln.startswith(TASK_PREFIX) for ln in head):
            raise ValueError(f"line {start}: trajectory has no '{TASK_PREFIX}' line")
        steps: list[tuple[str, str]] = []
        while i < len(lines):
            action = lines[i][1:].strip()
            i += 1
            obs: list[str] = []
            while i < len(lines) and not lines[i].startswith(">"):
                obs.append(lines[i].strip())
                i += 1
            steps.append((action, "\n".join(obs)))
        if not steps:
            raise ValueError(f"line {start}: trajectory has no '> action' lines")
        out.append((start, Trajectory(observation=_normalize_first_observation(head), steps=steps)))
    return out
