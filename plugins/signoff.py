"""Sign-off rows: every check's report, gathered on the xdist controller, judged per partition and phase.

At session end of a run that ran mailgate checks: `<reports>/signoff.json` (the run and every check),
`<reports>/signoff.md` (the cascade table of this run's partitions), and the execution log's cascade rows
updated in place (plugins.signoff_log). A cell reads ✅ <date> when every check of the phase passed,
❌ <date> <count> failed: <names> when any failed or errored, 🟡 <date> <why> when some were skipped,
deselected or did not run; a phase none of whose checks ran gets no cell. Partition-independent checks count
toward every partition. A postmerge check that errored because this run's deploy of its partition did not
succeed counts as not run (the deploy's cell says why), so it never marks Verified ❌.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shlex
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

import pytest

from plugins.gates import Records, gate_updates, name_list, verification_cells
from plugins.matrix import Matrix, build_matrix, matrix_html, matrix_markdown
from plugins.outcome import FAILED_OUTCOMES, PASSED_OUTCOMES, merge
from plugins.partitions import SELECTION, Selection
from plugins.report import CheckId, check_id, diff_report, evidence_of, report_check, reports_dir, tables_of
from plugins.report_html import sections
from plugins.run_state import write_atomic
from plugins.signoff_log import (
    HEADER,
    PASSED,
    WAIVED,
    LogResult,
    Row,
    cell_text,
    render_table,
    update_file,
    update_matrix_file,
)
from plugins.verdict import REASON_ATTR, ClosingSection
from plugins.waivers import describe, notes, waiver_of
from probes.config import Config, Target
from probes.secrets import redact

PHASE_COLUMN = {"preflight": "Pre-flight", "postmerge": "Verified"}
RAN_OUTCOMES = PASSED_OUTCOMES | FAILED_OUTCOMES | {"skipped", "xfailed"}
MAX_MESSAGE = 1000
MAX_EVIDENCE_LINES = 40
OPTIONS = (
    "partition",
    "partitions_file",
    "infra_repo",
    "signoff_log",
    "resolver",
    "reports_dir",
    "sandbox",
    "deploy",
    "confirm_production",
    "expect_head",
    "markexpr",
    "keyword",
    "numprocesses",
    "maxfail",
    "htmlpath",
    "xmlpath",
)


@dataclass
class Result:
    """One check's outcome in this run, merged from its setup, call and teardown reports."""

    check: CheckId
    outcome: str = "not run"
    duration: float = 0.0
    message: str | None = None
    evidence: list[str] = field(default_factory=list)
    tables: list[dict[str, Any]] = field(default_factory=list)
    waiver: dict[str, Any] | None = None  # the waiver the check was judged against (plugins.waivers)

    @property
    def waived(self) -> bool:
        return self.outcome == "xfailed" and self.waiver is not None and self.waiver["state"] == "waived"

    def absorb(self, report: pytest.TestReport) -> None:
        self.duration += report.duration
        self.evidence = evidence_of(report) or self.evidence
        self.tables = tables_of(report) or self.tables
        self.waiver = waiver_of(report) or self.waiver
        if report.passed and report.when != "call":
            return
        self.outcome = merge(None if self.outcome == "not run" else self.outcome, report) or self.outcome
        self.message = self.message or _message(report)


def _message(report: pytest.TestReport) -> str:
    """A verdict's whole reason, else the failure's crash line or a skip's reason; redacted and bounded."""
    longrepr = report.longrepr
    reason = getattr(report, REASON_ATTR, None)
    if isinstance(reason, str):
        text = reason
    elif isinstance(longrepr, tuple | list) and len(longrepr) == 3:
        text = str(longrepr[2]).removeprefix("Skipped: ")
    else:
        crash = getattr(longrepr, "reprcrash", None)
        text = crash.message if crash is not None else report.longreprtext
    return redact(text.strip())[:MAX_MESSAGE]


