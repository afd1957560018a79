"""The verdict matrix from check entries: rows, columns, merged duplicates, HTML and Markdown."""

from __future__ import annotations

from xml.etree import ElementTree

from plugins.matrix import ALL, build_matrix, check_anchor, matrix_html, matrix_markdown

ENTRIES = [
    {
        "check": "test_build",
        "partition": None,
        "nodeid": "tests_preflight/test_code.py::test_build",
        "outcome": "passed",
    },
    {"check": "test_dkim", "partition": "dev", "nodeid": "t/test_dns.py::test_dkim[dev]", "outcome": "passed"},
    {
        "check": "test_dkim",
        "partition": "stage",
        "nodeid": "t/test_dns.py::test_dkim[stage]",
        "outcome": "failed",
        "message": "DKIM of stage differs\nsecond line",
    },
    {"check": "test_spf", "partition": "dev", "nodeid": "t/test_dns.py::test_spf[dev]", "outcome": "xfailed"},
    {"check": "test_spf", "partition": "stage", "nodeid": "t/test_dns.py::test_spf[stage]", "outcome": "deselected"},
    {"check": "test_exports", "partition": "prod", "nodeid": "t/test_stack.py::test_exports[prod]", "outcome": "error"},
]


def test_one_row_per_check_one_column_per_partition_in_the_file_order() -> None:
    matrix = build_matrix(ENTRIES, ["prod", "dev", "stage"])
    assert matrix.partitions == ("prod", "dev", "stage")
    assert [row.check for row in matrix.rows] == ["test_build", "test_dkim", "test_spf", "test_exports"]
    shared, dkim, spf, exports = matrix.rows
    assert shared.shared
    assert shared.cells[ALL].outcome == "passed"
    assert {p: c.outcome for p, c in dkim.cells.items()} == {"dev": "passed", "stage": "failed"}
    assert {p: c.outcome for p, c in spf.cells.items()} == {"dev": "waived", "stage": "deselected"}
    assert exports.cells["prod"].outcome == "error"
    assert matrix.counts()["stage"] == {"passed": 1, "failed": 1, "deselected": 1}


def test_the_same_check_twice_shows_the_worse_outcome_and_same_names_in_two_files_get_their_file() -> None:
    twice = [*ENTRIES, {**ENTRIES[0], "outcome": "failed"}, {**ENTRIES[1], "nodeid": "u/test_x.py::test_dkim[dev]"}]
    matrix = build_matrix(twice)
    assert matrix.partitions == ("dev", "stage", "prod")
    assert matrix.rows[0].cells[ALL].outcome == "failed"
    assert [row.check for row in matrix.rows if "dkim" in row.check] == [
        "t/test_dns.py::test_dkim",
        "u/test_x.py::test_dkim",
    ]


def test_html_cells_carry_outcome_colour_class_and_a_link_to_the_evidence() -> None:
    html = matrix_html(build_matrix(ENTRIES, ["dev", "stage", "prod"]))
    table = ElementTree.fromstring(html[html.index("<table") :])
    rows = [
        [(cell.get("class"), "".join(cell.itertext()), cell.get("colspan")) for cell in tr] for tr in table.iter("tr")
    ]
    assert rows[0] == [(None, "Check", None), (None, "dev", None), (None, "stage", None), (None, "prod", None)]
    assert rows[1][1] == ("outcome-passed", f"✅ passed ({ALL})", "3")
    assert rows[2][1:] == [
        ("outcome-passed", "✅ passed", None),
        ("outcome-failed", "❌ failed", None),
        ("outcome-none", "—", None),
    ]
    links = {a.get("href") for a in table.iter("a")}
    assert f"#{check_anchor('t/test_dns.py::test_dkim[stage]')}" in links
    failed = next(td for td in table.iter("td") if td.get("data-outcome") == "failed")
    assert failed.get("title") == "DKIM of stage differs"


def test_markdown_is_a_table_with_a_row_per_check() -> None:
    lines = matrix_markdown(build_matrix(ENTRIES, ["dev", "stage", "prod"])).splitlines()
    assert lines[:3] == [
        "| Check | dev | stage | prod |",
        "|---|---|---|---|",
        f"| `test_build` | ✅ passed ({ALL}) |  |  |",
    ]
    assert lines[3] == "| `test_dkim` | ✅ passed | ❌ failed | — |"
    assert lines[4] == "| `test_spf` | 🟡 waived | ➖ deselected | — |"
    assert lines[5] == "| `test_exports` | — | — | 🛑 error |"


def test_anchors_differ_for_node_ids_that_slug_alike() -> None:
    assert check_anchor("a/b.py::t[x y]") != check_anchor("a/b.py::t[x-y]")
