"""Shared benchmark helpers: time a command, sample the peak RSS of its pytest processes, summarise, tabulate."""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable  # the interpreter running the benchmark (`.venv/bin/python -m bench...`) runs pytest too
SAMPLE_INTERVAL = 0.01  # seconds between two looks at /proc
EXECNET_WORKER = "exec(eval(sys.stdin.readline()))"  # how execnet starts an xdist worker (`python -u -c ...`)


@dataclass(frozen=True)
class Measured:
    """One timed command: wall seconds, exit code, peak RSS of its Python processes (MiB), and what went wrong."""

    seconds: float
    returncode: int
    peak_rss_mib: float
    processes: int  # Python processes (the command itself and its xdist workers) whose RSS was sampled
    problem: str | None  # None when the exit code was an expected one; else the command and its error lines

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class Stats:
    """Median, min and max of several runs (seconds)."""

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        if not values:
            raise ValueError("Stats.of: no values; at least one run is needed")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def text(self) -> str:
        return f"{self.median:.2f} ({self.low:.2f}–{self.high:.2f})"


def measure(command: Sequence[str], *, env: Mapping[str, str], cwd: Path, expect: tuple[int, ...] = (0,)) -> Measured:
    """Run `command` to its end, timing it and sampling VmHWM of it and its xdist workers (not node, not `op`).

    An exit code not in `expect` is recorded in `problem` (with pytest's `E ` lines and the output's last
    lines), so one failed run is reported beside the others instead of ending the benchmark.
    """
    with tempfile.TemporaryFile() as output:
        started = time.monotonic()
        process = subprocess.Popen(list(command), cwd=cwd, env=dict(env), stdout=output, stderr=subprocess.STDOUT)
        sampler = _RssSampler(process.pid)
        sampler.start()
        returncode = process.wait()
        seconds = time.monotonic() - started
        sampler.stop()
        output.seek(0)
        text = output.read().decode("utf-8", "replace")
    problem = None if returncode in expect else _problem(command, cwd, returncode, expect, text)
    return Measured(seconds, returncode, sampler.peak_kib / 1024, len(sampler.seen), problem)


def _problem(command: Sequence[str], cwd: Path, returncode: int, expect: tuple[int, ...], output: str) -> str:
    lines = output.splitlines()
    errors = [line for line in lines if line.startswith("E ")][:8]
    shown = errors + [line for line in lines[-4:] if line not in errors]
    where = f"`{shlex.join(command)}` (in {cwd})"
    return f"{where} exited {returncode}, expected {' or '.join(map(str, expect))}:\n  " + "\n  ".join(shown)


class _RssSampler(threading.Thread):
    """Polls /proc every SAMPLE_INTERVAL s: the high-water RSS (VmHWM) of the root and its execnet workers."""

    def __init__(self, root: int) -> None:
        super().__init__(name=f"rss-{root}", daemon=True)
        self.root = root
        self.peak_kib = 0
        self.seen: set[int] = set()
        self._done = threading.Event()

    def stop(self) -> None:
        self._done.set()
        self.join()

    def run(self) -> None:
        while not self._done.is_set():
            for pid in self._python_processes():
                hwm = _vm_hwm_kib(pid)
                if hwm:
                    self.seen.add(pid)
                    self.peak_kib = max(self.peak_kib, hwm)
            self._done.wait(SAMPLE_INTERVAL)

    def _python_processes(self) -> list[int]:
        found, queue = [self.root], _children(self.root)
        while queue:
            pid = queue.pop()
            queue.extend(_children(pid))
            if EXECNET_WORKER in _cmdline(pid):
                found.append(pid)
        return found


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    children: list[int] = []
    for task in tasks:
        try:
            children += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return children


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _vm_hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def machine() -> dict[str, str]:
    """What the numbers were measured on: CPUs, model, load before the run, Python."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return {"cpus": str(os.cpu_count()), "model": model, "load (1/5/15 min)": load, "python": platform.python_version()}


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, columns padded so it also reads as plain text."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"
