"""Where a run's reports go, what each check's report carries (identity, evidence, no secret), and the HTML columns.

Default report files (rule, decided in pytest_configure before any item exists): a run is a mailgate run when
its `-m` expression names `preflight` or `postmerge`, or a test path it was given (or took from testpaths)
lies in `tests_preflight/` or `tests_postmerge/`, and it is not `--collect-only`. Such a run claims its folder
`<reports>/<markers>-<partitions>-<UTC time>/` (plugins.run_folders) and gets, unless given,
`--html=<folder>/report.html --self-contained-html` and `--junitxml=<folder>/junit.xml` (beside an explicit
`--html`, its `.xml`). At its end `<reports>/latest` points at the folder, and `--keep-runs N` removes run
folders beyond the N newest. Any other run (`pytest tests_unit`, …) writes no report file.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Generator, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import pytest

from plugins import progress, run_folders, verdict
from plugins.partitions import item_partition
from plugins.run_state import write_atomic
from probes import cdk, dns
from probes.config import Target
from probes.secrets import known_secrets, redact

CHECK_ATTR = "mailgate_check"
TABLE = "evidence_table"
MARKER_PHASES = ("preflight", "postmerge")
KINDS = ("code", "synth", "access", "diff", "dns", "aws", "postmark", "deploy")
CHECK_DIRS = ("tests_preflight", "tests_postmerge")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mailgate")
    group.addoption(
        "--reports-dir",
        metavar="PATH",
        help="where each run's folder of reports, logs and sign-off files goes (default: reports/ in the rootdir)",
    )
    group.addoption(
        "--keep-runs",
        metavar="N",
        type=_positive,
        help="after the run, remove run folders in the reports dir beyond the N newest (default: keep all)",
    )


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of runs to keep, at least 1; got {text!r}")
    return int(text)


def reports_root(config: pytest.Config) -> Path:
    """`--reports-dir` (relative to the invocation dir) or the rootdir's `reports/`: where run folders go."""
    option = config.getoption("reports_dir")
    return Path(config.invocation_params.dir, option).resolve() if option else config.rootpath / "reports"


def reports_dir(config: pytest.Config) -> Path:
    """This run's folder, `<reports>/<run>/`: every report, log and sign-off file of the run goes here."""
    return config.stash[RUN_FOLDER]


DNS_COLUMNS = ("server", "address", "question", "answer", "rcode", "time")


class Evidence:
    """What a check saw, attached to its report (redacted): `evidence.add("TXT at _dmarc…", lines)`.

    Every entry is text (signoff.json, the terminal); `table` and `dns` also keep its rows, and the HTML
    report shows those as a table under the same title."""

    def __init__(self, node: pytest.Item) -> None:
        self._node = node

    def add(self, title: str, lines: str | Iterable[str] = ()) -> None:
        body = lines if isinstance(lines, str) else "\n".join(lines)
        self._node.user_properties.append(("evidence", redact(f"{title}\n{body}".rstrip())))

    def table(self, title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], text: Iterable[str]) -> None:
        """An entry with rows; `text` is its text form (one line per row, as the terminal shows it)."""
        self.add(title, text)
        table = {"title": title, "columns": list(columns), "rows": [[str(cell) for cell in row] for row in rows]}
        self._node.user_properties.append((TABLE, redact(json.dumps(table))))

    def dns(self, title: str, answers: Sequence[dns.Answer]) -> None:
        """Every server's answer to a question: server, address, question, answer, rcode, time."""
        if not answers:
            self.add(title, "no server asked")
            return
        rows = [
            (
                a.server,
                a.address,
                f"{a.rtype} {a.qname}",
                dns.answer_text(a),
                a.rcode or "—",
                f"{a.elapsed * 1000:.0f} ms",
            )
            for a in answers
        ]
        self.table(title, DNS_COLUMNS, rows, [dns.evidence(a) for a in answers])

    def diff(self, target: Target, summary: cdk.DiffSummary) -> Path:
        """Keep the partition's diff summary in the run's folder, where the HTML report shows it beside the
        partition's deploy; its path, for the check's evidence and messages."""
        path = diff_report(reports_dir(self._node.config), target)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, _diff_markdown(target.stack_name, summary).encode(), durable=False)
        return path


