"""HouseholdEnv: every command's replies and failure cases against the spec strings.

The strings are the household simulator spec's (docs/sources.md#household-commands).
"""

from __future__ import annotations

import copy
import itertools
import types

import pytest

from data_prep.react import parse_react_text
from eval.household import EpisodeOver, HouseholdEnv, Scene, bench
from eval.household.bench import sim_steps_per_s
from eval.household.env import room_list
from eval.household.vocab import format_list, parse_list

NOTHING = "Nothing happens."


def kitchen(goal: str = "put a hot apple in fridge", **extra_objects: str) -> Scene:
    objects = [
        {"name": "apple 1", "in": "countertop 1"},
        {"name": "egg 1", "in": "fridge 1"},
        {"name": "mug 2", "in": "cabinet 1"},
        {"name": "mug 1", "in": "cabinet 1"},
        {"name": "cup 1", "in": "cabinet 1"},
        {"name": "desklamp 1", "in": "desk 1"},
        {"name": "floorlamp 1", "in": "sidetable 1"},
        {"name": "pen 1", "in": "drawer 1"},
        {"name": "pen 2", "in": "sidetable 1"},
        {"name": "pen 3", "in": "desk 1"},
    ]
    objects += [{"name": k.replace("_", " "), "in": v} for k, v in extra_objects.items()]
    return Scene.from_dict(
        {
            "task": {"goal": goal},
            "receptacles": [
                {"name": "sinkbasin 1"},
                {"name": "cabinet 1"},
                {"name": "countertop 1"},
                {"name": "drawer 1", "openable": False},  # like ALFWorld drawers that do not open
                {"name": "fridge 1"},
                {"name": "cabinet 2"},
                {"name": "microwave 1"},
                {"name": "desk 1"},
                {"name": "sidetable 1"},
            ],
            "objects": objects,
        }
    )


def play(env: HouseholdEnv, *commands: str) -> list[str]:
    return [env.step(c)[0] for c in commands]


def test_first_observation_and_room_order():
    env = HouseholdEnv(kitchen())
    assert env.reset() == (
        "-= Welcome to TextWorld, ALFRED! =-\n\n"
        "You are in the middle of a room. Looking quickly around you, you see a cabinet 2, a cabinet 1, "
        "a countertop 1, a desk 1, a drawer 1, a fridge 1, a microwave 1, a sidetable 1, and a sinkbasin 1.\n\n"
        "Your task is to: put a hot apple in fridge."
    )
    names = [f"cabinet {i}" for i in range(1, 13)] + ["countertop 1", "armchair 1"]
    assert room_list(names)[:4] == ["armchair 1", "cabinet 12", "cabinet 11", "cabinet 10"]
    assert room_list(names)[-3:] == ["cabinet 2", "cabinet 1", "countertop 1"]


def test_lists_and_article():
    assert format_list([]) == "nothing"
    assert format_list(["egg 1"]) == "a egg 1"
    assert format_list(["apple 1", "egg 2"]) == "a apple 1, and a egg 2"
    assert format_list(["a 1", "b 2", "c 3"]) == "a a 1, a b 2, and a c 3"
    for names in ([], ["egg 1"], ["apple 1", "egg 2"], ["cup 3", "egg 2", "potato 3", "potato 2"]):
        assert parse_list(format_list(names)) == names
    env = HouseholdEnv(kitchen())
    assert play(env, "go to fridge 1", "open fridge 1") == [
        "The fridge 1 is closed.",
        "You open the fridge 1. The fridge 1 is open. In it, you see a egg 1.",
    ]
    assert play(env, "go to cabinet 2", "open cabinet 2") == [
        "The cabinet 2 is closed.",
        "You open the cabinet 2. The cabinet 2 is open. In it, you see nothing.",
    ]
    # three items, in scene order (mug 2 before mug 1, as listed in the scene)
    assert play(env, "go to cabinet 1", "open cabinet 1")[1] == (
        "You open the cabinet 1. The cabinet 1 is open. In it, you see a mug 2, a mug 1, and a cup 1."
    )
    assert play(env, "go to desk 1") == ["On the desk 1, you see a desklamp 1, and a pen 3."]


