"""One check's outcome from its setup, call and teardown reports: one rule for the deploy gate, the sign-off rows
and the suite's own tests.

A failing call is `failed`, a failing setup or teardown `error` (a failure outranks what came before or after);
a skip is `skipped`, or `xfailed` when the check was expected to fail (a waiver); a passing call is `passed`, or
`xpassed` when it was expected to fail. Setup and teardown that pass say nothing.
"""

from __future__ import annotations

import pytest

PASSED_OUTCOMES = frozenset({"passed", "xpassed"})
FAILED_OUTCOMES = frozenset({"failed", "error"})


def merge(outcome: str | None, report: pytest.TestReport) -> str | None:
    """The check's outcome so far (None: nothing known yet) after one more of its reports."""
    expected_to_fail = hasattr(report, "wasxfail")
    if report.failed:
        return "failed" if report.when == "call" or outcome == "failed" else "error"
    if outcome in FAILED_OUTCOMES:
        return outcome
    if report.skipped:
        return "xfailed" if expected_to_fail else "skipped"
    if report.when == "call":
        return "xpassed" if expected_to_fail else "passed"
    return outcome
