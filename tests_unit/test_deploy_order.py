"""The cascade's deploy order (`after:`) against the sandbox: verified predecessors first, failures stop what
follows them, independent partitions overlap; at -n 0 and -n 4, and from the execution log."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from sandbox.suite import POSTMERGE_CHECKS, QUICK_CODE, suite_args
from tests_unit.test_deploy import _variant

LOG = (Path(__file__).parent / "data" / "execution-log.md").read_text(encoding="utf-8")
SANDBOX_DEPLOY = f"{shlex.quote(sys.executable)} -m sandbox deploy {{infrastructure}} {{partition}}"


def _timed(times: Path, fail: str = "") -> str:
    """A deploy command that records when each partition's deploy starts and ends (and fails for `fail`)."""
    mark = f"{shlex.quote(sys.executable)} -c 'import sys, time; print(sys.argv[1], sys.argv[2], time.time())'"
    log = shlex.quote(str(times))
    failing = f"if [ {{partition}} = {fail} ]; then exit 3; fi; " if fail else ""
    return (
        f"{mark} start {{partition}} >> {log}; {failing}sleep 2; {SANDBOX_DEPLOY} && {mark} end {{partition}} >> {log}"
    )


def _times(path: Path) -> dict[tuple[str, str], float]:
    rows = [line.split() for line in path.read_text().splitlines()]
    return {(what, partition): float(at) for what, partition, at in rows}


def _deploys(reports: Path) -> dict[str, dict]:
    return {d["partition"]: d for d in json.loads((reports / "latest" / "signoff.json").read_text())["deploys"]}


def test_a_failed_predecessor_stops_every_partition_after_it(scenarios, run_checks, tmp_path: Path) -> None:
    times = tmp_path / "times.txt"
    partitions = _variant(scenarios, tmp_path, **QUICK_CODE, deploy=_timed(times, fail="dev"))
    run = run_checks("--deploy", "--confirm-production", "prod", "--partitions-file", partitions)
    assert run.ret == pytest.ExitCode.TESTS_FAILED
    assert [key for key in _times(times)] == [("start", "dev")], "only dev may have been deployed"
    assert "deploy failed: " in run.messages["test_stack_status[dev]"]
    for name in ("stage", "demo"):
        assert {run.outcomes[f"{check}[{name}]"] for check in POSTMERGE_CHECKS} == {"error"}
        message = run.messages[f"test_stack_status[{name}]"]
        assert f"not deployed: {name} needs dev verified first; dev was not verified in this run: deploy failed:" in (
            message
        )
    prod = run.messages["test_stack_status[prod]"]
    assert "not deployed: prod needs stage verified first; stage was not verified in this run: not deployed: " in prod
    assert "prod needs demo verified first" in prod
    deploys = _deploys(tmp_path / "reports")
    assert deploys["prod"]["refused"].startswith("prod needs stage verified first")
    assert not deploys["prod"]["confirmed_by"], "a refused deploy never reaches the production confirmation"


def test_under_xdist_each_waits_for_its_predecessors_verdict_and_independent_ones_overlap(
    scenarios, pytester, tmp_path: Path
) -> None:
    times = tmp_path / "times.txt"
    partitions = _variant(scenarios, tmp_path, **QUICK_CODE, deploy=_timed(times))
    reports = tmp_path / "reports"
    args = ("-n", "4", "--deploy", "--confirm-production", "prod", "-q")
    result = pytester.runpytest_subprocess(
        *suite_args(*args, partitions_file=partitions, reports_dir=reports), timeout=900
    )
    assert result.ret == 0, result.stdout.str()[-4000:]
    at = _times(times)
    for name in ("stage", "demo"):
        assert at["start", name] > at["end", "dev"], f"{name} was deployed before dev was verified: {at}"
        assert at["start", "prod"] > at["end", name], f"prod was deployed before {name} was verified: {at}"
    overlap = f"stage and demo (both only after dev) should deploy at the same time: {at}"
    assert at["start", "demo"] < at["end", "stage"], overlap
    assert at["start", "stage"] < at["end", "demo"], overlap
    deploys = _deploys(reports)
    checks = len(POSTMERGE_CHECKS)
    assert deploys["prod"]["relied"] == [
        f"stage verified in this run ({checks} postmerge checks passed)",
        f"demo verified in this run ({checks} postmerge checks passed)",
    ]
    result.stdout.fnmatch_lines([f"deploy order: prod: stage verified in this run ({checks} postmerge checks passed)"])


def test_a_predecessor_outside_the_run_counts_as_verified_from_the_execution_log(
    scenarios, run_checks, tmp_path: Path
) -> None:
    log = tmp_path / "log.md"
    log.write_text(LOG, encoding="utf-8")
    partitions = _variant(scenarios, tmp_path, after={"prod": ["stage", "demo"]}, **QUICK_CODE)
    args = ("--partition", "prod", "--deploy", "--confirm-production", "prod", "--signoff-log", str(log))
    run = run_checks(*args, "--partitions-file", partitions)
    assert {run.outcomes[f"{check}[prod]"] for check in POSTMERGE_CHECKS} == {"passed"}, run.messages
    assert _deploys(tmp_path / "reports")["prod"]["relied"] == [
        f"stage counted as verified from the execution log {log}: Verified ✅ 2026-05-26",
        f"demo counted as verified from the execution log {log}: Verified ✅ 2026-05-26",
    ]
    red = "| demo | Alpha001 | PostmarkProd | ✅ 2026-11-30 | ✅ 2026-11-30 | ❌ 2026-11-30 1 failed: test_dkim | — |"
    demo = next(line for line in LOG.splitlines() if line.startswith("| demo |"))
    log.write_text(LOG.replace(demo, red), encoding="utf-8")
    scenarios.reset()
    run = run_checks(*args, "--partitions-file", partitions)
    assert {run.outcomes[f"{check}[prod]"] for check in POSTMERGE_CHECKS} == {"error"}
    assert (
        "not deployed: prod needs demo verified first; the execution log says ❌ 2026-11-30 1 failed: test_dkim"
        in run.messages["test_stack_status[prod]"]
    )
    log.unlink()
    run = run_checks("--partition", "prod", "--deploy", "--confirm-production", "prod", "--partitions-file", partitions)
    assert (
        "prod needs stage verified first; stage's postmerge checks are not part of this run and no execution log is "
        "configured (signoff.log / --signoff-log)" in run.messages["test_stack_status[prod]"]
    )
