"""Every command the READMEs show runs as written: its script exists, and every flag it uses parses.

Commands come from the fenced shell blocks and from the backticked ``python ...`` / ``./quick_start.sh ...``
snippets in README.md and train/README.md. Each script is asked for ``--help`` (one process per script),
and each ``--flag`` of the command must be in that help, except for the train scripts, whose flags are
config overrides: those must resolve to a real field (our sections, an alias, or an SFTConfig field).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "train" / "README.md"]
TRAIN_SCRIPTS = {"train/react_7b.py", "train/roleplay_0_5b.py", "train/domain_qa.py"}
QUICK_START = {"setup", "demo", "test", "doctor", "check", "react", "roleplay", "qa", "eval", "export", "chat", "help"}


def _fenced_lines(text: str) -> list[str]:
    lines, inside, shell = [], False, False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
            shell = inside and line.strip() in ("```bash", "```sh", "```")  # not ```json, ```text, ...
            continue
        if shell:
            lines.append(line)
    joined = "\n".join(lines).replace("\\\n", " ")
    return [ln.split(" #")[0].strip() for ln in joined.splitlines()]


def commands() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        snippets = _fenced_lines(text) + re.findall(r"`((?:python|\./quick_start\.sh) [^`]+)`", text)
        for cmd in snippets:
            cmd = cmd.replace("\\|", "|").strip()
            if cmd.startswith(("python ", "./quick_start.sh")) and (doc.name, cmd) not in found:
                found.append((doc.name, cmd))
    return found


def _script(tokens: list[str]) -> tuple[list[str], list[str]]:
    """(the command that runs the script, the rest of the tokens)."""
    if tokens[1] == "-m":
        return [sys.executable, "-m", tokens[2]], tokens[3:]
    return [sys.executable, tokens[1]], tokens[2:]


@functools.cache
def _help(*cmd: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([*cmd, "--help"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, f"{' '.join(cmd)} --help failed: {r.stderr[-1500:]}"
    return r.stdout


def _override_ok(flag: str) -> bool:
    from trl import SFTConfig

    from train.config import SECTIONS, TRAINER_FLAGS, flag_path

    path = flag_path(flag.lstrip("-").split("=")[0])
    section, _, field = path.partition(".")
    if section == "sft":
        return field in {f.name for f in dataclasses.fields(SFTConfig)} or field in TRAINER_FLAGS
    return section in SECTIONS and field in {f.name for f in dataclasses.fields(SECTIONS[section])}


COMMANDS = commands()


def test_the_readmes_show_commands():
    assert len(COMMANDS) >= 20


@pytest.mark.slow
@pytest.mark.parametrize("doc, cmd", COMMANDS, ids=[c[:60] for _, c in COMMANDS])
def test_readme_command_parses(doc, cmd):
    tokens = shlex.split(cmd.replace("...", "X").replace("|", " "))
    if tokens[0] == "./quick_start.sh":
        assert len(tokens) == 1 or tokens[1] in QUICK_START or tokens[1].startswith("-"), f"{doc}: {cmd}"
        return
    runner, rest = _script(tokens)
    if tokens[1] != "-m":
        assert (ROOT / tokens[1]).is_file(), f"{doc}: {tokens[1]} does not exist"
    help_text = _help(*runner)
    flags = [t for t in rest if t.startswith("--")]
    for flag in flags:
        name = flag.split("=")[0]
        if tokens[1] in TRAIN_SCRIPTS and name not in help_text:
            assert _override_ok(name), f"{doc}: {cmd}: {name} is no config field"
        else:
            assert re.search(rf"{re.escape(name)}\b", help_text), f"{doc}: {cmd}: {name} is not in --help"