def test_go_to():
    env = HouseholdEnv(kitchen())
    obs, done, info = env.step("go to countertop 1")
    assert (obs, done, info) == ("On the countertop 1, you see a apple 1.", False, {"won": False, "steps": 1, "valid": True})
    assert env.step("go to countertop 1")[0] == NOTHING  # already there
    assert env.step("go to countertop 2")[2]["valid"] is False  # no such receptacle
    assert env.step("go to apple 1")[0] == NOTHING  # not a receptacle
    assert env.step("go fridge 1")[0] == NOTHING
    assert env.step("go to drawer 1")[0] == "On the drawer 1, you see a pen 1."  # not openable: a surface
    assert play(env, "go to fridge 1", "open fridge 1", "go to sinkbasin 1", "go to fridge 1") == [
        "The fridge 1 is closed.",
        "You open the fridge 1. The fridge 1 is open. In it, you see a egg 1.",
        "On the sinkbasin 1, you see nothing.",
        "The fridge 1 is open. In it, you see a egg 1.",
    ]
    assert env.location == "fridge 1"


def test_open_close():
    env = HouseholdEnv(kitchen())
    assert env.step("open fridge 1")[0] == NOTHING  # not there
    env.step("go to fridge 1")
    assert env.step("close fridge 1")[0] == NOTHING  # already closed
    assert env.step("open fridge 1")[0].startswith("You open the fridge 1.")
    assert env.step("open fridge 1")[0] == NOTHING  # already open
    assert env.step("close fridge 1")[0] == "You close the fridge 1."
    assert env.step("examine fridge 1")[0] == "The fridge 1 is closed."
    env.step("go to countertop 1")
    assert env.step("open countertop 1")[0] == NOTHING
    env.step("go to drawer 1")
    assert env.step("open drawer 1")[0] == NOTHING  # openable overridden to false
    assert env.step("close drawer 1")[0] == NOTHING


def test_take_and_put():
    env = HouseholdEnv(kitchen())
    assert env.step("take apple 1 from countertop 1")[0] == NOTHING  # not there yet
    env.step("go to countertop 1")
    assert env.step("take apple 1 from fridge 1")[0] == NOTHING  # wrong receptacle
    assert env.step("take egg 1 from countertop 1")[0] == NOTHING  # not in it
    assert env.step("take apple 1 from countertop 1")[0] == "You pick up the apple 1 from the countertop 1."
    assert env.held == "apple 1"
    assert env.step("go to countertop 1")[0] == NOTHING
    env.step("go to fridge 1")
    assert env.step("take egg 1 from fridge 1")[0] == NOTHING  # closed (and hands full)
    assert env.step("put apple 1 in/on fridge 1")[0] == NOTHING  # closed
    env.step("open fridge 1")
    assert env.step("take egg 1 from fridge 1")[0] == NOTHING  # hands full
    assert env.step("put apple 1 in fridge 1")[0] == NOTHING  # the command is "in/on"
    assert env.step("move apple 1 to fridge 1")[0] == NOTHING  # 2.1.2 only
    assert env.step("put egg 1 in/on fridge 1")[0] == NOTHING  # not holding it
    assert env.step("put apple 1 in/on fridge 1")[0] == "You put the apple 1 in/on the fridge 1."
    assert env.held is None
    # the fridge lists its objects in scene order: apple 1 comes before egg 1 in the scene
    assert env.step("examine fridge 1")[0] == "The fridge 1 is open. In it, you see a apple 1, and a egg 1."
    assert env.step("put apple 1 in/on fridge 1")[0] == NOTHING
    env.step("go to desk 1")
    assert env.step("take desklamp 1 from desk 1")[0] == NOTHING  # lamps are used, not taken
    env.step("go to drawer 1")
    assert env.step("take pen 1 from drawer 1")[0] == "You pick up the pen 1 from the drawer 1."


