"""The infrastructure repo is clean and builds, lints and tests: once per run, whatever the partitions."""

from __future__ import annotations

import pytest

from plugins.partitions import Selection
from plugins.preflight import InfraRunner
from plugins.report import Evidence
from probes import repo

pytestmark = [pytest.mark.preflight, pytest.mark.code]


def test_infra_repo_clean(selection: Selection, request: pytest.FixtureRequest, evidence: Evidence) -> None:
    status = repo.status(selection.infra_repo)
    evidence.add(
        f"git status of {status.path}", [f"HEAD {status.head} ({status.branch})", *status.modified, *status.untracked]
    )
    assert status.problem is None, str(status.problem)
    problems = [f"modified: {name}" for name in status.modified] + [f"untracked: {name}" for name in status.untracked]
    assert not problems, (
        f"infrastructure repo {status.path} is not clean ({len(problems)} file(s)):\n  "
        + "\n  ".join(problems)
        + "\ncommit or remove them, so the checks judge what will be merged"
    )
    expected = request.config.getoption("expect_head")
    if expected:
        assert status.head is not None, (
            f"infrastructure repo {status.path} has no HEAD commit, expected {expected} (--expect-head): "
            "check out the pull request's head commit"
        )
        assert status.head.startswith(expected), (
            f"infrastructure repo HEAD is {status.head}, expected {expected} (--expect-head): "
            "check out the pull request's head commit"
        )


def _judge(infra: InfraRunner, step: str, evidence: Evidence) -> None:
    result = infra.command(step)
    evidence.add(result.describe(), result.tail)
    assert result.ok, result.explained()


def test_build(infra: InfraRunner, evidence: Evidence) -> None:
    _judge(infra, "build", evidence)


def test_lint(infra: InfraRunner, evidence: Evidence) -> None:
    _judge(infra, "lint", evidence)


def test_unit_tests(infra: InfraRunner, evidence: Evidence) -> None:
    _judge(infra, "test", evidence)
