"""`mailgate-merge`: the runs of several CI jobs (shards: one per partition or per infrastructure) merged into the
sign-off one run over all their partitions would have written.

`mailgate-merge [--reports-dir OUT] [--signoff-log LOG] [--partitions-file F] RUN_DIR...` reads each shard's own
records (signoff.json and its JUnit XML, found in the run folder or through a reports folder's `latest`) and
writes into a run folder of its own under OUT, `OUT/merge-<partitions>-<UTC time>/`, claimed and pointed at by
`OUT/latest` as a run's folder is (plugins.run_folders): signoff.json, signoff.md, junit.xml and report.html (an
HTML summary); with `--signoff-log` it updates the execution log's cascade rows. Rows, cells, the log update,
the matrix and signoff.md come from the sign-off plugin's own functions (plugins.signoff, plugins.signoff_log,
plugins.matrix), fed with the shards' results, so a merge writes what one run writes. Shard order does not
matter: rows follow the partitions file's deploy order.

It refuses, with one line on stderr and exit 4: a folder that is not a run, an interrupted run (INCOMPLETE), the
same partition in two shards, shards made from different partitions files (their `partitions_digest`) or by
different mailgate versions, and an OUT that is a run's folder or a shard's reports folder. It never writes into
a shard's folder, and a second merge into one OUT keeps the first: each claims its own folder.
Exit status otherwise: 0 when every check passed, 1 when any failed, else the first shard's non-zero status.

Lives beside the plugins because it is their second caller: it reads what they write and uses their rules.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from plugins import run_folders
from plugins.gates import Records
from plugins.matrix import OUTCOMES, Matrix, build_matrix, outcome_of
from plugins.outcome import FAILED_OUTCOMES
from plugins.report_html import sections
from plugins.run_state import write_atomic
from plugins.signoff import (
    MAX_EVIDENCE_LINES,
    Result,
    _check_entry,
    file_digest,
    file_result,
    partition_rows,
    result_of,
    signoff_markdown,
    signoff_table_html,
    update_run_files,
    verdict_matrix_html,
)
from plugins.signoff_log import HEADER, LogResult, Row
from probes.config import Config, ConfigError, Target, load
from probes.secrets import redact

REFUSED = 4
TESTS_FAILED = 1


class Refusal(Exception):
    """Why these folders cannot be merged, in one line."""


@dataclass(frozen=True)
class Shard:
    """One shard's run: its folder, its signoff.json and its JUnit XML (None when it wrote none)."""

    folder: Path
    document: dict[str, Any]
    junit: Path | None

    @property
    def partitions(self) -> list[str]:
        return [str(p) for p in self.document["run"].get("partitions") or []]

    @property
    def run(self) -> dict[str, Any]:
        return dict(self.document["run"])


def run_folder(path: Path) -> Path:
    """The run folder `path` names: itself when it holds signoff.json, else the folder its `latest` names."""
    if (path / "signoff.json").is_file():
        return path
    latest = path / "latest"
    if latest.is_symlink() or latest.is_dir():
        return run_folder(latest.resolve())
    if latest.is_file():  # a reports folder whose `latest` is a file naming the run folder
        return run_folder(path / latest.read_text().strip())
    raise Refusal(f"{path} is not a mailgate run: no signoff.json (pass the --reports-dir of a finished run)")


