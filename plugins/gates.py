"""What a run's records decide beyond the cascade rows: the execution log's gate rows and a verification matrix.

Pure (no pytest): every function reads only the run's records as signoff.json holds them (`checks`, `deselected`,
`deploys`, `run.date`, `run.partitions`), so a merge of several runs' records decides exactly what one run would.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from plugins.signoff_log import PASSED, WAIVED, GateUpdate

PASSED_OUTCOMES = frozenset({"passed", "xpassed"})
FAILED_OUTCOMES = frozenset({"failed", "error"})
MAX_NAMES = 3


@dataclass(frozen=True)
class Records:
    """The parts of a run's signoff.json the gate and verification rows are decided from."""

    date: str
    partitions: tuple[str, ...]
    checks: tuple[Mapping[str, Any], ...]
    deselected: tuple[Mapping[str, Any], ...]
    deploys: tuple[Mapping[str, Any], ...]

    @classmethod
    def of(cls, document: Mapping[str, Any]) -> Records:
        run = document["run"]
        return cls(
            date=run["date"],
            partitions=tuple(run["partitions"]),
            checks=tuple(document.get("checks", ())),
            deselected=tuple(document.get("deselected", ())),
            deploys=tuple(document.get("deploys", ())),
        )

    def of_partition(self, partition: str) -> list[Mapping[str, Any]]:
        return [c for c in self.checks if c.get("partition") in (None, partition)]


def gate_updates(records: Records, entry_criteria: str | None, production_confirmation: str | None) -> list[GateUpdate]:
    """The gate rows this run decides (their Gate text's start, from signoff.gates; None: not decided by mailgate)."""
    updates = []
    if entry_criteria:
        status = _entry_criteria(records)
        if status is not None:
            updates.append(GateUpdate(entry_criteria, status, records.date))
    if production_confirmation:
        status = _production_confirmation(records)
        if status is not None:
            updates.append(GateUpdate(production_confirmation, status, records.date))
    return updates


def _entry_criteria(records: Records) -> str | None:
    """✅ when every access check of every selected partition passed in this run, ❌ when one failed; undecided
    (None) when some were not run (deselected, skipped, interrupted) or the run had none."""
    access = [c for c in records.checks if c.get("kind") == "access" and c.get("partition") in records.partitions]
    if not access:
        return None
    failed = [c for c in access if c["outcome"] in FAILED_OUTCOMES]
    if failed:
        return f"❌ {records.date} {len(failed)} failed: {_check_names(failed, with_partition=True)}"
    if any(c.get("kind") == "access" for c in records.deselected):
        return None
    if all(c["outcome"] in PASSED_OUTCOMES for c in access):
        return f"{PASSED} {records.date}"
    return None


def _production_confirmation(records: Records) -> str | None:
    """✅ when this run's deploy of a production partition was confirmed by name: who confirmed which, and how."""
    confirmed = [d for d in records.deploys if d.get("confirmed_by")]
    if not confirmed:
        return None
    notes = [
        f"{d['partition']} confirmed by {d.get('confirmed_user') or 'the operator'} ({d['confirmed_by']})"
        for d in confirmed
    ]
    return f"{PASSED} {records.date} — {'; '.join(notes)}"


def verification_cells(records: Records, rows: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Row id → status cell for the verification rows whose mapped checks all ran in this run: ✅ when all passed,
    ❌ <checks> when any failed, ⚠️ waived when a waiver accepted a failure. `{partition}` in a row id makes one
    row per selected partition; an id without it is decided by the checks of every selected partition."""
    cells: dict[str, str] = {}
    for template, names in rows.items():
        if "{partition}" in template:
            for partition in records.partitions:
                mine = [c for c in records.of_partition(partition) if c["check"] in names]
                cell = _row_cell(records.date, mine, names)
                if cell is not None:
                    cells[template.replace("{partition}", partition)] = cell
        else:
            mine = [c for p in records.partitions for c in records.of_partition(p) if c["check"] in names]
            cell = _row_cell(records.date, list({c["nodeid"]: c for c in mine}.values()), names)
            if cell is not None:
                cells[template] = cell
    return cells


def _row_cell(date: str, checks: Sequence[Mapping[str, Any]], names: Sequence[str]) -> str | None:
    """A row's cell, or None (left as it is) when one of its checks was not part of this run or did not finish."""
    if not checks or {c["check"] for c in checks} != set(names):
        return None
    failed = [c for c in checks if c["outcome"] in FAILED_OUTCOMES]
    if failed:
        return f"❌ {date} {_check_names(failed)}"
    waived = [c for c in checks if c["outcome"] == "xfailed" and (c.get("waiver") or {}).get("state") == "waived"]
    if any(c["outcome"] not in PASSED_OUTCOMES for c in checks if c not in waived):
        return None
    if waived:
        return f"{WAIVED} {date} waived: {_check_names(waived)}"
    return f"{PASSED} {date}"


def _check_names(checks: Sequence[Mapping[str, Any]], with_partition: bool = False) -> str:
    def name(check: Mapping[str, Any]) -> str:
        partition = check.get("partition")
        return f"{check['check']}[{partition}]" if with_partition and partition else str(check["check"])

    return name_list(name(c) for c in checks)


def name_list(names: Iterable[str]) -> str:
    """A cell's short list of check names: each once, the first MAX_NAMES, then how many more."""
    unique = list(dict.fromkeys(names))
    more = f" +{len(unique) - MAX_NAMES} more" if len(unique) > MAX_NAMES else ""
    return ", ".join(unique[:MAX_NAMES]) + more
