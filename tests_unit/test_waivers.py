"""Waivers through pytester: waived, expired, no longer needed, malformed files, the option, xdist."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

TODAY = date.today().isoformat()
PLUGINS = ("-p", "plugins.signoff", "-p", "plugins.waivers", "-p", "no:hypothesispytest")
LOG = (Path(__file__).parent / "data" / "execution-log.md").read_text(encoding="utf-8")

# FAIL names the checks that fail ("test_dmarc[dev]"); ERROR the ones whose fixture errors before the check runs
CHECKS = """
import pytest

FAIL = {fail!r}
ERROR = {error!r}
pytestmark = pytest.mark.postmerge


@pytest.fixture
def reached(target, request):
    if request.node.name in ERROR:
        pytest.fail("not deployed: prod needs stage verified first", pytrace=False)


def test_dmarc(target, reached):
    assert "test_dmarc[" + target.name + "]" not in FAIL, f"no DMARC record at _dmarc.{{target.zone}}"


def test_spf(target):
    assert "test_spf[" + target.name + "]" not in FAIL, "no SPF record"
"""

WAIVER = """
- check: test_dmarc
  partition: dev
  reason: the DMARC mailbox moves next week
  expires: {expires}
  by: Jane Operator
"""


@pytest.fixture
def project(checks_project: pytest.Pytester) -> pytest.Pytester:
    """A checks project with an execution log (log.md), for waived cells."""
    checks_project.path.joinpath("log.md").write_text(LOG, encoding="utf-8")
    return checks_project


def _run(
    project: pytest.Pytester,
    *args: str,
    waivers: str,
    fail: tuple[str, ...] = (),
    error: tuple[str, ...] = (),
    xdist: bool = False,
) -> pytest.RunResult:
    folder = project.path / "tests_postmerge"
    folder.mkdir(exist_ok=True)
    (folder / "test_post.py").write_text(CHECKS.format(fail=list(fail), error=list(error)))
    (project.path / "waivers.yaml").write_text(waivers)
    common = (*PLUGINS, "--reports-dir", "out", "--signoff-log", "log.md", "--waivers", "waivers.yaml", "-rxX", *args)
    if xdist:
        return project.runpytest_subprocess("-n", "2", *common, timeout=180)
    return project.runpytest(*common)


def _verified(project: pytest.Pytester, partition: str) -> str:
    rows = json.loads((project.path / "out" / "latest" / "signoff.json").read_text())["rows"]
    return next(row["Verified"] for row in rows if row["Partition"] == partition)


def _log_row(project: pytest.Pytester, partition: str) -> str:
    text = (project.path / "log.md").read_text(encoding="utf-8")
    return next(line for line in text.splitlines() if line.startswith(f"| {partition} |"))


@pytest.mark.parametrize("xdist", [False, True], ids=["n0", "n2"])
def test_a_failing_check_with_an_unexpired_waiver_is_waived(project: pytest.Pytester, xdist: bool) -> None:
    result = _run(
        project, "--partition", "dev,prod", waivers=WAIVER.format(expires="2999-12-31"), fail=("test_dmarc[dev]",)
    )
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=3, xfailed=1)
    waived = "waived: test_dmarc (the DMARC mailbox moves next week; until 2999-12-31, by Jane Operator)"
    result.stdout.fnmatch_lines([f"XFAIL *test_dmarc[[]dev[]] - {waived}: no DMARC record at _dmarc.dev.*"])
    assert _verified(project, "dev") == f"⚠️ {TODAY} {waived}"
    assert _verified(project, "prod") == f"✅ {TODAY}"
    assert _log_row(project, "dev").split(" | ")[5] == f"⚠️ {TODAY} {waived}"
    document = json.loads((project.path / "out" / "latest" / "signoff.json").read_text())
    [check] = [c for c in document["checks"] if c["nodeid"].endswith("test_dmarc[dev]")]
    assert (check["outcome"], check["waiver"]["state"]) == ("xfailed", "waived")
    assert check["waiver"]["where"] == f"{project.path / 'waivers.yaml'}:2"


def test_a_waiver_past_its_expiry_does_not_waive(project: pytest.Pytester) -> None:
    result = _run(project, "--partition", "dev", waivers=WAIVER.format(expires="2000-01-31"), fail=("test_dmarc[dev]",))
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*the waiver for test_dmarc (the DMARC mailbox moves next week; until 2000-01-31, by Jane Operator) "
            f"expired on 2000-01-31 ({project.path / 'waivers.yaml'}:2); fix the check or renew the waiver: "
            "no DMARC record at _dmarc.dev.*",
            "waiver expired on 2000-01-31: tests_postmerge/test_post.py::test_dmarc[[]dev[]] failed; *waivers.yaml:2",
        ]
    )
    assert _verified(project, "dev") == f"❌ {TODAY} 1 failed: test_dmarc"


def test_a_waiver_whose_check_passes_is_no_longer_needed(project: pytest.Pytester) -> None:
    result = _run(project, "--partition", "dev", waivers=WAIVER.format(expires="2999-12-31"))
    assert result.ret == 0
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "waiver no longer needed: tests_postmerge/test_post.py::test_dmarc[[]dev[]] passed; remove test_dmarc "
            "(the DMARC mailbox moves next week; until 2999-12-31, by Jane Operator) "
            f"from {project.path}/waivers.yaml:2"
        ]
    )
    assert _verified(project, "dev") == f"✅ {TODAY}"


def test_a_waiver_without_partition_covers_every_partition_and_only_its_check(project: pytest.Pytester) -> None:
    waivers = "- {check: test_spf, reason: SPF flattening in review, expires: 2999-01-01, by: Sam}\n"
    fail = ("test_spf[dev]", "test_spf[stage]", "test_dmarc[stage]")
    result = _run(project, "--partition", "dev,stage", waivers=waivers, fail=fail)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=1, xfailed=2)
    assert (
        _verified(project, "dev") == f"⚠️ {TODAY} waived: test_spf (SPF flattening in review; until 2999-01-01, by Sam)"
    )
    assert _verified(project, "stage") == f"❌ {TODAY} 1 failed: test_dmarc"


def test_an_error_before_the_check_runs_is_not_waived(project: pytest.Pytester) -> None:
    result = _run(
        project, "--partition", "dev", waivers=WAIVER.format(expires="2999-12-31"), error=("test_dmarc[dev]",)
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*not deployed: prod needs stage verified first*"])


def test_the_partitions_file_names_the_waivers_and_the_option_overrides_it(project: pytest.Pytester) -> None:
    text = (project.path / "partitions.yaml").read_text().replace("waivers: null", "waivers: accepted.yaml")
    (project.path / "partitions.yaml").write_text(text)
    (project.path / "accepted.yaml").write_text(WAIVER.format(expires="2999-12-31"))
    folder = project.path / "tests_postmerge"
    folder.mkdir()
    (folder / "test_post.py").write_text(CHECKS.format(fail=["test_dmarc[dev]"], error=[]))
    from_file = project.runpytest(*PLUGINS, "--reports-dir", "out", "--partition", "dev")
    from_file.assert_outcomes(passed=1, xfailed=1)
    (project.path / "none.yaml").write_text("# nothing waived\n")
    overridden = project.runpytest(*PLUGINS, "--reports-dir", "out", "--partition", "dev", "--waivers=none.yaml")
    overridden.assert_outcomes(passed=1, failed=1)


MALFORMED = [
    pytest.param(
        "- check: test_dmarc\n  expires: 2999-12-31\n  by: Jane\n",
        "1: waiver 1, reason: missing; every waiver needs check, reason, expires, by",
        id="missing-field",
    ),
    pytest.param(
        "- check: test_dmarc\n  reason: r\n  by: Jane\n  expires: 2026-13-01\n",
        "4: waiver 1, expires: not a date: '2026-13-01'; write it as YYYY-MM-DD",
        id="bad-date",
    ),
    pytest.param(
        "- {check: test_spf, reason: r, expires: 2999-12-31, by: J}\n- check: test_dmark\n"
        "  reason: r\n  expires: 2999-12-31\n  by: Jane\n",
        "2: waiver 2, check: unknown check 'test_dmark' (did you mean 'test_dmarc'?); name a check function such as*",
        id="unknown-check",
    ),
    pytest.param(
        "- check: test_dmarc\n  reason: r\n  expires: 2999-12-31\n  by: Jane\n  partition: qa\n",
        "5: waiver 1, partition: unknown partition 'qa'; known: dev, stage, demo, prod",
        id="unknown-partition",
    ),
    pytest.param(
        "- check: test_dmarc\n  reason: '  '\n  expires: 2999-12-31\n  by: Jane\n",
        "2: waiver 1, reason: must not be empty: say why the failure is accepted and who accepted it",
        id="blank-reason",
    ),
    pytest.param(
        "- check: test_dmarc\n  reason: r\n  expires: 2999-12-31\n  approved_by: Jane\n",
        "4: waiver 1, approved_by: unknown field; allowed: check, partition, reason, expires, by",
        id="unknown-field",
    ),
    pytest.param("check: test_dmarc\n", "1: expected a YAML list of waivers *; got a dict", id="not-a-list"),
]


@pytest.mark.parametrize(("waivers", "says"), MALFORMED)
def test_a_malformed_waivers_file_stops_the_run_before_any_test(
    project: pytest.Pytester, waivers: str, says: str
) -> None:
    result = _run(project, "--partition", "dev", waivers=waivers)
    _stopped(project, result, says)


def test_an_unknown_check_stops_an_xdist_run_before_the_workers_start(project: pytest.Pytester) -> None:
    waivers = "- {check: test_dmark, reason: r, expires: 2999-12-31, by: J}\n"
    result = _run(project, "--partition", "dev", waivers=waivers, xdist=True)
    _stopped(project, result, "1: waiver 1, check: unknown check 'test_dmark' (did you mean 'test_dmarc'?)*")


def _stopped(project: pytest.Pytester, result: pytest.RunResult, says: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {project.path / 'waivers.yaml'}:{says}"])
    errors = [line for line in result.stderr.lines if line.strip()]
    assert len(errors) == 1, result.stderr.str()
    assert "passed" not in result.stdout.str()
    assert "failed" not in result.stdout.str()


PROMPT_CHECK = """
import io
import pytest
from plugins.deploy import _confirm


