"""The cascade-table updater: only the owned cells change, byte for byte; locked atomic writes lose nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from plugins.signoff_log import (
    HEADER,
    GateUpdate,
    Row,
    TableProblem,
    cell_text,
    render_table,
    signoff_cell,
    update_file,
    update_gates,
    update_matrix_file,
    update_text,
)

ROOT = Path(__file__).resolve().parents[1]
LOG = (Path(__file__).parent / "data" / "execution-log.md").read_text(encoding="utf-8")
OLD = "✅ 2026-05-26"
ROW = {
    "dev": "| dev | Alpha002 | PostmarkNonProd | ✅ 2026-05-26 | ✅ 2026-05-26 | ✅ 2026-05-26 | 2026-05-26 |",
    "prod": "| prod | Alpha001 | PostmarkProd | ✅ 2026-05-26 | ✅ 2026-05-26 | ✅ 2026-05-26 | 2026-05-26 |",
}
NAMES = {"dev": ("Alpha002", "PostmarkNonProd"), "stage": ("Alpha002", "PostmarkNonProd")}
NAMES |= {"demo": ("Alpha001", "PostmarkProd"), "prod": ("Alpha001", "PostmarkProd")}


def _update(partition: str, date: str = "2026-06-02", **cells: str) -> Row:
    columns = {"preflight": "Pre-flight", "deploy": "Deploy", "verified": "Verified"}
    infrastructure, account = NAMES.get(partition, ("Alpha001", "PostmarkProd"))
    return Row(partition, infrastructure, account, {columns[k]: v for k, v in cells.items()}, date)


def test_failed_preflight_changes_only_that_cell_and_the_signoff() -> None:
    new, updated, added = update_text(LOG, [_update("dev", preflight="❌ 2026-06-02 1 failed: test_synth")])
    row = (
        "| dev | Alpha002 | PostmarkNonProd | ❌ 2026-06-02 1 failed: test_synth | ✅ 2026-05-26 | ✅ 2026-05-26 | — |"
    )
    assert new == LOG.replace(ROW["dev"], row)
    assert (updated, added) == (("dev",), ())


def test_crlf_and_trailing_spaces_are_kept_byte_for_byte() -> None:
    text = LOG.replace(ROW["prod"], ROW["prod"] + "   ").replace("\n", "\r\n")
    new, _, _ = update_text(text, [_update("prod", verified="✅ 2026-06-02")])
    row = "| prod | Alpha001 | PostmarkProd | ✅ 2026-05-26 | ✅ 2026-05-26 | ✅ 2026-06-02 | 2026-06-02 |   "
    assert new.encode() == text.replace(ROW["prod"] + "   ", row).encode()
    assert new.count("\r\n") == text.count("\r\n")
    assert "\n" not in new.replace("\r\n", "")


def test_rerun_of_postmerge_keeps_earlier_preflight_and_deploy() -> None:
    first, _, _ = update_text(LOG, [_update("dev", "2026-06-01", preflight="✅ 2026-06-01", deploy="✅ 2026-06-01")])
    second, _, _ = update_text(first, [_update("dev", "2026-06-02", verified="✅ 2026-06-02")])
    row = "| dev | Alpha002 | PostmarkNonProd | ✅ 2026-06-01 | ✅ 2026-06-01 | ✅ 2026-06-02 | 2026-06-02 |"
    assert second == LOG.replace(ROW["dev"], row)


def test_later_preflight_alone_leaves_the_signoff_date() -> None:
    new, updated, _ = update_text(LOG, [_update("dev", preflight="✅ 2026-06-02")])
    assert new == LOG.replace(ROW["dev"], ROW["dev"].replace(OLD, "✅ 2026-06-02", 1))
    assert updated == ("dev",)


def test_same_cells_again_change_nothing() -> None:
    new, updated, added = update_text(LOG, [_update("prod", "2026-05-26", preflight=OLD, verified=OLD)])
    assert (new, updated, added) == (LOG, (), ())


def test_signoff_cell_rule() -> None:
    done = {"Pre-flight": "✅ 2026-06-01", "Deploy": "✅ 2026-06-01", "Verified": "✅ 2026-06-03"}
    assert signoff_cell(done, "2026-06-09") == "2026-06-03"
    assert signoff_cell({**done, "Deploy": "🟡 2026-06-01 refused: confirm"}, "2026-06-09") == "—"
    assert signoff_cell({**done, "Verified": "✅"}, "2026-06-09") == "2026-06-09"
    assert signoff_cell({"Pre-flight": "✅ 2026-06-01"}, "2026-06-09") == "—"


def test_missing_partition_row_is_added_after_the_last_row() -> None:
    text = LOG.replace(ROW["prod"] + "\n", "")
    new, updated, added = update_text(text, [_update("prod", preflight="✅ 2026-06-02")])
    row = "| prod | Alpha001 | PostmarkProd | ✅ 2026-06-02 | — | — | — |"
    assert new == LOG.replace(ROW["prod"], row)
    assert (updated, added) == ((), ("prod",))


def test_row_added_to_a_table_that_ends_the_file_keeps_the_missing_final_newline() -> None:
    text = "# Log\r\n\r\n" + render_table([]).replace("\n", "\r\n").rstrip("\r\n")
    new, _, added = update_text(text, [_update("qa", verified="❌ 2026-06-02 1 failed: test_spf")])
    assert new == text + "\r\n| qa | Alpha001 | PostmarkProd | — | — | ❌ 2026-06-02 1 failed: test_spf | — |"
    assert added == ("qa",)


def test_rows_without_outer_pipes_are_updated_in_place() -> None:
    bare = "\n".join(line.strip().strip("|").strip() for line in render_table([]).splitlines())
    text = f"{bare}\ndev | Alpha002 | PostmarkNonProd | ✅ 2026-05-26 |  | ✅ 2026-05-26 |\n\nafter\n"
    new, _, added = update_text(text, [_update("dev", deploy="✅ 2026-06-02"), _update("stage", verified="✅ 2")])
    row = "dev | Alpha002 | PostmarkNonProd | ✅ 2026-05-26 | ✅ 2026-06-02 | ✅ 2026-05-26 | 2026-05-26 |"
    assert new.splitlines()[2] == row
    assert new.splitlines()[3] == "stage | Alpha002 | PostmarkNonProd | — | — | ✅ 2 | — |"
    assert new.endswith("\n\nafter\n")
    assert added == ("stage",)


def test_table_stops_where_the_next_table_starts_without_a_blank_line() -> None:
    gate = "| Gate | Status | Date |\n|---|---|---|\n| PR merged | ⏳ pending | — |\n"
    text = render_table([["dev", "Alpha002", "PostmarkNonProd", "—", "—", "—", "—"]]) + gate
    new, _, _ = update_text(text, [_update("prod", preflight="✅ 2026-06-02")])
    assert new == text.replace(gate, "| prod | Alpha001 | PostmarkProd | ✅ 2026-06-02 | — | — | — |\n" + gate)


def test_cells_are_one_line_with_escaped_pipes() -> None:
    assert cell_text(" ❌ 2026-06-02 1 failed:\n test_a[x|y] ") == "❌ 2026-06-02 1 failed: test_a[x\\|y]"
    new, _, _ = update_text(LOG, [_update("dev", preflight="❌ 2026-06-02 1 failed: test_a[x|y]")])
    again, updated, _ = update_text(new, [_update("dev", verified="✅ 2026-06-02")])
    assert "| ❌ 2026-06-02 1 failed: test_a[x\\|y] | ✅ 2026-05-26 | ✅ 2026-06-02 | — |" in again
    assert updated == ("dev",)


def test_short_row_gets_its_missing_cells() -> None:
    text = render_table([]) + "| dev | Alpha002 | PostmarkNonProd | ✅ 2026-05-26 |\n"
    new, _, _ = update_text(text, [_update("dev", verified="✅ 2026-06-02")])
    assert new.endswith("| dev | Alpha002 | PostmarkNonProd | ✅ 2026-05-26 | | ✅ 2026-06-02 | — |\n")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("# Log\n\nno table here\n", "no cascade table with the header | Partition | Infrastructure |"),
        (
            "| Partition | Infrastructure | Pre-flight | Verified |\n|---|---|---|---|\n| dev | A | ✅ | ✅ |\n",
            "its cascade table has other columns (line 1 has | Partition | Infrastructure | Pre-flight | Verified |)",
        ),
        (render_table([]) + "\n" + render_table([]), "2 cascade tables (lines 1, 4); keep one"),
    ],
)
def test_unusable_tables_are_refused(text: str, says: str) -> None:
    with pytest.raises(TableProblem) as caught:
        update_text(text, [_update("dev", preflight="✅ 2026-06-02")])
    assert says in str(caught.value)


def test_file_without_the_table_is_untouched_and_says_so(tmp_path: Path) -> None:
    log = tmp_path / "log.md"
    original = LOG.replace("| Partition | Infrastructure |", "| Name | Infrastructure |").encode()
    log.write_bytes(original)
    before = log.stat().st_mtime_ns
    result = update_file(log, [_update("dev", preflight="✅ 2026-06-02")])
    assert result.status == "untouched"
    assert result.message.startswith(f"execution log {log} left untouched: no cascade table with the header")
    assert log.read_bytes() == original
    assert log.stat().st_mtime_ns == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.md"]


@pytest.mark.parametrize(
    ("content", "says"), [(None, "file not found"), (b"\xff\xfe| Partition |", "not UTF-8 text (byte 0)")]
)
def test_missing_or_binary_log_is_untouched(tmp_path: Path, content: bytes | None, says: str) -> None:
    log = tmp_path / "log.md"
    if content is not None:
        log.write_bytes(content)
    result = update_file(log, [_update("dev", preflight="✅ 2026-06-02")])
    assert result.status == "untouched"
    assert says in result.message
    assert (log.read_bytes() if content is not None else None) == content


def test_file_update_keeps_mode_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    log = tmp_path / "log.md"
    log.write_text(LOG, encoding="utf-8")
    log.chmod(0o640)
    result = update_file(log, [_update("prod", verified="❌ 2026-06-02 1 failed: test_dkim")])
    assert (result.status, result.updated) == ("updated", ("prod",))
    assert result.message == f"execution log {log}: updated prod"
    row = "| prod | Alpha001 | PostmarkProd | ✅ 2026-05-26 | ✅ 2026-05-26 | ❌ 2026-06-02 1 failed: test_dkim | — |"
    assert log.read_text(encoding="utf-8") == LOG.replace(ROW["prod"], row)
    assert log.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.md"]
    assert update_file(log, [_update("prod", verified="❌ 2026-06-02 1 failed: test_dkim")]).status == "unchanged"


WRITER = """
import sys
from pathlib import Path
from plugins.signoff_log import Row, update_file

