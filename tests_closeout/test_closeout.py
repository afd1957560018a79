"""PR closeout: what must hold before the infrastructure PR merges. Reads files only (no cloud access)."""

from __future__ import annotations

import pytest

from plugins.partitions import Selection
from plugins.signoff_log import NOT_DONE, TableProblem, cascade_row
from plugins.waivers import Waivers
from probes.cdk import CdkError, read_context_entry
from probes.changelog import newest_section
from probes.config import Target

pytestmark = pytest.mark.closeout


def test_changelog_has_an_added_entry(selection: Selection) -> None:
    path = selection.infra_repo / "CHANGELOG.md"
    assert path.is_file(), (
        f"{path} does not exist: add a CHANGELOG.md with a '## [Unreleased]' section and an '### Added' bullet"
    )
    section = newest_section(path.read_text(encoding="utf-8"))
    assert section.heading is not None, (
        f"{path} has no '## ' section: add '## [Unreleased]' with '### Added' and a bullet"
    )
    assert section.has_added, (
        f"{path}: the newest section '## {section.heading}' has no '### Added' heading: add one with a bullet for "
        "the partition mail rollout"
    )
    assert section.added, (
        f"{path}: '### Added' of the newest section '## {section.heading}' has no bullet: add one saying what this "
        "PR adds"
    )


def test_context_block_complete(target: Target, selection: Selection) -> None:
    path = selection.infra_repo / "cdk.context.json"
    what = f"a {target.context_key} block {{dkimSelector, dkimPublicKey, returnPathTarget}}"
    assert path.exists(), f"{path} does not exist: deploy {target.name} (its pre-deploy step writes {what})"
    try:
        entry = read_context_entry(path, target.context_key)
    except CdkError as exc:
        pytest.fail(f"{exc} (partition {target.name}): complete {what}", pytrace=False)
    assert entry is not None, (
        f"{path} has no {target.context_key} (partition {target.name}): add {what}; "
        f"`{selection.config.file.deploy.command.format(**target.command_vars())}` writes it"
    )


def test_partition_signed_off(target: Target, selection: Selection) -> None:
    log = selection.signoff_log
    assert log is not None, (
        f"no execution log to judge partition {target.name}'s sign-off: set signoff.log or pass --signoff-log PATH"
    )
    try:
        row = cascade_row(log.read_text(encoding="utf-8"), target.name)
    except (OSError, UnicodeDecodeError, TableProblem) as exc:
        pytest.fail(f"execution log {log}: {exc}", pytrace=False)
    assert row is not None, (
        f"execution log {log} has no cascade row for partition {target.name}: run preflight, the deploy and postmerge "
        f"for {target.name} (mailgate adds the row)"
    )
    cells = ", ".join(f"{name} {row[name] or NOT_DONE}" for name in ("Pre-flight", "Deploy", "Verified"))
    assert row["Sign-off date"] not in ("", NOT_DONE), (
        f"execution log {log}: partition {target.name} is not signed off ({cells}): get Pre-flight, Deploy and "
        f"Verified to ✅ (`pytest --deploy --partition {target.name}`)"
    )


def test_no_waiver_expired(mailgate_waivers: Waivers) -> None:
    expired = mailgate_waivers.expired()
    listed = "; ".join(
        f"{w.describe()} for {w.partition or 'every partition'} expired on {w.expires.isoformat()} ({w.where})"
        for w in expired
    )
    assert not expired, f"{len(expired)} waiver(s) expired: {listed}; fix the check and remove the waiver, or renew it"