def read_shard(path: Path) -> Shard:
    if not path.is_dir():
        raise Refusal(f"{path} is not a mailgate run: no such folder")
    folder = run_folder(path)
    try:
        document = json.loads((folder / "signoff.json").read_text(encoding="utf-8"))
        run = document["run"]
        complete = document["complete"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise Refusal(f"{folder / 'signoff.json'} is not a mailgate sign-off ({exc}); pass a run's folder") from None
    if complete is not True:
        raise Refusal(f"{folder} is an interrupted run (INCOMPLETE): rerun that shard, then merge")
    xml = Path(str((run.get("options") or {}).get("xmlpath") or ""))
    junit = folder / xml.name if xml.name and (folder / xml.name).is_file() else None
    return Shard(folder, document, junit)


def check_together(shards: Sequence[Shard]) -> None:
    """Refuse shards that cannot be one run: a partition twice, another partitions file, another version."""
    owner: dict[str, Path] = {}
    for shard in shards:
        for name in shard.partitions:
            if name in owner:
                raise Refusal(f"partition {name} is in two shards: {owner[name]} and {shard.folder}; merge it once")
            owner[name] = shard.folder
    for field, what in (("partitions_digest", "partitions files"), ("mailgate_version", "mailgate versions")):
        seen = {shard.run.get(field): shard.folder for shard in shards}
        if None in seen:
            raise Refusal(f"{seen[None]} records no {field}: it was made by a mailgate that predates mailgate-merge")
        if len(seen) > 1:
            named = "; ".join(f"{folder}: {value}" for value, folder in seen.items())
            raise Refusal(f"shards made from different {what} ({named}); rerun them from one")


def partitions_config(shards: Sequence[Shard], given: Path | None) -> Config:
    """The partitions file the shards were made from: `given`, or the path they recorded; same bytes as theirs."""
    path = given or Path(str(shards[0].run.get("partitions_file") or "partitions.yaml"))
    try:
        config = load(path)
    except ConfigError as exc:
        raise Refusal(str(exc)) from None
    digest, theirs = file_digest(path), shards[0].run["partitions_digest"]
    if digest != theirs:
        raise Refusal(f"{path} ({digest}) is not the partitions file the shards were made from ({theirs})")
    return config


@dataclass(frozen=True)
class Merged:
    targets: tuple[Target, ...]
    rows: list[Row]
    results: list[Result]
    owners: dict[str, Shard]  # nodeid -> the shard whose result the merge keeps
    deploys: dict[str, dict[str, Any]]
    deselected: list[dict[str, Any]]
    exitstatus: int


def merge(shards: Sequence[Shard], config: Config) -> Merged:
    """The shards' rows and checks as one run: rows in deploy order, each partition's checks in its shard's order
    after the partition-independent ones, a check that several shards ran kept at its worst outcome."""
    names = {name for shard in shards for name in shard.partitions}
    targets = tuple(config.in_deploy_order([t for t in config.targets.values() if t.name in names]))
    unknown = sorted(names - {t.name for t in targets})
    if unknown:
        raise Refusal(f"{config.path} has no partition {', '.join(unknown)}, which a shard ran")
    ordered = sorted(shards, key=lambda s: min(_index(targets, n) for n in s.partitions) if s.partitions else -1)
    rows: dict[str, Row] = {}
    kept: dict[str, tuple[Result, Shard]] = {}
    deploys: dict[str, dict[str, Any]] = {}
    deselected: dict[str, dict[str, Any]] = {}
    for shard in ordered:
        results = [result_of(entry) for entry in shard.document.get("checks") or []]
        shard_deselected = list(shard.document.get("deselected") or [])
        shard_deploys = {str(d["partition"]): d for d in shard.document.get("deploys") or []}
        deploys.update(shard_deploys)
        mine = [t for t in targets if t.name in shard.partitions]
        everything = [*results, *(result_of(_deselected_entry(c)) for c in shard_deselected)]
        for row in partition_rows(mine, everything, shard_deploys, shard.run["date"], complete=True):
            rows[row.partition] = row
        for result in results:
            known = kept.get(result.check.nodeid)
            if known is None or _worse(result, known[0]):
                kept[result.check.nodeid] = (result, shard)
        deselected.update((str(c["nodeid"]), c) for c in shard_deselected)
    order = [t.name for t in targets]
    chosen = sorted(kept.values(), key=lambda pair: _index(targets, pair[0].check.partition))
    results = [result for result, _ in chosen]
    statuses = [int(shard.document.get("exitstatus") or 0) for shard in ordered]
    failed = any(r.outcome in FAILED_OUTCOMES for r in results)
    exitstatus = TESTS_FAILED if failed else next((s for s in statuses if s), 0)
    return Merged(
        targets=targets,
        rows=[rows[name] for name in order if name in rows],
        results=results,
        owners={result.check.nodeid: shard for result, shard in chosen},
        deploys={name: deploys[name] for name in order if name in deploys},
        deselected=list(deselected.values()),
        exitstatus=exitstatus,
    )


def _deselected_entry(check: dict[str, Any]) -> dict[str, Any]:
    """A deselected check (signoff.json's `deselected`: node id, partition, phase, name) as a check entry."""
    return {
        "nodeid": check["nodeid"],
        "partition": check["partition"],
        "phase": check["phase"],
        "check": check["name"],
        "outcome": "deselected",
        "message": None,
    }


def _index(targets: Sequence[Target], name: str | None) -> int:
    """A partition's place in the deploy order (-1: partition-independent, first, as a run collects them)."""
    return -1 if name is None else next(i for i, t in enumerate(targets) if t.name == name)


def _worse(new: Result, known: Result) -> bool:
    return OUTCOMES.index(outcome_of(new.outcome)) < OUTCOMES.index(outcome_of(known.outcome))


# -- writing --------------------------------------------------------------------------------------------------


def junit_names(nodeid: str) -> tuple[str, str]:
    """(classname, name) of a node id as pytest's junitxml writes them (`_pytest/junitxml.py`,
    mangle_test_address: the path's separators become dots, `.py` goes, the parameters stay on the name)."""
    path, bracket, params = nodeid.partition("[")
    names = path.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    return ".".join(names[:-1]), names[-1]


def merged_junit(merged: Merged, shards: Sequence[Shard]) -> bytes:
    """One testsuite of the kept checks' testcases, in the merge's order; counts recomputed, times summed."""
    cases: dict[tuple[Path, str, str], ET.Element] = {}
    suites: list[ET.Element] = []
    for shard in shards:
        if shard.junit is None:
            continue
        root = ET.parse(shard.junit).getroot()
        for suite in root.iter("testsuite"):
            suites.append(suite)
            for case in suite.iter("testcase"):
                cases[(shard.folder, case.get("classname", ""), case.get("name", ""))] = case
    suite = ET.Element("testsuite", {"name": "pytest"})
    for result in merged.results:
        found = cases.get((merged.owners[result.check.nodeid].folder, *junit_names(result.check.nodeid)))
        if found is not None:
            suite.append(found)
    kinds = {kind: sum(1 for case in suite if case.find(kind) is not None) for kind in ("error", "failure", "skipped")}
    suite.set("errors", str(kinds["error"]))
    suite.set("failures", str(kinds["failure"]))
    suite.set("skipped", str(kinds["skipped"]))
    suite.set("tests", str(len(suite)))
    suite.set("time", f"{sum(float(s.get('time') or 0) for s in suites):.3f}")
    stamps = sorted(s.get("timestamp", "") for s in suites if s.get("timestamp"))
    if stamps:
        suite.set("timestamp", stamps[0])
    root = ET.Element("testsuites", {"name": "pytest tests"})
    root.append(suite)
    written: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return written


def document(
    merged: Merged, shards: Sequence[Shard], config: Config, log: LogResult | None, matrix: LogResult | None = None
) -> dict[str, Any]:
    """signoff.json of the merge: the shape a run writes, the run part naming the shards."""
    runs = [shard.run for shard in shards]
    first = runs[0]
    return {
        "complete": True,
        "exitstatus": merged.exitstatus,
        "run": {
            "start": min(str(r.get("start")) for r in runs),
            "end": max(str(r.get("end")) for r in runs),
            "date": min(str(r.get("date")) for r in runs),
            "command": "mailgate-merge " + " ".join(str(s.folder) for s in shards),
            "partitions_file": str(config.path),
            "partitions_digest": first["partitions_digest"],
            "mailgate_version": first["mailgate_version"],
            "partitions": [t.name for t in merged.targets],
            "shards": [
                {
                    "folder": str(shard.folder),
                    "command": shard.run.get("command"),
                    "partitions": shard.partitions,
                    "exitstatus": shard.document.get("exitstatus"),
                    "infra_head": shard.run.get("infra_head"),
                }
                for shard in shards
            ],
        },
        "rows": [dict(zip(HEADER, row.table_cells(), strict=True)) for row in merged.rows],
        "deploys": list(merged.deploys.values()),
        "log": file_result(log),
        "verification": file_result(matrix),
        "checks": [_check_entry(result, MAX_EVIDENCE_LINES) for result in merged.results],
        "deselected": merged.deselected,
    }


def summary_html(
    merged: Merged, shards: Sequence[Shard], folder: Path, entries: list[dict[str, Any]], matrix: Matrix
) -> str:
    """A self-contained page: the shards, the sign-off table, the verdict matrix, each partition and check."""
    partitions = [t.name for t in merged.targets]
    shard_rows = "".join(
        f"<tr><td>{escape(str(s.folder))}</td><td>{escape(', '.join(s.partitions))}</td>"
        f"<td>{escape(str(s.document.get('exitstatus')))}</td><td><code>{escape(str(s.run.get('command')))}</code></td></tr>"
        for s in shards
    )
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>mailgate merged sign-off</title></head><body>'
        f"<h1>mailgate sign-off, merged from {len(shards)} shard(s)</h1>"
        f"<table><tr><th>shard</th><th>partitions</th><th>exit</th><th>command</th></tr>{shard_rows}</table>"
        f"{signoff_table_html(merged.rows, complete=True)}{verdict_matrix_html(matrix)}"
        f"{sections(entries, partitions, merged.deploys, folder, {})}</body></html>\n"  # diff summaries stay per shard
    )


