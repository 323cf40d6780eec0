"""Seeded scene generator and the train / valid_seen / valid_unseen splits.

Design (deterministic on every machine: only ``random.Random`` seeded with integers, sorted iteration):

- **Layouts.** Each room kind (kitchen, living room, bedroom, bathroom) has ``LAYOUTS_PER_KIND`` fixed
  furniture layouts drawn once from :data:`vocab.ROOM_RECEPTACLES` with fixed seeds. The last
  ``UNSEEN_LAYOUTS_PER_KIND`` of each kind are used only by ``valid_unseen``; train and valid_seen share
  the others. Layouts are distinct, so an unseen scene never has a train scene's receptacle list.
- **Pairings.** The task object(s) start in an (object type, receptacle type) pairing. Every third place of
  an object type in :data:`vocab.PLACES` is reserved for ``valid_unseen`` (:func:`vocab.unseen_places`);
  train and valid_seen place *every* object only in the other places, and valid_unseen places the task
  objects only in the reserved ones.
- **Seeds.** Scene ``i`` of a split with seed ``s`` uses ``random.Random(base[split] + s * 10**7 + i)``;
  the bases are 2**40 apart, so the splits' seed ranges are disjoint. Task types cycle through the six
  types (``i % 6``), so any prefix is balanced.
- **Solvable.** Each scene is played by the expert (:mod:`eval.expert`), which does not see hidden
  contents; a scene it cannot win within ``EXPERT_STEP_BUDGET`` steps is redrawn from the same stream.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from data_prep.react import TASK_TYPES

from .scene import Receptacle, Scene, SceneObject
from .vocab import (
    GENERIC_TARGETS,
    GOAL_TEMPLATES,
    NOT_PICKUPABLE,
    OPENABLE_TYPES,
    PLACES,
    ROOM_KINDS,
    ROOM_OBJECTS,
    ROOM_RECEPTACLES,
    ROOM_TASKS,
    TREATMENTS,
    number_of,
    seen_places,
    type_of,
    unseen_places,
)

SPLITS = ("train", "valid_seen", "valid_unseen")
DEFAULT_SIZES = {"train": 600, "valid_seen": 140, "valid_unseen": 134}
LAYOUTS_PER_KIND = 24
UNSEEN_LAYOUTS_PER_KIND = 5
EXPERT_STEP_BUDGET = 40  # the step limit is 50; leave a model some slack
_SPLIT_BASE = {"train": 0, "valid_seen": 1 << 40, "valid_unseen": 2 << 40}
_SEED_STRIDE = 10**7
_MAX_ATTEMPTS = 200

# Receptacles a room of each kind must have (appliances for heat/cool/clean, a lamp stand).
_REQUIRED = {
    "kitchen": ("countertop", "fridge", "microwave", "sinkbasin"),
    "living room": ("sidetable", "sofa"),
    "bedroom": ("bed", "sidetable"),
    "bathroom": ("countertop", "sinkbasin", "toilet"),
}


@dataclass(frozen=True)
class Layout:
    kind: str
    index: int
    receptacles: tuple[Receptacle, ...]

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(sorted({r.type for r in self.receptacles}))


def _draw_layout(kind: str, rng: random.Random) -> tuple[Receptacle, ...]:
    recs: list[Receptacle] = []
    fixed_drawers = rng.random() < 0.2  # like real ALFWorld rooms whose drawers do not open
    for rtype, lo, hi in ROOM_RECEPTACLES[kind]:
        if rtype in _REQUIRED[kind]:
            lo = max(lo, 1)
        for k in range(1, rng.randint(lo, hi) + 1):
            openable = rtype in OPENABLE_TYPES and not (rtype == "drawer" and fixed_drawers)
            recs.append(Receptacle(f"{rtype} {k}", openable, openable))
    return tuple(recs)


def layouts(kind: str) -> tuple[Layout, ...]:
    """The fixed layouts of a room kind (the same on every machine); the last ones are unseen-only."""
    if kind not in ROOM_KINDS:
        raise ValueError(f"room kind must be one of {ROOM_KINDS}, got {kind!r}")
    k0 = ROOM_KINDS.index(kind)
    out: list[Layout] = []
    seen: set[tuple[tuple[str, bool], ...]] = set()
    attempt = 0
    while len(out) < LAYOUTS_PER_KIND:
        recs = _draw_layout(kind, random.Random(100_003 * (k0 + 1) + attempt))
        attempt += 1
        sig = tuple((r.name, r.openable) for r in recs)
        if sig in seen:
            continue
        seen.add(sig)
        out.append(Layout(kind, len(out), recs))
    return tuple(out)


def split_layouts(kind: str, split: str) -> tuple[Layout, ...]:
    all_ = layouts(kind)
    cut = LAYOUTS_PER_KIND - UNSEEN_LAYOUTS_PER_KIND
    return all_[cut:] if split == "valid_unseen" else all_[:cut]


def layout_signature(scene: Scene) -> tuple[tuple[str, bool], ...]:
    """The room's receptacle list (names and openability), order-free."""
    return tuple(sorted((r.name, r.openable) for r in scene.receptacles))


