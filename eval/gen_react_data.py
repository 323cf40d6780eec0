"""Generate ReAct training trajectories: the expert plays generated household scenes.

    python -m eval.gen_react_data --split train --n 600 --out DIR [--seed 0] [--grammar 2.1.1]
        [--name trajectories] [--no-scene]

Writes ``DIR/<name>.jsonl`` (our JSON form, ``data_prep.react.Trajectory.to_dict()``, with the scene
unless ``--no-scene``) and ``DIR/<name>.txt`` (the ReAct paper's plain-text form), both atomically.
Task types cycle, so ``--n`` a multiple of 6 gives balanced types. Every trajectory is replayed in a
fresh simulator and must reproduce the same observations and win, or the command fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from data_prep.react import Trajectory, format_react_text, strip_welcome
from eval.expert import solve
from eval.household import GRAMMARS, SPLITS, HouseholdEnv, Scene, generate_scene
from eval.household.generator import split_layouts
from eval.household.vocab import ROOM_KINDS
from fileio.atomic import AtomicFile


def make_trajectory(
    scene: Scene, traj_id: str, grammar: str = "2.1.1", with_scene: bool = True
) -> Trajectory:
    """The expert's trajectory on ``scene`` (raises ``RuntimeError`` if it does not win)."""
    result = solve(scene, grammar=grammar)
    if not result.won:
        raise RuntimeError(f"{traj_id}: the expert did not solve the scene ({scene.goal!r})")
    return Trajectory(
        observation=strip_welcome(result.first_observation),
        steps=result.steps,
        id=traj_id,
        task_type=scene.task_type,
        goal=scene.goal,
        won=True,
        grammar=grammar,
        scene=scene.to_dict() if with_scene else None,
    )


def replay(traj: Trajectory, scene: Scene) -> None:
    """Replay ``traj`` in a fresh env; raise ``RuntimeError`` unless every observation matches and it wins."""
    env = HouseholdEnv(scene, grammar=traj.grammar)
    first = env.reset()
    if strip_welcome(first) != strip_welcome(traj.observation):
        raise RuntimeError(f"{traj.id}: the first observation differs on replay")
    info: dict[str, object] = {"won": False}
    for i, (action, obs) in enumerate(traj.steps):
        got, done, info = env.step(action)
        if got != obs:
            raise RuntimeError(f"{traj.id}: step {i} ({action!r}) replays as {got!r}, recorded {obs!r}")
        if done and i != len(traj.steps) - 1:
            raise RuntimeError(f"{traj.id}: the episode ended early at step {i}")
    if not info["won"]:
        raise RuntimeError(f"{traj.id}: the replay does not win")


def _write_chunks(path: Path, chunks: Iterable[str]) -> None:
    with AtomicFile(path) as f:
        for c in chunks:
            f.write(c)


def generate(
    split: str,
    n: int,
    out: Path,
    *,
    seed: int = 0,
    grammar: str = "2.1.1",
    name: str = "trajectories",
    with_scene: bool = True,
    progress: bool = True,
    shared_locations: float = 0.0,
) -> list[Trajectory]:
    """Generate, verify and write ``n`` trajectories; returns them."""
    out.mkdir(parents=True, exist_ok=True)
    per_kind = {kind: split_layouts(kind, split) for kind in ROOM_KINDS}
    trajs: list[Trajectory] = []
    for i in tqdm(range(n), desc=f"{split} trajectories", unit="traj", disable=not progress):
        scene = generate_scene(split, i, seed, shared_locations=shared_locations, _layouts=per_kind)
        traj = make_trajectory(scene, f"{split}-{seed}-{i:05d}", grammar, with_scene)
        replay(traj, scene)
        trajs.append(traj)
    _write_chunks(out / f"{name}.jsonl", (json.dumps(t.to_dict(), ensure_ascii=False) + "\n" for t in trajs))
    _write_chunks(out / f"{name}.txt", "\n".join(format_react_text(t) for t in trajs))
    return trajs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eval.gen_react_data", description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=SPLITS, default="train")
    ap.add_argument(
        "--n", type=int, required=True, help="number of trajectories (a multiple of 6 is balanced)"
    )
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--seed", type=int, default=0, help="scene seed, 0 <= seed < 100000 (default 0)")
    ap.add_argument("--grammar", choices=GRAMMARS, default="2.1.1")
    ap.add_argument("--name", default="trajectories", help="output file stem (default: trajectories)")
    ap.add_argument("--no-scene", action="store_true", help="leave the scene out of the JSON lines")
    ap.add_argument("--shared-locations", type=float, default=0.0, metavar="P",
                    help="probability per receptacle type that two instances share one location (default 0)")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error(f"--n must be >= 1, got {args.n}")
    if not 0 <= args.seed < 10**5:
        ap.error(f"--seed must be in [0, 100000), got {args.seed}")
    if not args.name or "/" in args.name or args.name.startswith("."):
        ap.error(f"--name must be a plain file stem, got {args.name!r}")
    if args.out.exists() and not args.out.is_dir():
        ap.error(f"--out {args.out} exists and is not a folder")
    try:
        trajs = generate(
            args.split,
            args.n,
            args.out,
            seed=args.seed,
            grammar=args.grammar,
            name=args.name,
            with_scene=not args.no_scene,
            shared_locations=args.shared_locations,
        )
    except (OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    counts = Counter(t.task_type for t in trajs)
    steps = sum(len(t.steps) for t in trajs) / len(trajs)
    print(f"wrote {len(trajs)} trajectories to {args.out / args.name}.jsonl and .txt (avg {steps:.1f} steps)")
    for task_type, k in sorted(counts.items()):
        print(f"  {task_type}: {k}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
