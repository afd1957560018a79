"""cdk diff against the deployed stack: nothing destroyed or replaced; production changes nothing unless allowed."""

from __future__ import annotations

import pytest

from plugins.preflight import InfraRunner
from plugins.report import Evidence, reports_dir
from probes import cdk
from probes.config import Target

pytestmark = [pytest.mark.preflight, pytest.mark.diff]


def test_diff_is_safe(target: Target, infra: InfraRunner, request: pytest.FixtureRequest, evidence: Evidence) -> None:
    result = infra.diff(target)
    assert result.ok, result.explained()
    summary = cdk.summarize_diff("\n".join(result.tail))
    counts = {action: n for action, n in summary.by_action.items() if n}
    lines = [f"{c.action:8} {c.resource_type} {c.logical_id}" for c in summary.resources]
    report = reports_dir(request.config) / f"diff-{target.infrastructure}-{target.name}.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(_markdown(target, summary))
    evidence.add(f"cdk diff {target.stack_name}: {counts or 'no differences'} ({report})", lines)
    unsafe = [c for c in summary.resources if c.action in ("destroy", "replace")]
    changes = ", ".join(f"{c.action} {c.resource_type} {c.logical_id}" for c in unsafe)
    assert not unsafe, (
        f"cdk diff of {target.stack_name} would {changes}; a partition deploy must not destroy or replace "
        f"resources: review {report}"
    )
    modifies = [c for c in summary.resources if c.action == "modify"]
    if target.production and not request.config.getoption("allow_modify"):
        assert not modifies, (
            f"production partition {target.name}: cdk diff modifies "
            f"{', '.join(f'{c.resource_type} {c.logical_id}' for c in modifies)}; review {report} and rerun with "
            "--allow-modify if intended"
        )


def _markdown(target: Target, summary: cdk.DiffSummary) -> str:
    rows = [f"| {c.action} | {c.resource_type} | {c.logical_id} |" for c in summary.resources]
    totals = [
        f"| {kind} | " + " | ".join(str(counts.get(a, 0)) for a in ACTIONS) + " |"
        for kind, counts in summary.by_type.items()
    ]
    return "\n".join(
        [
            f"## cdk diff {target.stack_name}",
            "",
            "| Resource type | " + " | ".join(ACTIONS) + " |",
            "|---|" + "---|" * len(ACTIONS),
            *totals,
            "",
            "| Action | Type | Logical id |",
            "|---|---|---|",
            *rows,
            "",
        ]
    )


ACTIONS = cdk.ACTIONS