def task_pairings(scene: Scene) -> frozenset[tuple[str, str]]:
    """(object type, start receptacle type) of the objects of the goal's type."""
    obj = scene.parsed_goal.obj
    rtype = {r.name: r.type for r in scene.receptacles}
    return frozenset((o.type, rtype[o.location]) for o in scene.objects if o.type == obj)


def all_pairings(scene: Scene) -> frozenset[tuple[str, str]]:
    rtype = {r.name: r.type for r in scene.receptacles}
    return frozenset((o.type, rtype[o.location]) for o in scene.objects)


def scene_seed(split: str, seed: int, index: int) -> int:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 <= seed < 10**5:
        raise ValueError(f"seed must be in [0, 100000), got {seed}")
    if not 0 <= index < _SEED_STRIDE:
        raise ValueError(f"scene index must be in [0, {_SEED_STRIDE}), got {index}")
    return _SPLIT_BASE[split] + seed * _SEED_STRIDE + index


def generate_scenes(split: str, n: int | None = None, seed: int = 0) -> list[Scene]:
    """``n`` scenes of ``split`` (defaults: train 600, valid_seen 140, valid_unseen 134).

    Deterministic: the same (split, n, seed) gives the same scenes on every machine, and
    ``generate_scenes(s, k)`` is a prefix of ``generate_scenes(s, m)`` for ``k < m``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    n = DEFAULT_SIZES[split] if n is None else n
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    per_kind = {kind: split_layouts(kind, split) for kind in ROOM_KINDS}
    return [generate_scene(split, i, seed, _layouts=per_kind) for i in range(n)]


def generate_scene(
    split: str, index: int, seed: int = 0, *, shared_locations: float = 0.0,
    _layouts: dict[str, tuple[Layout, ...]] | None = None,
) -> Scene:
    """Scene ``index`` of ``split`` (task type ``TASK_TYPES[index % 6]``).

    ``shared_locations`` > 0 puts, with that probability per receptacle type with two or more instances,
    two of them at one location (as in some real ALFWorld rooms); the default 0 keeps the standard splits.
    """
    from eval.expert import solve  # the expert imports this package; import it when first needed

    rng = random.Random(scene_seed(split, seed, index))
    # a separate stream, so the standard scenes stay the same whatever this option is
    share_rng = random.Random(scene_seed(split, seed, index) ^ 0x5EED)
    per_kind = _layouts or {kind: split_layouts(kind, split) for kind in ROOM_KINDS}
    task_type = TASK_TYPES[index % len(TASK_TYPES)]
    for _ in range(_MAX_ATTEMPTS):
        scene = _draw_scene(rng, task_type, per_kind, unseen=split == "valid_unseen")
        if scene is None:
            continue
        if shared_locations > 0:
            scene = share_locations(scene, share_rng, shared_locations)
        result = solve(scene)
        if result.won and len(result.actions) <= EXPERT_STEP_BUDGET:
            return scene
    raise RuntimeError(f"could not draw a solvable {task_type} scene for {split} #{index} (seed {seed})")


def share_locations(scene: Scene, rng: random.Random, p: float) -> Scene:
    """``scene`` with, per receptacle type of 2+ instances and with probability ``p``, two neighbours
    (``cabinet 1`` and ``cabinet 2``) standing at one location."""
    by_type: dict[str, list[str]] = {}
    for r in scene.receptacles:
        by_type.setdefault(r.type, []).append(r.name)
    groups = []
    for rtype in sorted(by_type):
        names = sorted(by_type[rtype], key=number_of)
        if len(names) >= 2 and rng.random() < p:
            k = rng.randrange(len(names) - 1)
            groups.append((names[k], names[k + 1]))
    return replace(scene, location_groups=tuple(groups))


def _instances(rng: random.Random, present: dict[str, list[str]], rtypes: list[str], k: int) -> list[str]:
    """``k`` receptacle names, each drawn uniformly from the instances of a random type in ``rtypes``."""
    return [rng.choice(present[rng.choice(rtypes)]) for _ in range(k)]


@dataclass(frozen=True)
class _Task:
    """The drawn task: object type, target (receptacle type, or the lamp), where the objects start."""

    obj: str
    target: str
    starts: list[str]
    lamp: str | None = None
    lamp_places: tuple[str, ...] = ()


# The helpers below draw from ``rng`` in a fixed order (kind, layout, task, task objects, distractors,
# goal template); reordering any call changes every generated scene.
def _draw_scene(
    rng: random.Random, task_type: str, per_kind: dict[str, tuple[Layout, ...]], *, unseen: bool
) -> Scene | None:
    kind = rng.choice([k for k in ROOM_KINDS if task_type in ROOM_TASKS[k]])
    layout = rng.choice(per_kind[kind])
    present: dict[str, list[str]] = {}
    for r in layout.receptacles:
        present.setdefault(r.type, []).append(r.name)

    task = _draw_task(rng, task_type, kind, present, unseen=unseen)
    if task is None:
        return None
    placed = _place_task_objects(rng, task_type, kind, present, task)
    placed += _place_distractors(rng, task_type, kind, present, task, unseen=unseen)
    objects = _name_objects(placed)

    template = rng.choice(GOAL_TEMPLATES[task_type])
    goal = template.format(obj=task.obj, recep=task.target, lamp=task.target)
    scene = Scene(task_type, goal, layout.receptacles, tuple(objects))
    assert all(type_of(o.location) in present for o in scene.objects)
    return scene


def _draw_task(
    rng: random.Random, task_type: str, kind: str, present: dict[str, list[str]], *, unseen: bool
) -> _Task | None:
    """The task object type, its target and its start places; None when the layout cannot host them."""
    able = TREATMENTS[task_type].objects if task_type in TREATMENTS else None
    candidates = [o for o in ROOM_OBJECTS[kind] if o not in NOT_PICKUPABLE and (able is None or o in able)]
    obj = rng.choice(candidates)
    starts_all = unseen_places(obj) if unseen else seen_places(obj)
    starts_all = tuple(r for r in starts_all if r in present)
    lamp = None
    lamp_places: list[str] = []
    if task_type == "look_at_obj_in_light":
        lamp = rng.choice(("desklamp", "floorlamp"))
        lamp_places = [r for r in PLACES[lamp] if r in present]
        if not lamp_places:
            return None
        target = lamp
        starts = list(starts_all)
    else:
        targets = sorted((set(PLACES[obj]) | set(GENERIC_TARGETS[kind])) & set(present))
        targets = [t for t in targets if task_type not in TREATMENTS or t != TREATMENTS[task_type].appliance]
        if not targets:
            return None
        target = rng.choice(targets)
        starts = [r for r in starts_all if r != target]
    if not starts:
        return None
    return _Task(obj, target, starts, lamp, tuple(lamp_places))


def _place_task_objects(
    rng: random.Random, task_type: str, kind: str, present: dict[str, list[str]], task: _Task
) -> list[tuple[str, str]]:
    """(object type, receptacle name) of the task objects, the task's lamp, and maybe a spare lamp."""
    placed: list[tuple[str, str]] = []
    n_task = rng.randint(2, 3) if task_type == "pick_two_obj_and_place" else rng.randint(1, 2)
    placed += [(task.obj, r) for r in _instances(rng, present, task.starts, n_task)]
    if task.lamp is not None:
        placed.append((task.lamp, rng.choice(present[rng.choice(task.lamp_places)])))
    elif kind in ("bedroom", "living room") and rng.random() < 0.5:
        extra = rng.choice(("desklamp", "floorlamp"))
        spots = [r for r in PLACES[extra] if r in present]
        if spots:
            placed.append((extra, rng.choice(present[rng.choice(spots)])))
    return placed


