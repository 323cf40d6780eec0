"""eval.compare: real react_eval runs side by side, with Wilson intervals."""

from __future__ import annotations

import json

import pytest

from eval import compare, react_eval
from eval.metrics import wilson_interval


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(0, 134)
    assert lo == 0.0 and hi == pytest.approx(0.0279, abs=1e-4)
    lo, hi = wilson_interval(67, 134)
    assert (lo, hi) == (pytest.approx(0.4163, abs=1e-3), pytest.approx(0.5837, abs=1e-3))
    assert wilson_interval(134, 134)[1] == 1.0 and wilson_interval(0, 0) == (0.0, 1.0)


def test_compare_renders_runs_and_png(tmp_path):
    for pol in ("expert", "random"):
        rc = react_eval.main(["--policy", pol, "--split", "valid_unseen", "--episodes", "12", "--out", str(tmp_path / pol)])
        assert rc == 0
    expert = json.loads((tmp_path / "expert" / "results.json").read_text())
    assert expert["success_ci95"][1] == 1.0 and expert["success_ci95"][0] > 0.7
    out = tmp_path / "cmp"
    rc = compare.main([f"expert={tmp_path / 'expert/results.json'}", str(tmp_path / "random/results.json"), "--out", str(out)])
    assert rc == 0
    table = (out / "table.md").read_text()
    assert "| expert | valid_unseen (12) | 100.0 |" in table
    assert "| random | valid_unseen (12) |" in table
    assert "ReAct, best of 6 (PaLM-540B prompting) (ReAct paper, Table 3) | 92 | 58 | 96 | 86 | 78 | 41 | 71 |" in table
    assert (out / "success_by_task.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_names_a_bad_file(tmp_path, capsys):
    bad = tmp_path / "results.json"
    bad.write_text('{"policy": "x"}')
    assert compare.main([str(bad), "--out", str(tmp_path / "o")]) == 1
    assert "field 'split' missing" in capsys.readouterr().err