def phase_cell(date: str, results: Sequence[Result], why_not_run: str) -> str | None:
    """The cell for one phase of one partition, or None when none of its checks ran."""
    if not any(r.outcome in RAN_OUTCOMES for r in results):
        return None
    failed = [r for r in results if r.outcome in FAILED_OUTCOMES]
    if failed:
        return f"❌ {date} {len(failed)} failed: {name_list(r.check.name for r in failed)}"
    waived = "; ".join(dict.fromkeys(f"waived: {describe(r.waiver)}" for r in results if r.waived and r.waiver))
    groups: dict[str, list[Result]] = {}
    for result in results:
        if result.outcome not in PASSED_OUTCOMES and not result.waived:
            groups.setdefault(result.outcome, []).append(result)
    if not groups:
        return f"{WAIVED} {date} {waived}" if waived else f"{PASSED} {date}"
    parts = []
    for outcome, members in groups.items():
        reason = why_not_run if outcome == "not run" else members[0].message
        parts.append(
            f"{len(members)} {outcome}: {name_list(r.check.name for r in members)}"
            + (f" ({_one_line(reason)})" if reason else "")
        )
    return f"🟡 {date} " + "; ".join([*parts, *([waived] if waived else [])])


def deploy_cell(date: str, deploy: Mapping[str, Any]) -> str:
    """The Deploy cell from the deploy plugin's record of this run's deploy of the partition."""
    if deploy.get("refused"):
        return f"🟡 {date} refused: {_one_line(str(deploy['refused']), 160)}"
    if deploy.get("interrupted"):
        return f"❌ {date} interrupted after {float(deploy.get('duration') or 0):.0f} s"
    if deploy.get("ok"):
        return f"{PASSED} {date}"
    if deploy.get("ran"):
        log = f" (log {deploy['log']})" if deploy.get("log") else ""
        return f"❌ {date} exit {deploy.get('exit_code')}{log}"
    return f"❌ {date} not run: {_one_line(str(deploy.get('failure') or 'the deploy could not start'), 160)}"


def _one_line(text: str, limit: int = 80) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def partition_rows(
    targets: Sequence[Target],
    results: Sequence[Result],
    deploys: Mapping[str, Mapping[str, Any]],
    date: str,
    complete: bool,
) -> list[Row]:
    """Each target's cells from a run's results (deselected ones included) and deploys: the one rule a run and
    mailgate-merge share, so a merge of shards writes what one run over their partitions writes."""
    why_not_run = "run interrupted" if not complete else "did not run"
    rows = []
    for target in targets:
        deploy = deploys.get(target.name)
        undeployed = deploy is not None and not deploy.get("ok")
        cells: dict[str, str] = {}
        for phase, column in PHASE_COLUMN.items():
            mine = [r for r in results if r.check.phase == phase and r.check.partition in (None, target.name)]
            why = why_not_run
            if phase == "postmerge" and undeployed:
                mine = [Result(r.check) if r.outcome == "error" else r for r in mine]
                why = "not deployed"
            cell = phase_cell(date, mine, why)
            if cell is not None:
                cells[column] = cell_text(cell)
        if deploy is not None:
            cells["Deploy"] = cell_text(deploy_cell(date, deploy))
        rows.append(Row(target.name, target.infrastructure, target.postmark_account, cells, date))
    return rows


def log_updates(rows: Sequence[Row]) -> list[Row]:
    """The execution log's updates from `rows`: each row this run has a word on, in the rows' order."""
    return [row for row in rows if row.cells]


def signoff_markdown(
    heading: str,
    *,
    complete: bool,
    rows: Sequence[Row],
    matrix: Matrix,
    results: Sequence[Result],
    log: LogResult | None,
) -> str:
    """signoff.md: heading, INCOMPLETE banner, the cascade table, the verdict matrix, the failed checks, the log."""
    lines = ["# mailgate sign-off", "", heading, ""]
    if not complete:
        lines += ["**INCOMPLETE: the run was interrupted; cells cover only the checks that finished.**", ""]
    table = render_table([row.table_cells() for row in rows]).splitlines()
    lines += table if rows else ["No partition was selected."]
    lines += ["", "## Verdict matrix", "", *matrix_markdown(matrix).splitlines()]
    failed = [r for r in results if r.outcome in FAILED_OUTCOMES]
    if failed:
        lines += ["", f"## Failed ({len(failed)})", ""]
        lines += [f"- `{r.check.nodeid}`: {_one_line((r.message or r.outcome).splitlines()[0], 300)}" for r in failed]
    if log is not None:
        lines += ["", log.message]
    return "\n".join(lines) + "\n"


def result_of(entry: Mapping[str, Any]) -> Result:
    """A check's Result back from its signoff.json entry (what mailgate-merge reads from each shard)."""
    check = CheckId(
        str(entry["nodeid"]), entry["partition"], str(entry["phase"]), str(entry["check"]), entry.get("kind")
    )
    return Result(
        check,
        str(entry["outcome"]),
        float(entry.get("duration") or 0.0),
        entry.get("message"),
        list(entry.get("evidence") or []),
        list(entry.get("tables") or []),
        entry.get("waiver"),
    )


