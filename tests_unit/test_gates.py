"""Gate and verification rows: decided from the run's records alone, written into real log and matrix files."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from plugins.gates import Records, gate_updates, verification_cells
from plugins.signoff_log import GateUpdate

DATA = Path(__file__).parent / "data"
LOG = (DATA / "execution-log.md").read_text(encoding="utf-8")
MATRIX = (DATA / "verification.md").read_text(encoding="utf-8")
TODAY = date.today().isoformat()
ENTRY = "Entry criteria verified"
CONFIRM = "Production deploy confirmation given"


def _check(check: str, partition: str | None, outcome: str = "passed", kind: str | None = None) -> dict[str, Any]:
    nodeid = f"tests/test_x.py::{check}" + (f"[{partition}]" if partition else "")
    return {"check": check, "partition": partition, "outcome": outcome, "kind": kind, "nodeid": nodeid}


def _records(*checks: dict[str, Any], deselected: tuple = (), deploys: tuple = ()) -> Records:
    document = {"run": {"date": "2026-06-02", "partitions": ["dev", "prod"]}, "checks": list(checks)}
    return Records.of(document | {"deselected": list(deselected), "deploys": list(deploys)})


ACCESS = [_check("test_aws_identity", p, kind="access") for p in ("dev", "prod")]


def test_entry_criteria_need_every_access_check_of_every_selected_partition() -> None:
    assert gate_updates(_records(*ACCESS), ENTRY, None) == [GateUpdate(ENTRY, "✅ 2026-06-02", "2026-06-02")]
    failed = _check("test_postmark_credential", "prod", "failed", "access")
    assert gate_updates(_records(*ACCESS, failed), ENTRY, None) == [
        GateUpdate(ENTRY, "❌ 2026-06-02 1 failed: test_postmark_credential[prod]", "2026-06-02")
    ]
    skipped = _check("test_postmark_credential", "prod", "skipped", "access")
    assert gate_updates(_records(*ACCESS, skipped), ENTRY, None) == []
    assert gate_updates(_records(*ACCESS, deselected=[_check("test_b", "dev", kind="access")]), ENTRY, None) == []
    assert gate_updates(_records(_check("test_dkim", "dev", kind="dns")), ENTRY, None) == []
    assert gate_updates(_records(*ACCESS), None, None) == []


def test_production_confirmation_names_who_confirmed_which_partition() -> None:
    confirmed = {"partition": "prod", "confirmed_by": "--confirm-production", "confirmed_user": "jmp", "ok": True}
    assert gate_updates(_records(deploys=[{"partition": "dev", "confirmed_by": None}]), None, CONFIRM) == []
    assert gate_updates(_records(deploys=[confirmed]), None, CONFIRM) == [
        GateUpdate(CONFIRM, "✅ 2026-06-02 — prod confirmed by jmp (--confirm-production)", "2026-06-02")
    ]


ROWS = {"V-PART-DNS-{partition}": ["test_dkim", "test_spf"], "V-ALL-CODE": ["test_build"]}


def test_verification_cells_per_partition_and_across_partitions() -> None:
    checks = [
        _check("test_dkim", "dev"),
        _check("test_spf", "dev"),
        _check("test_dkim", "prod", "failed"),
        _check("test_spf", "prod"),
        _check("test_build", None),
    ]
    assert verification_cells(_records(*checks), ROWS) == {
        "V-PART-DNS-dev": "✅ 2026-06-02",
        "V-PART-DNS-prod": "❌ 2026-06-02 test_dkim",
        "V-ALL-CODE": "✅ 2026-06-02",
    }


def test_a_row_is_left_as_it_is_unless_all_its_checks_ran() -> None:
    waived = _check("test_spf", "prod", "xfailed") | {"waiver": {"state": "waived"}}
    checks = [_check("test_dkim", "dev"), _check("test_dkim", "prod"), waived, _check("test_build", None, "skipped")]
    assert verification_cells(_records(*checks), ROWS) == {"V-PART-DNS-prod": "⚠️ 2026-06-02 waived: test_spf"}


CHECKS = """
import pytest


