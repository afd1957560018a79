"""Run a command truthfully: its real exit code, a timeout that kills the whole process group, a log file.

Why: a background wrapper can report 0 for a deploy that exited 255. Here the command runs
synchronously under `/bin/bash -c` in its own session; what it prints (stdout and stderr merged) is
redacted line by line, appended to the log file, handed to `on_line` and kept as a tail.
"""

from __future__ import annotations

import contextlib
import os
import signal as signals
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from probes.secrets import redact
from probes.text import clip

PLAIN_OUTPUT = {"NO_COLOR": "1", "FORCE_COLOR": "0"}  # tools print text, not ANSI colour, into logs
TERM_GRACE = 2.0  # seconds between SIGTERM and SIGKILL to the process group
KILL_GRACE = 5.0  # seconds to wait for SIGKILLed group members to be gone
DRAIN_GRACE = 2.0  # seconds to wait for background processes to close the output after the command exited
MAX_LINE = 65536  # a longer line is split into pieces of this many bytes


class CommandError(Exception):
    """The command could not be started (for example its working directory is missing)."""


@dataclass(frozen=True)
class CommandResult:
    """What happened to one command: the evidence a test judges."""

    command: str
    cwd: str
    exit_code: int | None  # None when the shell itself was killed by a signal
    signal: int | None  # the signal that killed the shell
    timed_out: bool
    interrupted: bool
    duration: float
    log_path: Path
    tail: tuple[str, ...]  # the last output lines, redacted

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.signal is None and not self.timed_out and not self.interrupted

    def describe(self) -> str:
        """One line: "`npm run lint` exited 1 after 3.2 s (log: reports/logs/lint.log)"."""
        what = f"`{clip(redact(self.command))}`"
        after = f"after {self.duration:.1f} s"
        if self.timed_out:
            outcome = f"timed out {after} and was killed"
        elif self.interrupted:
            outcome = f"was interrupted {after} and was killed"
        elif self.signal is not None:
            outcome = f"was killed by {_signal_name(self.signal)} {after}"
        else:
            outcome = f"exited {self.exit_code}{_exit_hint(self.exit_code)} {after}"
        return f"{what} {outcome} (log: {self.log_path})"

    def explained(self, head: str | None = None, lines: int = 20) -> str:
        """A failure message: `head` (default: `describe()`), then the output's last `lines` lines."""
        return f"{head or self.describe()}\nlast lines:\n  " + "\n  ".join(self.tail[-lines:])


class CommandInterrupted(KeyboardInterrupt):
    """Raised by `run` on Ctrl-C after the command's process group was killed; `.result` says what ran."""

    def __init__(self, result: CommandResult) -> None:
        super().__init__(result.describe())
        self.result = result