def test_heat_cool_clean_and_examine():
    env = HouseholdEnv(kitchen())
    play(env, "go to countertop 1", "take apple 1 from countertop 1")
    assert env.step("heat apple 1 with microwave 1")[0] == NOTHING  # not at the microwave
    assert env.step("examine apple 1")[0] == "There's nothing special about apple 1."
    env.step("go to microwave 1")  # closed: heating works anyway
    assert env.step("heat apple 1 with fridge 1")[0] == NOTHING
    assert env.step("cool apple 1 with microwave 1")[0] == NOTHING
    assert env.step("heat egg 1 with microwave 1")[0] == NOTHING  # not holding it
    assert env.step("heat apple 1 with microwave 1")[0] == "You heat the apple 1 using the microwave 1."
    assert env.step("examine apple 1")[0] == "This is a hot apple 1."
    env.step("go to fridge 1")
    assert env.step("cool apple 1 with fridge 1")[0] == "You cool the apple 1 using the fridge 1."
    assert env.step("examine apple 1")[0] == "This is a cool apple 1."  # cooling removed hot
    env.step("go to sinkbasin 1")
    assert env.step("clean apple 1 with sinkbasin 1")[0] == "You clean the apple 1 using the sinkbasin 1."
    assert env.step("examine apple 1")[0] == "This is a cool and clean apple 1."
    env.step("go to microwave 1")
    env.step("heat apple 1 with microwave 1")
    assert env.step("examine apple 1")[0] == "This is a hot and clean apple 1."  # heating removed cool
    assert env.step("examine microwave 1")[0] == "The microwave 1 is closed."
    assert env.step("examine fridge 1")[0] == NOTHING  # not there
    # not heatable / coolable / cleanable
    env2 = HouseholdEnv(kitchen())
    play(env2, "go to drawer 1", "take pen 1 from drawer 1", "go to microwave 1")
    assert env2.step("heat pen 1 with microwave 1")[0] == NOTHING
    env2.step("go to fridge 1")
    assert env2.step("cool pen 1 with fridge 1")[0] == NOTHING
    env2.step("go to sinkbasin 1")
    assert env2.step("clean pen 1 with sinkbasin 1")[0] == NOTHING
    assert env2.step("examine pen 1")[0] == "There's nothing special about pen 1."
    assert env2.step("examine pen 2")[0] == NOTHING  # not visible from here
    assert env2.step("examine sinkbasin 1")[0] == "On the sinkbasin 1, you see nothing."


def test_use_inventory_look_think_and_garbage():
    env = HouseholdEnv(kitchen())
    assert env.step("look")[0] == (
        "You are in the middle of a room. Looking quickly around you, you see a cabinet 2, a cabinet 1, "
        "a countertop 1, a desk 1, a drawer 1, a fridge 1, a microwave 1, a sidetable 1, and a sinkbasin 1."
    )
    assert env.step("inventory")[0] == "You are not carrying anything."
    assert env.step("use desklamp 1")[0] == NOTHING  # not at the desk
    env.step("go to desk 1")
    assert env.step("use pen 3")[0] == NOTHING  # not a lamp
    assert env.step("use floorlamp 1")[0] == NOTHING  # on the sidetable
    assert env.step("use desklamp 1")[0] == "You turn on the desklamp 1."
    assert env.step("look")[0] == "You are facing the desk 1. Next to it, you see nothing."
    env.step("take pen 3 from desk 1")
    assert env.step("inventory")[0] == "You are carrying: a pen 3."
    obs, done, info = env.step("think: I should put the pen somewhere.")
    assert (obs, info["valid"]) == ("OK.", True)
    assert env.step("   look   ")[0].startswith("You are facing")  # surrounding whitespace is trimmed
    for bad in ("", "jump", "Look", "look around", "inventory please", "take pen 2 from  sidetable 1",
                "go to  desk 1", "examine", "use", "open", "heat pen 3 with", "put pen 3 in/on"):
        obs, _, info = env.step(bad)
        assert (obs, info["valid"]) == (NOTHING, False), bad


