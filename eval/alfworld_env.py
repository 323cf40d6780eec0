"""A thin adapter that plays real ALFWorld games through the same runner (``--env alfworld``).

Needs the ``alfworld`` package and its game data (``$ALFWORLD_DATA``, filled by ``alfworld-download``).
Each episode gets its own single-game TextWorld environment, so episodes can run side by side in a batch.
Observations get the same clean-up the ReAct harness applies (the ``You arrive at loc N.`` prefix is dropped).
This module is not exercised by the test suite beyond the "not installed" message: no game data here.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INSTALL_HINT = (
    "--env alfworld needs the alfworld package and its game data: pip install 'alfworld[full]', then "
    "export ALFWORLD_DATA=~/alfworld_data and run alfworld-download"
)
SPLIT_DIRS = {"valid_seen": "valid_seen", "valid_unseen": "valid_unseen", "train": "train"}
_ARRIVE = re.compile(r"^You arrive at loc \d+\. ")


class AlfworldUnavailable(RuntimeError):
    """The alfworld package or its data are missing; the message says how to install them."""


@dataclass(frozen=True)
class AlfworldGame:
    id: str
    game_file: Path


def data_root() -> Path:
    """``$ALFWORLD_DATA`` if alfworld is importable and the data are there; else AlfworldUnavailable."""
    if importlib.util.find_spec("alfworld") is None or importlib.util.find_spec("textworld") is None:
        raise AlfworldUnavailable(f"the alfworld package is not installed. {INSTALL_HINT}")
    root = os.environ.get("ALFWORLD_DATA")
    if not root or not (Path(root).expanduser() / "json_2.1.1").is_dir():
        raise AlfworldUnavailable(f"no game data under $ALFWORLD_DATA ({root or 'unset'}). {INSTALL_HINT}")
    return Path(root).expanduser()


def list_games(split: str, n: int | None = None) -> list[AlfworldGame]:
    """The split's games in a stable order (sorted paths), the first ``n`` of them."""
    root = data_root() / "json_2.1.1" / SPLIT_DIRS[split]
    files = sorted(root.glob("*/*/game.tw-pddl"))
    if not files:
        raise AlfworldUnavailable(f"{root}: no game.tw-pddl files. {INSTALL_HINT}")
    games = [AlfworldGame(id=f"{f.parent.parent.name}/{f.parent.name}", game_file=f) for f in files]
    return games[:n] if n is not None else games


def clean_observation(text: str) -> str:
    return _ARRIVE.sub("", text.strip())


class AlfworldEnv:
    """One real ALFWorld game behind the runner's env interface (reset / step / admissible_commands)."""

    def __init__(self, game: AlfworldGame, grammar: str = "2.1.1", max_steps: int = 50) -> None:
        import textworld
        import textworld.gym
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos

        infos = textworld.EnvInfos(won=True, admissible_commands=True, extras=["gamefile"])
        env_id = textworld.gym.register_games(
            [str(game.game_file)],
            infos,
            batch_size=1,
            asynchronous=False,
            max_episode_steps=max_steps,
            wrappers=[AlfredDemangler, AlfredInfos],
        )
        self._env: Any = textworld.gym.make(env_id)
        self._admissible: list[str] = []
        self.steps = 0

    def reset(self) -> str:
        obs, infos = self._env.reset()
        self.steps = 0
        self._admissible = list(infos["admissible_commands"][0])
        return obs[0]

    def step(self, command: str) -> tuple[str, bool, dict[str, Any]]:
        obs, _scores, dones, infos = self._env.step([command])
        self.steps += 1
        self._admissible = list(infos["admissible_commands"][0])
        text = clean_observation(obs[0])
        won = bool(infos["won"][0])
        return text, bool(dones[0]) or won, {"won": won, "steps": self.steps, "valid": text != "Nothing happens."}

    def admissible_commands(self) -> list[str]:
        return list(self._admissible)


def make_alfworld_env(game: AlfworldGame, grammar: str, max_steps: int) -> AlfworldEnv:
    return AlfworldEnv(game, grammar=grammar, max_steps=max_steps)
