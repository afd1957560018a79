"""The cascade table of a Markdown execution log: find it, update cells in place, write atomically under a lock.

Pure (no pytest). Every byte outside the cells this run owns stays as it was: line endings, padding,
trailing spaces, other tables. A file without the table, or whose table has other columns, is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from plugins.run_state import locked, write_atomic

HEADER: tuple[str, ...] = (
    "Partition",
    "Infrastructure",
    "Postmark account",
    "Pre-flight",
    "Deploy",
    "Verified",
    "Sign-off date",
)
PHASE_COLUMNS: tuple[str, ...] = ("Pre-flight", "Deploy", "Verified")
SIGNOFF = "Sign-off date"
NOT_DONE = "—"
PASSED = "✅"
WAIVED = "⚠️"  # a failure accepted by a recorded, unexpired waiver: cleared, with the exception written beside it
_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_DELIMITER_CELL = re.compile(r"^\s*:?-+:?\s*$")
_PIPE = re.compile(r"(?<!\\)\|")


@dataclass(frozen=True)
class Row:
    """This run's word on one partition: the cells of the phases it covered (column → cell), and its date."""

    partition: str
    infrastructure: str
    postmark_account: str
    cells: Mapping[str, str]
    date: str

    def table_cells(self) -> list[str]:
        """The row in a table of this run alone: a phase it did not cover is —."""
        phases = {column: self.cells.get(column, NOT_DONE) for column in PHASE_COLUMNS}
        names = [self.partition, self.infrastructure, self.postmark_account]
        return [*names, *phases.values(), signoff_cell(phases, self.date)]


@dataclass(frozen=True)
class LogResult:
    """What happened to the log: `updated`, `unchanged` or `untouched` (with why), and the rows touched."""

    path: Path
    status: str
    message: str
    updated: tuple[str, ...] = ()
    added: tuple[str, ...] = ()


class TableProblem(Exception):
    """The text has no usable cascade table; the message says what was found and what to do."""


def cell_text(text: str) -> str:
    """`text` made safe for one Markdown table cell: one line, pipes escaped."""
    return re.sub(r"\s+", " ", text).strip().replace("|", "\\|")


def render_table(rows: Sequence[Sequence[str]], newline: str = "\n") -> str:
    """A cascade table (header, delimiter, rows), every line ending with `newline`."""
    lines = [_row_line(HEADER), _row_line(["---"] * len(HEADER)), *(_row_line(row) for row in rows)]
    return "".join(line + newline for line in lines)


def cleared(cell: str) -> bool:
    """A phase cell that clears its gate: ✅, or ⚠️ (passed but for failures a recorded waiver accepts)."""
    return cell.startswith((PASSED, WAIVED))


def signoff_cell(phases: Mapping[str, str], date: str) -> str:
    """The Sign-off date: once Pre-flight, Deploy and Verified are all cleared (✅, or ⚠️ waived), the date of the
    Verified cell (else —).

    Verification is what signs a partition off: a later pre-flight leaves the date, a later verification moves it.
    """
    if not all(cleared(phases.get(phase, "")) for phase in PHASE_COLUMNS):
        return NOT_DONE
    verified = _DATE.search(phases["Verified"])
    return verified.group(0) if verified else date


def cascade_row(text: str, partition: str) -> dict[str, str] | None:
    """The partition's row of the cascade table as column → cell text (None: no row); TableProblem without one."""
    lines = list(_split_lines(text))
    header_at, end = _find_table(lines)
    for at in range(header_at + 2, end):
        cells = [cell.strip() for _, _, cell in _cells(lines[at][0])]
        if cells and _plain(cells[0]) == partition:
            return dict(zip(HEADER, cells + [""] * (len(HEADER) - len(cells)), strict=False))
    return None


def update_text(text: str, updates: Sequence[Row]) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """`text` with the cascade table's rows updated; (new text, partitions updated, partitions added).

    Raises TableProblem when the text has no cascade table, has two, or has one with other columns.
    """
    lines = list(_split_lines(text))
    header_at, end = _find_table(lines)
    rows: dict[str, int] = {}
    for at in range(header_at + 2, end):
        cells = _cells(lines[at][0])
        if cells:
            rows.setdefault(_plain(cells[0][2]), at)
    updated: list[str] = []
    added: list[str] = []
    for update in updates:
        row_at = rows.get(update.partition)
        if row_at is None:
            end = _add_row(lines, header_at, end, update)
            added.append(update.partition)
            continue
        content, ending = lines[row_at]
        new = _update_row(content, update)
        if new != content:
            lines[row_at] = (new, ending)
            updated.append(update.partition)
    return "".join(content + ending for content, ending in lines), tuple(updated), tuple(added)


