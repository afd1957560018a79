"""A mode never drops an option silently: `--sandbox` with an option it cannot honour refuses in one line."""

from __future__ import annotations

import pytest

from sandbox.suite import suite_args


def test_sandbox_with_infra_repo_refuses_in_one_line(pytester: pytest.Pytester) -> None:
    """The world is made from the sandbox's own CDK app; another infra repo would be judged against it."""
    result = pytester.runpytest_subprocess(*suite_args("--sandbox", "--infra-repo", str(pytester.path)), timeout=120)
    assert result.ret == 4, f"expected a usage error (exit 4), got {result.ret}:\n{result.stdout.str()}"
    errors = [line for line in result.stderr.lines if line.strip()]
    assert errors == [
        "ERROR: --sandbox deploys the sandbox's own infra app (sandbox/infra) into its world; "
        "--infra-repo cannot be combined with it: drop one of the two"
    ], result.stderr.str()
    assert "mailgate sandbox:" not in result.stdout.str(), "no world is started for a refused run"
