"""cdk diff against the deployed stack: nothing destroyed or replaced; production changes nothing unless allowed."""

from __future__ import annotations

import pytest

from plugins.preflight import InfraRunner
from plugins.report import Evidence
from probes import cdk
from probes.config import Target

pytestmark = [pytest.mark.preflight, pytest.mark.diff]


def test_diff_is_safe(target: Target, infra: InfraRunner, request: pytest.FixtureRequest, evidence: Evidence) -> None:
    result = infra.diff(target)
    assert result.ok, result.explained()
    summary = cdk.summarize_diff("\n".join(result.tail))
    counts = {action: n for action, n in summary.by_action.items() if n}
    lines = [f"{c.action:8} {c.resource_type} {c.logical_id}" for c in summary.resources]
    report = evidence.diff(target, summary)
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
