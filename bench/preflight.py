"""Preflight benchmark: mailgate's code and synth checks against build, lint, test and synth per partition in turn.

    python -m bench.preflight [--partitions 4] [--runs 3] [--json PATH]

Starts the sandbox world for its CDK app (a git copy of sandbox/infra) and generated partitions file, then
times, in rounds: `pytest --collect-only` of the selection (the fixed cost); mailgate
`pytest -m "preflight and (code or synth)"` (`-n 0`, and `-n W` when asked), which builds, lints and
tests once and overlaps the synths; and the baseline, the old script's way: for each partition in turn
the repo's own `infra.build`, `infra.lint`, `infra.test` and `infra.synth` commands, one after another.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT, Measured, Stats, machine, measure, table, verdict
from probes.config import Config, Target, load

ROWS = ("collect", "n0", "nW", "baseline")
STEPS = ("build", "lint", "test", "synth")
CHECKS = {"code": ("build", "lint", "test"), "synth": ("synth",)}
MB_PER_MIB = 1.048576
HEADERS = ("N", "command", "seconds: median (min–max)", "× mailgate -n 0", "peak RSS MiB (pytest)")


@dataclass(frozen=True)
class Round:
    """One round: each row's measurement; the baseline as its steps (partition, step, measurement)."""

    rows: dict[str, Measured]
    steps: tuple[tuple[str, str, Measured], ...]

    def seconds(self, row: str) -> float | None:
        """The row's wall time in this round; None when it was not run or did not do its job."""
        if row == "baseline":
            ok = self.steps and all(m.ok for _, _, m in self.steps)
            return sum(m.seconds for _, _, m in self.steps) if ok else None
        found = self.rows.get(row)
        return found.seconds if found and found.ok else None

    def problems(self) -> list[str]:
        return [m.problem for m in [*self.rows.values(), *(m for _, _, m in self.steps)] if m.problem]


def main(argv: Sequence[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    rows = _choice("--rows", options.rows, ROWS)
    checks = _choice("--checks", options.checks, tuple(CHECKS))
    before = machine()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in before.items()), flush=True)
    from sandbox.world import World, apply_env

    state = Path(tempfile.mkdtemp(prefix="mailgate-bench-preflight-"))
    try:
        with World(state / "world", extra_partitions=max(0, options.partitions - 4)) as world:
            env = dict(os.environ)
            apply_env(world.env(), env)
            config = load(Path(world.info.partitions_file))
            targets = tuple(config.targets.values())[: options.partitions]
            if len(targets) < options.partitions or options.partitions < 1:
                raise SystemExit(f"--partitions: from 1 to {len(config.targets)}, got {options.partitions}")
            plan = Plan(config, targets, checks, env, options.workers)
            rounds = [
                _round(
                    plan,
                    rows if i < options.baseline_runs else [r for r in rows if r != "baseline"],
                    state / f"round-{i}",
                )
                for i in range(options.runs)
            ]
    finally:
        shutil.rmtree(state, ignore_errors=True)
    lines = size_rows(len(targets), rounds, options.workers)
    report = targets_met(rounds)
    print("\n" + table(HEADERS, lines), flush=True)
    print("\n" + table(["target", "measured (medians, seconds)", "verdict"], report), flush=True)
    print(f"load (1/5/15 min) before {before['load (1/5/15 min)']}, after {machine()['load (1/5/15 min)']}")
    if options.json:
        summary = _summary(rounds, lines, report) | {"machine": before, "load_after": machine()}
        Path(options.json).write_text(json.dumps(summary, indent=2))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.preflight", description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", type=int, default=4, help="how many partitions to check (4)")
    parser.add_argument("--runs", type=int, default=3, help="rounds of every command (3)")
    parser.add_argument("--baseline-runs", type=int, default=1, help="rounds that also time the baseline (1)")
    parser.add_argument("--rows", default="collect,n0,baseline", help=f"commands to time, of {', '.join(ROWS)}")
    parser.add_argument("--workers", type=int, default=4, help="xdist workers of the nW row (4)")
    parser.add_argument("--checks", default="code,synth", help="code, synth or both (code,synth): marker and steps")
    parser.add_argument("--json", metavar="PATH", help="also write the figures and verdicts here")
    return parser


def _choice(option: str, spec: str, known: tuple[str, ...]) -> tuple[str, ...]:
    chosen = tuple(r.strip() for r in spec.split(",") if r.strip())
    unknown = [r for r in chosen if r not in known]
    if unknown or not chosen:
        raise SystemExit(f"{option}: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(known)}")
    return chosen


@dataclass(frozen=True)
class Plan:
    """What every round runs: the partitions file, the partitions, the checks, the environment, the workers."""

    config: Config
    targets: tuple[Target, ...]
    checks: tuple[str, ...]
    env: dict[str, str]
    workers: int

    def pytest(self, *extra: str) -> list[str]:
        marker = f"preflight and ({' or '.join(self.checks)})"
        names = ",".join(t.name for t in self.targets)
        where = [f"--partitions-file={self.config.path}", "--partition", names]  # `=`: see bench.postmerge
        return [PYTHON, "-m", "pytest", "-m", marker, *where, "-q", "-p", "no:cacheprovider", *extra]

    @property
    def steps(self) -> list[str]:
        return [step for check in self.checks for step in CHECKS[check]]