def write(out: Path, shards: Sequence[Shard], merged: Merged, config: Config, signoff_log: Path | None) -> Path:
    """Everything into a run folder of its own under OUT (the caller points OUT/latest at it); returns the folder."""
    refuse_out(out, shards)
    now = datetime.now(UTC)
    folder = run_folders.claim(out, run_folders.name("merge", ",".join(t.name for t in merged.targets), now), now)
    data = document(merged, shards, config, None)
    log, matrix_file = update_run_files(config, signoff_log, Records.of(data), merged.rows)
    data["log"], data["verification"] = file_result(log), file_result(matrix_file)
    heading = f"Merged from {len(shards)} shard(s): " + "; ".join(
        f"`{s.run.get('command')}` ({', '.join(s.partitions)})" for s in shards
    )
    matrix = build_matrix([*data["checks"], *map(_deselected_entry, merged.deselected)], data["run"]["partitions"])
    markdown = signoff_markdown(
        heading, complete=True, rows=merged.rows, matrix=matrix, results=merged.results, log=log
    )
    write_atomic(folder / "signoff.json", redact(json.dumps(data, indent=2, ensure_ascii=False)).encode())
    write_atomic(folder / "signoff.md", redact(markdown).encode())
    write_atomic(folder / "junit.xml", merged_junit(merged, shards))
    write_atomic(folder / "report.html", redact(summary_html(merged, shards, folder, data["checks"], matrix)).encode())
    return folder