def update_file(path: Path, updates: Sequence[Row], gates: Sequence[GateUpdate] = ()) -> LogResult:
    """Update the log at `path`: its cascade rows and its gate rows, in one atomic write under a lock on its folder,
    re-read inside it (no run loses an update). A log without the cascade table is left untouched; one without
    the gate table gets its cascade rows, and the message says the gates were not set."""
    if not updates and not gates:
        return LogResult(path, "unchanged", f"execution log {path}: no partition row to update")
    notes: list[str] = []
    rows: dict[str, tuple[str, ...]] = {}

    def change(text: str) -> tuple[str, list[str]]:
        new, updated, added = update_text(text, updates) if updates else (text, (), ())
        rows.update(updated=updated, added=added)
        parts = [f"updated {', '.join(updated)}" if updated else "", f"added {', '.join(added)}" if added else ""]
        if gates:
            try:
                new, decided, missing = update_gates(new, gates)
            except TableProblem as exc:
                notes.append(f"gate rows not set: {exc}")
            else:
                parts.append(f"gates set: {', '.join(decided)}" if decided else "")
                notes.extend(f"no gate row starting {prefix!r}; add one or fix signoff.gates" for prefix in missing)
        return new, [p for p in parts if p]

    result = _rewrite(path, "execution log", "fix signoff.log / --signoff-log", change)
    message = "; ".join([result.message, *notes])
    if result.status != "updated":
        return LogResult(path, result.status, message)
    return LogResult(path, result.status, message, rows["updated"], rows["added"])


def update_matrix_file(path: Path, cells: Mapping[str, str], column: str) -> LogResult:
    """Set the `column` cell of the verification matrix rows named by `cells` (row id → cell), atomically under the
    lock; a file without such a table is left untouched, and the message says so."""
    if not cells:
        return LogResult(path, "unchanged", f"verification matrix {path}: no row decided by this run")
    missing: list[str] = []

    def change(text: str) -> tuple[str, list[str]]:
        new, updated, absent = update_matrix(text, cells, column)
        missing.extend(absent)
        return new, [f"updated {', '.join(updated)}"] if updated else []

    result = _rewrite(path, "verification matrix", "fix signoff.verification.file", change)
    if missing and result.status != "untouched":
        note = f"no row {', '.join(missing)} (rows are found by their id in the first column)"
        return LogResult(path, result.status, f"{result.message}; {note}")
    return result


def _rewrite(path: Path, what: str, fix: str, change: Callable[[str], tuple[str, list[str]]]) -> LogResult:
    """Read `path` under the folder's lock, apply `change` (new text, what it did), write it back atomically."""
    try:
        with locked(path.parent):
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                return _untouched(path, f"file not found; create it or {fix}", what)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return _untouched(path, f"not UTF-8 text (byte {exc.start}); save it as UTF-8", what)
            try:
                new, done = change(text)
            except TableProblem as exc:
                return _untouched(path, str(exc), what)
            if new == text:
                return LogResult(path, "unchanged", f"{what} {path}: already up to date")
            write_atomic(path, new.encode("utf-8"))
    except OSError as exc:
        return _untouched(path, f"cannot update it: {exc.strerror or exc}; check the path and its permissions", what)
    return LogResult(path, "updated", f"{what} {path}: {'; '.join(done) or 'updated'}")


@dataclass(frozen=True)
class GateUpdate:
    """A gate row this run decided: the row whose Gate text starts with `prefix` gets `status` and `date`."""

    prefix: str
    status: str
    date: str


GATE_HEADER = ("Gate", "Status", "Date")