def _place_distractors(
    rng: random.Random, task_type: str, kind: str, present: dict[str, list[str]], task: _Task, *, unseen: bool
) -> list[tuple[str, str]]:
    """Other object types of the room, in their seen places (any place in valid_unseen)."""
    placed: list[tuple[str, str]] = []
    others = [o for o in ROOM_OBJECTS[kind] if o != task.obj]
    for other in rng.sample(others, min(len(others), rng.randint(6, 12))):
        spots = [r for r in (PLACES[other] if unseen else seen_places(other)) if r in present]
        if task_type != "look_at_obj_in_light":
            spots = [r for r in spots if r != task.target] or spots
        if spots:
            placed += [(other, r) for r in _instances(rng, present, spots, rng.randint(1, 2))]
    return placed


def _name_objects(placed: list[tuple[str, str]]) -> list[SceneObject]:
    """Number the objects of each type in placing order, then sort them as ALFWorld lists them."""
    counter: dict[str, int] = {}
    objects: list[SceneObject] = []
    for otype, rname in placed:
        counter[otype] = counter.get(otype, 0) + 1
        objects.append(SceneObject(f"{otype} {counter[otype]}", rname))
    # ALFWorld-like listing order: by type, higher numbers first
    objects.sort(key=lambda o: (o.type, -number_of(o.name)))
    return objects
