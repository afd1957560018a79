"""The gated deploy against the sandbox: it runs only behind its gates, once, and reports truthfully."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sandbox.suite import POSTMERGE_CHECKS, QUICK_CODE, suite_args


def _variant(scenarios, tmp_path: Path, after: dict[str, list[str]] | None = None, **infra: str) -> str:
    """The world's partitions file with some commands replaced (`deploy=` for the deploy command) and, with
    `after`, some partitions' deploy order."""
    data = yaml.safe_load(Path(scenarios.world.info.partitions_file).read_text())
    for name, before in (after or {}).items():
        data["partitions"][name]["after"] = before
    deploy = infra.pop("deploy", None)
    data["infra"].update(infra)
    if deploy is not None:
        data["deploy"]["command"] = deploy
    path = tmp_path / "partitions.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_without_deploy_nothing_is_written(scenarios, run_checks, tmp_path: Path) -> None:
    scenarios.seed("dev")
    scenarios.world.aws.calls.clear()
    scenarios.world.postmark.calls.clear()
    run = run_checks(
        "--partition", "dev", "--no-postmark-verify", "--partitions-file", _variant(scenarios, tmp_path, **QUICK_CODE)
    )
    assert run.failed() == set(), run.messages
    assert scenarios.world.aws.writes() == []
    assert scenarios.world.postmark.writes() == []


def test_deploy_refused_after_a_failed_preflight_check(scenarios, run_checks, tmp_path: Path) -> None:
    partitions = _variant(scenarios, tmp_path, **{**QUICK_CODE, "lint": "echo 'lint: 3 problems' && false"})
    run = run_checks("--partition", "dev", "--deploy", "--partitions-file", partitions)
    assert run.outcomes["test_lint"] == "failed"
    assert {run.outcomes[f"{check}[dev]"] for check in POSTMERGE_CHECKS} == {"error"}
    assert "not deployed: preflight check test_lint failed" in run.messages["test_stack_status[dev]"]
    assert scenarios.world.aws.writes() == []


def test_deploy_refused_when_a_preflight_check_was_deselected(scenarios, run_checks, tmp_path: Path) -> None:
    partitions = _variant(scenarios, tmp_path, **QUICK_CODE)
    run = run_checks("--partition", "dev", "--deploy", "-m", "postmerge", "--partitions-file", partitions)
    message = run.messages["test_stack_status[dev]"]
    assert "not deployed: preflight check test_infra_repo_clean did not run in this run (deselected?)" in message
    assert "preflight check test_synth_runs[dev] did not run in this run" in message


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ((), "prod is a production partition: confirm with --confirm-production prod"),
        (("--confirm-production", "demo"), "prod is a production partition: confirm with --confirm-production prod"),
    ],
    ids=["no-confirmation", "confirms-another-partition"],
)
def test_production_needs_its_own_confirmation(  # noqa: PLR0917 - fixtures and parameters
    scenarios, run_checks, tmp_path: Path, monkeypatch, args, why
) -> None:
    monkeypatch.setenv("CI", "true")
    partitions = _variant(scenarios, tmp_path, after={"prod": ["dev"]}, **QUICK_CODE)
    run = run_checks("--partition", "dev,prod", "--deploy", *args, "--partitions-file", partitions)
    assert why in run.messages["test_stack_status[prod]"]
    assert {run.outcomes[f"{check}[prod]"] for check in POSTMERGE_CHECKS} == {"error"}
    assert {run.outcomes[f"{check}[dev]"] for check in POSTMERGE_CHECKS} == {"passed"}, run.messages


def test_a_deploy_that_prints_done_and_exits_255_fails(scenarios, run_checks, tmp_path: Path) -> None:
    partitions = _variant(scenarios, tmp_path, **QUICK_CODE, deploy="echo done; exit 255")
    run = run_checks("--partition", "dev", "--deploy", "--partitions-file", partitions)
    message = run.messages["test_stack_status[dev]"]
    assert "deploy failed: `echo done; exit 255` exited 255" in message
    log = next((tmp_path / "reports" / "latest" / "logs").glob("deploy-Alpha002-dev.log")).read_text()
    assert "done" in log


def test_a_hung_deploy_is_killed_at_the_timeout(scenarios, run_checks, tmp_path: Path) -> None:
    marker = f"mailgate-hang-{os.getpid()}-{time.time_ns()}"
    script = 'trap "" TERM; sleep 300 & exec -a ' + marker + " sleep 300"
    hang = "bash -c " + shlex.quote(script)
    partitions = _variant(scenarios, tmp_path, **QUICK_CODE, deploy=hang)
    started = time.monotonic()
    run = run_checks("--partition", "dev", "--deploy", "--deploy-timeout", "2", "--partitions-file", partitions)
    assert time.monotonic() - started < 60
    assert "timed out after" in run.messages["test_stack_status[dev]"]
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False).stdout.split()
    assert left == [], f"processes of the killed deploy survived: {left}"


def test_full_path_for_four_partitions_under_xdist_deploys_each_once(scenarios, pytester, tmp_path: Path) -> None:
    """Real synth, diff, deploy and postmerge: preflight passes, each partition is deployed exactly once, postmerge
    passes. (The code steps' real build, lint and unit tests are test_preflight_checks.py's subject.)"""
    counter = tmp_path / "deploys.txt"
    sandbox_deploy = f"{shlex.quote(sys.executable)} -m sandbox deploy {{infrastructure}} {{partition}}"
    deploy = f"echo {{partition}} >> {shlex.quote(str(counter))} && {sandbox_deploy}"
    partitions = _variant(scenarios, tmp_path, **QUICK_CODE, deploy=deploy)
    result = pytester.runpytest_subprocess(
        *suite_args(
            "-n",
            "4",
            "--deploy",
            "--confirm-production",
            "prod",
            "-q",
            partitions_file=partitions,
            reports_dir=tmp_path / "reports",
        ),
        timeout=600,
    )
    assert result.ret == 0, result.stdout.str()[-4000:]
    result.stdout.fnmatch_lines(["*64 passed*"])
    assert sorted(counter.read_text().split()) == ["demo", "dev", "prod", "stage"]


def test_ctrl_c_during_a_deploy_kills_it_and_reports_the_partition_interrupted(scenarios, tmp_path: Path) -> None:
    marker = f"mailgate-ctrl-c-{os.getpid()}-{time.time_ns()}"
    partitions = _variant(scenarios, tmp_path, **QUICK_CODE, deploy=f"exec -a {marker} sleep 300")
    reports = tmp_path / "reports"
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            *suite_args("--partition", "dev", "--deploy", partitions_file=partitions, reports_dir=reports),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 180
    while not subprocess.run(["pgrep", "-f", marker], capture_output=True, check=False).stdout:
        assert run.poll() is None, "pytest ended before the deploy started"
        assert time.monotonic() < deadline, "the deploy never started"
        time.sleep(0.2)
    run.send_signal(signal.SIGINT)
    out, _ = run.communicate(timeout=60)
    assert run.returncode == pytest.ExitCode.INTERRUPTED, out[-3000:]
    assert "was interrupted after" in out
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True, check=False).stdout == b""
    signoff = json.loads((reports / "latest" / "signoff.json").read_text())
    assert signoff["complete"] is False
    table = (reports / "latest" / "signoff.md").read_text()
    assert "interrupted after" in table, table
