"""Household simulator speed: ``python bench/sim_speed.py [--episodes N] [--seed S]``.

Prints env.step calls per second (planning excluded); the target is >= 20k on one core.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from eval.household.bench import sim_steps_per_s  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=50, help="expert + random episodes each (default 50)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"sim_steps_per_s={sim_steps_per_s(args.episodes, args.seed):.0f}")


if __name__ == "__main__":
    main()
