"""Scene: one household task as a plain JSON document (see ``docs/sources.md#household-scenes``).

::

    {"task": {"type": "pick_heat_then_place_in_recep", "goal": "put a hot apple in fridge"},
     "receptacles": [{"name": "fridge 1", "openable": true, "closed": true}, ...],
     "objects": [{"name": "apple 1", "in": "diningtable 1", "states": []}, ...]}

An optional ``"location_groups": [["cabinet 1", "cabinet 2"]]`` lists receptacles that stand at one location,
as some real ALFWorld rooms have: ``go to`` one of them reaches all, ``go to`` another then answers "Nothing
happens." and ``look`` says "You are facing the cabinet 2, and cabinet 1. ...".

``openable`` defaults by receptacle type, ``closed`` defaults to ``openable``, ``states`` to ``[]``;
``task.type`` may be left out (it is parsed from the goal). Objects inside a receptacle are listed in
scene order. The goal's object/receptacle/lamp types come from the goal sentence.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from data_prep.react import TASK_TYPES, Goal, parse_goal
from fileio.atomic import write_json_atomic

from .vocab import OPENABLE_TYPES, type_of

STATES = ("hot", "cool", "clean")
_NAME = re.compile(r"^[a-z]+ [1-9][0-9]*$")


class SceneError(ValueError):
    """A scene document that does not follow the format; the message names the field."""


@dataclass(frozen=True)
class Receptacle:
    name: str
    openable: bool
    closed: bool

    @property
    def type(self) -> str:
        return type_of(self.name)


@dataclass(frozen=True)
class SceneObject:
    name: str
    location: str  # the receptacle it starts in ("in" in JSON)
    states: tuple[str, ...] = ()

    @property
    def type(self) -> str:
        return type_of(self.name)


@dataclass(frozen=True)
class Scene:
    task_type: str
    goal: str
    receptacles: tuple[Receptacle, ...]
    objects: tuple[SceneObject, ...] = field(default=())
    location_groups: tuple[tuple[str, ...], ...] = field(default=())  # receptacles sharing one location

    def __post_init__(self) -> None:
        self._validate()

    # -- derived -------------------------------------------------------------------------------------
    @property
    def parsed_goal(self) -> Goal:
        g = parse_goal(self.goal)
        assert g is not None  # checked in _validate
        return g

    def receptacle(self, name: str) -> Receptacle:
        for r in self.receptacles:
            if r.name == name:
                return r
        raise KeyError(name)

    # -- JSON ----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "task": {"type": self.task_type, "goal": self.goal},
            "receptacles": [
                {"name": r.name, "openable": r.openable, "closed": r.closed} for r in self.receptacles
            ],
            "objects": [{"name": o.name, "in": o.location, "states": list(o.states)} for o in self.objects],
        }
        if self.location_groups:  # only when present, so scenes without groups keep their JSON
            d["location_groups"] = [list(g) for g in self.location_groups]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Scene:
        """Build from the JSON form. Raises :class:`SceneError` naming the bad field."""
        if not isinstance(d, dict):
            raise SceneError("scene must be a JSON object")
        task = d.get("task")
        if not isinstance(task, dict) or not isinstance(task.get("goal"), str):
            raise SceneError("field 'task.goal' must be a string")
        goal = task["goal"].strip().rstrip(".").strip()
        parsed = parse_goal(goal)
        if parsed is None:
            raise SceneError(f"field 'task.goal': {goal!r} is not an ALFWorld goal sentence")
        task_type = task.get("type", parsed.task_type)
        if task_type != parsed.task_type:
            raise SceneError(f"field 'task.type': {task_type!r} but the goal reads as {parsed.task_type!r}")
        raw_recs = d.get("receptacles")
        if not isinstance(raw_recs, list) or not raw_recs:
            raise SceneError("field 'receptacles' must be a non-empty list")
        recs = []
        for i, r in enumerate(raw_recs):
            if not isinstance(r, dict) or not isinstance(r.get("name"), str):
                raise SceneError(f"field 'receptacles[{i}].name' must be a string")
            openable = r.get("openable", type_of(r["name"]) in OPENABLE_TYPES)
            closed = r.get("closed", openable)
            if not isinstance(openable, bool) or not isinstance(closed, bool):
                raise SceneError(f"field 'receptacles[{i}]': 'openable' and 'closed' must be booleans")
            recs.append(Receptacle(r["name"], openable, closed))
        raw_objs = d.get("objects", [])
        if not isinstance(raw_objs, list):
            raise SceneError("field 'objects' must be a list")
        objs = []
        for i, o in enumerate(raw_objs):
            if (
                not isinstance(o, dict)
                or not isinstance(o.get("name"), str)
                or not isinstance(o.get("in"), str)
            ):
                raise SceneError(f"field 'objects[{i}]' needs string 'name' and 'in'")
            states = o.get("states", [])
            if not isinstance(states, list) or not all(isinstance(s, str) for s in states):
                raise SceneError(f"field 'objects[{i}].states' must be a list of strings")
            objs.append(SceneObject(o["name"], o["in"], tuple(states)))
        return cls(task_type, goal, tuple(recs), tuple(objs), _read_groups(d.get("location_groups", [])))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the scene JSON atomically (temp file in the same folder, then rename)."""
        write_json_atomic(path, self.to_dict(), indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Scene:
        """Read a scene JSON file. Raises :class:`SceneError` naming the file and the bad field."""
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except json.JSONDecodeError as e:
            raise SceneError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
        try:
            return cls.from_dict(d)
        except SceneError as e:
            raise SceneError(f"{path}: {e}") from None

    # -- checks --------------------------------------------------------------------------------------
    def _validate(self) -> None:
        if self.task_type not in TASK_TYPES:
            raise SceneError(f"field 'task.type': unknown task type {self.task_type!r}")
        if parse_goal(self.goal) is None:
            raise SceneError(f"field 'task.goal': {self.goal!r} is not an ALFWorld goal sentence")
        names: set[str] = set()
        for i, r in enumerate(self.receptacles):
            if not _NAME.match(r.name):
                raise SceneError(
                    f"field 'receptacles[{i}].name': {r.name!r} is not 'type N' (e.g. 'cabinet 3')"
                )
            if r.name in names:
                raise SceneError(f"field 'receptacles[{i}].name': duplicate {r.name!r}")
            if r.closed and not r.openable:
                raise SceneError(f"field 'receptacles[{i}]': {r.name!r} is closed but not openable")
            names.add(r.name)
        rec_names = set(names)
        self._validate_groups(rec_names)
        for i, o in enumerate(self.objects):
            if not _NAME.match(o.name):
                raise SceneError(f"field 'objects[{i}].name': {o.name!r} is not 'type N' (e.g. 'apple 1')")
            if o.name in names:
                raise SceneError(f"field 'objects[{i}].name': duplicate {o.name!r}")
            if o.location not in rec_names:
                raise SceneError(f"field 'objects[{i}].in': {o.location!r} is not a receptacle of the scene")
            bad = [s for s in o.states if s not in STATES]
            if bad:
                raise SceneError(
                    f"field 'objects[{i}].states': unknown state {bad[0]!r} (use hot, cool, clean)"
                )
            names.add(o.name)

    def _validate_groups(self, rec_names: set[str]) -> None:
        seen: set[str] = set()
        for i, group in enumerate(self.location_groups):
            if len(group) < 2:
                raise SceneError(f"field 'location_groups[{i}]': a shared location needs at least 2 receptacles")
            for name in group:
                if name not in rec_names:
                    raise SceneError(f"field 'location_groups[{i}]': {name!r} is not a receptacle of the scene")
                if name in seen:
                    raise SceneError(f"field 'location_groups[{i}]': {name!r} is already in another group")
                seen.add(name)


def _read_groups(raw: Any) -> tuple[tuple[str, ...], ...]:
    if not isinstance(raw, list) or not all(
        isinstance(g, list) and all(isinstance(n, str) for n in g) for g in raw
    ):
        raise SceneError("field 'location_groups' must be a list of lists of receptacle names")
    return tuple(tuple(g) for g in raw)
