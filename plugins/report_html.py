"""The HTML report's own sections: each partition's deploy, and each check's verdict with its evidence.

The matrix at the report's top links to the check sections here (`check_anchor`). Everything is static HTML
with inline style (pytest-html's results table is drawn by script from data; these sections must read,
print and parse without it, offline). Input is the sign-off's check entries and deploy records.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from plugins.matrix import SYMBOL, check_anchor, outcome_of

CSS = """
section.mailgate-check { border-left: 6px solid #bbb; margin: 10px 0; padding: 2px 10px; }
section.mailgate-check.outcome-passed { border-color: #5cb85c; }
section.mailgate-check.outcome-failed, section.mailgate-check.outcome-error { border-color: #d9534f; }
section.mailgate-check.outcome-waived { border-color: #e0b000; }
section.mailgate-check h3, section.mailgate-partition h3 { font-size: 1em; margin: 6px 0; }
pre.mailgate-message { white-space: pre-wrap; background: #fff4f4; padding: 6px; }
pre.mailgate-diff { white-space: pre; background: #f6f6f6; padding: 6px; overflow-x: auto; }
pre.mailgate-evidence { white-space: pre-wrap; background: #f6f6f6; padding: 6px; margin: 2px 0 8px; }
table.mailgate-table { border-collapse: collapse; margin: 2px 0 8px; font-size: 0.9em; }
table.mailgate-table th, table.mailgate-table td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; }
table.mailgate-table td { font-family: monospace; }
"""


def sections(
    entries: Sequence[Mapping[str, Any]],
    partitions: Sequence[str],
    deploys: Mapping[str, Mapping[str, Any]],
    report_dir: Path,
    diffs: Mapping[str, Path] | None = None,
) -> str:
    """The partitions' sections (deploy, and the diff summary where this run wrote one), then one section per
    check (anchored for the matrix's links)."""
    parts = [f"<style>{CSS}</style>", '<h2 id="mailgate-partitions">Partitions</h2>']
    parts += [_partition(name, deploys.get(name), report_dir, (diffs or {}).get(name)) for name in partitions]
    parts.append('<h2 id="mailgate-checks">Checks and their evidence</h2>')
    parts += [_check(entry) for entry in entries if entry.get("outcome") != "deselected"]
    return "".join(parts)


def _partition(name: str, deploy: Mapping[str, Any] | None, report_dir: Path, diff: Path | None) -> str:
    summary = ""
    if diff is not None and diff.is_file():
        link = f'<a href="{escape(_relative(diff, report_dir))}">{escape(diff.name)}</a>'
        text = diff.read_text(encoding="utf-8", errors="replace")
        summary = f'<p>Diff summary ({link}):</p><pre class="mailgate-diff">{escape(text)}</pre>'
    return (
        f'<section class="mailgate-partition" id="partition-{escape(name)}"><h3>{escape(name)}</h3>'
        f'<p class="mailgate-deploy">Deploy: {_deploy(deploy, report_dir)}</p>{summary}</section>'
    )


def _deploy(deploy: Mapping[str, Any] | None, report_dir: Path) -> str:
    """Ran or refused and why, exit code, duration, the log."""
    if deploy is None:
        return "not part of this run (no --deploy)"
    if deploy.get("refused"):
        return f"refused: {escape(str(deploy['refused']))}"
    log = deploy.get("log")
    link = f', log <a href="{escape(_relative(Path(log), report_dir))}">{escape(Path(log).name)}</a>' if log else ""
    if not deploy.get("ran"):
        return f"not run: {escape(str(deploy.get('failure') or 'the deploy could not start'))}{link}"
    verdict = "succeeded" if deploy.get("ok") else "FAILED"
    if deploy.get("interrupted"):
        verdict = "interrupted"
    why = f": {escape(str(deploy['failure']))}" if deploy.get("failure") and not deploy.get("ok") else ""
    duration = float(deploy.get("duration") or 0)
    return f"ran, {verdict}, exit code {deploy.get('exit_code')}, {duration:.1f} s{link}{why}"


def _relative(path: Path, start: Path) -> str:
    """A link that works where the report folder is opened or copied (file://, a downloaded artifact)."""
    try:
        return Path(os.path.relpath(path, start)).as_posix()
    except ValueError:  # another drive
        return path.as_uri()


def _check(entry: Mapping[str, Any]) -> str:
    outcome = outcome_of(str(entry["outcome"]))
    partition = entry.get("partition")
    where = f" [{escape(str(partition))}]" if partition is not None else " (all partitions)"
    head = f"{SYMBOL[outcome]} {escape(str(entry['check']))}{where}: {escape(outcome)}"
    message = entry.get("message")
    body = f'<pre class="mailgate-message">{escape(str(message))}</pre>' if message and outcome != "passed" else ""
    body += _evidence(entry.get("evidence") or (), entry.get("tables") or ())
    return (
        f'<section class="mailgate-check outcome-{outcome.replace(" ", "-")}" id="{check_anchor(str(entry["nodeid"]))}"'
        f' data-outcome="{escape(outcome)}"><h3>{head}</h3>'
        f'<p class="mailgate-nodeid"><code>{escape(str(entry["nodeid"]))}</code></p>{body}</section>'
    )


def _evidence(texts: Iterable[str], tables: Iterable[Mapping[str, Any]]) -> str:
    """Each entry under its title: a table where the check kept rows, its text otherwise."""
    by_title = {str(t["title"]): t for t in tables}
    out = []
    for text in texts:
        title, _, body = text.partition("\n")
        out.append(f'<h4 class="mailgate-evidence-title">{escape(title)}</h4>')
        table = by_title.pop(title, None)
        if table is not None:
            out.append(_table(table))
        elif body:
            out.append(f'<pre class="mailgate-evidence">{escape(body)}</pre>')
    return "".join(out)


def _table(table: Mapping[str, Any]) -> str:
    head = "".join(f'<th scope="col">{escape(str(c))}</th>' for c in table["columns"])
    rows = "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>" for row in table["rows"])
    return f'<table class="mailgate-table"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
