"""notebooks/colab_t4.ipynb is a valid notebook, and every command it runs exists with those flags."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from test_readme_commands import QUICK_START, TRAIN_SCRIPTS, _help, _override_ok, _script

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "colab_t4.ipynb"
nbformat = pytest.importorskip("nbformat")


def _shell_lines() -> list[str]:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    return [line.strip()[1:] for cell in nb.cells if cell.cell_type == "code"
            for line in cell.source.splitlines() if line.strip().startswith("!")]


def _scenarios() -> dict[str, str]:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    source = next(c.source for c in nb.cells if "SCRIPT = {" in c.source)
    return dict(re.findall(r'"(\w+)": "(train/\w+\.py)"', source))


def test_notebook_is_valid_and_runs_the_journey():
    lines = _shell_lines()
    assert any("quick_start.sh setup --colab" in ln for ln in lines)
    assert any("quick_start.sh doctor" in ln for ln in lines)
    assert any("deploy.export" in ln and "q4_k_m" in ln for ln in lines)
    assert set(_scenarios()) == {"react", "roleplay", "qa"}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["react", "roleplay", "qa"])
def test_every_notebook_command_parses(scenario):
    script = _scenarios()[scenario]
    for line in _shell_lines():
        line = line.replace("{SCRIPT}", script).replace("{RUN}", f"runs/colab-{scenario}")
        line = line.split("||")[0].split("|")[-1].split("2>/dev/null")[0].strip()  # the command after a pipe
        tokens = shlex.split(line)
        if tokens[0] == "git":
            continue
        if tokens[0] == "./quick_start.sh":
            assert tokens[1] in QUICK_START, line
            continue
        assert tokens[0] == "python", line
        runner, rest = _script(tokens)
        if tokens[1] != "-m":
            assert (ROOT / tokens[1]).is_file(), line
        help_text = _help(*runner)
        for flag in (t for t in rest if t.startswith("--")):
            if tokens[1] in TRAIN_SCRIPTS and flag not in help_text:
                assert _override_ok(flag), f"{line}: {flag}"
            else:
                assert re.search(rf"{re.escape(flag)}\b", help_text), f"{line}: {flag} is not in --help"