def test_grammar_212_arrival_and_move():
    env = HouseholdEnv(kitchen(), grammar="2.1.2")
    assert env.step("go to fridge 1")[0] == "You arrive at fridge 1. The fridge 1 is closed."
    assert env.step("go to countertop 1")[0] == "You arrive at countertop 1. On the countertop 1, you see a apple 1."
    assert env.step("examine countertop 1")[0] == "On the countertop 1, you see a apple 1."
    env.step("take apple 1 from countertop 1")
    env.step("go to microwave 1")
    env.step("heat apple 1 with microwave 1")
    env.step("go to fridge 1")
    env.step("open fridge 1")
    assert env.step("put apple 1 in/on fridge 1")[0] == NOTHING  # move replaces put
    assert env.step("move apple 1 to countertop 1")[0] == NOTHING  # not there
    obs, done, info = env.step("move apple 1 to fridge 1")
    assert (obs, done, info["won"]) == ("You move the apple 1 to the fridge 1.", True, True)
    with pytest.raises(ValueError, match="grammar"):
        HouseholdEnv(kitchen(), grammar="0.4")


def test_heat_task_win_and_episode_over():
    env = HouseholdEnv(kitchen())
    cmds = ["go to countertop 1", "take apple 1 from countertop 1", "go to fridge 1", "open fridge 1",
            "put apple 1 in/on fridge 1"]  # fmt: skip
    for c in cmds:
        _, done, info = env.step(c)
    assert not done and not info["won"]  # the apple is not hot
    cmds = ["take apple 1 from fridge 1", "go to microwave 1", "heat apple 1 with microwave 1", "go to fridge 1"]
    for c in cmds:
        assert not env.step(c)[1]
    obs, done, info = env.step("put apple 1 in/on fridge 1")
    assert done and info == {"won": True, "steps": 10, "valid": True}
    with pytest.raises(EpisodeOver):
        env.step("look")
    first = env.reset()
    assert first.startswith("-= Welcome") and env.steps == 0 and not env.done
    assert env.step("look")[2]["steps"] == 1


def test_clean_simple_and_two_object_wins():
    env = HouseholdEnv(kitchen("put a clean mug in countertop"))
    play(env, "go to cabinet 1", "open cabinet 1", "take mug 1 from cabinet 1", "go to countertop 1")
    assert env.step("put mug 1 in/on countertop 1")[1:] == (False, {"won": False, "steps": 5, "valid": True})
    play(env, "take mug 1 from countertop 1", "go to sinkbasin 1", "clean mug 1 with sinkbasin 1", "go to countertop 1")
    assert env.step("put mug 1 in/on countertop 1")[2]["won"]

    env = HouseholdEnv(kitchen("put some apple on sinkbasin"))
    play(env, "go to countertop 1", "take apple 1 from countertop 1", "go to sinkbasin 1")
    assert env.step("put apple 1 in/on sinkbasin 1")[2]["won"]

    env = HouseholdEnv(kitchen("find two pen and put them in cabinet"))
    play(env, "go to drawer 1", "take pen 1 from drawer 1", "go to cabinet 1", "open cabinet 1")
    assert not env.step("put pen 1 in/on cabinet 1")[2]["won"]
    play(env, "go to sidetable 1", "take pen 2 from sidetable 1", "go to cabinet 2", "open cabinet 2")
    assert not env.step("put pen 2 in/on cabinet 2")[2]["won"]  # two pens, but not in the same receptacle
    play(env, "go to desk 1", "take pen 3 from desk 1", "go to cabinet 2")
    assert env.step("put pen 3 in/on cabinet 2")[2]["won"]

    # the goal is checked after every (valid) step: a goal that already holds wins at once
    env = HouseholdEnv(kitchen("find two mug and put them in cabinet"))  # both mugs start in cabinet 1
    assert env.step("think: hm")[2]["won"] is False  # thoughts change nothing
    assert env.step("look")[1:] == (True, {"won": True, "steps": 2, "valid": True})