def run(
    command: str,
    *,
    cwd: Path,
    log_path: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    tail_lines: int = 30,
) -> CommandResult:
    """Run `command` with `/bin/bash -c` in `cwd` and wait for it, at most `timeout` seconds.

    `env` adds to (and overrides) the current environment, in which colour is turned off (`PLAIN_OUTPUT`:
    with CI=true node tools colour their output, which would reach logs, tails and parsed output).
    On timeout the whole process group gets
    SIGTERM, then SIGKILL after TERM_GRACE; processes the command left behind when it exited are killed
    too. On KeyboardInterrupt the group is killed and CommandInterrupted (a KeyboardInterrupt carrying
    the result, `interrupted=True`) is raised. `on_line` is called from a reader thread; if it raises,
    the command still runs to its end and the exception is raised afterwards.
    Raises CommandError when `cwd` is not a directory.
    """
    if not cwd.is_dir():
        problem = "does not exist" if not cwd.exists() else "is not a directory"
        raise CommandError(f"cannot run `{clip(redact(command))}`: working directory {cwd} {problem}; fix the path")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=max(tail_lines, 0))
    with log_path.open("a", encoding="utf-8") as log:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"===== {stamp} $ {redact(command)}  (cwd: {cwd})\n")
        log.flush()
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                ["/bin/bash", "-c", command],
                cwd=cwd,
                env={**os.environ, **PLAIN_OUTPUT, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise CommandError(f"cannot start /bin/bash for `{clip(redact(command))}`: {exc.strerror}") from None
        assert proc.stdout is not None
        pump = _Pump(proc.stdout, log, tail, on_line)
        timed_out = interrupted = False
        try:
            pump.start()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
            if not timed_out and not pump.wait(DRAIN_GRACE):
                pump.note("the command exited but left processes holding its output; killing them")
                _kill_group(proc)
        except KeyboardInterrupt:
            interrupted = True
            _kill_group(proc)
        finally:
            if proc.poll() is None:  # an exception other than KeyboardInterrupt: leave nothing behind
                _kill_group(proc)
            if not pump.wait(DRAIN_GRACE):
                pump.detach("processes outside the command's process group still hold its output; stopped reading")
        duration = time.monotonic() - started
        code = proc.returncode
        result = CommandResult(
            command=command,
            cwd=str(cwd),
            exit_code=code if code >= 0 else None,
            signal=-code if code < 0 else None,
            timed_out=timed_out,
            interrupted=interrupted,
            duration=duration,
            log_path=log_path,
            tail=tuple(tail),
        )
        log.write(f"===== {result.describe()}\n")
    if interrupted:
        raise CommandInterrupted(result)
    if pump.error is not None:
        raise pump.error
    return result


class _Pump(threading.Thread):
    """Reads the merged output line by line: redact, log, tail, on_line."""

    def __init__(
        self, stream: IO[bytes], log: IO[str], tail: deque[str], on_line: Callable[[str], None] | None
    ) -> None:
        super().__init__(name="shell-output", daemon=True)
        self._stream, self._log, self._tail, self._on_line = stream, log, tail, on_line
        self._lock = threading.Lock()
        self._detached = False
        self.error: BaseException | None = None

    def run(self) -> None:
        with self._stream:
            for raw in iter(lambda: self._stream.readline(MAX_LINE), b""):
                self._emit(redact(raw.decode("utf-8", "replace").rstrip("\r\n")), user=True)

    def note(self, text: str) -> None:
        self._emit(f"mailgate: {text}", user=False)

    def detach(self, why: str) -> None:
        """Stop logging: the thread keeps draining the pipe until its last writer closes it."""
        self.note(why)
        with self._lock:
            self._detached = True

    def wait(self, timeout: float | None) -> bool:
        """Wait until the output is closed; True when it is (or when reading never started)."""
        if self.ident is None:
            return True
        self.join(timeout)
        return not self.is_alive()

    def _emit(self, line: str, *, user: bool) -> None:
        with self._lock:
            if self._detached:
                return
            self._log.write(line + "\n")
            self._log.flush()
            self._tail.append(line)
        if user and self._on_line is not None and self.error is None:
            try:
                self._on_line(line)
            except Exception as exc:
                self.error = exc


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the command's process group, SIGKILL what is left after TERM_GRACE, reap the shell.

    Signals go to the group while the shell is not yet reaped or while members remain, so the group id
    cannot have been reused by an unrelated process.
    """
    pgid = proc.pid
    if not _signal_group(pgid, signals.SIGTERM, proc):
        return
    deadline = time.monotonic() + TERM_GRACE
    while time.monotonic() < deadline and _group_running(pgid):
        time.sleep(0.02)
    _signal_group(pgid, signals.SIGKILL, proc)
    proc.wait()
    deadline = time.monotonic() + KILL_GRACE  # SIGKILL is delivered asynchronously: return once it has landed
    while time.monotonic() < deadline and _group_running(pgid):
        time.sleep(0.02)


def _signal_group(pgid: int, sig: int, proc: subprocess.Popen[bytes]) -> bool:
    if proc.returncode is not None and not _group_running(pgid):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
        return True
    return False


def _group_running(pgid: int) -> bool:
    """Whether a process of the group is alive (zombies do not count); reads /proc where there is one."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def _signal_name(number: int) -> str:
    try:
        return f"{signals.Signals(number).name} ({number})"
    except ValueError:
        return f"signal {number}"


def _exit_hint(code: int | None) -> str:
    if code == 127:
        return " (command not found)"
    if code == 126:
        return " (not executable)"
    if code is not None and 128 < code < 128 + 65:
        return f" (128+{code - 128}: something inside was killed by {_signal_name(code - 128)})"
    return ""