def _round(plan: Plan, rows: Sequence[str], scratch: Path) -> Round:
    """Every chosen row once; mailgate writes its reports and synths under `scratch`."""
    measured: dict[str, Measured] = {}
    steps: tuple[tuple[str, str, Measured], ...] = ()
    for row in rows:
        reports = (f"--reports-dir={scratch / row}",)
        if row == "collect":
            measured[row] = measure(plan.pytest(*reports, "--collect-only"), env=plan.env, cwd=ROOT)
        elif row in ("n0", "nW"):
            workers = "0" if row == "n0" else str(plan.workers)
            measured[row] = measure(plan.pytest(*reports, "-n", workers), env=plan.env, cwd=ROOT)
        else:
            steps = _baseline(plan, scratch / "baseline")
        done = Round(measured, steps)
        seconds = done.seconds(row)
        shown = f"{seconds:.2f} s" if seconds is not None else "FAILED: " + "\n    ".join(done.problems())
        print(f"  {row:9} {shown}", flush=True)
    return Round(measured, steps)


def _baseline(plan: Plan, out: Path) -> tuple[tuple[str, str, Measured], ...]:
    """For each partition in turn, each step's command from the partitions file, run in the infra repo."""
    done = []
    for target in plan.targets:
        for step in plan.steps:
            template = getattr(plan.config.file.infra, step)
            line = template.format(**target.command_vars(out=shlex.quote(str(out / target.name))))
            done.append((target.name, step, measure(["bash", "-c", line], env=plan.env, cwd=plan.config.infra_repo)))
    return tuple(done)


def stats(rounds: Sequence[Round], row: str) -> Stats | None:
    values = [s for r in rounds if (s := r.seconds(row)) is not None]
    return Stats.of(values) if values else None


def size_rows(size: int, rounds: Sequence[Round], workers: int) -> list[list[str]]:
    """Per command: seconds, ratio to mailgate -n 0, peak RSS of pytest processes; then the baseline's steps."""
    labels = {
        "collect": "pytest --collect-only (fixed cost)",
        "n0": "mailgate -n 0",
        "nW": f"mailgate -n {workers}",
        "baseline": "baseline: each step for each partition in turn",
    }
    mailgate = stats(rounds, "n0")
    lines = []
    for row in ROWS:
        found = stats(rounds, row)
        if found is None:
            continue
        peaks = [r.rows[row].peak_rss_mib for r in rounds if row in r.rows]
        lines.append(
            [
                str(size),
                labels[row],
                found.text(),
                f"{found.median / mailgate.median:.2f}" if mailgate else "–",
                f"{max(peaks):.0f}" if peaks else "– (no pytest)",
            ]
        )
    for step in STEPS:
        values = [m.seconds for r in rounds for _, s, m in r.steps if s == step]
        if values:
            each = Stats.of(values)
            lines.append([str(size), f"  baseline step `{step}` (each of {len(values)})", each.text(), "", ""])
    return lines


def targets_met(rounds: Sequence[Round]) -> list[list[str]]:
    mailgate, base = stats(rounds, "n0"), stats(rounds, "baseline")
    lines: list[list[str]] = []
    if mailgate and base:
        figures = f"{base.median:.2f} / {mailgate.median:.2f} = {base.median / mailgate.median:.2f}"
        lines.append(["-n 0 ≥ 2.5 × faster than the baseline", figures, verdict(base.median >= 2.5 * mailgate.median)])
    peaks = [m.peak_rss_mib for r in rounds for m in r.rows.values()]
    if peaks:
        peak = max(peaks) * MB_PER_MIB
        lines.append(["peak RSS of any pytest process < 300 MB", f"{peak:.0f} MB", verdict(peak < 300)])
    problems = [p for r in rounds for p in r.problems()]
    figures = f"{len(problems)} failed" + "".join(f"; {p.splitlines()[0]}" for p in problems)
    lines.append(["every timed run did its job (checks passed)", figures, verdict(not problems)])
    return lines


def _summary(rounds: Sequence[Round], lines: list[list[str]], report: list[list[str]]) -> dict[str, Any]:
    return {
        "rows": {row: asdict(found) for row in ROWS if (found := stats(rounds, row)) is not None},
        "steps": [[{"partition": p, "step": s, "seconds": m.seconds} for p, s, m in r.steps] for r in rounds],
        "peak_rss_mib": {row: max(r.rows[row].peak_rss_mib for r in rounds) for row in rounds[0].rows},
        "problems": [p for r in rounds for p in r.problems()],
        "table": lines,
        "targets": report,
    }


if __name__ == "__main__":
    raise SystemExit(main())