@pytest.mark.postmerge
def test_dmarc(target, request, monkeypatch):
    asked = []
    tty = io.StringIO()
    tty.isatty = lambda: True
    monkeypatch.setattr("sys.stdin", tty)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or target.name)
    assert _confirm(request.config, target) == "prompt"
    open("prompt.txt", "w").write(asked[0])
"""


def test_the_production_confirmation_prompt_lists_the_waivers_that_apply(project: pytest.Pytester) -> None:
    (project.path / "tests_postmerge").mkdir()
    (project.path / "tests_postmerge" / "test_post.py").write_text(PROMPT_CHECK)
    waivers = WAIVER.format(expires="2999-12-31").replace("partition: dev", "partition: prod")
    waivers += "- {check: test_dmarc, partition: dev, reason: other, expires: 2999-01-01, by: Sam}\n"
    (project.path / "waivers.yaml").write_text(waivers)
    result = project.runpytest(
        *PLUGINS, "-p", "plugins.deploy", "--partition", "prod", "--waivers", "waivers.yaml", "-s"
    )
    assert result.ret == 0, result.stdout.str()
    assert (project.path / "prompt.txt").read_text() == (
        "\nwaivers that apply to prod (1):\n"
        "  test_dmarc (the DMARC mailbox moves next week; until 2999-12-31, by Jane Operator) "
        f"[{project.path / 'waivers.yaml'}:2]\n"
        "Deploy production partition prod? Type its name to confirm: "
    )
