"""The sign-off plugin through pytester: rows per outcome mix, the execution log byte for byte, xdist, no secret."""

from __future__ import annotations

import itertools
import json
import subprocess
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import pytest

from plugins.signoff import RECORDER

ROOT = Path(__file__).resolve().parents[1]
LOG = (Path(__file__).parent / "data" / "execution-log.md").read_text(encoding="utf-8")
TODAY = date.today().isoformat()
CANARY = "pm-canary-3f9c1a7e-5b2d-4e8f-9a61-0c7d2b4e8f13"
PARTITIONS = ("dev", "stage", "demo", "prod")
OLD_ROWS = {
    "dev": "| dev | Alpha002 | PostmarkNonProd | ✅ 2026-05-26 | ✅ 2026-05-26 | ✅ 2026-05-26 | 2026-05-26 |",
    "stage": "| stage | Alpha002 | PostmarkNonProd | ✅ 2026-05-26 | ✅ 2026-05-26 | ✅ 2026-05-26 | 2026-05-26 |",
    "demo": "| demo | Alpha001 | PostmarkProd | ✅ 2026-05-26 | ✅ 2026-05-26 | ✅ 2026-05-26 | 2026-05-26 |",
    "prod": "| prod | Alpha001 | PostmarkProd | ✅ 2026-05-26 | ✅ 2026-05-26 | ✅ 2026-05-26 | 2026-05-26 |",
}
NAMES = {"dev": "Alpha002 | PostmarkNonProd", "stage": "Alpha002 | PostmarkNonProd"}
NAMES |= {"demo": "Alpha001 | PostmarkProd", "prod": "Alpha001 | PostmarkProd"}

# Fabricated checks: PLAN says what each does ("fail", "skip:<reason>", "interrupt", "crash"; default pass); DEPLOYS is
# what the deploy plugin would record for a partition (its fixture errors the postmerge checks when not ok).
CHECKS = {
    "tests_preflight/test_pre.py": """
import os

import pytest
from probes.secrets import Secret

PLAN = {plan!r}
TOKEN = Secret("env:POSTMARK_TOKEN", {canary!r})
pytestmark = pytest.mark.preflight


def act(key, evidence):
    what = PLAN.get(key, "pass")
    print("token in use:", TOKEN.reveal())
    evidence.add(f"observed for {{key}}", [f"X-Postmark-Account-Token: {{TOKEN.reveal()}}", "answer: ok"])
    if what == "interrupt":
        raise KeyboardInterrupt
    if what == "crash":
        os._exit(3)
    if what.startswith("skip:"):
        pytest.skip(what[5:])
    assert what != "fail", f"{{key}}: expected exit 0 with token {{TOKEN.reveal()}}, saw exit 1"


@pytest.mark.code
def test_build(evidence):
    act("test_build", evidence)


def test_synth(target, evidence):
    act(f"test_synth[{{target.name}}]", evidence)


def test_access(target, evidence):
    act(f"test_access[{{target.name}}]", evidence)
""",
    "tests_postmerge/test_post.py": """
import json
import pytest
from tests_preflight.test_pre import act

DEPLOYS = {deploys!r}
pytestmark = pytest.mark.postmerge


@pytest.fixture
def fake_deploy(target, request):
    record = DEPLOYS.get(target.name)
    if record is None:
        return
    request.node.user_properties.append(("mailgate_deploy", json.dumps({{"partition": target.name, **record}})))
    if not record["ok"]:
        pytest.fail("not deployed: " + (record["refused"] or "the deploy failed"), pytrace=False)


def test_dmarc(target, fake_deploy, evidence):
    evidence.add(f"TXT _dmarc.{{target.zone}} from 127.0.0.1:5353 (ns-1.sandbox)", ["v=DMARC1; p=quarantine"])
    act(f"test_dmarc[{{target.name}}]", evidence)


def test_exports(target, fake_deploy, evidence):
    act(f"test_exports[{{target.name}}]", evidence)
""",
}
OK = {"ran": True, "ok": True, "refused": None, "exit_code": 0, "duration": 12.5, "log": "deploy.log"}
OK |= {"confirmed_by": None, "interrupted": False}
REFUSED = OK | {
    "ran": False,
    "ok": False,
    "refused": "prod is a production partition: confirm with --confirm-production",
}
REFUSED |= {"exit_code": None, "duration": 0.0, "log": None}
# hypothesis's plugin imports hypothesis in every in-process run (pytester then unloads it): 1 s a run saved
PLUGINS = ("-p", "plugins.signoff", "-p", "no:hypothesispytest")
EXIT_255 = OK | {"ok": False, "exit_code": 255, "log": "reports/logs/deploy-Alpha002-dev.log"}


