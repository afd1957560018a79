"""The verdict matrix: one row per check, one column per partition, each cell the check's outcome there.

Built from check entries as `signoff.json` lists them (`check`, `partition` (None: partition-independent),
`nodeid`, `outcome`, `message`), so a run's report and a merge of several runs' sign-off files draw the same
matrix. Rendered as HTML (the report's top, cells linking to the check's evidence) and as Markdown (job
summary, pull-request comment). No pytest import: `mailgate-merge` uses it outside a pytest run.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

# The outcomes a cell shows, worst first: when one check appears twice for one partition (the same
# partition-independent check in two merged runs), the worse outcome is the cell's.
OUTCOMES = ("error", "failed", "waived", "not run", "skipped", "deselected", "passed")
SYMBOL = {
    "error": "🛑",
    "failed": "❌",
    "waived": "🟡",
    "not run": "⚪",
    "skipped": "⏭️",
    "deselected": "➖",
    "passed": "✅",
}
# pytest's words for the outcomes a check can have; a waiver makes its check xfail (with the waiver's reason)
PYTEST_OUTCOME = {"xfailed": "waived", "xpassed": "passed"}
ALL = "all partitions"
CSS = """
table.mailgate-matrix { border-collapse: collapse; margin: 8px 0 16px; }
table.mailgate-matrix th, table.mailgate-matrix td {
  border: 1px solid #bbb; padding: 3px 10px; text-align: left; color: #000;
}
table.mailgate-matrix th.check { font-family: monospace; font-weight: normal; }
table.mailgate-matrix td a { color: inherit; text-decoration: none; display: block; }
table.mailgate-matrix td.outcome-passed { background: #d4f4d4; }
table.mailgate-matrix td.outcome-failed { background: #f8c4c4; font-weight: bold; }
table.mailgate-matrix td.outcome-failed a { color: #8a0000; }
table.mailgate-matrix td.outcome-error { background: #e07070; font-weight: bold; }
table.mailgate-matrix td.outcome-error a { color: #fff; }
table.mailgate-matrix td.outcome-waived { background: #fbe7a5; }
table.mailgate-matrix td.outcome-skipped, table.mailgate-matrix td.outcome-not-run { background: #e6e6e6; }
table.mailgate-matrix td.outcome-deselected, table.mailgate-matrix td.outcome-none { background: #f6f6f6; color: #888; }
"""


def outcome_of(outcome: str) -> str:
    """A check entry's outcome as a cell shows it (pytest's xfailed is a waiver: "waived")."""
    shown = PYTEST_OUTCOME.get(outcome, outcome)
    return shown if shown in SYMBOL else "error"


def check_anchor(nodeid: str) -> str:
    """The HTML id of a check's evidence: readable, and unique even where two node ids slug alike."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", nodeid).strip("-")
    return f"check-{slug[-60:]}-{hashlib.sha256(nodeid.encode()).hexdigest()[:6]}"


@dataclass(frozen=True)
class Cell:
    outcome: str
    nodeid: str
    message: str | None = None

    @property
    def anchor(self) -> str:
        return check_anchor(self.nodeid)

    @property
    def label(self) -> str:
        return f"{SYMBOL[self.outcome]} {self.outcome}"


@dataclass
class Row:
    """One check: its cells by partition, or one cell (key ALL) when it is partition-independent."""

    key: str
    check: str
    cells: dict[str, Cell] = field(default_factory=dict)

    @property
    def shared(self) -> bool:
        return ALL in self.cells


@dataclass(frozen=True)
class Matrix:
    partitions: tuple[str, ...]
    rows: tuple[Row, ...]

    def counts(self) -> dict[str, dict[str, int]]:
        """Per partition: outcome -> how many checks (partition-independent ones count for every partition)."""
        counted: dict[str, dict[str, int]] = {p: {} for p in self.partitions}
        for row in self.rows:
            for partition in self.partitions:
                cell = row.cells.get(ALL) or row.cells.get(partition)
                if cell is not None:
                    counted[partition][cell.outcome] = counted[partition].get(cell.outcome, 0) + 1
        return counted


def build_matrix(checks: Iterable[Mapping[str, Any]], partitions: Sequence[str] = ()) -> Matrix:
    """The matrix of these check entries; columns are `partitions` (in that order), then any other partition
    an entry names. Rows keep the entries' order (collection order: preflight first)."""
    columns = list(dict.fromkeys(partitions))
    rows: dict[str, Row] = {}
    for entry in checks:
        partition = entry.get("partition")
        nodeid = str(entry["nodeid"])
        key = _row_key(nodeid, partition)
        row = rows.setdefault(key, Row(key, str(entry["check"])))
        column = ALL if partition is None else str(partition)
        if partition is not None and column not in columns:
            columns.append(column)
        cell = Cell(outcome_of(str(entry["outcome"])), nodeid, entry.get("message"))
        known = row.cells.get(column)
        if known is None or OUTCOMES.index(cell.outcome) < OUTCOMES.index(known.outcome):
            row.cells[column] = cell
    _name_duplicates(list(rows.values()))
    return Matrix(tuple(columns), tuple(rows.values()))


def _row_key(nodeid: str, partition: object) -> str:
    """The check's node id without its partition parameter: `tests_postmerge/test_dns.py::test_dkim`."""
    suffix = f"[{partition}]"
    return nodeid[: -len(suffix)] if partition is not None and nodeid.endswith(suffix) else nodeid


def _name_duplicates(rows: list[Row]) -> None:
    """Two checks of the same name in different files: name each by its file too."""
    seen: dict[str, int] = {}
    for row in rows:
        seen[row.check] = seen.get(row.check, 0) + 1
    for row in rows:
        if seen[row.check] > 1:
            row.check = row.key


def matrix_html(matrix: Matrix, href: Callable[[Cell], str | None] | None = None) -> str:
    """`<table class="mailgate-matrix" id="mailgate-matrix">`; each cell links to `href(cell)` (default: the
    check's evidence in the same page, `#<check_anchor>`)."""
    link = href or (lambda cell: f"#{cell.anchor}")
    head = "".join(f'<th scope="col">{escape(p)}</th>' for p in matrix.partitions)
    body = []
    for row in matrix.rows:
        cells = []
        if row.shared:
            cells.append(_html_cell(row.cells[ALL], link, span=len(matrix.partitions), note=f" ({ALL})"))
        else:
            for partition in matrix.partitions:
                cell = row.cells.get(partition)
                cells.append(_html_cell(cell, link) if cell else '<td class="outcome-none">—</td>')
        body.append(f'<tr><th scope="row" class="check">{escape(row.check)}</th>{"".join(cells)}</tr>')
    return (
        f"<style>{CSS}</style>"
        '<table class="mailgate-matrix" id="mailgate-matrix">'
        f'<thead><tr><th scope="col">Check</th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _html_cell(cell: Cell, link: Callable[[Cell], str | None], span: int = 1, note: str = "") -> str:
    css = "outcome-" + cell.outcome.replace(" ", "-")
    colspan = f' colspan="{span}"' if span > 1 else ""
    title = f' title="{escape(cell.message.splitlines()[0])}"' if cell.message else ""
    text = escape(cell.label + note)
    target = link(cell)
    inner = f'<a href="{escape(target)}">{text}</a>' if target else text
    return f'<td class="{css}" data-outcome="{escape(cell.outcome)}"{colspan}{title}>{inner}</td>'


def matrix_markdown(matrix: Matrix) -> str:
    """A GitHub-flavoured Markdown table; a partition-independent check fills its first partition column."""
    if not matrix.partitions:
        return "No partition was selected.\n"
    lines = [
        "| Check | " + " | ".join(_md(p) for p in matrix.partitions) + " |",
        "|---|" + "---|" * len(matrix.partitions),
    ]
    for row in matrix.rows:
        if row.shared:
            values = [f"{row.cells[ALL].label} ({ALL})", *([""] * (len(matrix.partitions) - 1))]
        else:
            values = [row.cells[p].label if p in row.cells else "—" for p in matrix.partitions]
        lines.append(f"| `{_md(row.check)}` | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|")
