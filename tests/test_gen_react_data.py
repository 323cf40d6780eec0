"""ReAct data generation: the CLI output parses back with data_prep.react, and the bundled set is sound."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from data_prep.react import TASK_TYPES, Trajectory, parse_react_text, strip_welcome
from eval.gen_react_data import main, make_trajectory, replay
from eval.household import Scene, generate_scene

DATA = Path(__file__).resolve().parents[1] / "data" / "react"


def _load(path: Path) -> list[Trajectory]:
    return [Trajectory.from_dict(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("grammar", ["2.1.1", "2.1.2"])
def test_cli_writes_both_forms_that_parse_back(tmp_path, capsys, grammar):
    assert main(["--split", "valid_unseen", "--n", "12", "--out", str(tmp_path), "--seed", "5", "--grammar", grammar]) == 0
    assert "wrote 12 trajectories" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trajectories.jsonl", "trajectories.txt"]
    trajs = _load(tmp_path / "trajectories.jsonl")
    assert Counter(t.task_type for t in trajs) == dict.fromkeys(TASK_TYPES, 2)
    texts = parse_react_text((tmp_path / "trajectories.txt").read_text(encoding="utf-8"))
    assert len(texts) == 12
    for t, (_, tt) in zip(trajs, texts, strict=True):
        assert t.won and t.grammar == grammar and t.scene is not None
        assert tt.observation == t.observation == strip_welcome(t.observation)
        assert tt.steps == t.steps
        assert tt.goal == t.goal and tt.task_type == t.task_type
        msgs = t.messages()
        assert msgs[0]["role"] == "system" and msgs[1]["role"] == "user"
        assert msgs[-1]["role"] == "assistant" and msgs[-1]["content"] == t.steps[-1][0]
        assert tt.messages()[1:] == msgs[1:]
        assert msgs[2]["content"].startswith("think: To solve the task")
        assert "is more likely to appear in" in msgs[4]["content"]
        replay(t, Scene.from_dict(t.scene))
    if grammar == "2.1.2":
        assert any(a.startswith("move ") for t in trajs for a, _ in t.steps)
        assert any(o.startswith("You arrive at ") for t in trajs for _, o in t.steps)


def test_replay_catches_a_tampered_trajectory():
    scene = generate_scene("train", 2)
    traj = make_trajectory(scene, "x")
    action, obs = traj.steps[3]
    traj.steps[3] = (action, obs + " (edited)")
    with pytest.raises(RuntimeError, match="step 3"):
        replay(traj, scene)


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    for argv in (["--n", "0", "--out", str(tmp_path)], ["--n", "3", "--out", str(tmp_path), "--seed", "-4"],
                 ["--split", "test", "--n", "3", "--out", str(tmp_path)]):  # fmt: skip
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("python -m eval.gen_react_data: error:")
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(SystemExit):
        main(["--n", "3", "--out", str(afile)])
    assert "is not a folder" in capsys.readouterr().err


def test_bundled_set_is_balanced_verified_and_reproducible():
    train, test = _load(DATA / "train.jsonl"), _load(DATA / "test.jsonl")
    assert Counter(t.task_type for t in train) == dict.fromkeys(TASK_TYPES, 100)
    assert Counter(t.task_type for t in test) == dict.fromkeys(TASK_TYPES, 10)
    assert len(parse_react_text((DATA / "train.txt").read_text(encoding="utf-8"))) == 600
    assert len(parse_react_text((DATA / "test.txt").read_text(encoding="utf-8"))) == 60
    # same rooms may recur (valid_seen shares train's layouts), the same scene may not
    assert not {json.dumps(t.scene, sort_keys=True) for t in train} & {json.dumps(t.scene, sort_keys=True) for t in test}
    for t in train + test:
        assert t.won and t.messages()[-1]["role"] == "assistant"
        replay(t, Scene.from_dict(t.scene))
    # the generator still makes exactly these files (command in data/react/README.md)
    for i in (0, 1, 299, 599):
        assert make_trajectory(generate_scene("train", i), f"train-0-{i:05d}").to_dict() == train[i].to_dict()
    assert make_trajectory(generate_scene("valid_seen", 59), "valid_seen-0-00059").to_dict() == test[59].to_dict()
    assert "python -m eval.gen_react_data" in (DATA / "README.md").read_text(encoding="utf-8")