def update_run_files(
    config: Config, signoff_log: Path | None, records: Records, rows: Sequence[Row]
) -> tuple[LogResult | None, LogResult | None]:
    """The execution log's partition and gate rows and the verification matrix's cells, decided from one run's
    records: a run and mailgate-merge write them alike. (None where the file is not configured.)"""
    log = None
    if signoff_log is not None:
        gates = config.file.signoff.gates
        decided = gate_updates(records, gates.entry_criteria, gates.production_confirmation)
        log = update_file(signoff_log, log_updates(rows), decided)
    matrix = None
    if config.verification_file is not None:
        spec = config.file.signoff.verification
        cells = verification_cells(records, spec.rows)
        matrix = update_matrix_file(config.verification_file, cells, spec.status_column)
    return log, matrix


def file_result(result: LogResult | None) -> dict[str, str] | None:
    """What signoff.json says of an updated file (execution log, verification matrix)."""
    return {"path": str(result.path), "status": result.status, "message": result.message} if result else None


def signoff_table_html(rows: Sequence[Row], complete: bool) -> str:
    """The sign-off table for a report page, with an INCOMPLETE banner for an interrupted run."""
    head = "".join(f"<th>{escape(name)}</th>" for name in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row.table_cells()) + "</tr>" for row in rows)
    banner = (
        ""
        if complete
        else '<p class="mailgate-incomplete"><strong>INCOMPLETE: the run was interrupted; '
        "cells cover only the checks that finished.</strong></p>"
    )
    return f'<h2>Sign-off</h2>{banner}<table id="mailgate-signoff"><tr>{head}</tr>{body}</table>'


def verdict_matrix_html(matrix: Matrix) -> str:
    """The verdict matrix under its heading, for a report page."""
    return f'<h2 id="mailgate-verdict">Verdict matrix</h2>{matrix_html(matrix)}'