@pytest.fixture
def project(checks_project: pytest.Pytester) -> pytest.Pytester:
    """A checks project with an execution log (log.md) whose cascade table the run updates."""
    pytester = checks_project
    pytester.path.joinpath("log.md").write_text(LOG, encoding="utf-8")
    return pytester


def _write_checks(project: pytest.Pytester, plan: dict[str, str], deploys: dict[str, dict]) -> None:
    for path, template in CHECKS.items():
        target = project.path / path
        target.parent.mkdir(exist_ok=True)
        target.parent.joinpath("__init__.py").touch()
        target.write_text(template.format(plan=plan, deploys=deploys, canary=CANARY))


def _run(
    project: pytest.Pytester,
    *args: str,
    plan: dict | None = None,
    deploys: dict | None = None,
    xdist: bool = False,
    isolated: bool = False,
) -> pytest.RunResult:
    _write_checks(project, plan or {}, deploys or {})
    common = (*PLUGINS, "--reports-dir", "out", "--signoff-log", "log.md", *args)
    if xdist:
        return project.runpytest_subprocess("-n", "2", *common, timeout=120)
    if isolated:
        return project.runpytest_subprocess(*common, timeout=120)
    return project.runpytest(*common)


def _md_rows(project: pytest.Pytester, folder: Path | None = None) -> dict[str, list[str]]:
    """The sign-off table's rows in the newest run's folder (the verdict matrix after it is another table)."""
    signoff = (folder or project.path / "out" / "latest") / "signoff.md"
    lines = signoff.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Partition")) + 1
    rows = list(itertools.takewhile(lambda line: line.startswith("| "), lines[start:]))
    cells = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in rows if "---" not in line]
    return {row[0]: row[3:] for row in cells}


def _log_row(partition: str, preflight: str, deploy: str, verified: str, signoff: str) -> str:
    return f"| {partition} | {NAMES[partition]} | {preflight} | {deploy} | {verified} | {signoff} |"


ALL_OK = [f"✅ {TODAY}", "—", f"✅ {TODAY}", "—"]
MIXES = {
    "all pass, all deployed": (
        {},
        dict.fromkeys(PARTITIONS, OK),
        dict.fromkeys(PARTITIONS, [f"✅ {TODAY}"] * 3 + [TODAY]),
    ),
    "one failure": (
        {"test_synth[stage]": "fail"},
        {},
        dict.fromkeys(PARTITIONS, ALL_OK) | {"stage": [f"❌ {TODAY} 1 failed: test_synth", "—", f"✅ {TODAY}", "—"]},
    ),
    "a partition-independent failure counts for every partition": (
        {"test_build": "fail"},
        {},
        {key: [f"❌ {TODAY} 1 failed: test_build", "—", f"✅ {TODAY}", "—"] for key in PARTITIONS},
    ),
    "skipped": (
        {"test_access[demo]": "skip:no SSO session for Admin-Alpha1"},
        {},
        dict.fromkeys(PARTITIONS, ALL_OK)
        | {"demo": [f"🟡 {TODAY} 1 skipped: test_access (no SSO session for Admin-Alpha1)", "—", f"✅ {TODAY}", "—"]},
    ),
    "failure beats skip, names listed": (
        {"test_synth[dev]": "fail", "test_access[dev]": "fail", "test_exports[dev]": "skip:later"},
        {},
        dict.fromkeys(PARTITIONS, ALL_OK)
        | {
            "dev": [
                f"❌ {TODAY} 2 failed: test_synth, test_access",
                "—",
                f"🟡 {TODAY} 1 skipped: test_exports (later)",
                "—",
            ]
        },
    ),
    "deploy refused: Verified not judged": (
        {},
        {"prod": REFUSED, "dev": OK},
        dict.fromkeys(PARTITIONS, ALL_OK)
        | {"dev": [f"✅ {TODAY}"] * 3 + [TODAY]}
        | {"prod": [f"✅ {TODAY}", f"🟡 {TODAY} refused: {REFUSED['refused']}", "—", "—"]},
    ),
    "deploy failed": (
        {},
        {"dev": EXIT_255},
        dict.fromkeys(PARTITIONS, ALL_OK)
        | {"dev": [f"✅ {TODAY}", f"❌ {TODAY} exit 255 (log reports/logs/deploy-Alpha002-dev.log)", "—", "—"]},
    ),
}