def test_look_at_win_condition():
    # take, then use the lamp where it stands
    env = HouseholdEnv(kitchen("look at pen under the desklamp"))
    play(env, "go to desk 1", "take pen 3 from desk 1")
    assert env.step("use desklamp 1")[2]["won"]
    # use first, then come back holding a pen
    env = HouseholdEnv(kitchen("examine the pen with the desklamp"))
    assert not env.step("go to desk 1")[1]
    assert not env.step("use desklamp 1")[1]  # lamp on, but no pen in hand
    play(env, "go to drawer 1", "take pen 1 from drawer 1")
    assert not env.won  # holding a pen, but not at the lamp
    assert env.step("go to desk 1")[2]["won"]
    # a lamp of the other type does not count
    env = HouseholdEnv(kitchen("look at pen under the desklamp"))
    play(env, "go to sidetable 1", "take pen 2 from sidetable 1")
    assert not env.step("use floorlamp 1")[2]["won"]
    # holding another object type does not count
    env = HouseholdEnv(kitchen("look at apple under the desklamp"))
    play(env, "go to desk 1", "take pen 3 from desk 1")
    assert not env.step("use desklamp 1")[2]["won"]


def test_step_limit_counts_every_step():
    env = HouseholdEnv(kitchen(), max_steps=3)
    assert env.step("think: plan")[1:] == (False, {"won": False, "steps": 1, "valid": True})
    assert env.step("dance")[1:] == (False, {"won": False, "steps": 2, "valid": False})
    obs, done, info = env.step("go to fridge 1")
    assert (obs, done, info) == ("The fridge 1 is closed.", True, {"won": False, "steps": 3, "valid": True})
    with pytest.raises(EpisodeOver, match="reset"):
        env.step("open fridge 1")
    with pytest.raises(ValueError, match="max_steps"):
        HouseholdEnv(kitchen(), max_steps=0)


def _candidates(env: HouseholdEnv) -> list[str]:
    recs = [r.name for r in env.scene.receptacles]
    objs = [o.name for o in env.scene.objects]
    out = ["look", "inventory", "think: x"]
    out += [f"{v} {r}" for v in ("go to", "open", "close", "examine") for r in recs]
    out += [f"{v} {o}" for v in ("use", "examine") for o in objs]
    for o, r in itertools.product(objs, recs):
        out += [f"take {o} from {r}", f"put {o} in/on {r}", f"move {o} to {r}"]
        out += [f"{v} {o} with {r}" for v in ("heat", "cool", "clean")]
    return out


@pytest.mark.parametrize("grammar", ["2.1.1", "2.1.2"])
def test_admissible_commands_are_exactly_the_valid_ones(grammar):
    env = HouseholdEnv(kitchen(), grammar=grammar)
    put = "put apple 1 in/on fridge 1" if grammar == "2.1.1" else "move apple 1 to fridge 1"
    path = ["go to countertop 1", "take apple 1 from countertop 1", "go to microwave 1", "go to fridge 1",
            "open fridge 1", "go to desk 1", "go to sinkbasin 1", "go to fridge 1", put]  # fmt: skip
    for action in [None, *path]:
        if action is not None:
            env.step(action)
        if env.done:
            break
        admissible = set(env.admissible_commands())
        valid = set()
        for cmd in _candidates(env):
            trial = copy.deepcopy(env)
            if trial.step(cmd)[2]["valid"] and not cmd.startswith("think:"):
                valid.add(cmd)
        assert admissible == valid, action