def diff_report(folder: Path, target: Target) -> Path:
    """A partition's diff summary in a run's folder."""
    return folder / f"diff-{target.infrastructure}-{target.name}.md"


def _diff_markdown(stack_name: str, summary: cdk.DiffSummary) -> str:
    """Counts per resource type and action, then every changed resource."""
    rows = [f"| {c.action} | {c.resource_type} | {c.logical_id} |" for c in summary.resources]
    totals = [
        f"| {kind} | " + " | ".join(str(counts.get(a, 0)) for a in cdk.ACTIONS) + " |"
        for kind, counts in summary.by_type.items()
    ]
    return "\n".join(
        [
            f"## cdk diff {stack_name}",
            "",
            "| Resource type | " + " | ".join(cdk.ACTIONS) + " |",
            "|---|" + "---|" * len(cdk.ACTIONS),
            *totals,
            "",
            "| Action | Type | Logical id |",
            "|---|---|---|",
            *rows,
            "",
        ]
    )


@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> Evidence:
    """Record what this check observed, for the HTML report and signoff.json."""
    assert isinstance(request.node, pytest.Item)
    return Evidence(request.node)


@dataclass(frozen=True)
class CheckId:
    """A mailgate check: its node id, partition (None: partition-independent), phase, and short name."""

    nodeid: str
    partition: str | None
    phase: str
    name: str
    kind: str | None = None  # its finer marker (code, synth, access, diff, dns, aws, postmark, deploy)


def check_id(item: pytest.Item) -> CheckId | None:
    """The item as a mailgate check, or None when it is marked neither preflight nor postmerge."""
    phase = next((p for p in MARKER_PHASES if item.get_closest_marker(p)), None)
    if phase is None:
        return None
    partition = item_partition(item)
    name = item.nodeid.split("::", 1)[-1]
    if partition is not None and name.endswith(f"[{partition}]"):
        name = name[: -len(partition) - 2]
    kind = next((k for k in KINDS if item.get_closest_marker(k)), None)
    return CheckId(item.nodeid, partition, phase, name, kind)


def report_check(report: pytest.TestReport) -> CheckId | None:
    """The check a report is about, also after an xdist worker serialized it (None: not a mailgate check)."""
    raw = getattr(report, CHECK_ATTR, None)
    return CheckId(**raw) if isinstance(raw, dict) else None


def evidence_of(report: pytest.TestReport | pytest.CollectReport) -> list[str]:
    """The report's evidence texts (none for a collection report, which has no user properties)."""
    return [str(value) for name, value in getattr(report, "user_properties", ()) if name == "evidence"]


def tables_of(report: pytest.TestReport) -> list[dict[str, Any]]:
    """The report's evidence tables (`Evidence.table`): title, columns, rows."""
    return [json.loads(str(value)) for name, value in getattr(report, "user_properties", ()) if name == TABLE]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Tag a check's report with its identity, show a verdict as mailgate's message (plugins.verdict); with secrets
    known to this process, rebuild it redacted."""
    report = yield
    check = check_id(item)
    if check is None:
        return report
    setattr(report, CHECK_ATTR, asdict(check))
    verdict.clean(item, call, report, evidence_of(report))
    if not known_secrets():
        return report
    hook = item.config.hook
    data = hook.pytest_report_to_serializable(config=item.config, report=report)
    return hook.pytest_report_from_serializable(config=item.config, data=_redact_tree(data))


def _redact_tree(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redact_tree(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_tree(item) for item in value)
    return value


def is_mailgate_run(config: pytest.Config) -> bool:
    """The rule in this module's docstring, from the invocation alone."""
    if config.getoption("collectonly"):
        return False
    words = set(re.findall(r"\w+", config.getoption("markexpr") or ""))
    if words & set(MARKER_PHASES):
        return True
    return bool(_check_dirs(config))


def _check_dirs(config: pytest.Config) -> list[str]:
    """The check folders (tests_preflight, tests_postmerge) that the run's test paths lie in."""
    parts = {part for arg in config.args for part in Path(arg.split("::")[0]).parts}
    return [name for name in CHECK_DIRS if name in parts]