@pytest.mark.parametrize("mix", list(MIXES))
def test_rows_for_every_outcome_mix(project: pytest.Pytester, mix: str) -> None:
    plan, deploys, expected = MIXES[mix]
    result = _run(project, plan=plan, deploys=deploys)
    assert result.ret in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
    rows = _md_rows(project)
    assert list(rows) == list(PARTITIONS)
    assert rows == expected
    document = json.loads((project.path / "out" / "latest" / "signoff.json").read_text(encoding="utf-8"))
    assert [row["Partition"] for row in document["rows"]] == list(PARTITIONS)
    assert {
        row["Partition"]: [row[c] for c in ("Pre-flight", "Deploy", "Verified", "Sign-off date")]
        for row in document["rows"]
    } == expected


def test_json_records_the_run_and_every_check(project: pytest.Pytester) -> None:
    infra = project.path / "infra"
    infra.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@e", "-C", str(infra)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    _run(project, "--infra-repo", "infra", "--partition", "dev,prod", plan={"test_synth[prod]": "fail"})
    document = json.loads((project.path / "out" / "latest" / "signoff.json").read_text(encoding="utf-8"))
    run = document["run"]
    assert document["complete"] is True
    assert document["exitstatus"] == 1
    assert run["command"].startswith(f"pytest {' '.join(PLUGINS)} --reports-dir out --signoff-log log.md --infra-repo")
    assert run["partitions_file"] == str(project.path / "partitions.yaml")
    assert run["partitions"] == ["dev", "prod"]
    assert (run["infra_head"], run["infra_head_problem"], run["infra_head_at_end"]) == (head, None, head)
    assert run["options"]["partition"] == "dev,prod"
    assert run["date"] == TODAY
    assert run["start"] <= run["end"]
    checks = {c["nodeid"]: c for c in document["checks"]}
    assert len(checks) == 1 + 2 * 2 + 2 * 2
    failed = checks["tests_preflight/test_pre.py::test_synth[prod]"]
    assert failed["partition"] == "prod"
    assert failed["phase"] == "preflight"
    assert failed["check"] == "test_synth"
    assert failed["outcome"] == "failed"
    assert failed["message"] == "test_synth[prod]: expected exit 0 with token ****, saw exit 1"
    assert failed["evidence"] == ["observed for test_synth[prod]\nX-Postmark-Account-Token: ****\nanswer: ok"]
    assert failed["duration"] >= 0
    build = checks["tests_preflight/test_pre.py::test_build"]
    assert (build["partition"], build["outcome"]) == (None, "passed")
    assert checks["tests_postmerge/test_post.py::test_dmarc[dev]"]["phase"] == "postmerge"
    (infra / "sub").mkdir()
    _run(project, "--infra-repo", "infra/sub", "--partition", "dev")
    run = json.loads((project.path / "out" / "latest" / "signoff.json").read_text(encoding="utf-8"))["run"]
    assert run["infra_head"] is None
    assert run["infra_head_problem"] == f"infrastructure repo {infra / 'sub'} is not a git repository (inside {infra})"


MIXED = {"plan": {"test_synth[stage]": "fail"}, "deploys": {"prod": REFUSED, "dev": OK}}