def test_alfworld_style_trajectory_replays():
    """A hand-written transcript in ALFWorld's 2.1.1 text (ReAct-paper style) replays exactly."""
    scene = Scene.from_dict(
        {
            "task": {"type": "pick_clean_then_place_in_recep", "goal": "put a clean lettuce in diningtable"},
            "receptacles": [{"name": n} for n in (
                "cabinet 1", "cabinet 2", "cabinet 3", "countertop 1", "diningtable 1", "drawer 1", "fridge 1",
                "garbagecan 1", "microwave 1", "sinkbasin 1", "stoveburner 1", "stoveburner 2")],
            "objects": [
                {"name": "cup 3", "in": "fridge 1"}, {"name": "egg 2", "in": "fridge 1"},
                {"name": "potato 3", "in": "fridge 1"}, {"name": "potato 2", "in": "fridge 1"},
                {"name": "apple 1", "in": "diningtable 1"}, {"name": "bread 1", "in": "diningtable 1"},
                {"name": "lettuce 1", "in": "diningtable 1"}, {"name": "tomato 1", "in": "diningtable 1"},
                {"name": "apple 2", "in": "sinkbasin 1"}, {"name": "spoon 1", "in": "sinkbasin 1"},
            ],
        }
    )  # fmt: skip
    text = """\
You are in the middle of a room. Looking quickly around you, you see a cabinet 3, a cabinet 2, a cabinet 1, a countertop 1, a diningtable 1, a drawer 1, a fridge 1, a garbagecan 1, a microwave 1, a sinkbasin 1, a stoveburner 2, and a stoveburner 1.
Your task is to: put a clean lettuce in diningtable.
> think: To solve the task, I need to find and take a lettuce, then clean it with sinkbasin, then put it in diningtable.
OK.
> go to fridge 1
The fridge 1 is closed.
> open fridge 1
You open the fridge 1. The fridge 1 is open. In it, you see a cup 3, a egg 2, a potato 3, and a potato 2.
> go to diningtable 1
On the diningtable 1, you see a apple 1, a bread 1, a lettuce 1, and a tomato 1.
> take lettuce 1 from diningtable 1
You pick up the lettuce 1 from the diningtable 1.
> go to sinkbasin 1
On the sinkbasin 1, you see a apple 2, and a spoon 1.
> clean lettuce 1 with sinkbasin 1
You clean the lettuce 1 using the sinkbasin 1.
> go to diningtable 1
On the diningtable 1, you see a apple 1, a bread 1, and a tomato 1.
> put lettuce 1 in/on diningtable 1
You put the lettuce 1 in/on the diningtable 1.
"""
    [(line, traj)] = parse_react_text(text)
    assert line == 1
    env = HouseholdEnv(scene)
    assert env.reset().split("\n\n", 1)[1] == traj.observation
    for i, (action, expected) in enumerate(traj.steps):
        obs, done, info = env.step(action)
        assert obs == expected, (i, action)
        assert done == (i == len(traj.steps) - 1)
    assert info["won"]

    # the same episode in ALFWorld >= 0.4 text (grammar 2.1.2)
    env = HouseholdEnv(scene, grammar="2.1.2")
    assert env.step("go to diningtable 1")[0] == (
        "You arrive at diningtable 1. On the diningtable 1, you see a apple 1, a bread 1, a lettuce 1, and a tomato 1."
    )
    play(env, "take lettuce 1 from diningtable 1", "go to sinkbasin 1", "clean lettuce 1 with sinkbasin 1")
    assert env.step("go to diningtable 1")[0].startswith("You arrive at diningtable 1. On the diningtable 1")
    assert env.step("move lettuce 1 to diningtable 1") == (
        "You move the lettuce 1 to the diningtable 1.", True, {"won": True, "steps": 6, "valid": True}
    )


def test_state_key_tracks_changes():
    env = HouseholdEnv(kitchen())
    k0 = env.state_key()
    env.step("think: hm")
    env.step("open fridge 1")  # nothing happens
    assert env.state_key() == k0
    env.step("go to fridge 1")
    assert env.state_key() != k0


def test_bench_function_times_only_the_replayed_steps(monkeypatch):
    """The bench helper's bookkeeping, on fake clocks (real timing is asserted only in bench/, not here)."""
    calls = {"step": 0, "clock": 0}
    real_step = HouseholdEnv.step

    def counting_step(self, action):
        calls["step"] += 1
        return real_step(self, action)

    def tick_per_read():
        calls["clock"] += 1
        return calls["clock"]

    monkeypatch.setattr(HouseholdEnv, "step", counting_step)
    # A clock that reads "env.step calls so far": the rate is 1.0 exactly iff the timed windows hold exactly
    # the steps that are counted, so the expert's planning and the random walks' preparation (which call
    # env.step too) stay outside them.
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=lambda: calls["step"]))
    assert sim_steps_per_s(n_episodes=2, seed=1) == 1.0
    # A clock that moves 1 per read: each replay's window lasts 1, so the rate is replayed steps / 4 replays.
    # Seeded valid_seen scenes 0-1 of seed 1: the expert solves them in 15 and 18 steps; neither random walk
    # wins, so each runs to the 50-step limit (docs/sources.md#household-episodes). (15 + 18 + 50 + 50) / 4.
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(perf_counter=tick_per_read))
    assert sim_steps_per_s(n_episodes=2, seed=1) == 133 / 4