class Recorder:
    """The controller's record of this run: expected checks, their reports, the deploys; writes at session end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.started = datetime.now().astimezone()
        self.date = self.started.date().isoformat()
        self.expected: dict[str, CheckId] = {}
        self.deselected: dict[str, CheckId] = {}
        self.results: dict[str, Result] = {}
        self.deploys: dict[str, dict[str, Any]] = {}
        self.unclaimed: list[pytest.TestReport] = []
        self.summary: list[str] = []
        self.rows: list[Row] = []
        self.complete = True
        self.head: tuple[str | None, str | None] = (None, "no partitions file")

    def pytest_sessionstart(self) -> None:
        """The infrastructure repo's HEAD as the checks find it (a deploy may commit to it later)."""
        chosen = self.config.stash.get(SELECTION, None)
        if chosen is not None:
            self.head = _git_head(chosen.infra_repo)

    def expect(self, checks: Iterable[dict[str, Any]], deselected: Iterable[dict[str, Any]]) -> None:
        self.expected.update((c["nodeid"], CheckId(**c)) for c in checks)
        self.deselected.update((c["nodeid"], CheckId(**c)) for c in deselected)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        check = report_check(report) or self.expected.get(report.nodeid)
        if check is None:
            if report.failed:  # e.g. xdist's report for the item of a crashed worker: claimed once checks are known
                self.unclaimed.append(report)
            return
        self._absorb(check, report)

    def _absorb(self, check: CheckId, report: pytest.TestReport) -> None:
        self.results.setdefault(report.nodeid, Result(check)).absorb(report)
        for name, value in report.user_properties:
            if name == "mailgate_deploy":
                deploy = json.loads(str(value))
                self.deploys[deploy["partition"]] = deploy

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        output = getattr(node, "workeroutput", None) or {}
        self.expect(output.get("mailgate_checks", ()), output.get("mailgate_deselected", ()))

    def ran_checks(self) -> bool:
        return not self.config.getoption("collectonly") and bool(self.expected or self.results)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not self.ran_checks():
            return
        self.complete = exitstatus != pytest.ExitCode.INTERRUPTED
        for report in self.unclaimed:
            if report.nodeid in self.expected:
                self._absorb(self.expected[report.nodeid], report)
        collected = {nodeid: self.results.get(nodeid) or Result(check) for nodeid, check in self.expected.items()}
        self.results = collected | self.results  # collection order first, then any check only a report named
        chosen = self.config.stash.get(SELECTION, None)
        self.rows = self._rows(chosen)
        folder = reports_dir(self.config)
        log, matrix = (
            update_run_files(chosen.config, chosen.signoff_log, self.records(chosen), self.rows)
            if chosen
            else (None, None)
        )
        ended = datetime.now().astimezone()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            document = self._document(chosen, ended, exitstatus, log, matrix)
            write_atomic(folder / "signoff.json", redact(json.dumps(document, indent=2, ensure_ascii=False)).encode())
            write_atomic(folder / "signoff.md", redact(self._markdown(ended, log)).encode())
        except OSError as exc:
            self.summary.append(f"sign-off NOT written to {folder}: {exc.strerror or exc}; fix --reports-dir")
        else:
            self.summary.append(f"sign-off: {folder / 'signoff.md'}, {folder / 'signoff.json'}")
        self.summary += [result.message for result in (log, matrix) if result is not None]
        self.summary += [
            f"deploy order: {deploy['partition']}: {note}"
            for deploy in self.deploys.values()
            for note in deploy.get("relied") or ()
        ]
        self.summary += notes((r.check.nodeid, r.waiver) for r in self.results.values() if r.waiver)
        if not self.complete:
            self.summary.append("sign-off is INCOMPLETE: the run was interrupted")

    def _rows(self, chosen: Selection | None) -> list[Row]:
        if chosen is None:
            return []
        results = [*self.results.values(), *(Result(c, "deselected") for c in self.deselected.values())]
        return partition_rows(chosen.targets, results, self.deploys, self.date, self.complete)

    def records(self, chosen: Selection | None) -> Records:
        """This run's records as signoff.json holds them: what the gate and verification rows are decided from."""
        return Records.of(
            {
                "run": {"date": self.date, "partitions": [t.name for t in chosen.targets] if chosen else []},
                "checks": [_check_entry(result, 0) for result in self.results.values()],
                "deselected": [asdict(check) for check in self.deselected.values()],
                "deploys": list(self.deploys.values()),
            }
        )

    def _document(
        self,
        chosen: Selection | None,
        ended: datetime,
        exitstatus: int,
        log: LogResult | None,
        matrix: LogResult | None = None,
    ) -> dict[str, Any]:
        options = {name: getattr(self.config.option, name) for name in OPTIONS if hasattr(self.config.option, name)}
        head, head_problem = self.head
        head_at_end = _git_head(chosen.infra_repo)[0] if chosen else None
        return {
            "complete": self.complete,
            "exitstatus": int(exitstatus),
            "run": {
                "start": self.started.isoformat(timespec="seconds"),
                "end": ended.isoformat(timespec="seconds"),
                "date": self.date,
                "command": shlex.join(["pytest", *self.config.invocation_params.args]),
                "invocation_dir": str(self.config.invocation_params.dir),
                "partitions_file": str(chosen.config.path) if chosen else None,
                "partitions_digest": file_digest(chosen.config.path) if chosen else None,
                "mailgate_version": mailgate_version(),
                "partitions": [t.name for t in chosen.targets] if chosen else [],
                "infra_repo": str(chosen.infra_repo) if chosen else None,
                "infra_head": head,
                "infra_head_problem": head_problem,
                "infra_head_at_end": head_at_end,
                "options": {name: _jsonable(value) for name, value in options.items()},
            },
            "rows": [dict(zip(HEADER, row.table_cells(), strict=True)) for row in self.rows],
            "deploys": list(self.deploys.values()),
            "log": file_result(log),
            "verification": file_result(matrix),
            "checks": [_check_entry(result, MAX_EVIDENCE_LINES) for result in self.results.values()],
            "deselected": [asdict(check) for check in self.deselected.values()],
        }

    def _markdown(self, ended: datetime, log: LogResult | None) -> str:
        command = shlex.join(["pytest", *self.config.invocation_params.args])
        heading = f"Run {self.started:%Y-%m-%d %H:%M:%S %z} to {ended:%H:%M:%S}: `{command}`"
        results = list(self.results.values())
        return signoff_markdown(
            heading, complete=self.complete, rows=self.rows, matrix=self.matrix(), results=results, log=log
        )

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.summary:
            terminalreporter.write_sep("-", "mailgate sign-off")
            for line in self.summary:
                terminalreporter.write_line(line)

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_summary(self, prefix: list[str], summary: list[str], postfix: list[str]) -> None:
        """The sign-off table first in the report's summary, and an INCOMPLETE banner for an interrupted run."""
        if not self.ran_checks():
            return
        prefix[:0] = [redact(verdict_matrix_html(self.matrix())), redact(signoff_table_html(self.rows, self.complete))]
        html = getattr(self.config.option, "htmlpath", None)
        report_dir = Path(html).resolve().parent if html else reports_dir(self.config)
        chosen = self.config.stash.get(SELECTION, None)
        folder = reports_dir(self.config)
        diffs = {t.name: diff_report(folder, t) for t in (chosen.targets if chosen else ())}
        entries = self.check_entries(None)
        postfix.append(redact(sections(entries, self.partitions(), self.deploys, report_dir, diffs)))

    def partitions(self) -> list[str]:
        """The selected partitions, in this run's order."""
        chosen = self.config.stash.get(SELECTION, None)
        return [t.name for t in chosen.targets] if chosen else []

    def check_entries(self, evidence_lines: int | None) -> list[dict[str, Any]]:
        """Every check of this run as signoff.json lists it, the deselected ones with outcome "deselected"."""
        entries = [_check_entry(result, evidence_lines) for result in self.results.values()]
        return entries + [_check_entry(Result(c, "deselected"), 0) for c in self.deselected.values()]

    def matrix(self) -> Matrix:
        return build_matrix(self.check_entries(0), self.partitions())


