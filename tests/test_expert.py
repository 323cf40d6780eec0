"""The expert planner: solves every generated task from observations alone, with ReAct thoughts."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pytest

from data_prep.react import Trajectory, react_messages
from eval.expert import ExpertPolicy, expert_next_action, solve
from eval.household import HouseholdEnv, Scene, generate_scenes


@pytest.mark.parametrize(("split", "n"), [("train", 300), ("valid_seen", None), ("valid_unseen", None)])
def test_expert_solves_every_generated_task(split, n):
    scenes = generate_scenes(split, n)
    steps = defaultdict(list)
    for scene in scenes:
        result = solve(scene)
        assert result.won, (split, scene.goal)
        assert len(result.actions) <= 50
        # near-shortest: it never wastes a command on "Nothing happens." and thinks only a few times
        assert "Nothing happens." not in result.observations, scene.goal
        assert sum(a.startswith("think:") for a in result.actions) <= 7
        steps[scene.task_type].append(len(result.actions))
    assert len(steps) == 6


def test_expert_solves_grammar_212():
    for scene in generate_scenes("valid_unseen", 36):
        result = solve(scene, grammar="2.1.2")
        assert result.won, scene.goal
        assert not any(a.startswith("put ") for a in result.actions)
        assert any(a.startswith("move ") for a in result.actions) or scene.task_type == "look_at_obj_in_light"


def _scene(goal: str, objects: list[tuple[str, str]]) -> Scene:
    recs = ["cabinet 1", "cabinet 2", "countertop 1", "countertop 2", "diningtable 1", "fridge 1", "microwave 1",
            "sinkbasin 1", "garbagecan 1", "desk 1", "sidetable 1"]  # fmt: skip
    return Scene.from_dict(
        {
            "task": {"goal": goal},
            "receptacles": [{"name": r} for r in recs],
            "objects": [{"name": o, "in": r} for o, r in objects],
        }
    )


def test_heat_plan_is_shortest_when_the_object_is_in_the_likeliest_place():
    scene = _scene("put a hot apple in fridge", [("apple 1", "fridge 1"), ("egg 1", "countertop 1")])
    result = solve(scene)
    assert result.won
    assert result.actions == [
        "think: To solve the task, I need to find and take an apple, then heat it with microwave, then put it in fridge.",
        "think: First I need to find an apple. An apple is more likely to appear in fridge (1), diningtable (1), "
        "countertop (1-2), garbagecan (1), sinkbasin (1), microwave (1). I can check one by one, starting with fridge 1.",
        "go to fridge 1",
        "open fridge 1",
        "think: Now I find an apple (1). Next, I need to take it.",
        "take apple 1 from fridge 1",
        "think: Now I take an apple (1). Next, I need to go to microwave 1 and heat it.",
        "go to microwave 1",
        "heat apple 1 with microwave 1",
        "think: Now I heat an apple (1). Next, I need to put it in/on fridge 1.",
        "go to fridge 1",
        "put apple 1 in/on fridge 1",  # the fridge is still open: no second "open"
    ]


def test_search_order_follows_the_prior_and_remembers_what_it_saw():
    # two apples: one on countertop 2, one in the garbagecan (later in the prior)
    scene = _scene("find two apple and put them in diningtable", [("apple 2", "garbagecan 1"), ("apple 1", "countertop 2")])
    result = solve(scene)
    assert result.won
    gos = [a for a in result.actions if a.startswith("go to ")]
    assert gos[:4] == ["go to fridge 1", "go to diningtable 1", "go to countertop 1", "go to countertop 2"]
    thoughts = [a for a in result.actions if a.startswith("think:")]
    assert thoughts[0] == (
        "think: To solve the task, I need to find and take the first apple, then put it in diningtable, "
        "then find and take the second apple, then put it in diningtable."
    )
    assert any("Next, I need to find the second apple." in t for t in thoughts)
    # nothing is done twice except going back to the target
    repeated = {a for a, k in Counter(result.actions).items() if k > 1}
    assert repeated == {"go to diningtable 1"}


def test_look_at_and_unknown_object_type():
    scene = _scene("look at pen under the desklamp", [("pen 1", "sidetable 1"), ("desklamp 1", "desk 1")])
    result = solve(scene)
    assert result.won and result.actions[-1] == "use desklamp 1"
    assert result.actions[0] == "think: To solve the task, I need to find and take a pen, then find and use a desklamp."
    # an object type the prior does not know: the expert checks every receptacle
    scene = _scene("put a plunger in cabinet", [("plunger 1", "sidetable 1")])
    result = solve(scene)
    assert result.won
    assert "I can check every receptacle one by one" in result.actions[1]


@dataclass
class _State:
    first_observation: str
    steps: list[tuple[str, str]] = field(default_factory=list)
    grammar: str = "2.1.1"


def test_policy_interface_matches_solve_for_every_state_form():
    scene = generate_scenes("valid_seen", 6)[5]  # a pick_two task
    result = solve(scene)
    policy = ExpertPolicy()
    for k in range(len(result.actions)):
        steps = result.steps[:k]
        want = result.actions[k]
        assert expert_next_action(result.first_observation, steps) == want
        assert policy.act(_State(result.first_observation, steps)) == want
        assert policy.act({"first_observation": result.first_observation,
                           "history": [{"action": a, "observation": o} for a, o in steps]}) == want  # fmt: skip
        assert policy.act(Trajectory(observation=result.first_observation, steps=steps)) == want
        assert policy.act(react_messages(result.first_observation, steps)) == want
    # a policy driving the env by itself wins
    env = HouseholdEnv(scene)
    state = _State(env.reset())
    done = False
    while not done:
        action = policy.act(state)
        obs, done, info = env.step(action)
        state.steps.append((action, obs))
    assert info["won"]


def test_expert_rejects_a_transcript_that_is_not_its_own():
    scene = generate_scenes("valid_seen", 1)[0]
    first = HouseholdEnv(scene).reset()
    with pytest.raises(ValueError, match="step 0"):
        expert_next_action(first, [("go to fridge 1", "The fridge 1 is closed.")])
    with pytest.raises(ValueError, match="task line"):
        expert_next_action("You are in the middle of a room.")


def test_expert_gives_up_cleanly_when_the_room_lacks_what_the_task_needs():
    scene = _scene("put a cool apple in sofa", [("apple 1", "countertop 1")])  # no sofa in this room
    result = solve(scene, max_steps=5)
    assert not result.won
    assert result.actions[0] == "think: There is no sofa here, so I cannot solve the task."
    assert result.actions[1:] == ["look"] * 4
