"""State a run's processes (xdist controller and workers) share through files: locked, written atomically.

Everything a process publishes is complete or absent for a reader: files are written beside their final name
and renamed over it, and the JSON lines of a fact log are read up to the last complete line.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

T = TypeVar("T")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive flock on `path`: a directory is locked itself (nothing is left beside what it holds, and a
    rename inside it does not escape the lock); any other path is a lock file, created when missing."""
    flags = os.O_RDONLY | os.O_DIRECTORY if path.is_dir() else os.O_WRONLY | os.O_CREAT | os.O_APPEND
    fd = os.open(path, flags, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_atomic(path: Path, data: bytes, durable: bool = True) -> None:
    """Write `data` to a temporary file beside `path` (keeping its mode) and rename it over `path`: a reader, or a
    failure part way, sees the old content or the new, never a mix. `durable` also fsyncs the file and folder, for
    files that must survive a crash of the machine (a run's own scratch state need not)."""
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            if durable:
                os.fsync(out.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class RunState:
    """The run directory's named values (`<name>.pickle`, each under `<name>.lock`) and fact logs (`<name>.jsonl`)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def locked(self, name: str) -> contextlib.AbstractContextManager[None]:
        """The lock of value `name`: held while it is computed, so the other processes wait and then read it."""
        return locked(self.folder / f"{name}.lock")

    def read(self, name: str, default: T) -> T:
        """Value `name` as last published, or `default` when nobody has published it yet."""
        path = self.folder / f"{name}.pickle"
        return cast(T, pickle.loads(path.read_bytes())) if path.exists() else default

    def publish(self, name: str, value: object) -> None:
        """Publish value `name` for the run's other processes (call with its lock held)."""
        write_atomic(self.folder / f"{name}.pickle", pickle.dumps(value), durable=False)

    def once(self, name: str, compute: Callable[[], T]) -> T:
        """Value `name`, computed by whichever process asks first; the others wait for it and read it."""
        with self.locked(name):
            path = self.folder / f"{name}.pickle"
            if path.exists():
                return cast(T, pickle.loads(path.read_bytes()))
            value = compute()
            self.publish(name, value)
            return value

    def append(self, name: str, fact: dict[str, Any]) -> None:
        """Tell the run's other processes a fact: one JSON line appended to log `name` (one write, O_APPEND)."""
        with (self.folder / f"{name}.jsonl").open("a") as out:
            out.write(json.dumps(fact) + "\n")

    def facts(self, name: str) -> list[dict[str, Any]]:
        """Every fact appended to log `name` so far (a line still being written is read on the next look)."""
        path = self.folder / f"{name}.jsonl"
        if not path.exists():
            return []
        text = path.read_text()
        return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line]
