"""What real ALFWorld games say that the generated ones did not: other goal phrasings, shared locations."""

from __future__ import annotations

import pytest

from data_prep.react import parse_goal
from eval.expert import solve
from eval.household import HouseholdEnv, Scene
from eval.household.scene import SceneError

NOTHING = "Nothing happens."


@pytest.mark.parametrize(
    ("goal", "task_type", "obj", "recep"),
    [
        ("find some apple and put it in sidetable", "pick_and_place_simple", "apple", "sidetable"),
        ("find a mug and put it on shelf", "pick_and_place_simple", "mug", "shelf"),
        ("find an egg and put it in/on fridge", "pick_and_place_simple", "egg", "fridge"),
        ("Your task is to: find some apple and put it in sidetable.", "pick_and_place_simple", "apple", "sidetable"),
        ("put an apple in fridge", "pick_and_place_simple", "apple", "fridge"),
        ("clean a mug and put it in coffeemachine", "pick_clean_then_place_in_recep", "mug", "coffeemachine"),
        ("put an hot egg in diningtable", "pick_heat_then_place_in_recep", "egg", "diningtable"),
        ("find two pen and put them in dresser", "pick_two_obj_and_place", "pen", "dresser"),
    ],
)
def test_real_goal_phrasings_parse(goal, task_type, obj, recep):
    g = parse_goal(goal)
    assert g is not None and (g.task_type, g.obj, g.recep) == (task_type, obj, recep)


@pytest.mark.parametrize("text", ["find some apple", "go to fridge 1", "make me a sandwich", "find some apple and eat it"])
def test_text_that_is_not_a_goal_is_refused_clearly(text):
    assert parse_goal(text) is None
    with pytest.raises(SceneError, match="task.goal.*not an ALFWorld goal sentence"):
        Scene.from_dict({"task": {"goal": text}, "receptacles": [{"name": "fridge 1"}]})


def real_put_0(**extra) -> Scene:
    """The ReAct paper's put_0 room, reduced: a real game goal with the 'find some' phrasing."""
    return Scene.from_dict(
        {
            "task": {"goal": "find some apple and put it in sidetable"},
            "receptacles": [
                {"name": "cabinet 1"},
                {"name": "cabinet 2"},
                {"name": "countertop 1"},
                {"name": "fridge 1"},
                {"name": "garbagecan 1"},
                {"name": "sidetable 1"},
            ],
            "objects": [{"name": "apple 1", "in": "cabinet 2"}, {"name": "bread 1", "in": "countertop 1"}],
            **extra,
        }
    )


def test_expert_solves_a_find_some_goal():
    result = solve(real_put_0())
    assert result.won
    assert result.actions[-1] == "put apple 1 in/on sidetable 1"


def test_shared_location_look_go_and_reach():
    scene = real_put_0(location_groups=[["cabinet 1", "cabinet 2"]])
    env = HouseholdEnv(scene)
    assert env.step("go to cabinet 1")[0] == "The cabinet 1 is closed."
    assert env.step("look")[0] == "You are facing the cabinet 2, and cabinet 1. Next to it, you see nothing."
    assert env.step("go to cabinet 2")[0] == NOTHING  # already at that location
    assert "go to cabinet 2" not in env.admissible_commands()
    assert "open cabinet 2" in env.admissible_commands()
    assert env.step("open cabinet 2")[0] == "You open the cabinet 2. The cabinet 2 is open. In it, you see a apple 1."
    assert env.step("take apple 1 from cabinet 2")[0] == "You pick up the apple 1 from the cabinet 2."
    assert env.step("go to sidetable 1")[0] == "On the sidetable 1, you see nothing."
    assert env.step("look")[0] == "You are facing the sidetable 1. Next to it, you see nothing."
    _, done, info = env.step("put apple 1 in/on sidetable 1")
    assert done and info["won"]


def test_shared_location_in_grammar_212():
    env = HouseholdEnv(real_put_0(location_groups=[["cabinet 1", "cabinet 2"]]), grammar="2.1.2")
    assert env.step("go to cabinet 2")[0] == "You arrive at cabinet 2. The cabinet 2 is closed."
    assert env.step("go to cabinet 1")[0] == NOTHING
    assert env.step("open cabinet 2")[0].startswith("You open the cabinet 2.")
    env.step("take apple 1 from cabinet 2")
    env.step("go to cabinet 1")  # Nothing happens: still here
    assert env.step("move apple 1 to cabinet 1")[0] == NOTHING  # cabinet 1 is closed
    env.step("open cabinet 1")
    assert env.step("move apple 1 to cabinet 1")[0] == "You move the apple 1 to the cabinet 1."


def test_expert_wins_when_receptacles_share_a_location():
    scene = real_put_0(location_groups=[["cabinet 1", "cabinet 2"]])
    result = solve(scene)
    assert result.won
    i = result.actions.index("go to cabinet 2")
    assert result.observations[i] == NOTHING
    assert result.actions[i + 1] == "examine cabinet 2"  # it learns the spot is shared and acts from there


def test_scene_json_round_trips_location_groups_and_checks_them():
    scene = real_put_0(location_groups=[["cabinet 1", "cabinet 2"]])
    assert Scene.from_dict(scene.to_dict()) == scene
    assert "location_groups" not in real_put_0().to_dict()  # scenes without groups keep their JSON
    for groups, field in (
        ([["cabinet 1"]], "at least 2"),
        ([["cabinet 1", "cabinet 9"]], "not a receptacle"),
        ([["cabinet 1", "cabinet 2"], ["cabinet 2", "fridge 1"]], "already in another group"),
        ("cabinet 1", "list of lists"),
    ):
        with pytest.raises(SceneError, match=field):
            real_put_0(location_groups=groups)


def test_generator_can_make_shared_location_rooms_the_expert_wins(tmp_path):
    from eval.gen_react_data import generate
    from eval.household import generate_scenes
    from eval.household.generator import generate_scene

    assert generate_scene("train", 3, shared_locations=0.0) == generate_scenes("train", 4)[3]  # default unchanged
    trajs = generate("train", 12, tmp_path, shared_locations=1.0, progress=False)  # replayed: every one wins
    assert all(t.won for t in trajs)
    assert sum(bool(t.scene.get("location_groups")) for t in trajs) >= 6
    assert any(obs == NOTHING and a.startswith("go to ") for t in trajs for a, obs in t.steps)
