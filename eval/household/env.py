"""HouseholdEnv: the ALFWorld-compatible text engine (``docs/sources.md#household-commands``).

::

    env = HouseholdEnv(scene, grammar="2.1.1", max_steps=50)
    first = env.reset()                      # welcome line, room line, task line
    obs, done, info = env.step("go to fridge 1")   # info: won, steps, valid

Every step counts toward ``max_steps`` (think and invalid commands included). The episode ends at a
win or at the step limit; calling :meth:`HouseholdEnv.step` after that raises :class:`EpisodeOver`
(call :meth:`HouseholdEnv.reset` to play again). A new env is already reset. An episode is fully determined by (scene, actions).
"""

from __future__ import annotations

from typing import Any

from .scene import STATES, Scene
from .vocab import (
    LAMPS,
    NOT_PICKUPABLE,
    TREATMENT_BY_VERB,
    TREATMENTS,
    Treatment,
    format_list,
    number_of,
    type_of,
)

WELCOME = "-= Welcome to TextWorld, ALFRED! =-"
NOTHING = "Nothing happens."
OK = "OK."
GRAMMARS = ("2.1.1", "2.1.2")


class EpisodeOver(RuntimeError):
    """``step()`` was called after the episode ended (win or step limit)."""


def room_list(names: list[str] | tuple[str, ...]) -> list[str]:
    """Receptacles in first-observation order: by type name, higher instance numbers first."""
    return sorted(names, key=lambda n: (type_of(n), -number_of(n)))


