"""ALFWorld-compatible offline household simulator (its spec: ``docs/sources.md#household-sim``).

Public API::

    from eval.household import Scene, HouseholdEnv, generate_scenes
    env = HouseholdEnv(scene, grammar="2.1.1", max_steps=50)
    first = env.reset()
    obs, done, info = env.step("go to fridge 1")   # info: won, steps, valid
"""

from .env import GRAMMARS, NOTHING, EpisodeOver, HouseholdEnv
from .generator import SPLITS, generate_scene, generate_scenes, layout_signature, task_pairings
from .scene import Receptacle, Scene, SceneError, SceneObject

__all__ = [
    "GRAMMARS",
    "NOTHING",
    "SPLITS",
    "EpisodeOver",
    "HouseholdEnv",
    "Receptacle",
    "Scene",
    "SceneError",
    "SceneObject",
    "generate_scene",
    "generate_scenes",
    "layout_signature",
    "task_pairings",
]
