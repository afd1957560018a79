"""`--waivers PATH` / `waivers:`: a failing check with an unexpired waiver is an expected failure (xfail), not a pass.

The file is read and every waiver's check name checked against the check functions of the run's test paths at
configure time, before any xdist worker starts: a malformed file stops the run (exit 4). The check runs in full;
only its outcome is judged against the waiver: failed and waived → xfailed with the waiver's reason; failed and
the waiver expired → failed, saying so; passed → passed, and the run says the waiver is no longer needed. A check
that errors before it runs (its deploy refused, a fixture failed) is not waived: the waiver covers the check's
verdict, not the run's ability to reach it.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from plugins.partitions import SELECTION
from plugins.report import check_id
from probes import waivers as waiver_file
from probes.config import ConfigError
from probes.waivers import Waiver

PROPERTY = "mailgate_waiver"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("mailgate").addoption(
        "--waivers", metavar="PATH", help="waivers file (default: waivers: of the partitions file)"
    )


@dataclass(frozen=True)
class Waivers:
    """This run's waivers and the day they are judged on (one day for the whole run, also across workers)."""

    path: Path | None
    entries: tuple[Waiver, ...]
    today: date

    def find(self, check: str, partition: str | None) -> Waiver | None:
        """The waiver covering the check: one for its partition before one for every partition."""
        covering = [w for w in self.entries if w.covers(check, partition)]
        covering.sort(key=lambda w: w.partition is None)
        return covering[0] if covering else None

    def for_partition(self, partition: str) -> list[Waiver]:
        return [w for w in self.entries if w.partition in (None, partition)]

    def expired(self) -> list[Waiver]:
        return [w for w in self.entries if w.expired(self.today)]


WAIVERS = pytest.StashKey[Waivers]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Load the waivers once every plugin is configured (the partitions file is loaded) and before xdist starts
    its workers (its session start runs last)."""
    config = session.config
    chosen = config.stash.get(SELECTION, None)
    option = config.getoption("waivers")
    path = Path(config.invocation_params.dir, option).resolve() if option else None
    if path is None and chosen is not None:
        path = chosen.config.waivers
    shared = getattr(config, "workerinput", {}).get("mailgate_waivers_today")
    today = date.fromisoformat(shared) if shared else date.today()
    if path is None:
        config.stash[WAIVERS] = Waivers(None, (), today)
        return
    known = list(chosen.config.targets) if chosen is not None else []
    try:
        entries = waiver_file.load(path, known)
        if not hasattr(config, "workerinput"):
            waiver_file.check_names(entries, _known_checks(config))
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[WAIVERS] = Waivers(path, entries, today)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: every worker judges expiry on the controller's day (a run across midnight judges one day)."""
    node.workerinput["mailgate_waivers_today"] = node.config.stash[WAIVERS].today.isoformat()


def _known_checks(config: pytest.Config) -> set[str]:
    """The check functions (`def test_…`) in the run's test paths and the project's testpaths, read from the source:
    known before collection, so a typo stops the run on the xdist controller too, where nothing is collected."""
    files: set[Path] = set()
    roots = [Path(config.invocation_params.dir, arg.split("::")[0]) for arg in config.args]
    roots += [config.rootpath / path for path in config.getini("testpaths")]  # a run narrowed to one folder
    for root in roots:
        if root.suffix == ".py":
            files.add(root)
        for folder, dirs, found in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith((".", "__")) and d not in ("node_modules", "site-packages")]
            files.update(Path(folder, f) for f in found if f.startswith("test") and f.endswith(".py"))
    names: set[str] = set()
    for file in sorted(files):
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue  # pytest reports it when it collects the file
        names.update(
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
        )
    return names


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Judge a covered check's own verdict against its waiver."""
    check = check_id(item)
    waivers = item.config.stash.get(WAIVERS, None)
    waiver = waivers.find(check.name, check.partition) if check is not None and waivers is not None else None
    if waiver is None or waivers is None:
        return (yield)
    expired = waiver.expired(waivers.today)
    try:
        result = yield
    except (Exception, pytest.fail.Exception) as exc:
        failure = _first_line(exc)
        if expired:
            _record(item, waiver, "expired")
            raise pytest.fail.Exception(
                f"the waiver for {waiver.describe()} expired on {waiver.expires.isoformat()} ({waiver.where}); "
                f"fix the check or renew the waiver: {failure}",
                pytrace=False,
            ) from exc
        _record(item, waiver, "waived")
        raise pytest.xfail.Exception(f"waived: {waiver.describe()}: {failure}") from exc
    _record(item, waiver, "expired, not needed" if expired else "not needed")
    return result


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "msg", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _record(item: pytest.Item, waiver: Waiver, state: str) -> None:
    item.user_properties.append((PROPERTY, json.dumps(waiver_record(waiver, state))))


def waiver_record(waiver: Waiver, state: str) -> dict[str, Any]:
    """The waiver as the sign-off records it: its fields, where it is written, and what it did in this run."""
    return {
        "check": waiver.check,
        "partition": waiver.partition,
        "reason": waiver.reason,
        "expires": waiver.expires.isoformat(),
        "by": waiver.by,
        "where": waiver.where,
        "state": state,
    }


def waiver_of(report: pytest.TestReport) -> dict[str, Any] | None:
    """The waiver a check's report was judged against (None: none covered it)."""
    for name, value in report.user_properties:
        if name == PROPERTY:
            record: dict[str, Any] = json.loads(str(value))
            return record
    return None


def describe(record: dict[str, Any]) -> str:
    """A recorded waiver as the sign-off cell names it: `test_dmarc (reason; until 2026-12-31, by Jane)`."""
    return f"{record['check']} ({record['reason']}; until {record['expires']}, by {record['by']})"


@pytest.fixture
def mailgate_waivers(request: pytest.FixtureRequest) -> Waivers:
    """This run's waivers (none when no waivers file is configured)."""
    return request.config.stash.get(WAIVERS, None) or Waivers(None, (), date.today())


def applying(config: pytest.Config, partition: str) -> list[Waiver]:
    """The waivers that apply to a partition (for the production deploy confirmation)."""
    waivers = config.stash.get(WAIVERS, None)
    return waivers.for_partition(partition) if waivers is not None else []


def notes(records: Iterable[tuple[str, dict[str, Any]]]) -> list[str]:
    """Terminal lines for waivers this run found unnecessary or expired, from (check node id, record) pairs."""
    lines = []
    for nodeid, record in records:
        state = record["state"]
        if state in ("not needed", "expired, not needed"):
            lines.append(f"waiver no longer needed: {nodeid} passed; remove {describe(record)} from {record['where']}")
        elif state == "expired":
            lines.append(f"waiver expired on {record['expires']}: {nodeid} failed; {record['where']}")
    return lines
