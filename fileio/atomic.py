"""Atomic writes, the project's one home for temp-then-rename.

Every output (JSON, JSONL, PNG, GGUF, safetensors, a saved model folder) is written under a temp name in
the target's own folder and moved into place with ``os.replace`` once complete, so an interrupted run never
leaves a partial file at a final path (a reader either sees the old file or the new one).

- :class:`AtomicFile`: a file object to write into, committed on a clean ``with`` exit;
- :func:`write_text_atomic` / :func:`write_json_atomic`: a whole text or JSON document;
- :func:`atomic_path`: a temp path for writers that want a file name (matplotlib, GGUFWriter, llama.cpp);
- :func:`atomic_dir`: a temp folder for writers that fill a folder (``save_pretrained``, a merged model),
  which replaces an existing folder only once the new one is complete;
- :func:`commit_all`: several outputs that belong together (a data split, its rejects and stats), moved into
  place only once every one of them was written, so a full disk leaves the old set, not a mix;
- :func:`sweep_stale`: the temps a killed process left behind (SIGKILL runs no cleanup), removed on the next run;
- :func:`disk_full` / :func:`write_error`: one clear line for a full disk or a file-size limit.

Every temp name carries the writer's pid (``.<name>.<pid>.<random>.tmp...``), which is how a later run tells
a dead writer's leftovers from a live writer's work in progress.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any


def _temp_name(path: Path) -> Path:
    # The real suffix stays last: matplotlib picks the image format from it.
    return path.parent / f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}"


class AtomicFile:
    """A file written to a temp name in the target dir and moved into place by :meth:`commit`."""

    def __init__(self, path: str | os.PathLike[str], mode: str = "w") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = _temp_name(self.path)
        # open(..., "x") rather than mkstemp so the file gets the usual permissions (umask), not 0600
        self.fh: IO[Any] = open(self.tmp, mode.replace("w", "x"), encoding=None if "b" in mode else "utf-8")  # noqa: SIM115
        self.done = False

    def write(self, data: Any) -> None:
        self.fh.write(data)

    def commit(self) -> Path:
        self.fh.close()
        os.replace(self.tmp, self.path)
        self.done = True
        return self.path

    def close_data(self) -> None:
        """Flush and close the temp file: a full disk shows here, before anything is moved into place."""
        self.fh.close()

    def abort(self) -> None:
        if not self.fh.closed:
            self.fh.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()
        self.done = True

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if self.done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to a temp file beside ``path`` and move it into place; a crash leaves no partial file."""
    with AtomicFile(path) as f:
        f.write(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> Path:
    return write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=indent) + "\n")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temp path beside ``path`` to write to; moved to ``path`` when the block ends cleanly, else removed."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(final)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"{tmp}: the writer left no file to move to {final}")
        tmp.chmod(0o644)  # some writers (mkstemp-style) create private files
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temp folder beside ``path`` to fill; it becomes ``path`` (replacing an old one) at a clean end."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".old", dir=final.parent))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """A matplotlib figure as PNG, atomically; the figure is closed either way."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)
    return Path(path)


def temp_dir(parent: str | os.PathLike[str], name: str) -> Path:
    """A scratch folder in ``parent`` named like every other temp here, so :func:`sweep_stale` finds it."""
    return Path(tempfile.mkdtemp(prefix=f".{name}.{os.getpid()}.", suffix=".tmp", dir=parent))


def commit_all(files: Iterable[AtomicFile]) -> None:
    """Close every file first, then move them all into place: a write error leaves none of them committed."""
    files = list(files)
    for f in files:
        f.close_data()
    for f in files:
        f.commit()


# .<name>.<pid>.<8 random>.tmp[.suffix] (files), .<name>.<pid>.<random>.tmp|.old (folders, from mkdtemp)
_TEMP = re.compile(r"^\..+\.(\d+)\.[A-Za-z0-9_]{8}\.(?:tmp(?:\.[^.]+)?|old)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_stale(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temps in ``folder`` whose writer is no longer running; returns what was removed.

    A live writer's temps (its pid still runs) are left alone, so two runs into one folder do not race."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.iterdir():
        m = _TEMP.match(p.name)
        if m is None or int(m.group(1)) == os.getpid() or _alive(int(m.group(1))):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def disk_full(exc: BaseException) -> bool:
    """A write failed for lack of space: disk full, quota, or a file-size limit (``ulimit -f``)."""
    return isinstance(exc, OSError) and exc.errno in _FULL


def write_error(exc: OSError, folder: str | os.PathLike[str]) -> str:
    """One line for an OSError of a run writing into ``folder``: for a full disk, what to do as well."""
    what = exc.strerror or str(exc)
    where = f" ({exc.filename})" if exc.filename else ""
    if disk_full(exc):
        return (f"{folder}: out of space while writing{where}: {what}; nothing partial was left at the final "
                "paths (old outputs are untouched); free some space or write to another disk, then rerun")
    return f"{exc.filename or folder}: {what}"
