"""Secrets never shown: the whole suite runs with canary tokens and failures forced in every Postmark check, and no
report, log or terminal line holds a token in any form (plain, base64 std/urlsafe, URL-encoded).

Nothing lost: neither run deploys, so neither writes to AWS; the run with --no-postmark-verify writes nothing to
Postmark either.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import yaml

from sandbox.scenarios import Scenarios
from sandbox.suite import suite_args

CANARY = "mg-CANARY+tok/3n=9 Zq&x?>"  # rejected by Postmark: every dev check gets a 401 carrying it in a header
CANARY_ENV = "MAILGATE_TRUST_CANARY"
PARTITIONS = "dev,stage"


def forms(value: str) -> set[str]:
    """Every way a token could be written out: plain, base64 (std/urlsafe, with or without padding), URL-encoded."""
    raw = value.encode()
    encoded = {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
    return (
        {value, quote(value), quote(value, safe=""), quote_plus(value), quote_plus(value, safe="")}
        | encoded
        | {e.rstrip("=") for e in encoded}
    )


def leaks(texts: dict[str, bytes], secrets: list[str]) -> list[str]:
    """'<where>: <form>' for every form of every secret found in the texts."""
    wanted = {form.encode(): secret for secret in secrets for form in forms(secret)}
    return [f"{where}: {form.decode()!r}" for where, data in texts.items() for form in wanted if form in data]


def report_files(reports: Path) -> dict[str, bytes]:
    return {str(path.relative_to(reports)): path.read_bytes() for path in sorted(reports.rglob("*")) if path.is_file()}


def test_every_form_of_the_canary_is_searched() -> None:
    found = forms(CANARY)
    assert len(found) >= 8, found  # the canary has characters that every encoding changes differently
    for form in found:
        assert leaks({"text": f"before {form} after".encode()}, [CANARY]), form


@pytest.fixture
def canary_world(scenarios: Scenarios, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """dev reads the canary from the environment (Postmark rejects it: 401 everywhere); stage reads the world's real
    token with `op` and finds its domain stuck unverified with a wrong DKIM key. Returns the partitions file and
    every token in play."""
    scenarios.seed("dev")
    scenarios.seed("stage", defects=["postmark-stuck", "dkim-one-char"], verified=False)
    data: dict[str, Any] = yaml.safe_load(Path(scenarios.world.info.partitions_file).read_text())
    data["partitions"]["dev"]["credential"] = f"env:{CANARY_ENV}"
    # build, lint, tests and cdk diff take most of a minute and never see a token: stand-ins that log (synth is real)
    no_differences = "printf 'Stack {infrastructure}-{partition}-Email\\nThere were no differences\\n'"
    data["infra"].update(build="echo build ok", lint="echo lint ok", test="echo 'tests ok'", diff=no_differences)
    path = tmp_path / "partitions-canary.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setenv(CANARY_ENV, CANARY)
    scenarios.world.aws.calls.clear()  # the seeding's writes; the runs' own are judged
    scenarios.world.postmark.calls.clear()
    return path, [CANARY, scenarios.world.tokens["PostmarkNonProd"]]


def _args(partitions: Path, reports: Path, *extra: str) -> list[str]:
    return suite_args(
        "--partition",
        PARTITIONS,
        "--postmark-wait",
        "1",
        "-vv",
        "--showlocals",
        "-rA",
        "--log-level=DEBUG",
        *extra,
        partitions_file=str(partitions),
        reports_dir=reports,
    )


def _judge_reports(reports: Path, out: str, secrets: list[str]) -> dict[str, bytes]:
    files = report_files(reports)
    kinds = {Path(name).suffix for name in files}
    assert {".html", ".xml", ".log"} <= kinds, f"reports missing: {sorted(files)}"
    names = {Path(name).name for name in files}  # a run's files sit in reports/<run>/
    assert {"signoff.json", "signoff.md"} <= names, f"sign-off files missing: {sorted(files)}"
    for kind in (".xml", ".html", "signoff.json"):
        text = next(data for name, data in files.items() if name.endswith(kind))
        for forced in (b"answered 401", b"DKIM NOT verified", b"differs from cdk.context.json"):
            assert forced in text, f"the forced failure {forced!r} is not in the {kind} report: its scan proves nothing"
    assert "FAILED" in out
    return files


def test_whole_suite_in_process_shows_no_token(
    canary_world: tuple[Path, list[str]], pytester: pytest.Pytester, tmp_path: Path, scenarios: Scenarios
) -> None:
    partitions, secrets = canary_world
    reports = tmp_path / "reports"
    result = pytester.runpytest_inprocess(*_args(partitions, reports))
    out = result.stdout.str() + result.stderr.str()
    files = _judge_reports(reports, out, secrets)
    found = leaks({"stdout/stderr": out.encode(), **files}, secrets)
    assert not found, "token shown:\n  " + "\n  ".join(found)
    statuses = {(c.account, c.status) for c in scenarios.world.postmark.calls}
    assert (None, 401) in statuses, "the canary was never sent: dev's checks did not reach Postmark"
    assert ("PostmarkNonProd", 200) in statuses, "stage's real token was never used"
    assert [c.path for c in scenarios.world.postmark.writes()], "verification was triggered for stage"
    assert scenarios.world.aws.writes() == [], "a run without --deploy wrote to AWS"


def test_whole_suite_under_xdist_shows_no_token_and_only_reads(
    canary_world: tuple[Path, list[str]], pytester: pytest.Pytester, tmp_path: Path, scenarios: Scenarios
) -> None:
    """-n 2 in a fresh process: the controller never resolves a token, so workers must redact before sending."""
    partitions, secrets = canary_world
    reports = tmp_path / "reports"
    result = pytester.run(
        sys.executable, "-m", "pytest", *_args(partitions, reports, "-n", "2", "--no-postmark-verify"), timeout=300
    )
    out = result.stdout.str() + result.stderr.str()
    files = _judge_reports(reports, out, secrets)
    found = leaks({"stdout/stderr": out.encode(), **files}, secrets)
    assert not found, "token shown:\n  " + "\n  ".join(found)
    assert scenarios.world.postmark.calls, "Postmark was asked"
    assert scenarios.world.postmark.writes() == [], "--no-postmark-verify wrote to Postmark"
    assert scenarios.world.aws.writes() == [], "a run without --deploy wrote to AWS"


def test_secret_reprs_in_messages_and_tracebacks(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Secret in an f-string, %-format, a container, a failed comparison and --showlocals: the reference only."""
    monkeypatch.setenv(CANARY_ENV, CANARY)
    pytester.makepyfile(
        test_leak=f"""
import os

from probes.secrets import Secret


def test_compare():
    token = Secret("env:{CANARY_ENV}", os.environ["{CANARY_ENV}"])
    held = {{"token": token, "list": [token]}}
    print(f"{{token}} %s {{token!r}} {{held}}" % token)
    assert token == Secret("env:OTHER", "something-else")
"""
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-vv", "--showlocals", "-rA")
    out = result.stdout.str()
    result.assert_outcomes(failed=1)
    assert f"Secret(env:{CANARY_ENV}: ****) %s" not in out, "the print ran"
    assert f"Secret(env:{CANARY_ENV}: ****) Secret(env:{CANARY_ENV}: ****) Secret(env:{CANARY_ENV}: ****)" in out
    assert f"token      = Secret(env:{CANARY_ENV}: ****)" in out, "--showlocals shows the reference"
    assert leaks({"output": out.encode()}, [CANARY]) == []