def _mixed_log() -> str:
    """The realistic log after a full run of MIXED: which cells change, and to what."""
    rows = {
        "dev": (f"✅ {TODAY}", f"✅ {TODAY}", f"✅ {TODAY}", TODAY),
        "stage": (f"❌ {TODAY} 1 failed: test_synth", "✅ 2026-05-26", f"✅ {TODAY}", "—"),
        "demo": (f"✅ {TODAY}", "✅ 2026-05-26", f"✅ {TODAY}", TODAY),
        "prod": (f"✅ {TODAY}", f"🟡 {TODAY} refused: {REFUSED['refused']}", "✅ 2026-05-26", "—"),
    }
    expected = LOG
    for partition, cells in rows.items():
        expected = expected.replace(OLD_ROWS[partition], _log_row(partition, *cells))
    return expected


def test_realistic_log_changes_only_in_the_expected_cells(project: pytest.Pytester) -> None:
    result = _run(project, **MIXED)
    assert (project.path / "log.md").read_bytes() == _mixed_log().encode()
    result.stdout.fnmatch_lines([f"execution log {project.path / 'log.md'}: updated dev, stage, demo, prod"])


def test_rerun_of_postmerge_only_keeps_the_earlier_preflight(project: pytest.Pytester) -> None:
    _run(project, "-m", "postmerge", "--partition", "stage")
    row = _log_row("stage", "✅ 2026-05-26", "✅ 2026-05-26", f"✅ {TODAY}", TODAY)
    assert (project.path / "log.md").read_text(encoding="utf-8") == LOG.replace(OLD_ROWS["stage"], row)
    assert _md_rows(project) == {"stage": ["—", "—", f"✅ {TODAY}", "—"]}


def test_partial_preflight_says_which_checks_did_not_run(project: pytest.Pytester) -> None:
    _run(project, "-m", "preflight and code", "--partition", "demo")
    cell = f"🟡 {TODAY} 2 deselected: test_synth, test_access"
    assert _md_rows(project) == {"demo": [cell, "—", "—", "—"]}
    row = _log_row("demo", cell, "✅ 2026-05-26", "✅ 2026-05-26", "—")
    assert (project.path / "log.md").read_text(encoding="utf-8") == LOG.replace(OLD_ROWS["demo"], row)


def test_missing_row_is_added(project: pytest.Pytester) -> None:
    project.path.joinpath("log.md").write_text(LOG.replace(OLD_ROWS["prod"] + "\n", ""), encoding="utf-8")
    result = _run(project, "-m", "preflight", "--partition", "prod")
    row = _log_row("prod", f"✅ {TODAY}", "—", "—", "—")
    assert (project.path / "log.md").read_text(encoding="utf-8") == LOG.replace(OLD_ROWS["prod"], row)
    result.stdout.fnmatch_lines([f"execution log {project.path / 'log.md'}: added prod"])


@pytest.mark.parametrize(
    ("log", "says"),
    [
        ("# Run 4 log\n\nNo table yet.\n", "no cascade table with the header | Partition | Infrastructure |*"),
        (
            LOG.replace("| Postmark account | Pre-flight |", "| Pre-flight |").replace(
                "|---|---|---|---|---|---|---|", "|---|---|---|---|---|---|"
            ),
            "its cascade table has other columns (line 24 has | Partition | Infrastructure | Pre-flight |*",
        ),
    ],
)
def test_log_without_the_table_is_untouched_and_the_run_says_so(project: pytest.Pytester, log: str, says: str) -> None:
    project.path.joinpath("log.md").write_bytes(log.encode())
    result = _run(project, "--partition", "dev")
    assert (project.path / "log.md").read_bytes() == log.encode()
    result.stdout.fnmatch_lines([f"execution log {project.path / 'log.md'} left untouched: {says}"])
    assert (project.path / "out" / "latest" / "signoff.md").exists()


def test_plain_runs_write_nothing(project: pytest.Pytester) -> None:
    project.makepyfile(test_plain="def test_other():\n    pass\n")
    result = project.runpytest(*PLUGINS, "--reports-dir", "out", "--signoff-log", "log.md", "test_plain.py")
    result.assert_outcomes(passed=1)
    assert not (project.path / "out").exists()
    assert (project.path / "log.md").read_text(encoding="utf-8") == LOG
    _write_checks(project, {}, {})
    collected = project.runpytest(*PLUGINS, "--reports-dir", "out", "--signoff-log", "log.md", "--co")
    assert collected.ret == pytest.ExitCode.OK
    assert not (project.path / "out").exists()
    assert (project.path / "log.md").read_text(encoding="utf-8") == LOG


