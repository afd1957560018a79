"""`make demo`: the whole cascade in one local world, then its PR closeout, with an execution log to show for it.

Two runs against one world (the closeout judges what the cascade run left in the world's infra repo and in the
log): `--deploy` of every partition in deploy order (the production one confirmed by name), then `-m closeout`.
The execution log and the verification matrix live in `reports/demo/`; they are created the first time and
updated in place afterwards, like an operator's own.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from probes.config import Config
from sandbox.suite import ROOT, suite_args

GATES = (
    ("Entry criteria verified (1P all partitions' vaults, AWS SSO both profiles)", "⏳ pending", "—"),
    ("Production deploy confirmation given", "⏳ pending", "—"),
    ("Infra PR merged", "⏳ pending", "—"),
)
MATRIX_ROWS = (
    ("V-PART-STACK-{p}", "{i}-{p}-Email healthy, six exports", "describe-stacks"),
    ("V-PART-DNS-{p}", "{p} zone delegated; SPF, DMARC, DKIM, Return-Path resolve", "authoritative DNS"),
    ("V-PART-POSTMARK-{p}", "{p} sending domain DKIM + Return-Path verified", "Postmark API"),
)


def execution_log(config: Config) -> str:
    """A fresh execution log: the cascade table (mailgate adds the partitions' rows) and the gates table."""
    lines = [
        "# Sandbox cascade: execution log",
        "",
        "Written by `make demo`; mailgate fills in the cascade rows, the gates it can decide and the V-check rows.",
        "",
        "## Cascade summary table",
        "",
        "| Partition | Infrastructure | Postmark account | Pre-flight | Deploy | Verified | Sign-off date |",
        "|---|---|---|---|---|---|---|",
        "",
        "| Gate | Status | Date |",
        "|---|---|---|",
        *(f"| {gate} | {status} | {date} |" for gate, status, date in GATES),
        "",
        "Deploy order: "
        + "; ".join(f"{t.name} after {', '.join(t.after)}" for t in config.targets.values() if t.after)
        + ".",
        "",
    ]
    return "\n".join(lines)


def verification_matrix(config: Config) -> str:
    """A verification matrix with a V-check row per partition and check family, status pending."""
    rows = [
        f"| {row_id.format(p=t.name)} | {what.format(p=t.name, i=t.infrastructure)} | {how} | ⏳ |"
        for t in config.targets.values()
        for row_id, what, how in MATRIX_ROWS
    ]
    return "\n".join(
        [
            "# Sandbox cascade: verification matrix",
            "",
            "| ID | Check | Method | Status |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    )


def run() -> int:
    """Start a world, run the cascade and then its closeout; the exit code of the first that failed (else 0)."""
    import pytest

    from sandbox.world import World, apply_env

    state = Path(tempfile.mkdtemp(prefix="mailgate-demo-"))
    folder = ROOT / "reports" / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with World(state) as world:
            apply_env(world.env())
            config = world.config
            log, matrix = folder / "execution-log.md", folder / "verification.md"
            if not log.exists():
                log.write_text(execution_log(config), encoding="utf-8")
            if not matrix.exists():
                matrix.write_text(verification_matrix(config), encoding="utf-8")
            partitions = _with_matrix(Path(world.info.partitions_file), matrix, state)
            common = ("--signoff-log", str(log))
            reports = ROOT / "reports"
            confirm = [arg for t in config.targets.values() if t.production for arg in ("--confirm-production", t.name)]
            cascade = pytest.main(
                suite_args(*common, "--deploy", *confirm, partitions_file=partitions, reports_dir=reports)
            )
            closeout = pytest.main(
                suite_args(*common, "-m", "closeout", partitions_file=partitions, reports_dir=reports)
            )
            print(f"\nmake demo: execution log {log}\nmake demo: verification matrix {matrix}", flush=True)
            return int(cascade) or int(closeout)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def _with_matrix(source: Path, matrix: Path, state: Path) -> str:
    """The world's partitions file with the demo's verification matrix configured."""
    data: dict[str, Any] = yaml.safe_load(source.read_text())
    data.setdefault("signoff", {}).setdefault("verification", {})["file"] = str(matrix)
    path = state / "partitions-demo.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)