def report_stem(config: pytest.Config, now: datetime) -> str:
    """`<markers>-<partitions>-<UTC time>`, e.g. `preflight-and-code-or-synth-dev+prod-20260526T234343Z`."""
    expression = config.getoption("markexpr") or ""
    phases = [name.removeprefix("tests_") for name in _check_dirs(config)]
    markers = re.sub(r"[^A-Za-z0-9]+", "-", expression).strip("-") or "-".join(phases) or "checks"
    return run_folders.name(markers, str(config.getoption("partition", "all")), now)


RUN_FOLDER = pytest.StashKey[Path]()
CLAIMED = pytest.StashKey[bool]()  # this run made its folder (a mailgate run, on the xdist controller)
LAYOUT_NOTES = pytest.StashKey[list[str]]()
WORKER_FOLDER = "mailgate_reports"  # workerinput key: the controller's run folder


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Progress lines (plugins.progress); this run's folder (a worker uses the controller's); for a mailgate run,
    claim it and default the HTML and JUnit paths into it (pytest-html and junitxml read them next)."""
    progress.start(config)
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        config.stash[RUN_FOLDER] = Path(worker[WORKER_FOLDER])
        return
    now = datetime.now(UTC)
    mailgate_run = is_mailgate_run(config)
    name = report_stem(config, now)
    folder = run_folders.claim(reports_root(config), name, now) if mailgate_run else reports_root(config) / name
    config.stash[RUN_FOLDER] = folder
    config.stash[CLAIMED] = mailgate_run
    config.stash[LAYOUT_NOTES] = []
    if not mailgate_run:
        return
    html_given = getattr(config.option, "htmlpath", None)
    if hasattr(config.option, "htmlpath") and not html_given:
        config.option.htmlpath = str(folder / "report.html")
        config.option.self_contained_html = True
    if hasattr(config.option, "xmlpath") and not config.option.xmlpath:  # absent under -p no:junitxml
        config.option.xmlpath = str(Path(html_given).with_suffix(".xml") if html_given else folder / "junit.xml")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: each worker writes into this run's folder."""
    node.workerinput[WORKER_FOLDER] = str(node.config.stash[RUN_FOLDER])


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Point `latest` at this run's folder, then prune older run folders when --keep-runs asks."""
    config = session.config
    if hasattr(config, "workerinput") or not config.stash.get(CLAIMED, False):
        return
    folder, notes = config.stash[RUN_FOLDER], config.stash[LAYOUT_NOTES]
    try:
        problem = run_folders.point_latest(folder)
        keep = config.getoption("keep_runs")
        removed = run_folders.prune(folder.parent, keep, folder) if keep else []
    except OSError as exc:
        notes.append(f"reports/latest or --keep-runs failed in {folder.parent}: {exc}")
        return
    notes.append(problem or f"reports: {folder} ({folder.parent / run_folders.LATEST} points here)")
    if removed:
        notes.append(
            f"--keep-runs {keep}: removed {len(removed)} older run folder(s): {', '.join(p.name for p in removed)}"
        )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    for line in config.stash.get(LAYOUT_NOTES, []):
        terminalreporter.write_line(line)


@pytest.hookimpl(optionalhook=True)
def pytest_html_report_title(report: Any) -> None:
    """The run's name, not the file's (every run's file is report.html)."""
    config = getattr(report, "config", None)
    if config is not None and RUN_FOLDER in config.stash:
        report.title = f"mailgate {config.stash[RUN_FOLDER].name}"


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_header(cells: list[str]) -> None:
    cells.insert(2, '<th class="sortable" data-column-type="partition">Partition</th>')
    cells.insert(3, '<th class="sortable" data-column-type="check">Check</th>')


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_row(report: pytest.TestReport, cells: list[str]) -> None:
    check = report_check(report)
    partition = (check.partition or "all") if check else ""
    cells.insert(2, f'<td class="col-partition">{escape(partition)}</td>')
    cells.insert(3, f'<td class="col-check">{escape(check.name if check else "")}</td>')
    cells[:] = [redact(cell) for cell in cells]


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_html(report: pytest.TestReport, data: list[str]) -> None:
    """The check's evidence above its log (a titled block per entry), everything redacted."""
    blocks = [escape(_evidence_block(text)) for text in evidence_of(report)]
    data[:] = [redact(part) for part in [*blocks, *data]]


def _evidence_block(text: str) -> str:
    title, _, body = text.partition("\n")
    lines = "".join(f"  {line}\n" for line in body.splitlines())
    return f"{' evidence: ' + title + ' ':-^80}\n{lines}"
