"""World knowledge of the household simulator: types, affordances, rooms and where things are found.

Everything here is constant data (tuples and read-only mappings), shared by the simulator
(affordances), the scene generator (rooms, placements, targets) and the expert planner (its
"likely places" prior). See ``docs/sources.md#household-world``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

RECEPTACLE_TYPES: tuple[str, ...] = (
    "armchair", "bathtubbasin", "bed", "cabinet", "cart", "coffeemachine", "coffeetable", "countertop",
    "desk", "diningtable", "drawer", "dresser", "fridge", "garbagecan", "handtowelholder", "laundryhamper",
    "microwave", "ottoman", "safe", "shelf", "sidetable", "sinkbasin", "sofa", "stoveburner", "toaster",
    "toilet", "toiletpaperhanger", "towelholder", "tvstand",
)  # fmt: skip

OPENABLE_TYPES: frozenset[str] = frozenset({"fridge", "cabinet", "microwave", "drawer", "safe"})

HEATABLE: frozenset[str] = frozenset({"apple", "bread", "cup", "egg", "mug", "plate", "potato", "tomato"})
COOLABLE: frozenset[str] = HEATABLE | {"bowl", "lettuce", "pan", "pot", "winebottle"}
CLEANABLE: frozenset[str] = frozenset({
    "apple", "bowl", "butterknife", "cloth", "cup", "dishsponge", "egg", "fork", "kettle", "knife", "ladle",
    "lettuce", "mug", "pan", "plate", "pot", "potato", "soapbar", "spatula", "spoon",
})  # fmt: skip
LAMPS: frozenset[str] = frozenset({"desklamp", "floorlamp"})
# Lamps stand where they are: they can be used, not taken.
NOT_PICKUPABLE: frozenset[str] = LAMPS



@dataclass(frozen=True)
class Treatment:
    """What a heat / cool / clean task does to its object: the command, where, the state it leaves, to what."""

    verb: str  # the command: "heat apple 1 with microwave 1"
    appliance: str  # the receptacle type it needs
    state: str  # the state the object then has (examine: "This is a hot apple 1.")
    objects: frozenset[str]  # object types it works on


# The one task -> appliance table; env, generator and expert read it.
TREATMENTS: Mapping[str, Treatment] = MappingProxyType({
    "pick_heat_then_place_in_recep": Treatment("heat", "microwave", "hot", HEATABLE),
    "pick_cool_then_place_in_recep": Treatment("cool", "fridge", "cool", COOLABLE),
    "pick_clean_then_place_in_recep": Treatment("clean", "sinkbasin", "clean", CLEANABLE),
})  # fmt: skip
TREATMENT_BY_VERB: Mapping[str, Treatment] = MappingProxyType({t.verb: t for t in TREATMENTS.values()})


def _ro(d: dict[str, tuple[str, ...]]) -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType(d)


# Where an object type is found, most likely first. The generator only places objects here, and the
# expert's search prior is this list (filtered to the room), as in the ReAct paper's thoughts
# ("an apple is more likely to appear in fridge (1), diningtable (1), countertop (1-3) ...").
PLACES: Mapping[str, tuple[str, ...]] = _ro({
    # kitchen
    "apple": ("fridge", "diningtable", "countertop", "garbagecan", "sinkbasin", "microwave"),
    "bread": ("countertop", "diningtable", "fridge", "cabinet", "microwave"),
    "egg": ("fridge", "countertop", "diningtable", "garbagecan", "sinkbasin", "microwave"),
    "lettuce": ("fridge", "countertop", "diningtable", "sinkbasin", "garbagecan"),
    "potato": ("fridge", "countertop", "diningtable", "garbagecan", "sinkbasin", "microwave"),
    "tomato": ("fridge", "countertop", "diningtable", "sinkbasin", "garbagecan", "microwave"),
    "cup": ("countertop", "diningtable", "cabinet", "fridge", "sinkbasin", "microwave", "shelf"),
    "mug": ("coffeemachine", "countertop", "diningtable", "cabinet", "sinkbasin", "shelf", "desk", "sidetable",
            "microwave", "fridge"),
    "bowl": ("cabinet", "countertop", "diningtable", "fridge", "shelf", "sinkbasin", "microwave"),
    "plate": ("cabinet", "countertop", "diningtable", "fridge", "shelf", "sinkbasin"),
    "pan": ("stoveburner", "countertop", "cabinet", "diningtable", "sinkbasin", "fridge"),
    "pot": ("stoveburner", "countertop", "cabinet", "diningtable", "sinkbasin", "fridge"),
    "kettle": ("stoveburner", "countertop", "cabinet", "diningtable", "shelf"),
    "butterknife": ("drawer", "countertop", "diningtable", "sinkbasin"),
    "fork": ("drawer", "countertop", "diningtable", "sinkbasin"),
    "knife": ("countertop", "drawer", "diningtable", "sinkbasin"),
    "spoon": ("drawer", "countertop", "diningtable", "sinkbasin"),
    "ladle": ("countertop", "drawer", "diningtable", "sinkbasin"),
    "spatula": ("countertop", "drawer", "diningtable", "sinkbasin"),
    "dishsponge": ("sinkbasin", "countertop", "cabinet", "drawer", "diningtable", "shelf"),
    "peppershaker": ("countertop", "cabinet", "diningtable", "shelf", "drawer"),
    "saltshaker": ("countertop", "cabinet", "diningtable", "shelf", "drawer"),
    "soapbottle": ("countertop", "sinkbasin", "cabinet", "shelf", "toilet", "garbagecan", "diningtable"),
    "winebottle": ("fridge", "countertop", "diningtable", "cabinet", "shelf"),
    "glassbottle": ("countertop", "cabinet", "diningtable", "fridge", "shelf", "garbagecan"),
    "papertowelroll": ("countertop", "diningtable", "cabinet", "shelf"),
    # bedroom and living room
    "alarmclock": ("sidetable", "desk", "dresser", "shelf"),
    "book": ("bed", "desk", "shelf", "sidetable", "dresser", "sofa", "coffeetable", "diningtable"),
    "cd": ("desk", "drawer", "shelf", "sidetable", "dresser", "safe", "garbagecan"),
    "cellphone": ("bed", "desk", "sidetable", "dresser", "drawer", "sofa", "armchair"),
    "creditcard": ("desk", "sidetable", "dresser", "drawer", "coffeetable", "diningtable", "armchair", "sofa"),
    "keychain": ("sidetable", "dresser", "drawer", "coffeetable", "desk", "safe", "armchair", "sofa"),
    "laptop": ("bed", "desk", "sofa", "coffeetable", "diningtable", "armchair"),
    "pen": ("desk", "sidetable", "drawer", "dresser", "shelf"),
    "pencil": ("desk", "sidetable", "drawer", "dresser", "shelf"),
    "pillow": ("bed", "sofa", "armchair", "ottoman"),
    "remotecontrol": ("coffeetable", "sofa", "sidetable", "armchair", "tvstand", "dresser"),
    "statue": ("shelf", "coffeetable", "sidetable", "dresser", "diningtable", "tvstand"),
    "vase": ("shelf", "coffeetable", "sidetable", "diningtable", "dresser", "tvstand"),
    "watch": ("sidetable", "dresser", "drawer", "coffeetable", "desk", "safe"),
    "newspaper": ("coffeetable", "sofa", "sidetable", "armchair", "diningtable", "ottoman"),
    "tissuebox": ("sidetable", "coffeetable", "dresser", "shelf", "countertop", "toilet"),
    "houseplant": ("diningtable", "coffeetable", "sidetable", "shelf", "tvstand"),
    # bathroom
    "soapbar": ("sinkbasin", "countertop", "cabinet", "toilet", "bathtubbasin", "shelf", "garbagecan"),
    "cloth": ("countertop", "cabinet", "sinkbasin", "bathtubbasin", "toilet", "drawer", "shelf"),
    "toiletpaper": ("toiletpaperhanger", "toilet", "countertop", "cabinet", "garbagecan", "shelf"),
    "spraybottle": ("toilet", "cabinet", "countertop", "garbagecan", "shelf"),
    "handtowel": ("handtowelholder", "countertop", "cabinet", "shelf"),
    "towel": ("towelholder", "bathtubbasin", "cabinet", "shelf"),
    "candle": ("countertop", "toilet", "cabinet", "shelf", "bathtubbasin", "sidetable", "dresser"),
    # lamps stand on furniture; use them where they are
    "desklamp": ("desk", "sidetable", "dresser"),
    "floorlamp": ("sidetable", "dresser", "tvstand", "shelf"),
})  # fmt: skip

OBJECT_TYPES: tuple[str, ...] = tuple(sorted(PLACES))


def unseen_places(obj: str) -> tuple[str, ...]:
    """Receptacle types where ``obj`` starts only in the ``valid_unseen`` split (every third place).

    The partition is a fixed rule over :data:`PLACES`, so it is the same on every machine, and
    train/valid_seen never put an object type in one of its unseen places.
    """
    return tuple(r for i, r in enumerate(PLACES[obj]) if i % 3 == 2)


def seen_places(obj: str) -> tuple[str, ...]:
    return tuple(r for i, r in enumerate(PLACES[obj]) if i % 3 != 2)


ROOM_KINDS: tuple[str, ...] = ("kitchen", "living room", "bedroom", "bathroom")

# Receptacle count ranges per room kind: (type, min, max). The generator draws fixed layouts from these.
ROOM_RECEPTACLES: Mapping[str, tuple[tuple[str, int, int], ...]] = MappingProxyType({
    "kitchen": (("cabinet", 2, 8), ("coffeemachine", 1, 1), ("countertop", 1, 3), ("diningtable", 0, 1),
                ("drawer", 1, 6), ("fridge", 1, 1), ("garbagecan", 1, 1), ("microwave", 1, 1), ("shelf", 0, 3),
                ("sinkbasin", 1, 1), ("stoveburner", 2, 4), ("toaster", 0, 1)),
    "living room": (("armchair", 0, 2), ("cabinet", 0, 3), ("coffeetable", 1, 2), ("diningtable", 0, 1),
                    ("drawer", 0, 4), ("dresser", 0, 1), ("garbagecan", 1, 1), ("ottoman", 0, 1),
                    ("safe", 0, 1), ("shelf", 0, 4), ("sidetable", 1, 2), ("sofa", 1, 1), ("tvstand", 0, 1)),
    "bedroom": (("armchair", 0, 1), ("bed", 1, 1), ("desk", 0, 2), ("drawer", 1, 6), ("dresser", 0, 1),
                ("garbagecan", 1, 1), ("laundryhamper", 0, 1), ("safe", 0, 1), ("shelf", 0, 5),
                ("sidetable", 1, 2)),
    "bathroom": (("bathtubbasin", 0, 1), ("cabinet", 1, 4), ("cart", 0, 1), ("countertop", 1, 1),
                 ("drawer", 0, 4), ("garbagecan", 1, 1), ("handtowelholder", 0, 2), ("shelf", 0, 2),
                 ("sinkbasin", 1, 2), ("toilet", 1, 1), ("toiletpaperhanger", 1, 1), ("towelholder", 1, 1)),
})  # fmt: skip

# Object types that appear in each room kind (lamps are added by the generator).
ROOM_OBJECTS: Mapping[str, tuple[str, ...]] = _ro({
    "kitchen": ("apple", "bowl", "bread", "butterknife", "cup", "dishsponge", "egg", "fork", "glassbottle",
                "kettle", "knife", "ladle", "lettuce", "mug", "pan", "papertowelroll", "peppershaker", "plate",
                "pot", "potato", "saltshaker", "soapbottle", "spatula", "spoon", "tomato", "winebottle"),
    "living room": ("book", "cellphone", "creditcard", "houseplant", "keychain", "laptop", "newspaper",
                    "pillow", "remotecontrol", "statue", "tissuebox", "vase", "watch"),
    "bedroom": ("alarmclock", "book", "cd", "cellphone", "creditcard", "keychain", "laptop", "mug", "pen",
                "pencil", "pillow", "tissuebox", "watch"),
    "bathroom": ("candle", "cloth", "dishsponge", "handtowel", "soapbar", "soapbottle", "spraybottle",
                 "tissuebox", "toiletpaper", "towel"),
})  # fmt: skip

# Receptacle types that make sense as a destination in any task, besides the object's own places.
GENERIC_TARGETS: Mapping[str, tuple[str, ...]] = _ro({
    "kitchen": ("cabinet", "countertop", "diningtable", "drawer", "fridge", "garbagecan", "microwave", "shelf"),
    "living room": ("armchair", "cabinet", "coffeetable", "diningtable", "drawer", "dresser", "garbagecan",
                    "ottoman", "safe", "shelf", "sidetable", "sofa", "tvstand"),
    "bedroom": ("bed", "desk", "drawer", "dresser", "garbagecan", "laundryhamper", "safe", "shelf",
                "sidetable"),
    "bathroom": ("cabinet", "cart", "countertop", "drawer", "garbagecan", "shelf", "toilet"),
})  # fmt: skip

# Which task types each room kind hosts.
ROOM_TASKS: Mapping[str, tuple[str, ...]] = _ro({
    "kitchen": ("pick_and_place_simple", "pick_clean_then_place_in_recep", "pick_heat_then_place_in_recep",
                "pick_cool_then_place_in_recep", "pick_two_obj_and_place"),
    "living room": ("pick_and_place_simple", "look_at_obj_in_light", "pick_two_obj_and_place"),
    "bedroom": ("pick_and_place_simple", "look_at_obj_in_light", "pick_two_obj_and_place"),
    "bathroom": ("pick_and_place_simple", "pick_clean_then_place_in_recep", "pick_two_obj_and_place"),
})  # fmt: skip

# Goal phrasings per task type (docs/sources.md#household-tasks); {lamp} only in look_at_obj_in_light.
GOAL_TEMPLATES: Mapping[str, tuple[str, ...]] = _ro({
    "pick_and_place_simple": ("put a {obj} in {recep}", "put some {obj} on {recep}"),
    "pick_clean_then_place_in_recep": ("put a clean {obj} in {recep}", "clean some {obj} and put it in {recep}"),
    "pick_heat_then_place_in_recep": ("put a hot {obj} in {recep}", "heat some {obj} and put it in {recep}"),
    "pick_cool_then_place_in_recep": ("put a cool {obj} in {recep}", "cool some {obj} and put it in {recep}"),
    "look_at_obj_in_light": ("look at {obj} under the {lamp}", "examine the {obj} with the {lamp}"),
    "pick_two_obj_and_place": ("put two {obj} in {recep}", "find two {obj} and put them in {recep}"),
})  # fmt: skip


def type_of(name: str) -> str:
    """``"cabinet 12"`` -> ``"cabinet"``."""
    return name.rsplit(" ", 1)[0]


def number_of(name: str) -> int:
    """``"cabinet 12"`` -> ``12``."""
    return int(name.rsplit(" ", 1)[1])


def format_list(names: list[str] | tuple[str, ...], article: str = "a") -> str:
    """ALFWorld's list form: ``nothing`` | ``a X`` | ``a X, and a Y`` | ``a X, a Y, and a Z``.

    The article is always "a", even before a vowel (``a egg 1``), as in ALFWorld; ``article=""`` gives the
    bare form of ``look`` at a shared location (``cabinet 2, and cabinet 1``).
    """
    a = f"{article} " if article else ""
    n = len(names)
    if n == 0:
        return "nothing"
    if n == 1:
        return a + names[0]
    return ", ".join(a + x for x in names[:-1]) + ", and " + a + names[-1]


def parse_list(text: str) -> list[str]:
    """Inverse of :func:`format_list` (a trailing period is ignored)."""
    text = text.strip().rstrip(".")
    if text == "nothing" or not text:
        return []
    out = []
    for part in text.split(", "):
        if part.startswith("and "):
            part = part[4:]
        if part.startswith("a "):
            part = part[2:]
        out.append(part.strip())
    return out


def article(word: str) -> str:
    """English article for thoughts (observations keep ALFWorld's plain "a")."""
    return "an" if word[:1] in "aeiou" else "a"