def test_interrupted_run_is_marked_incomplete(project: pytest.Pytester) -> None:
    """Ctrl-C (a KeyboardInterrupt in a check; in a subprocess, as pytester re-raises it in-process)."""
    result = _run(project, "--partition", "dev", plan={"test_dmarc[dev]": "interrupt"}, isolated=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    document = json.loads((project.path / "out" / "latest" / "signoff.json").read_text(encoding="utf-8"))
    assert document["complete"] is False
    assert {c["check"]: c["outcome"] for c in document["checks"]}["test_exports"] == "not run"
    md = (project.path / "out" / "latest" / "signoff.md").read_text(encoding="utf-8")
    assert "**INCOMPLETE: the run was interrupted; cells cover only the checks that finished.**" in md
    assert _md_rows(project) == {"dev": [f"✅ {TODAY}", "—", "—", "—"]}
    result.stdout.fnmatch_lines(["sign-off is INCOMPLETE: the run was interrupted"])


def test_under_xdist_rows_are_complete_sorted_and_secret_free(project: pytest.Pytester) -> None:
    """Two workers, results arriving in any order: the same rows, the same log bytes, no token anywhere."""
    result = _run(project, **MIXED, xdist=True)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    rows = _md_rows(project)
    assert list(rows) == list(PARTITIONS)
    assert rows["stage"] == [f"❌ {TODAY} 1 failed: test_synth", "—", f"✅ {TODAY}", "—"]
    assert rows["prod"] == [f"✅ {TODAY}", f"🟡 {TODAY} refused: {REFUSED['refused']}", "—", "—"]
    assert rows["dev"] == [f"✅ {TODAY}"] * 3 + [TODAY]
    document = json.loads((project.path / "out" / "latest" / "signoff.json").read_text(encoding="utf-8"))
    assert len(document["checks"]) == 1 + 2 * 4 + 2 * 4
    assert all(c["outcome"] != "not run" for c in document["checks"])
    assert (project.path / "log.md").read_bytes() == _mixed_log().encode()
    run_files = (project.path / "out" / "latest").iterdir()
    written = [p for p in run_files if p.is_file() and p.name != ".mailgate-run"] + [project.path / "log.md"]
    assert {p.suffix for p in written} == {".json", ".md", ".html", ".xml"}
    leaks = [p.name for p in written if CANARY.encode() in p.read_bytes()]
    assert leaks == []
    assert CANARY not in result.stdout.str() + result.stderr.str()
    assert "****" in (project.path / "out" / "latest" / "signoff.json").read_text(encoding="utf-8")


def test_report_of_a_crashed_worker_counts_even_before_the_checks_are_known(pytester: pytest.Pytester) -> None:
    """xdist reports a crashed worker's item untagged, maybe before any worker has listed its checks."""
    pytester.makefile(".yaml", partitions=(ROOT / "partitions.yaml").read_text())
    config = pytester.parseconfigure(*PLUGINS, "--reports-dir", "out", "--partition", "prod")
    recorder = config.stash[RECORDER]
    nodeid = "tests_preflight/test_pre.py::test_access[prod]"
    where = ("tests_preflight/test_pre.py", None, "tests_preflight/test_pre.py")
    crash = pytest.TestReport(nodeid, where, {}, "failed", "worker 'gw0' crashed", "???")  # type: ignore[arg-type]  # a crashed worker's report: longrepr is text
    recorder.pytest_runtest_logreport(crash)
    check = {"nodeid": nodeid, "partition": "prod", "phase": "preflight", "name": "test_access"}
    recorder.pytest_testnodedown(SimpleNamespace(workeroutput={"mailgate_checks": [check]}), None)
    recorder.pytest_sessionfinish(pytest.Session.from_config(config), pytest.ExitCode.TESTS_FAILED)
    (folder,) = (pytester.path / "out").iterdir()  # the hook was called directly: no `latest` link made
    assert _md_rows(pytester, folder) == {"prod": [f"❌ {TODAY} 1 failed: test_access", "—", "—", "—"]}
