"""What the terminal shows of a verdict: mailgate's message and evidence, and a closing "mailgate verdict".

A failing check's report normally carries pytest's traceback: the source listing, the assertion's
introspection (whole observation reprs) and any chained exception. For a verdict (a check's own assert with
its message, or `pytest.fail(..., pytrace=False)`) the report's `longrepr` becomes that message plus the
check's evidence; its crash line (the short summary, JUnit's `failure` message) is the reason's headline.
`--tb=<style>` other than auto, `--full-trace` or `-vv` keep pytest's own traceback, and so does an
exception from mailgate's own code (a bug, not a verdict).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

# pytest's report classes: a report carrying them is drawn, serialized for xdist and read by junitxml like one
# of pytest's own (pytest builds the same for `pytest.fail(pytrace=False)`: style "value").
from _pytest._code.code import ExceptionChainRepr, ReprEntry, ReprFileLocation, ReprTraceback

from plugins.matrix import ALL, SYMBOL, outcome_of

REASON_ATTR = "mailgate_reason"  # the whole reason on the report (the crash line has only its headline)
EVIDENCE_LINES = 20  # of each evidence entry in the terminal; the HTML report and signoff.json have more
HEADLINE = 400  # characters of a headline (JUnit message, verdict line)
PROBLEM = ("failed", "error")


def headline(reason: str) -> str:
    """The reason's first line; when that announces a list ("exports of X are wrong (1):"), with its first item."""
    lines = [line.strip() for line in reason.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    head = lines[0]
    if head.endswith(":") and len(lines) > 1:
        head = f"{head} {lines[1]}"
    return head if len(head) <= HEADLINE else head[: HEADLINE - 1] + "…"


def reason_of(item: pytest.Item, excinfo: pytest.ExceptionInfo[BaseException]) -> str | None:
    """mailgate's message when the exception is a verdict, None when it is a bug (or an assert without one)."""
    value = excinfo.value
    if isinstance(value, pytest.fail.Exception):
        return value.msg if not value.pytrace else None
    if not isinstance(value, AssertionError) or not excinfo.traceback:
        return None
    crash = excinfo.traceback[-1]
    if Path(crash.path) != item.path:  # an assert inside a plugin or a probe is a bug
        return None
    text = str(value)
    if "@pytest_ar" not in crash.frame.f_globals:  # not rewritten: the message as written
        return text or None
    # A rewritten assert's message is the user's message, its further lines indented by two spaces, then the
    # unindented introspection ("assert …", " + where …"): _pytest/assertion/util.py _format_lines.
    lines = text.split("\n")
    message = [lines[0]]
    for line in lines[1:]:
        if not line.startswith("  "):
            break
        message.append(line[2:])
    if message[0].startswith("assert "):  # a bare assert: only introspection, nothing of mailgate's
        return None
    return "\n".join(message)


def plain_style(config: pytest.Config) -> bool:
    """The operator's view: no --tb style, --full-trace or -vv asking for pytest's full traceback."""
    return (
        config.getoption("tbstyle", "auto") == "auto"
        and not config.getoption("fulltrace", False)
        and config.get_verbosity() < 2
    )


def clean(item: pytest.Item, call: pytest.CallInfo[None], report: pytest.TestReport, evidence: Sequence[str]) -> None:
    """Turn a failed verdict's report into mailgate's message and evidence (see the module docstring)."""
    if not report.failed or call.excinfo is None:
        return
    reason = reason_of(item, call.excinfo)
    if reason is None:
        return
    setattr(report, REASON_ATTR, reason)
    if not plain_style(item.config):
        return
    crash = call.excinfo.traceback[-1] if call.excinfo.traceback else None
    path, lineno = (str(crash.path), crash.lineno + 1) if crash else (str(item.path), 0)
    entry = ReprEntry(reason.splitlines(), None, None, None, "value")
    longrepr = ExceptionChainRepr(
        [(ReprTraceback([entry], None, "value"), ReprFileLocation(path, lineno, headline(reason)), None)]
    )
    for text in evidence:
        title, _, body = text.partition("\n")
        lines = body.splitlines()
        more = len(lines) - EVIDENCE_LINES
        shown = lines[:EVIDENCE_LINES] + ([f"… {more} more line(s) in the HTML report"] if more > 0 else [])
        longrepr.addsection(f"evidence: {title}", "\n".join(shown) or "(nothing)")
    report.longrepr = longrepr


def verdict_lines(entries: Sequence[Mapping[str, Any]], partitions: Sequence[str]) -> list[str]:
    """One line per partition (its own checks), one for the partition-independent checks, then one per
    failing or waived check with the headline of its reason."""
    lines = []
    for name in [*partitions, None]:
        mine = [outcome_of(str(e["outcome"])) for e in entries if e.get("partition") == name]
        mine = [o for o in mine if o != "deselected"]
        if not mine:
            continue
        counts = {o: mine.count(o) for o in dict.fromkeys(sorted(mine, key=_severity))}
        mark = "❌" if any(o in PROBLEM for o in counts) else "✅" if set(counts) == {"passed"} else "🟡"
        label = name if name is not None else f"partition-independent ({ALL})"
        lines.append(f"{mark} {label}: " + ", ".join(f"{n} {o}" for o, n in counts.items()))
    for entry in entries:
        outcome = outcome_of(str(entry["outcome"]))
        if outcome in (*PROBLEM, "waived"):
            where = entry.get("partition") or ALL
            reason = headline(str(entry.get("message") or "")) or "(no reason given)"
            lines.append(f"{SYMBOL[outcome]} {where} {entry['check']}: {outcome}: {reason}")
    return lines


def _severity(outcome: str) -> int:
    order = ("failed", "error", "waived", "not run", "skipped", "passed")
    return order.index(outcome) if outcome in order else len(order)


class ClosingSection:
    """The "mailgate verdict" section, written last (after pytest's short summary, before its final line)."""

    def __init__(self, entries: Callable[[], Sequence[Mapping[str, Any]]], partitions: Callable[[], list[str]]):
        self._entries = entries
        self._partitions = partitions

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> Generator[None]:
        result = yield
        lines = verdict_lines(self._entries(), self._partitions())
        if lines:
            terminalreporter.write_sep("=", "mailgate verdict")
            for line in lines:
                terminalreporter.write_line(line)
        return result