def update_gates(text: str, gates: Sequence[GateUpdate]) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """`text` with the Status and Date cells of the decided gate rows set; (new text, prefixes set, prefixes with
    no row). Raises TableProblem when there is no `| Gate | Status | Date |` table."""
    lines = list(_split_lines(text))
    tables = [(at, end) for at, end, names in _tables(lines) if tuple(names) == GATE_HEADER]
    if not tables:
        raise TableProblem(f"no gate table with the header | {' | '.join(GATE_HEADER)} |")
    header_at, end = tables[0]
    decided: list[str] = []
    missing: list[str] = []
    for gate in gates:
        at = next(
            (i for i in range(header_at + 2, end) if _plain(_first_cell(lines[i][0])).startswith(gate.prefix)), None
        )
        if at is None:
            missing.append(gate.prefix)
            continue
        content, ending = lines[at]
        new = _set_cells(content, len(GATE_HEADER), {1: gate.status, 2: gate.date})
        lines[at] = (new, ending)
        decided.append(gate.prefix)
    return "".join(content + ending for content, ending in lines), tuple(decided), tuple(missing)


def update_matrix(text: str, cells: Mapping[str, str], column: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """`text` with the `column` cell of each row whose first cell is one of `cells`' ids set; (new text, ids set,
    ids with no row). Raises TableProblem when no table has that column."""
    lines = list(_split_lines(text))
    tables = [(at, end, names) for at, end, names in _tables(lines) if column.lower() in (n.lower() for n in names)]
    if not tables:
        raise TableProblem(f"no table with a {column!r} column (and the row ids in its first column)")
    found: set[str] = set()
    updated: list[str] = []
    for header_at, end, names in tables:
        index = [n.lower() for n in names].index(column.lower())
        for at in range(header_at + 2, end):
            row_id = _plain(_first_cell(lines[at][0]))
            if row_id not in cells or row_id in found:
                continue
            found.add(row_id)
            content, ending = lines[at]
            new = _set_cells(content, len(names), {index: cell_text(cells[row_id])})
            if new != content:
                lines[at] = (new, ending)
                updated.append(row_id)
    missing = tuple(row_id for row_id in cells if row_id not in found)
    return "".join(content + ending for content, ending in lines), tuple(updated), missing


def _tables(lines: list[tuple[str, str]]) -> Iterator[tuple[int, int, list[str]]]:
    """Every Markdown table: (header line index, index after its last row, header names)."""
    at = 0
    while at < len(lines) - 1:
        content = lines[at][0]
        if "|" in content and _is_delimiter(lines[at + 1][0]):
            end = at + 2
            while end < len(lines) and _is_table_line(lines, end):
                end += 1
            yield at, end, _cell_texts(content)
            at = end
        else:
            at += 1


def _first_cell(line: str) -> str:
    cells = _cells(line)
    return cells[0][2] if cells else ""


def _set_cells(content: str, width: int, values: Mapping[int, str]) -> str:
    """The row with the cells at `values`' indexes replaced (padding kept); a short row gets its missing cells."""
    cells = _cells(content)
    if len(cells) < width:
        base = content.rstrip()
        base += "" if _PIPE.search(base[-1:]) else " |"
        content = base + " |" * (width - len(cells))
        cells = _cells(content)
    for index in sorted(values, reverse=True):
        start, end, raw = cells[index]
        if raw.strip() != values[index]:
            content = content[:start] + _with_padding(raw, values[index]) + content[end:]
    return content


def _untouched(path: Path, why: str, what: str = "execution log") -> LogResult:
    return LogResult(path, "untouched", f"{what} {path} left untouched: {why}")


def _split_lines(text: str) -> Iterator[tuple[str, str]]:
    """(content, ending) pairs; ending is '\\r\\n', '\\n' or '' (last line without one)."""
    for match in re.finditer(r"([^\n]*?)(\r?\n|\Z)", text):
        content, ending = match.groups()
        if content or ending:
            yield content, ending


def _cells(line: str) -> list[tuple[int, int, str]]:
    """The cells of a table line as (start, end, raw text) spans; an outer pipe on either side is optional."""
    bounds = [match.start() for match in _PIPE.finditer(line)]
    stripped = line.strip()
    start = bounds.pop(0) + 1 if stripped.startswith("|") and bounds else 0
    cells = []
    for bound in bounds:
        cells.append((start, bound, line[start:bound]))
        start = bound + 1
    if not stripped.endswith("|") or stripped.endswith("\\|"):
        cells.append((start, len(line), line[start:]))
    return cells


def _cell_texts(line: str) -> list[str]:
    return [cell.strip() for _, _, cell in _cells(line)]


def _is_delimiter(line: str, count: int | None = None) -> bool:
    if "-" not in line or "|" not in line:
        return False
    names = _cell_texts(line)
    return all(_DELIMITER_CELL.match(name) for name in names) and (count is None or len(names) == count)


def _is_table_line(lines: list[tuple[str, str]], at: int) -> bool:
    content = lines[at][0]
    starts_table = at + 1 < len(lines) and _is_delimiter(lines[at + 1][0])
    return bool(content.strip()) and _PIPE.search(content) is not None and not starts_table


def _find_table(lines: list[tuple[str, str]]) -> tuple[int, int]:
    """(header line index, index after the last row) of the one cascade table."""
    found: list[int] = []
    near: list[str] = []
    for at in range(len(lines) - 1):
        content = lines[at][0]
        if "|" not in content or not _is_delimiter(lines[at + 1][0]):
            continue
        names = _cell_texts(content)
        if tuple(names) == HEADER and _is_delimiter(lines[at + 1][0], len(HEADER)):
            found.append(at)
        elif names[:1] == [HEADER[0]] and len(set(names) & set(HEADER)) >= 3:
            near.append(f"line {at + 1} has | {' | '.join(names)} |")
    expected = f"| {' | '.join(HEADER)} |"
    if not found:
        if near:
            raise TableProblem(f"its cascade table has other columns ({'; '.join(near)}); expected {expected}")
        raise TableProblem(f"no cascade table with the header {expected}; add one, or fix signoff.log")
    if len(found) > 1:
        where = ", ".join(str(at + 1) for at in found)
        raise TableProblem(f"{len(found)} cascade tables (lines {where}); keep one")
    end = found[0] + 2
    while end < len(lines) and _is_table_line(lines, end):
        end += 1
    return found[0], end


def _plain(cell: str) -> str:
    """A partition cell without Markdown emphasis or code: `dev`, **dev** → dev."""
    return cell.strip().strip("`*_").strip()


def _update_row(content: str, update: Row) -> str:
    cells = _cells(content)
    if len(cells) < len(HEADER):  # a short row: give it the missing cells (GFM reads them as empty)
        base = content.rstrip()
        base += "" if _PIPE.search(base[-1:]) else " |"
        content = base + " |" * (len(HEADER) - len(cells))
        cells = _cells(content)
    current = {name: cells[i][2].strip() for i, name in enumerate(HEADER)}
    merged = current | {name: cell_text(value) for name, value in update.cells.items()}
    merged[SIGNOFF] = signoff_cell(merged, update.date)
    for i in reversed(range(len(HEADER))):
        name = HEADER[i]
        if merged[name] == current[name]:
            continue
        start, end, raw = cells[i]
        content = content[:start] + _with_padding(raw, merged[name]) + content[end:]
    return content


def _with_padding(raw: str, value: str) -> str:
    """`value` in the cell's own padding (a cell without any gets one space each side)."""
    if not raw.strip():
        return f" {value} "
    lead = raw[: len(raw) - len(raw.lstrip())]
    trail = raw[len(raw.rstrip()) :]
    return f"{lead}{value}{trail}"


def _add_row(lines: list[tuple[str, str]], header_at: int, end: int, update: Row) -> int:
    """Insert the partition's row after the table's last row, in the table's style; returns the new end."""
    header, newline = lines[header_at]
    last_content, last_ending = lines[end - 1]
    if not last_ending:  # the table ends the file: break its last line the way the header line is broken
        lines[end - 1] = (last_content, newline)
    cells = {name: NOT_DONE for name in PHASE_COLUMNS} | {
        name: cell_text(value) for name, value in update.cells.items()
    }
    cells[SIGNOFF] = signoff_cell(cells, update.date)
    names = (update.partition, update.infrastructure, update.postmark_account)
    line = _row_line([*(cell_text(n) for n in names), *(cells[n] for n in HEADER[3:])])
    lines.insert(end, (line if header.lstrip().startswith("|") else line[2:], last_ending))
    return end + 1


def _row_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