class HouseholdEnv:
    def __init__(self, scene: Scene, grammar: str = "2.1.1", max_steps: int = 50) -> None:
        if grammar not in GRAMMARS:
            raise ValueError(f"grammar must be one of {GRAMMARS}, got {grammar!r}")
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.scene = scene
        self.grammar = grammar
        self.max_steps = max_steps
        self.goal = scene.parsed_goal
        # static tables
        self._rtype: dict[str, str] = {}
        self._openable: dict[str, bool] = {}
        for r in scene.receptacles:
            self._rtype[r.name] = r.type
            self._openable[r.name] = r.openable
        # Receptacles that stand at one location (real ALFWorld rooms have some): reachable together.
        self._group: dict[str, tuple[str, ...]] = {r.name: (r.name,) for r in scene.receptacles}
        for group in scene.location_groups:
            ordered = tuple(room_list(group))
            for r in group:
                self._group[r] = ordered
        self._otype: dict[str, str] = {o.name: o.type for o in scene.objects}
        self._index: dict[str, int] = {o.name: i for i, o in enumerate(scene.objects)}
        self._goal_objs = tuple(o.name for o in scene.objects if o.type == self.goal.obj)
        self._lamps = tuple(o.name for o in scene.objects if o.type in LAMPS)
        room = format_list(room_list([r.name for r in scene.receptacles]))
        self._room_line = f"You are in the middle of a room. Looking quickly around you, you see {room}."
        self.first_observation = f"{WELCOME}\n\n{self._room_line}\n\nYour task is to: {scene.goal}."
        self._handlers = {
            "go": self._go,
            "open": self._open,
            "close": self._close,
            "take": self._take,
            "heat": self._heat,
            "cool": self._cool,
            "clean": self._clean,
            "use": self._use,
            "examine": self._examine,
            "inventory": self._inventory,
            "look": self._look,
        }
        if grammar == "2.1.1":
            self._handlers["put"] = self._put
        else:
            self._handlers["move"] = self._move
        self.reset()

    # -- episode -------------------------------------------------------------------------------------
    def reset(self) -> str:
        """Restore the scene's initial state; return the full first observation."""
        s = self.scene
        self._at: str | None = None
        self._held: str | None = None
        self._loc: dict[str, str | None] = {o.name: o.location for o in s.objects}
        self._contents: dict[str, list[str]] = {r.name: [] for r in s.receptacles}
        for o in s.objects:
            self._contents[o.location].append(o.name)
        self._closed: dict[str, bool] = {r.name: r.closed for r in s.receptacles}
        self._states: dict[str, set[str]] = {o.name: set(o.states) for o in s.objects}
        self._lamp_on: set[str] = set()
        self.steps = 0
        self.won = False
        self.done = False
        return self.first_observation

    def step(self, command: str) -> tuple[str, bool, dict[str, Any]]:
        if self.done:
            raise EpisodeOver("the episode is over (won or step limit reached); call reset() to play again")
        self.steps += 1
        cmd = command.strip()
        if cmd.startswith("think:"):
            reply = OK
        else:
            head, _, rest = cmd.partition(" ")
            handler = self._handlers.get(head)
            reply = handler(rest) if handler is not None else NOTHING
        valid = reply is not NOTHING
        if valid and reply is not OK:
            self.won = self._goal_met()
        self.done = self.won or self.steps >= self.max_steps
        return reply, self.done, {"won": self.won, "steps": self.steps, "valid": valid}

    @property
    def location(self) -> str | None:
        """The receptacle the agent stands at (``None`` before the first ``go to``)."""
        return self._at

    @property
    def held(self) -> str | None:
        return self._held

    def state_key(self) -> tuple[Any, ...]:
        """A hashable snapshot of the world state (for loop detection: same action, no change)."""
        return (
            self._at,
            self._held,
            tuple(sorted(self._loc.items(), key=lambda kv: kv[0])),
            tuple(sorted(k for k, v in self._closed.items() if v)),
            tuple(sorted((k, tuple(sorted(v))) for k, v in self._states.items() if v)),
            tuple(sorted(self._lamp_on)),
        )

    # -- helpers -------------------------------------------------------------------------------------
    def _here(self, r: str) -> bool:
        """``r`` stands at the agent's location (the receptacle it went to, or one sharing that spot)."""
        return self._at is not None and r in self._group[self._at]

    def _accessible(self, r: str) -> bool:
        return not (self._openable[r] and self._closed[r])

    def describe(self, r: str) -> str:
        """What the agent sees at receptacle ``r`` (arrival / ``examine`` text)."""
        if self._openable[r]:
            if self._closed[r]:
                return f"The {r} is closed."
            return f"The {r} is open. In it, you see {format_list(self._contents[r])}."
        return f"On the {r}, you see {format_list(self._contents[r])}."

    def _visible(self, o: str) -> bool:
        """Held, or in the open receptacle the agent stands at."""
        if o == self._held:
            return True
        r = self._loc.get(o)
        return r is not None and self._here(r) and self._accessible(r)

    def _insert(self, r: str, o: str) -> None:
        """Add ``o`` to ``r`` keeping scene order."""
        lst = self._contents[r]
        i = self._index[o]
        k = len(lst)
        while k > 0 and self._index[lst[k - 1]] > i:
            k -= 1
        lst.insert(k, o)

    # -- commands ------------------------------------------------------------------------------------
    def _go(self, rest: str) -> str:
        if not rest.startswith("to "):
            return NOTHING
        r = rest[3:]
        if r not in self._rtype or self._here(r):  # already at that location: ALFWorld says nothing happens
            return NOTHING
        self._at = r
        if self.grammar == "2.1.2":
            return f"You arrive at {r}. {self.describe(r)}"
        return self.describe(r)

    def _open(self, r: str) -> str:
        if not self._here(r) or not self._openable[r] or not self._closed[r]:
            return NOTHING
        self._closed[r] = False
        return f"You open the {r}. The {r} is open. In it, you see {format_list(self._contents[r])}."

    def _close(self, r: str) -> str:
        if not self._here(r) or not self._openable[r] or self._closed[r]:
            return NOTHING
        self._closed[r] = True
        return f"You close the {r}."

    def _take(self, rest: str) -> str:
        o, sep, r = rest.partition(" from ")
        if (
            not sep
            or not self._here(r)
            or self._held is not None
            or self._loc.get(o) != r
            or self._otype[o] in NOT_PICKUPABLE
            or not self._accessible(r)
        ):
            return NOTHING
        self._contents[r].remove(o)
        self._loc[o] = None
        self._held = o
        return f"You pick up the {o} from the {r}."

    def _place(self, o: str, r: str) -> bool:
        if self._held is None or o != self._held or not self._here(r) or not self._accessible(r):
            return False
        self._held = None
        self._loc[o] = r
        self._insert(r, o)
        return True

    def _put(self, rest: str) -> str:
        o, sep, r = rest.partition(" in/on ")
        if not sep or not self._place(o, r):
            return NOTHING
        return f"You put the {o} in/on the {r}."

    def _move(self, rest: str) -> str:
        o, sep, r = rest.partition(" to ")
        if not sep or not self._place(o, r):
            return NOTHING
        return f"You move the {o} to the {r}."

    def _treat(self, rest: str, appliance: str, able: frozenset[str]) -> tuple[str, str] | None:
        o, sep, r = rest.partition(" with ")
        if (
            not sep
            or not self._here(r)
            or self._rtype[r] != appliance
            or self._held is None
            or o != self._held
            or self._otype[o] not in able
        ):
            return None
        return o, r

    def _heat(self, rest: str) -> str:
        return self._apply(TREATMENT_BY_VERB["heat"], rest)

    def _cool(self, rest: str) -> str:
        return self._apply(TREATMENT_BY_VERB["cool"], rest)

    def _clean(self, rest: str) -> str:
        return self._apply(TREATMENT_BY_VERB["clean"], rest)

    def _apply(self, treatment: Treatment, rest: str) -> str:
        t = self._treat(rest, treatment.appliance, treatment.objects)
        if t is None:
            return NOTHING
        st = self._states[t[0]]
        st.discard({"hot": "cool", "cool": "hot"}.get(treatment.state, ""))  # heating undoes cooling and back
        st.add(treatment.state)
        return f"You {treatment.verb} the {t[0]} using the {t[1]}."

    def _use(self, o: str) -> str:
        r = self._loc.get(o)
        if self._otype.get(o) not in LAMPS or r is None or not self._here(r):
            return NOTHING
        self._lamp_on.add(o)
        return f"You turn on the {o}."

    def _examine(self, x: str) -> str:
        if x in self._rtype:
            return self.describe(x) if self._here(x) else NOTHING
        if x not in self._otype or not self._visible(x):
            return NOTHING
        st = self._states[x]
        if not st:
            return f"There's nothing special about {x}."
        return f"This is a {' and '.join(s for s in STATES if s in st)} {x}."

    def _inventory(self, rest: str) -> str:
        if rest:
            return NOTHING
        if self._held is None:
            return "You are not carrying anything."
        return f"You are carrying: {format_list([self._held])}."

    def _look(self, rest: str) -> str:
        if rest:
            return NOTHING
        if self._at is None:
            return self._room_line
        # ALFWorld lists every receptacle at the spot without articles: "the cabinet 2, and cabinet 1".
        return f"You are facing the {format_list(self._group[self._at], article='')}. Next to it, you see nothing."

    # -- goal ----------------------------------------------------------------------------------------
    def _goal_met(self) -> bool:
        g = self.goal
        tt = g.task_type
        if tt == "look_at_obj_in_light":
            if self._at is None or self._held is None or self._otype[self._held] != g.obj:
                return False
            return any(
                (r := self._loc[lamp]) is not None and self._here(r) and self._otype[lamp] == g.recep
                for lamp in self._lamp_on
            )
        need = TREATMENTS[tt].state if tt in TREATMENTS else None
        counts: dict[str, int] = {}
        target = g.recep
        for o in self._goal_objs:
            r = self._loc[o]
            if r is None or self._rtype[r] != target or (need is not None and need not in self._states[o]):
                continue
            if tt != "pick_two_obj_and_place":
                return True
            counts[r] = counts.get(r, 0) + 1
            if counts[r] >= 2:
                return True
        return False

    # -- admissible commands -------------------------------------------------------------------------
    def admissible_commands(self) -> list[str]:
        """The commands that would not reply "Nothing happens." now (sorted; think is always valid too)."""
        cmds = ["inventory", "look"]
        held = self._held
        cmds.extend(f"go to {r}" for r in self._rtype if not self._here(r))
        if held is not None:
            cmds.append(f"examine {held}")
        for r in self._group[self._at] if self._at is not None else ():
            cmds.extend(self._commands_at(r, held))
        return sorted(set(cmds))

    def _commands_at(self, at: str, held: str | None) -> list[str]:
        """Admissible commands that act on receptacle ``at`` (one the agent stands at)."""
        cmds = [f"examine {at}"]
        rt = self._rtype[at]
        if self._openable[at]:
            cmds.append(f"close {at}" if not self._closed[at] else f"open {at}")
        accessible = self._accessible(at)
        for o in self._contents[at]:
            if self._otype[o] in LAMPS:
                cmds.append(f"use {o}")
            if accessible:
                cmds.append(f"examine {o}")
                if held is None and self._otype[o] not in NOT_PICKUPABLE:
                    cmds.append(f"take {o} from {at}")
        if held is not None:
            if accessible:
                cmds.append(f"put {held} in/on {at}" if self.grammar == "2.1.1" else f"move {held} to {at}")
            ht = self._otype[held]
            for t in TREATMENTS.values():
                if rt == t.appliance and ht in t.objects:
                    cmds.append(f"{t.verb} {held} with {at}")
        return cmds
