"""The episode runner's end conditions, action parsing, metrics and report files, on the real simulator."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from eval.expert import solve
from eval.household import HouseholdEnv, generate_scenes
from eval.metrics import compute_metrics
from eval.policies.base import EpisodeState, Reply
from eval.policies.baseline import RandomPolicy
from eval.policies.expert import ExpertPolicy
from eval.report import write_react_outputs
from eval.runner import EpisodeResult, fuzzy_match, is_loop, parse_action, run_episodes


@dataclass
class ScriptedPolicy:
    """A test double for the *policy*: replays fixed replies per episode index (then repeats the last)."""

    scripts: dict[int, list[str]]
    name: str = "scripted"

    def act(self, states: list[EpisodeState]) -> list[Reply]:
        out = []
        for s in states:
            script = self.scripts[s.index]
            out.append(Reply(text=script[min(len(s.steps), len(script) - 1)], tokens_encoded=10))
        return out


@pytest.fixture(scope="module")
def scenes():
    return generate_scenes("valid_seen", n=6)


def test_expert_wins_every_episode_in_scene_order(scenes):
    results = run_episodes(ExpertPolicy(), scenes, batch_size=4, progress=False)
    assert [r.index for r in results] == list(range(6))
    assert all(r.won and r.end_reason == "won" for r in results)
    for r, scene in zip(results, scenes, strict=True):
        assert r.task_type == scene.task_type
        assert r.actions == solve(scene).actions
        assert r.steps == len(r.actions) == len(r.observations)
        assert r.n_invalid == 0 and r.n_format_errors == 0


def test_random_is_seeded_and_independent_of_batching(scenes):
    a = run_episodes(RandomPolicy(seed=3), scenes, max_steps=7, batch_size=1, progress=False)
    b = run_episodes(RandomPolicy(seed=3), scenes, max_steps=7, batch_size=6, progress=False)
    c = run_episodes(RandomPolicy(seed=4), scenes, max_steps=7, batch_size=6, progress=False)
    assert [r.actions for r in a] == [r.actions for r in b]
    assert [r.actions for r in a] != [r.actions for r in c]
    for r in a:
        assert r.end_reason in ("won", "loop", "step_limit")
        if r.end_reason == "step_limit":
            assert r.steps == 7


def test_step_limit_ends_at_max_steps(scenes):
    # Alternating between two receptacles never loops and never wins.
    rooms = HouseholdEnv(scenes[0]).admissible_commands()
    gos = [c for c in rooms if c.startswith("go to ")][:2]
    policy = ScriptedPolicy({0: [gos[0], gos[1]] * 10})
    (r,) = run_episodes(policy, scenes[:1], max_steps=9, progress=False)
    assert (r.won, r.end_reason, r.steps) == (False, "step_limit", 9)
    assert r.tokens_encoded == 90


def test_loop_same_action_same_observation_three_times(scenes):
    policy = ScriptedPolicy({0: ["look"], 1: ["go to nowhere 1"]})
    r0, r1 = run_episodes(policy, scenes[:2], progress=False)
    assert (r0.end_reason, r0.steps, r0.n_invalid) == ("loop", 3, 0)
    assert (r1.end_reason, r1.steps, r1.n_invalid) == ("loop", 3, 3)


def test_repeated_go_to_loops_after_the_state_stops_changing(scenes):
    env = HouseholdEnv(scenes[0])
    go = next(c for c in env.admissible_commands() if c.startswith("go to "))
    (r,) = run_episodes(ScriptedPolicy({0: [go]}), scenes[:1], progress=False)
    # arrival, then "Nothing happens." three times: the loop is the three identical (action, observation)
    assert r.end_reason == "loop" and r.steps == 4
    assert r.observations[1:] == ["Nothing happens."] * 3


def test_format_errors_are_counted_and_play_on(scenes):
    expert = solve(scenes[1]).actions
    script = ["", "  \n\n", *[f"\n  {a}  \nextra line" for a in expert]]
    (r,) = run_episodes(ScriptedPolicy({0: script}), scenes[1:2], progress=False, ids=["x"])
    assert r.episode_id == "x"
    assert r.n_format_errors == 2 and r.actions[:2] == ["", ""]
    assert r.won and r.steps == len(expert) + 2
    assert r.n_invalid == 2  # the empty action gets "Nothing happens."


def test_win_is_scored_before_the_step_limit(scenes):
    actions = solve(scenes[2]).actions
    (r,) = run_episodes(ScriptedPolicy({0: actions}), scenes[2:3], max_steps=len(actions), progress=False)
    assert r.won and r.end_reason == "won" and r.steps == len(actions)


def test_fuzzy_matching_maps_free_text_to_admissible_commands(scenes):
    actions = solve(scenes[3]).actions
    sloppy = [a if a.startswith("think:") else a.replace(" 1", "1").upper() + "." for a in actions]
    (exact,) = run_episodes(ScriptedPolicy({0: sloppy}), scenes[3:4], progress=False)
    (fuzzy,) = run_episodes(ScriptedPolicy({0: sloppy}), scenes[3:4], fuzzy=True, progress=False)
    assert not exact.won
    assert fuzzy.won and fuzzy.actions == actions


def test_parse_and_match_helpers():
    assert parse_action("\n\n  go to fridge 1 \n think: x") == "go to fridge 1"
    assert parse_action(" \n\t\n") == ""
    adm = ["go to fridge 1", "go to cabinet 1", "open cabinet 1", "look"]
    assert fuzzy_match("go to the fridge", adm) == "go to fridge 1"
    assert fuzzy_match("think: hmm", adm) == "think: hmm"
    assert fuzzy_match("look", adm) == "look"
    assert is_loop(["a", "a", "a"], ["o", "o", "o"])
    assert not is_loop(["a", "a", "a"], ["p", "o", "o"])
    assert not is_loop(["b", "a", "a"], ["o", "o", "o"])


def _result(i: int, task: str, won: bool, steps: int, end: str, invalid: int, fmt: int, tokens: int) -> EpisodeResult:
    return EpisodeResult(f"e{i}", i, task, None, "", won, steps, end, invalid, fmt, tokens)


def test_metrics_math():
    results = [
        _result(0, "pick_and_place_simple", True, 10, "won", 1, 0, 100),
        _result(1, "pick_and_place_simple", False, 50, "step_limit", 20, 5, 300),
        _result(2, "look_at_obj_in_light", True, 20, "won", 0, 0, 200),
        _result(3, "look_at_obj_in_light", False, 20, "loop", 4, 5, 400),
    ]
    m = compute_metrics(results, policy="p", split="valid_seen", fuzzy=True, elapsed_s=2.0)
    assert m["success_rate"] == 0.5 and m["episodes"] == 4
    assert m["by_task"] == {
        "pick_and_place_simple": {"success_rate": 0.5, "n": 2},
        "look_at_obj_in_light": {"success_rate": 0.5, "n": 2},
    }
    assert m["avg_steps"] == 25.0 and m["avg_steps_success"] == 15.0
    assert m["invalid_action_rate"] == pytest.approx(25 / 100)
    assert m["format_error_rate"] == pytest.approx(10 / 100)
    assert m["loop_rate"] == 0.25 and m["step_limit_rate"] == 0.25
    assert m["matching"] == "fuzzy" and "difflib" in m["matching_method"]
    assert m["tokens_encoded_per_episode"] == 250.0 and m["episodes_per_s"] == 2.0
    empty = compute_metrics([], policy="p", split="s")
    assert empty["success_rate"] == 0.0 and empty["avg_steps"] is None and empty["matching"] == "exact"


def test_report_files(tmp_path, scenes):
    results = run_episodes(RandomPolicy(), scenes, max_steps=5, progress=False)
    m = compute_metrics(results, policy="random", split="valid_seen", elapsed_s=1.0)
    write_react_outputs(tmp_path, results, m)
    doc = json.loads((tmp_path / "results.json").read_text())
    for key in ("success_rate", "by_task", "avg_steps", "avg_steps_success", "invalid_action_rate",
                "format_error_rate", "loop_rate", "step_limit_rate", "matching", "policy", "split", "episodes"):
        assert key in doc
    rows = [json.loads(x) for x in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert [r["actions"] for r in rows] == [r.actions for r in results]
    report = (tmp_path / "report.md").read_text()
    assert "| **ours: random** | **0.0** |" in report and "| 71.0 |" in report and "67.2" in report
    assert "exact" in report
    assert (tmp_path / "success_by_task.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left behind