path, prefix, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(count):
    result = update_file(path, [Row(f"{prefix}{i}", "Alpha001", "PostmarkProd", {"Verified": f"✅ {i}"}, "d")])
    assert result.status == "updated", result.message
"""


def test_two_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    """Each process adds its own rows, one update at a time: a read outside the lock would drop the other's rows."""
    log = tmp_path / "log.md"
    log.write_text(LOG, encoding="utf-8")
    count = 40
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(log), prefix, str(count)], env=env, stderr=subprocess.PIPE)
        for prefix in ("a", "b")
    ]
    errors = [w.communicate(timeout=120)[1].decode() for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    text = log.read_text(encoding="utf-8")
    rows = [match.group(1) for match in re.finditer(r"^\| ([ab]\d+) \|", text, re.MULTILINE)]
    assert sorted(rows) == sorted(f"{p}{i}" for p in "ab" for i in range(count))
    assert text.startswith(LOG.split(ROW["prod"])[0] + ROW["prod"] + "\n")
    assert text.endswith(LOG.split(ROW["prod"])[1].removeprefix("\n"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.md"]


def test_render_table_has_the_cascade_header() -> None:
    assert render_table([["dev", "A", "P", "—", "—", "—", "—"]]).splitlines() == [
        "| " + " | ".join(HEADER) + " |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        "| dev | A | P | — | — | — | — |",
    ]


GATE_ROWS = {
    "entry": "| Entry criteria verified (1P all four vaults, AWS SSO both profiles, DMARC mailbox confirmed) "
    "| ✅ 2026-05-26 | 2026-05-26 |",
    "confirm": "| Production deploy confirmation given | ⏳ pending | — |",
}


def test_gate_rows_set_status_and_date_and_nothing_else() -> None:
    gates = [
        GateUpdate("Entry criteria verified", "❌ 2026-06-02 1 failed: test_aws_identity[prod]", "2026-06-02"),
        GateUpdate(
            "Production deploy confirmation given", "✅ 2026-06-02 — prod confirmed by jmp (prompt)", "2026-06-02"
        ),
    ]
    new, decided, missing = update_gates(LOG, gates)
    entry = GATE_ROWS["entry"].replace(
        "| ✅ 2026-05-26 | 2026-05-26 |", "| ❌ 2026-06-02 1 failed: test_aws_identity[prod] | 2026-06-02 |"
    )
    confirm = "| Production deploy confirmation given | ✅ 2026-06-02 — prod confirmed by jmp (prompt) | 2026-06-02 |"
    assert new == LOG.replace(GATE_ROWS["entry"], entry).replace(GATE_ROWS["confirm"], confirm)
    assert (decided, missing) == (("Entry criteria verified", "Production deploy confirmation given"), ())


def test_gate_rows_in_the_same_write_as_the_cascade_rows(tmp_path: Path) -> None:
    log = tmp_path / "log.md"
    log.write_bytes(LOG.replace("\n", "\r\n").encode())
    gate = GateUpdate(
        "Production deploy confirmation given", "✅ 2026-06-02 — prod confirmed by jmp (prompt)", "2026-06-02"
    )
    result = update_file(log, [_update("prod", verified="✅ 2026-06-02")], [gate, GateUpdate("Run-4 PR", "✅", "x")])
    assert result.message == (
        f"execution log {log}: updated prod; gates set: Production deploy confirmation given; "
        "no gate row starting 'Run-4 PR'; add one or fix signoff.gates"
    )
    row = "| prod | Alpha001 | PostmarkProd | ✅ 2026-05-26 | ✅ 2026-05-26 | ✅ 2026-06-02 | 2026-06-02 |"
    confirm = "| Production deploy confirmation given | ✅ 2026-06-02 — prod confirmed by jmp (prompt) | 2026-06-02 |"
    expected = LOG.replace(ROW["prod"], row).replace(GATE_ROWS["confirm"], confirm).replace("\n", "\r\n")
    assert log.read_bytes() == expected.encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.md"]


def test_a_log_without_the_gate_table_gets_its_cascade_rows_and_says_the_gates_were_not_set(tmp_path: Path) -> None:
    log = tmp_path / "log.md"
    log.write_text(LOG.replace("| Gate | Status | Date |", "| Step | Status | Date |"), encoding="utf-8")
    gate = GateUpdate("Entry criteria verified", "✅ 2026-06-02", "2026-06-02")
    result = update_file(log, [_update("dev", verified="✅ 2026-06-02")], [gate])
    assert result.status == "updated"
    assert result.message.endswith("gate rows not set: no gate table with the header | Gate | Status | Date |")
    assert "| Step | Status | Date |" in log.read_text(encoding="utf-8")


MATRIX = (Path(__file__).parent / "data" / "verification.md").read_text(encoding="utf-8")


def test_verification_rows_set_only_their_status_cell(tmp_path: Path) -> None:
    matrix = tmp_path / "verification.md"
    matrix.write_text(MATRIX, encoding="utf-8")
    cells = {
        "V-PART-DNS-dev": "✅ 2026-06-02",
        "V-PART-DNS-stage": "❌ 2026-06-02 test_dkim",
        "V-PART-POSTMARK-prod": "✅ 2026-06-02",
        "V-PART-DNS-qa": "✅ 2026-06-02",
    }
    result = update_matrix_file(matrix, cells, "Status")
    assert result.message == (
        f"verification matrix {matrix}: updated V-PART-DNS-dev, V-PART-DNS-stage, V-PART-POSTMARK-prod; "
        "no row V-PART-DNS-qa (rows are found by their id in the first column)"
    )
    expected = (
        MATRIX.replace(
            "| `V-PART-DNS-dev` | dev zone delegated; SPF, DMARC, DKIM, Return-Path resolve | dig | ⏳ |",
            "| `V-PART-DNS-dev` | dev zone delegated; SPF, DMARC, DKIM, Return-Path resolve | dig | ✅ 2026-06-02 |",
        )
        .replace("| dig |  ⏳  |", "| dig |  ❌ 2026-06-02 test_dkim  |")
        .replace("| Postmark API |\n", "| Postmark API | ✅ 2026-06-02 |\n")
    )
    assert matrix.read_text(encoding="utf-8") == expected
    assert update_matrix_file(matrix, cells, "Status").status == "unchanged"


def test_a_matrix_without_such_a_table_is_left_alone_and_says_so(tmp_path: Path) -> None:
    matrix = tmp_path / "verification.md"
    original = MATRIX.replace("| Status |", "| Outcome |").encode()
    matrix.write_bytes(original)
    result = update_matrix_file(matrix, {"V-PART-DNS-dev": "✅ 2026-06-02"}, "Status")
    assert result.status == "untouched"
    assert result.message == (
        f"verification matrix {matrix} left untouched: no table with a 'Status' column (and the row ids in its "
        "first column)"
    )
    assert matrix.read_bytes() == original