def _check_entry(result: Result, evidence_lines: int | None) -> dict[str, Any]:
    """signoff.json's entry for a check; each evidence text cut to its first `evidence_lines` lines."""
    evidence = ["\n".join(text.splitlines()[:evidence_lines]) for text in result.evidence]
    return {
        "partition": result.check.partition,
        "phase": result.check.phase,
        "check": result.check.name,
        "kind": result.check.kind,
        "nodeid": result.check.nodeid,
        "outcome": result.outcome,
        "duration": round(result.duration, 3),
        "message": result.message,
        "waiver": result.waiver,
        "evidence": evidence,
        "tables": result.tables,
    }


def file_digest(path: Path) -> str | None:
    """`sha256:<hex>` of a file's bytes (None: unreadable): shards merge only when made from the same file."""
    try:
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def mailgate_version() -> str:
    """The installed mailgate's version (shards merge only when made by the same one)."""
    try:
        return importlib.metadata.version("mailgate")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return redact(value) if isinstance(value, str) else value
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return redact(str(value))


def _git_head(repo: Path) -> tuple[str | None, str | None]:
    """The infrastructure repo's HEAD commit, or (None, why not); a folder inside another repo is not one."""
    if not repo.is_dir():
        return None, f"infrastructure repo {repo} does not exist"
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"git rev-parse HEAD in {repo}: {exc}"
    if done.returncode != 0:
        return None, f"git rev-parse HEAD in {repo}: {(done.stderr.strip().splitlines() or ['failed'])[-1]}"
    top, head = done.stdout.split()
    if Path(top).resolve() != repo.resolve():
        return None, f"infrastructure repo {repo} is not a git repository (inside {top})"
    return head, None


RECORDER = pytest.StashKey[Recorder]()
DESELECTED = pytest.StashKey[list[dict[str, Any]]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[DESELECTED] = []
    if not hasattr(config, "workerinput"):
        recorder = Recorder(config)
        config.stash[RECORDER] = recorder
        config.pluginmanager.register(recorder, "mailgate-signoff")
        closing = ClosingSection(
            lambda: recorder.check_entries(0) if recorder.ran_checks() else [], recorder.partitions
        )
        config.pluginmanager.register(closing, "mailgate-verdict")


def pytest_deselected(items: Sequence[pytest.Item]) -> None:
    for item in items:
        check = check_id(item)
        if check is not None:
            item.config.stash[DESELECTED].append(asdict(check))


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """The checks this process will run (a worker sends them to the controller with its final output)."""
    config = session.config
    checks = [asdict(c) for c in map(check_id, session.items) if c is not None]
    deselected = config.stash[DESELECTED]
    if hasattr(config, "workerinput"):
        # xdist gives a worker's config `workeroutput` (its plugin adds it; pytest's Config does not declare it)
        config.workeroutput["mailgate_checks"] = checks  # type: ignore[attr-defined]
        config.workeroutput["mailgate_deselected"] = deselected  # type: ignore[attr-defined]  # as above
    else:
        config.stash[RECORDER].expect(checks, deselected)
