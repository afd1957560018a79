"""Progress lines during long steps (observing, build/lint/test/synth/diff, the deploy), quiet with -q.

They go to the terminal's stderr as it was when the run started (a duplicate of file descriptor 2 taken in
pytest_configure, while pytest's capturing is suspended): during a check pytest captures fds 1 and 2, and
lines written there would land in the check's captured output instead of in front of the operator. Writing
to the duplicate needs no capture toggling, so any thread (a synth in the pool, the xdist controller's early
gathering) and any xdist worker (whose stderr is the controller's) can write; one lock keeps lines whole.
"""

from __future__ import annotations

import os
import threading
from typing import TextIO

import pytest


class Progress:
    """Writes whole lines to the run's original stderr; progress only when not quiet (-q)."""

    def __init__(self, stream: TextIO | None, quiet: bool) -> None:
        self._stream = stream
        self._quiet = quiet
        self._lock = threading.Lock()

    def say(self, line: str, *, even_quiet: bool = False) -> None:
        if self._quiet and not even_quiet:
            return
        with self._lock:
            if self._stream is None:
                return
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (OSError, ValueError):  # the terminal went away (a closed pipe): not worth failing the run
                self._stream = None

    def close(self) -> None:
        with self._lock:
            if self._stream is not None:
                self._stream.close()
                self._stream = None


PROGRESS = pytest.StashKey[Progress]()


def start(config: pytest.Config) -> None:
    """Called from pytest_configure (plugins.report), while capturing is suspended."""
    stream = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    progress = Progress(stream, quiet=config.get_verbosity() < 0)
    config.stash[PROGRESS] = progress
    config.add_cleanup(progress.close)


def say(config: pytest.Config, line: str, *, even_quiet: bool = False) -> None:
    """One progress line, e.g. `[dev synth] started`; under -q only what must be seen anyway (`even_quiet`)."""
    progress = config.stash.get(PROGRESS, None)
    if progress is not None:
        progress.say(line, even_quiet=even_quiet)
