"""The sharded workflows: list → one job per partition → merge, wired to the commands they call.
(actionlint checks both files in tests_unit/test_report.py.)"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
SHARDED = {"postmerge.yml": ("list", "check", "merge"), "preflight.yml": ("list", "shard", "merge")}


def _jobs(name: str) -> dict[str, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text())["jobs"]


def _step(job: dict[str, Any], predicate: Any) -> dict[str, Any]:
    found = [step for step in job["steps"] if predicate(step)]
    assert len(found) == 1, [step.get("name") for step in job["steps"]]
    return found[0]


def _matrix_keys() -> set[str]:
    done = subprocess.run(
        [Path(sys.executable).parent / "mailgate-partitions", "--partitions-file", str(ROOT / "partitions.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(json.loads(done.stdout)["include"][0])


@pytest.mark.parametrize("name", sorted(SHARDED))
def test_list_then_a_job_per_partition_then_merge(name: str) -> None:
    listing, shard, merge = (_jobs(name)[job] for job in SHARDED[name])
    lister = _step(listing, lambda s: s.get("id") == "list")
    assert "mailgate-partitions" in lister["run"], "the matrix comes from the partitions file, not a hand-kept list"
    assert listing["outputs"]["matrix"] == "${{ steps.list.outputs.matrix }}"
    assert shard["needs"] == "list"
    assert shard["strategy"]["matrix"] == "${{ fromJSON(needs.list.outputs.matrix) }}"
    assert shard["strategy"]["fail-fast"] is False, "one partition's failure must not cancel the others' verdicts"
    used = set(re.findall(r"matrix\.(\w+)", (WORKFLOWS / name).read_text()))
    assert used <= _matrix_keys(), f"the workflow reads matrix keys mailgate-partitions does not print: {used}"
    upload = _step(shard, lambda s: str(s.get("uses", "")).startswith("actions/upload-artifact@"))
    assert upload["with"]["path"] == "mailgate/reports/${{ matrix.shard }}/"
    assert upload["if"] == "${{ !cancelled() }}", "a failing shard's reports are uploaded too"
    assert merge["needs"] == ["list", SHARDED[name][1]]
    assert merge["if"] == "${{ !cancelled() && needs.list.result == 'success' }}", "merged also when a shard failed"
    download = _step(merge, lambda s: str(s.get("uses", "")).startswith("actions/download-artifact@"))
    prefix = upload["with"]["name"].split("${{")[0]
    assert download["with"]["pattern"] == prefix + "*", "the merge downloads exactly the shards' artifacts"
    merged = _step(merge, lambda s: s.get("id") == "merge")
    assert "mailgate-merge --reports-dir ../merged" in merged["run"]
    assert "../shards/*" in merged["run"]
    summary = _step(merge, lambda s: "GITHUB_STEP_SUMMARY" in s.get("run", ""))
    assert 'cat merged/latest/signoff.md >> "$GITHUB_STEP_SUMMARY"' in summary["run"], (
        "sign-off table and verdict matrix, from the merge's run folder (OUT/latest)"
    )
    upload = _step(merge, lambda s: str(s.get("uses", "")).startswith("actions/upload-artifact@"))
    assert upload["with"]["path"] == "merged/", "the merge's reports folder: its run folder and latest"
    assert _step(merge, lambda s: s.get("name") == "The merged verdict")["run"] == 'exit "$STATUS"'


def test_postmerge_shard_assumes_its_accounts_role_and_reads_its_own_token() -> None:
    workflow = yaml.safe_load((WORKFLOWS / "postmerge.yml").read_text())
    assert workflow["permissions"] == {"contents": "read", "id-token": "write"}, "OIDC needs id-token: write"
    check = workflow["jobs"]["check"]
    aws = _step(check, lambda s: str(s.get("uses", "")).startswith("aws-actions/configure-aws-credentials@"))
    assert aws["with"]["role-to-assume"].startswith("arn:aws:iam::${{ matrix.account }}:role/")
    assert aws["with"]["aws-region"] == "${{ matrix.region }}"
    token = _step(check, lambda s: "secrets[matrix.token_secrets]" in str(s.get("env", {}).get("TOKEN")))
    assert token["run"].startswith('echo "::add-mask::$TOKEN"'), "the token is masked before it goes anywhere"
    assert "secrets." not in (WORKFLOWS / "postmerge.yml").read_text(), "no other secret reaches the jobs"


def test_postmerge_shard_command_is_accepted_by_this_suite() -> None:
    """The shard's pytest command, as the workflow spells it, collects exactly one partition's postmerge checks."""
    command = _step(_jobs("postmerge.yml")["check"], lambda s: "pytest" in s.get("run", ""))["run"]
    values = {"PARTITION": "stage", "PARTITIONS_FILE": "partitions.yaml", "SHARD": "stage"}
    # the infrastructure checkout exists only in CI
    ids = collected_in_a_subprocess(command, values, without=("--infra-repo",))
    assert len(ids) == 8, ids
    assert all(i.startswith("tests_postmerge/") and i.endswith("[stage]") for i in ids), ids


def collected_in_a_subprocess(command: str, values: dict[str, str], without: tuple[str, ...] = ()) -> list[str]:
    """The node ids this suite collects for a workflow's pytest command, its `$NAME`s set from `values` and the
    arguments starting with one of `without` left out."""
    args = shlex.split(re.sub(r"\$(\w+)", lambda m: values[m.group(1)], command))
    assert args[:3] == ["python", "-m", "pytest"], f"the workflow runs {args[:3]}, expected python -m pytest"
    args = [a for a in args if not a.startswith(without)]
    done = subprocess.run(
        [sys.executable, *args[1:], "--collect-only", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return [line for line in done.stdout.splitlines() if "::" in line]
