"""The HTML report of a sandbox run with failures in three partitions, parsed: matrix, links, sections."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from sandbox.suite import POSTMERGE_CHECKS

PLANTED = {
    "dev": ("missing-export", "test_exports"),
    "stage": ("two-spf", "test_spf"),
    "demo": ("cname-target", "test_return_path"),
}
PARTITIONS = ("dev", "stage", "demo", "prod")


class Page(HTMLParser):
    """Every element id; the static tables (id or class, rows of (text, attributes, link)); no script needed."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.tables: list[tuple[dict[str, str | None], list[list[tuple[str, dict[str, str | None], str | None]]]]] = []
        self.sections: dict[str, list[str]] = {}  # section id -> its h3/h4 texts
        self.diffs: dict[str, str] = {}  # partition section id -> its diff summary
        self._diff: list[str] | None = None
        self._open: list[list] = []
        self._cell: tuple[list[str], dict[str, str | None], list[str]] | None = None
        self._section: str | None = None
        self._heading: list[str] | None = None
        self._template = 0
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "template":
            self._template += 1
        if self._template:
            return
        if found.get("id"):
            self.ids.add(str(found["id"]))
        if tag == "section":
            self._section = found.get("id")
            self.sections[str(self._section)] = []
        elif tag in ("h3", "h4") and self._section:
            self._heading = []
        elif tag == "pre" and found.get("class") == "mailgate-diff":
            self._diff = []
        elif tag == "table":
            self.tables.append((found, []))
            self._open.append(self.tables[-1][1])
        elif tag == "tr" and self._open:
            self._open[-1].append([])
        elif tag in ("td", "th") and self._open:
            self._cell = ([], found, [])
        elif tag == "a" and self._cell is not None and found.get("href"):
            self._cell[2].append(str(found["href"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "template":
            self._template -= 1
        if self._template:
            return
        if tag == "table" and self._open:
            self._open.pop()
        elif tag in ("td", "th") and self._cell is not None:
            texts, attrs, links = self._cell
            self._open[-1][-1].append(("".join(texts).strip(), attrs, links[0] if links else None))
            self._cell = None
        elif tag in ("h3", "h4") and self._heading is not None and self._section:
            self.sections[self._section].append("".join(self._heading).strip())
            self._heading = None
        elif tag == "pre" and self._diff is not None and self._section:
            self.diffs[self._section] = "".join(self._diff)
            self._diff = None
        elif tag == "section":
            self._section = None

    def handle_data(self, data: str) -> None:
        for sink in (self._cell[0] if self._cell else None, self._heading, self._diff):
            if sink is not None:
                sink.append(data)

    def table(self, key: str, value: str) -> list[list[tuple[str, dict[str, str | None], str | None]]]:
        return next(rows for attrs, rows in self.tables if value in str(attrs.get(key) or "").split())


def test_the_matrix_shows_which_partition_is_red_on_what_and_links_to_the_evidence(
    scenarios, run_checks, tmp_path: Path
) -> None:
    for name in PARTITIONS:
        defect = PLANTED.get(name)
        scenarios.seed(name, defects=[defect[0]] if defect else [])
    run = run_checks("-m", "postmerge", "--postmark-wait", "5")
    assert run.failed() == {f"{check}[{name}]" for name, (_, check) in PLANTED.items()}, run.messages
    page = Page((tmp_path / "reports" / "latest" / "report.html").read_text(encoding="utf-8"))

    matrix = page.table("id", "mailgate-matrix")
    assert [text for text, _, _ in matrix[0]] == ["Check", *PARTITIONS]
    ran = [row for row in matrix[1:] if row[0][0] in POSTMERGE_CHECKS]
    assert sorted(row[0][0] for row in ran) == sorted(POSTMERGE_CHECKS)
    for row in matrix[1:]:
        if row not in ran:  # the preflight checks -m postmerge left out: deselected, partition-independent ones once
            assert {attrs.get("data-outcome") for _, attrs, _ in row[1:]} == {"deselected"}, row
    cells = {row[0][0]: {p: cell for p, cell in zip(PARTITIONS, row[1:], strict=True)} for row in ran}
    for check, by_partition in cells.items():
        for partition, (text, attrs, link) in by_partition.items():
            planted = PLANTED.get(partition, ("", ""))[1] == check
            outcome = "failed" if planted else "passed"
            assert (text, attrs.get("data-outcome"), attrs.get("class")) == (
                f"{'❌' if planted else '✅'} {outcome}",
                outcome,
                f"outcome-{outcome}",
            ), (check, partition)
            assert link is not None
            assert link.startswith("#")
            assert link[1:] in page.ids, f"{check}[{partition}] links to {link}, which is not in the page"
            assert page.sections[link[1:]][0].startswith(f"{'❌' if planted else '✅'} {check} [{partition}]: ")
    tooltip = cells["test_spf"]["stage"][1]["title"]  # the reason's first line
    assert tooltip
    assert tooltip == run.messages["test_spf[stage]"].splitlines()[0]

    spf = cells["test_spf"]["stage"][2]
    assert spf is not None
    dns_tables = [rows for attrs, rows in page.tables if "mailgate-table" in str(attrs.get("class"))]
    assert any(
        [text for text, _, _ in rows[0]] == ["server", "address", "question", "answer", "rcode", "time"]
        for rows in dns_tables
    )
    assert page.sections[spf[1:]][1].startswith("TXT stage.ardamails.com (authoritative")

    deploys = {section: headings for section, headings in page.sections.items() if section.startswith("partition-")}
    assert list(deploys) == [f"partition-{p}" for p in PARTITIONS]
