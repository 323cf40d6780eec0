"""Peer tools for benchmarks: each lives in its own virtual environment under ``bench/.venvs/<name>`` (gitignored).

A peer (LLaMA-Factory, ...) pins versions that clash with ours (torch, transformers), so it never shares our
venv. :func:`ensure_venv` creates the venv on first use with the peer's exact install commands and reuses
it afterwards; :func:`run_measured` runs a driver script with that venv's python and reports its wall time
and peak RSS (the kernel's high-water mark ``VmHWM`` of the process and of each of its workers, polled while
it runs: ``ru_maxrss`` cannot be used, Linux starts a child's at its parent's peak, so a bench or test
process that has imported torch would hide the child's own figure).

Shared by the benches (``data_prep_throughput.py``, ``train_throughput.py``, ...)::

    from peers import LLAMAFACTORY, ensure_venv, run_measured
    python = ensure_venv(LLAMAFACTORY)
    run = run_measured([str(python), "bench/lf_data_prep.py", ...])
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import threading
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
    rss_mb: float  # peak RSS (VmHWM) of the process or of its largest worker
    cpu_s: float  # user + system CPU seconds of the process and its waited-for children
    stdout: str
    stderr: str


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from ``/proc/<pid>/task/*/children``."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):  # the task ended meanwhile
                todo += [int(c) for c in task.read_text().split()]
    return out


def _hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):  # ended, or a zombie whose memory is gone
        pass
    return 0


class _PeakWatcher(threading.Thread):
    """The largest ``VmHWM`` of a process tree, sampled every ``every`` s until :meth:`stop`.

    VmHWM is the kernel's own high-water mark, so a sample misses no spike before it; only what happens in
    the last interval before exit goes unseen.
    """

    def __init__(self, pid: int, every: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.peak_kib = pid, every, 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak_kib = max([self.peak_kib] + [_hwm_kib(p) for p in _tree(self.pid)])
            self._done.wait(self.every)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak_kib


def run_measured(cmd: list[str], env: dict[str, str] | None = None, cwd: str | Path | None = None) -> Measured:
    """Run ``cmd`` to completion in a fresh process; its wall time, peak RSS and CPU time.

    Peak RSS is polled ``VmHWM`` where ``/proc`` exists (see the module docstring), else ``ru_maxrss``.
    Output goes to temp files, not pipes: ``os.wait4`` must reap the child itself to get its rusage, and
    reading two pipes without ``communicate`` (which reaps) could deadlock.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, text=True)
        watcher = _PeakWatcher(proc.pid) if Path("/proc/self/status").exists() else None
        if watcher is not None:
            watcher.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        peak_kib = watcher.stop() if watcher is not None else 0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        cpu = usage.ru_utime + usage.ru_stime
        rss_kib = peak_kib or usage.ru_maxrss
        return Measured(proc.returncode, wall, rss_kib / 1024, cpu, out.read(), err.read())
