"""Scene JSON: defaults, round trips, files, and errors that name the field."""

from __future__ import annotations

import json

import pytest

from eval.household import HouseholdEnv, Scene, SceneError, generate_scenes

BASE = {
    "task": {"type": "pick_heat_then_place_in_recep", "goal": "put a hot apple in fridge"},
    "receptacles": [
        {"name": "fridge 1", "openable": True, "closed": True},
        {"name": "countertop 1"},
        {"name": "drawer 1", "openable": False},
        {"name": "cabinet 1", "closed": False},
        {"name": "microwave 1"},
    ],
    "objects": [
        {"name": "apple 1", "in": "countertop 1", "states": []},
        {"name": "egg 1", "in": "fridge 1", "states": ["cool"]},
        {"name": "pen 1", "in": "drawer 1"},
    ],
}


def test_defaults_by_type_and_overrides():
    scene = Scene.from_dict(BASE)
    assert [(r.name, r.openable, r.closed) for r in scene.receptacles] == [
        ("fridge 1", True, True),
        ("countertop 1", False, False),
        ("drawer 1", False, False),  # overridden: a drawer that cannot be opened
        ("cabinet 1", True, False),  # openable by type, starts open
        ("microwave 1", True, True),  # closed defaults to true for openable receptacles
    ]
    assert scene.objects[1].states == ("cool",)
    assert scene.objects[2].states == ()
    g = scene.parsed_goal
    assert (g.task_type, g.obj, g.recep) == ("pick_heat_then_place_in_recep", "apple", "fridge")


def test_round_trip_and_files(tmp_path):
    scene = Scene.from_dict(BASE)
    d = scene.to_dict()
    assert set(d) == {"task", "receptacles", "objects"}
    assert d["task"] == BASE["task"]
    assert Scene.from_dict(d) == scene
    assert Scene.from_dict(json.loads(json.dumps(d))).to_dict() == d
    path = tmp_path / "sub" / "scene.json"
    scene.save(path)
    assert json.loads(path.read_text()) == d
    assert Scene.load(path) == scene
    assert [p.name for p in path.parent.iterdir()] == ["scene.json"]  # no temp file left behind
    # a scene file gives the same episode: same first observation, same replies
    a, b = HouseholdEnv(scene), HouseholdEnv(Scene.load(path))
    assert a.reset() == b.reset()
    for cmd in ("go to fridge 1", "open fridge 1", "go to cabinet 1", "go to drawer 1"):
        assert a.step(cmd) == b.step(cmd)


def test_generated_scenes_round_trip():
    for split in ("train", "valid_seen", "valid_unseen"):
        for scene in generate_scenes(split, 12):
            assert Scene.from_dict(json.loads(scene.to_json())) == scene


def test_task_type_may_be_left_out():
    d = json.loads(json.dumps(BASE))
    del d["task"]["type"]
    assert Scene.from_dict(d).task_type == "pick_heat_then_place_in_recep"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        (lambda d: d["task"].update(goal="make me a sandwich"), "task.goal"),
        (lambda d: d["task"].update(type="pick_and_place_simple"), "task.type"),
        (lambda d: d["objects"][0].update({"in": "sofa 1"}), "objects[0].in"),
        (lambda d: d["objects"][1].update(states=["warm"]), "objects[1].states"),
        (lambda d: d["objects"].append({"name": "apple 1", "in": "fridge 1"}), "objects[3].name"),
        (lambda d: d["receptacles"].append({"name": "fridge 1"}), "receptacles[5].name"),
        (lambda d: d["receptacles"].append({"name": "Fridge"}), "receptacles[5].name"),
        (lambda d: d["receptacles"][1].update(closed=True), "receptacles[1]"),
        (lambda d: d["receptacles"][0].update(openable="yes"), "receptacles[0]"),
        (lambda d: d.update(receptacles=[]), "receptacles"),
        (lambda d: d["objects"].append({"name": "cup 1"}), "objects[3]"),
    ],
)
def test_errors_name_the_field(patch, field):
    d = json.loads(json.dumps(BASE))
    patch(d)
    with pytest.raises(SceneError, match=field.replace("[", r"\[").replace("]", r"\]")):
        Scene.from_dict(d)


def test_load_reports_file_and_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"task": {"goal": "put a apple in fridge"},\n "receptacles": [,]}\n')
    with pytest.raises(SceneError, match=r"bad\.json: line 2"):
        Scene.load(bad)
    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps({**BASE, "objects": [{"name": "apple 1", "in": "moon 1"}]}))
    with pytest.raises(SceneError, match=r"worse\.json: field 'objects\[0\]\.in'"):
        Scene.load(worse)