def refuse_out(out: Path, shards: Sequence[Shard]) -> None:
    """OUT is a reports folder: never a run's folder (it holds one sign-off), nor a shard's reports folder (whose
    `latest` names the shard's run)."""
    if (out / "signoff.json").exists():
        raise Refusal(f"{out} already holds a sign-off (signoff.json): it is a run's folder; pass a reports folder")
    for shard in shards:
        if out.resolve() == shard.folder.parent.resolve():
            raise Refusal(f"{out} is the reports folder of shard {shard.folder}: pass a reports folder of its own")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mailgate-merge", description="Merge shards' mailgate runs into one sign-off, as one run would write it."
    )
    parser.add_argument("--reports-dir", type=Path, default=Path("reports"), help="where the merge goes (reports/)")
    parser.add_argument("--signoff-log", type=Path, help="the execution log whose cascade rows to update")
    parser.add_argument("--partitions-file", type=Path, help="the partitions file (default: the one shards name)")
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="a shard's --reports-dir")
    args = parser.parse_args(argv)
    try:
        shards = [read_shard(path) for path in args.runs]
        check_together(shards)
        config = partitions_config(shards, args.partitions_file)
        merged = merge(shards, config)
        folder = write(args.reports_dir, shards, merged, config, args.signoff_log)
    except Refusal as exc:
        print(f"mailgate-merge: {exc}", file=sys.stderr)
        return REFUSED
    failed = sum(1 for r in merged.results if r.outcome in FAILED_OUTCOMES)
    latest = run_folders.point_latest(folder) or f"{folder.parent / run_folders.LATEST} points here"
    print(
        f"mailgate-merge: {len(shards)} shard(s), {len(merged.targets)} partition(s), {len(merged.results)} check(s), "
        f"{failed} failed; sign-off in {folder} ({latest})"
    )
    return merged.exitstatus


if __name__ == "__main__":
    sys.exit(main())
