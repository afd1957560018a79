"""Preflight fixtures: the infra repo's commands once per run, one synth per partition (overlapping)."""

from __future__ import annotations

import shlex
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from plugins import progress
from plugins.partitions import Selection, item_partition, run_dir, selection
from plugins.report import reports_dir
from plugins.run_state import RunState
from probes import shell
from probes.cdk import Assembly, CdkError, read_assembly
from probes.config import Target
from probes.problem import Problem

KIND_ORDER = ("code", "synth", "access", "diff")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mailgate")
    group.addoption("--expect-head", metavar="SHA", help="the infra repo's HEAD must be this commit (the PR head)")
    group.addoption("--allow-modify", action="store_true", help="let a production partition's diff modify resources")
    group.addoption(
        "--command-timeout", metavar="SECONDS", type=float, default=1800.0, help="limit for build/lint/test/synth/diff"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Preflight before postmerge; inside preflight: code, synth, access, diff (stable otherwise)."""

    def rank(item: pytest.Item) -> tuple[int, int]:
        phase = 0 if item.get_closest_marker("preflight") else 1
        kind = next((i for i, k in enumerate(KIND_ORDER) if item.get_closest_marker(k)), len(KIND_ORDER))
        return phase, kind if phase == 0 else 0

    items.sort(key=rank)


@dataclass(frozen=True)
class Synth:
    """One partition's synth: the command's result and the cloud assembly it left (or why none)."""

    target: Target
    result: shell.CommandResult
    out: Path
    assembly: Assembly | None
    problem: Problem | None


class InfraRunner:
    """Runs the infra repo's command templates truthfully, logging to reports/logs/."""

    def __init__(self, config: pytest.Config, chosen: Selection, logs: Path, timeout: float, run_dir: Path) -> None:
        self.config = config
        self.chosen = chosen
        self.run_dir = run_dir
        self.logs = logs
        self.timeout = timeout
        self._synths: dict[str, Future[Synth]] = {}
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="synth")
        self._lock = threading.Lock()
        self._serial = threading.Lock()

    def command(
        self, name: str, target: Target | None = None, out: Path | None = None, tail_lines: int = 30
    ) -> shell.CommandResult:
        template = getattr(self.chosen.config.file.infra, name)
        values = target.command_vars(out=shlex.quote(str(out)) if out else "") if target else {}
        line = template.format(**values) if target else template
        suffix = f"-{target.infrastructure}-{target.name}" if target else ""
        log = self.logs / f"{name}{suffix}.log"
        label = f"[{target.name} {name}]" if target else f"[{name}]"
        progress.say(self.config, f"{label} started: {line}")
        try:
            result = shell.run(
                line, cwd=self.chosen.infra_repo, log_path=log, timeout=self.timeout, tail_lines=tail_lines
            )
        except shell.CommandError as exc:
            progress.say(self.config, f"{label} {exc}")
            pytest.fail(f"{exc}; pass --infra-repo PATH or fix infra.repo in {self.chosen.config.path}", pytrace=False)
        progress.say(self.config, f"{label} {'done' if result.ok else 'FAILED'}: {result.describe()}")
        return result

    def assembly_dir(self, target: Target) -> Path:
        """Where a synth command that takes {out} writes the partition's cloud assembly."""
        return self.logs.parent / "synth" / f"{target.infrastructure}-{target.name}"

    def diff(self, target: Target) -> shell.CommandResult:
        """The partition's cdk diff. When both commands take {out}, the diff is handed the assembly the synth
        checks judged, synthesized first if no check of this run has asked yet: it judges the same template and
        spares a second synth."""
        infra = self.chosen.config.file.infra
        if "{out}" in infra.diff and "{out}" in infra.synth:
            self.synth(target, ())
        return self.command("diff", target, out=self.assembly_dir(target), tail_lines=5000)

    def synth(self, target: Target, overlap: tuple[Target, ...]) -> Synth:
        """This partition's synth; the first call also starts those of `overlap`, so synths run side by side."""
        with self._lock:
            for other in (target, *overlap):
                if other.name not in self._synths:
                    self._synths[other.name] = self._pool.submit(self._synth, other)
            future = self._synths[target.name]
        return future.result()

    def _synth(self, target: Target) -> Synth:
        """One synth per partition per run, whichever process (xdist worker) asks first; the others read it."""
        name = f"synth-{target.infrastructure}-{target.name}"
        return RunState(self.run_dir).once(name, lambda: self._run_synth(target))

    def _run_synth(self, target: Target) -> Synth:
        template = self.chosen.config.file.infra.synth
        own_dir = "{out}" in template
        out = self.assembly_dir(target)
        if own_dir:
            result = self.command("synth", target, out)
        else:  # the command writes <repo>/cdk.out: one synth at a time, read before the next
            with self._serial:
                result = self.command("synth", target)
                out = self.chosen.infra_repo / "cdk.out"
                return self._read(target, result, out)
        return self._read(target, result, out)

    @staticmethod
    def _read(target: Target, result: shell.CommandResult, out: Path) -> Synth:
        if not result.ok:
            return Synth(target, result, out, None, Problem("command", result.describe()))
        try:
            return Synth(target, result, out, read_assembly(out), None)
        except CdkError as exc:
            return Synth(target, result, out, None, Problem("assembly", str(exc)))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")
def infra(request: pytest.FixtureRequest) -> Iterator[InfraRunner]:
    """The infra repo's commands (build, lint, test, synth, diff), run with logs under reports/logs/."""
    config = request.config
    logs = reports_dir(config) / "logs"
    runner = InfraRunner(config, selection(config), logs, config.getoption("command_timeout"), run_dir(config))
    yield runner
    runner.close()


@pytest.fixture(scope="session")
def synth_overlap(request: pytest.FixtureRequest) -> tuple[Target, ...]:
    """Partitions whose synths may start together: those with a synth check here, when not under xdist."""
    if hasattr(request.config, "workerinput"):
        return ()
    wanted = {item_partition(item) for item in request.session.items if item.get_closest_marker("synth")}
    return tuple(t for t in selection(request.config).targets if t.name in wanted)
