"""Peer tools for benchmarks: each lives in its own virtual environment under ``bench/.venvs/<name>`` (gitignored).

A peer (LLaMA-Factory, ...) pins versions that clash with ours (torch, transformers), so it never shares our
venv. :func:`ensure_venv` creates the venv on first use with the peer's exact install commands and reuses
it afterwards; :func:`run_measured` runs a driver script with that venv's python and reports its wall time
and peak RSS (``ru_maxrss`` from ``os.wait4``: the largest of the process and its waited-for workers).

Shared by the benches (``data_prep_throughput.py``, ``train_throughput.py``, ...)::

    from peers import LLAMAFACTORY, ensure_venv, run_measured
    python = ensure_venv(LLAMAFACTORY)
    run = run_measured([str(python), "bench/lf_data_prep.py", ...])
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

VENVS = Path(__file__).resolve().parent / ".venvs"


@dataclass(frozen=True)
class PeerVenv:
    """A peer's venv: its name (the folder), ``pip install`` argument lists run in order, and the pins to check."""

    name: str
    installs: tuple[tuple[str, ...], ...]
    pins: tuple[tuple[str, str], ...]  # (distribution, version prefix) that a complete install has

    @property
    def path(self) -> Path:
        return VENVS / self.name

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


# torch first from its own pins (torchvision, then torchaudio), so llamafactory's loose ranges keep them.
LLAMAFACTORY = PeerVenv(
    name="llamafactory",
    installs=(("torch==2.9.1", "torchvision==0.24.1"), ("torch==2.9.1", "torchaudio==2.9.*"), ("llamafactory==0.9.5",)),
    pins=(("llamafactory", "0.9.5"), ("torch", "2.9.1")),
)

_CHECK = (
    "import sys, importlib.metadata as m\n"
    "pins = [a.split('=', 1) for a in sys.argv[1:]]\n"
    "bad = [d for d, v in pins if not m.version(d).startswith(v)]\n"
    "sys.exit(1 if bad else 0)\n"
)


def is_installed(peer: PeerVenv) -> bool:
    """True when the venv's python exists and has the pinned versions (a metadata look-up, no imports)."""
    if not peer.python.is_file():
        return False
    args = [f"{d}={v}" for d, v in peer.pins]
    try:
        return subprocess.run([str(peer.python), "-c", _CHECK, *args], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_venv(peer: PeerVenv, log: Path | None = None) -> Path:
    """The peer venv's python, creating the venv with its install commands first when it is missing or partial.

    A lock file serialises concurrent benches, so two first uses never install into one folder at once.
    pip's output goes to ``log`` (default ``bench/.venvs/<name>.install.log``). Installs take minutes.
    """
    VENVS.mkdir(parents=True, exist_ok=True)
    with open(VENVS / f"{peer.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_installed(peer):
            return peer.python
        log = log or VENVS / f"{peer.name}.install.log"
        print(f"creating {peer.path} (first use; pip output in {log}) ...", file=sys.stderr, flush=True)
        base = shutil.which("python3") or sys.executable
        with log.open("a", encoding="utf-8") as out:
            if not peer.python.is_file():
                subprocess.run([base, "-m", "venv", str(peer.path)], check=True, stdout=out, stderr=out)
            for args in peer.installs:
                subprocess.run([str(peer.python), "-m", "pip", "install", *args], check=True, stdout=out, stderr=out)
        if not is_installed(peer):
            raise RuntimeError(f"{peer.path}: installed, but the pins {peer.pins} do not hold; see {log}")
        return peer.python


@dataclass
class Measured:
    returncode: int
    wall_s: float
    rss_mb: float  # peak RSS of the process or its largest waited-for child
    cpu_s: float  # user + system CPU seconds of the process and its waited-for children
    stdout: str
    stderr: str


def run_measured(cmd: list[str], env: dict[str, str] | None = None, cwd: str | Path | None = None) -> Measured:
    """Run ``cmd`` to completion in a fresh process; its wall time, peak RSS (``ru_maxrss``) and CPU time.

    Output goes to temp files, not pipes: ``os.wait4`` must reap the child itself to get its rusage, and
    reading two pipes without ``communicate`` (which reaps) could deadlock.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        cpu = usage.ru_utime + usage.ru_stime
        return Measured(proc.returncode, wall, usage.ru_maxrss / 1024, cpu, out.read(), err.read())
