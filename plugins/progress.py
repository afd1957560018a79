"""Progress lines during long steps (observing, build/lint/test/synth/diff, the deploy), quiet with -q.

They go to the terminal's stderr as it was when the run started (a duplicate of file descriptor 2 taken in
pytest_configure, while pytest's capturing is suspended): during a check pytest captures fds 1 and 2, and
lines written there would land in the check's captured output instead of in front of the operator. Writing
to the duplicate needs no capture toggling, so any thread (a synth in the pool, the xdist controller's early
gathering) and any xdist worker (whose stderr is the controller's) can write; one lock keeps lines whole.
Where pytest's output and these lines reach the same place (a terminal, a CI log), a progress line never
lands inside the line pytest is writing (a check file's name and its dots): it goes above, and pytest's
line is written again below it, as pytest left it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TextIO

import pytest

from plugins._compat import half_line


class Progress:
    """Writes whole lines to the run's original stderr; progress only when not quiet (-q)."""

    def __init__(
        self, stream: TextIO | None, quiet: bool, shared: Callable[[], pytest.TerminalReporter | None] = lambda: None
    ) -> None:
        self._stream = stream
        self._quiet = quiet
        self._shared = shared  # pytest's terminal reporter, when its output goes where these lines go
        self._tty = stream is not None and stream.isatty()
        self._lock = threading.Lock()

    def say(self, line: str, *, even_quiet: bool = False) -> None:
        if self._quiet and not even_quiet:
            return
        with self._lock:
            if self._stream is None:
                return
            try:
                terminal = self._shared()
                self._stream.write(_above(half_line(terminal) if terminal else "", line, self._tty))
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
    progress = Progress(stream, quiet=config.get_verbosity() < 0, shared=_shared_terminal(config))
    config.stash[PROGRESS] = progress
    config.add_cleanup(progress.close)


def say(config: pytest.Config, line: str, *, even_quiet: bool = False) -> None:
    """One progress line, e.g. `[dev synth] started`; under -q only what must be seen anyway (`even_quiet`)."""
    progress = config.stash.get(PROGRESS, None)
    if progress is not None:
        progress.say(line, even_quiet=even_quiet)


def _above(half: str, line: str, tty: bool) -> str:
    """`line` on a line of its own with pytest's half-written line after it, as pytest left it: on a terminal the
    half line is erased and written again below (carriage return, erase to end of line); elsewhere, a log, it is
    ended and repeated."""
    if not half:
        return line + "\n"
    return ("\r\x1b[K" if tty else "\n") + line + "\n" + half


def _shared_terminal(config: pytest.Config) -> Callable[[], pytest.TerminalReporter | None]:
    """pytest's terminal reporter when it writes where the progress lines go (fds 1 and 2 are one file), else None.
    An xdist worker's reporter writes nowhere the operator looks: its results travel to the controller."""
    try:
        shared = not hasattr(config, "workerinput") and os.path.samestat(os.fstat(1), os.fstat(2))
    except OSError:  # a closed fd 1: nothing of pytest's to keep whole
        shared = False
    return (lambda: config.pluginmanager.get_plugin("terminalreporter")) if shared else (lambda: None)