@pytest.mark.preflight
@pytest.mark.access
def test_aws_identity(target):
    assert target.name not in {fail!r}, "profile lands in the wrong account"


@pytest.mark.postmerge
def test_dkim(target):
    pass


@pytest.mark.postmerge
def test_spf(target):
    pass
"""


def _project(pytester: pytest.Pytester, fail: tuple[str, ...] = ()) -> pytest.Pytester:
    text = (pytester.path / "partitions.yaml").read_text()
    rows = "    rows:\n      V-PART-DNS-{partition}: [test_dkim, test_spf]\n"
    text = text.replace("    file: null\n", "    file: verification.md\n").replace(
        text[text.index("    rows:\n") : text.index("\n\n", text.index("    rows:\n")) + 1], rows
    )
    (pytester.path / "partitions.yaml").write_text(text)
    pytester.makeini(
        "[pytest]\ntestpaths = tests_preflight tests_postmerge\n"
        "markers =\n    preflight: p\n    postmerge: p\n    access: a\n"
    )
    (pytester.path / "log.md").write_text(LOG, encoding="utf-8")
    (pytester.path / "verification.md").write_text(MATRIX, encoding="utf-8")
    folder = pytester.path / "tests_preflight"
    folder.mkdir(exist_ok=True)
    (folder / "test_checks.py").write_text(CHECKS.format(fail=list(fail)))
    return pytester


PLUGINS = ("-p", "plugins.signoff", "-p", "no:hypothesispytest", "--reports-dir", "out", "--signoff-log", "log.md")
OLD_ENTRY = (
    "| Entry criteria verified (1P all four vaults, AWS SSO both profiles, DMARC mailbox confirmed) "
    "| ✅ 2026-05-26 | 2026-05-26 |"
)


def test_a_run_sets_the_gate_and_verification_rows_of_real_files(checks_project: pytest.Pytester) -> None:
    project = _project(checks_project, fail=("prod",))
    result = project.runpytest(*PLUGINS, "--partition", "dev,prod")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    entry = OLD_ENTRY.replace(
        "| ✅ 2026-05-26 | 2026-05-26 |", f"| ❌ {TODAY} 1 failed: test_aws_identity[prod] | {TODAY} |"
    )
    log = (project.path / "log.md").read_text(encoding="utf-8")
    assert entry in log
    assert log.replace(entry, OLD_ENTRY).count("\n") == LOG.count("\n")
    matrix = (project.path / "verification.md").read_text(encoding="utf-8")
    expected = MATRIX.replace("Return-Path resolve | dig | ⏳ |", f"Return-Path resolve | dig | ✅ {TODAY} |").replace(
        "| prod zone delegated; records resolve | dig | ⏳ |",
        f"| prod zone delegated; records resolve | dig | ✅ {TODAY} |",
    )
    assert matrix == expected
    result.stdout.fnmatch_lines(
        [
            f"execution log {project.path / 'log.md'}: updated dev, prod; gates set: Entry criteria verified",
            f"verification matrix {project.path / 'verification.md'}: updated V-PART-DNS-dev, V-PART-DNS-prod",
        ]
    )
    document = json.loads((project.path / "out" / "latest" / "signoff.json").read_text())
    assert document["verification"]["status"] == "updated"


def test_a_configured_matrix_without_such_a_table_is_left_alone(checks_project: pytest.Pytester) -> None:
    project = _project(checks_project)
    original = MATRIX.replace("| Status |", "| Outcome |")
    (project.path / "verification.md").write_text(original, encoding="utf-8")
    result = project.runpytest(*PLUGINS, "--partition", "dev")
    assert result.ret == 0
    assert (project.path / "verification.md").read_text(encoding="utf-8") == original
    result.stdout.fnmatch_lines([f"verification matrix {project.path / 'verification.md'} left untouched: no table*"])
    log = (project.path / "log.md").read_text(encoding="utf-8")
    assert OLD_ENTRY.replace("✅ 2026-05-26 | 2026-05-26", f"✅ {TODAY} | {TODAY}") in log
