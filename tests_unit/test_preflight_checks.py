"""Preflight checks against the sandbox: the real CDK app through npm, defects committed in the world's
infra repo copy, the world's AWS profiles and fake `op`, and `cdk diff` against seeded (deployed) partitions.

Real build/lint/test only where the code checks are under test; elsewhere they are `true`.
"""

from __future__ import annotations

import json
import os
import shlex
from collections import Counter
from pathlib import Path

import pytest
import yaml

from sandbox.scenarios import Scenarios, commit_infra
from sandbox.suite import QUICK_CODE, suite_args

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = ("dev", "stage", "demo", "prod")
CODE = ("test_infra_repo_clean", "test_build", "test_lint", "test_unit_tests")
SYNTH = ("test_synth_runs", "test_stack_identity", "test_exports_declared", "test_roles_unnamed")
CODE_OR_SYNTH = "preflight and (code or synth)"
STACK_TS = "src/main/cdk/partition-mail/partition-mail-stack.ts"
APP_TS = "src/main/cdk/partition-mail/app.ts"


def _variant(
    scenarios: Scenarios, tmp_path: Path, infra: dict[str, str] | None = None, **infrastructures: dict[str, str]
) -> str:
    """The world's partitions file with some infra commands and infrastructure fields replaced."""
    data = yaml.safe_load(Path(scenarios.world.info.partitions_file).read_text())
    data["infra"].update(infra or {})
    for name, fields in infrastructures.items():
        data["infrastructures"][name].update(fields)
    path = tmp_path / "partitions-variant.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _edit(scenarios: Scenarios, path: str, old: str, new: str) -> str:
    """Replace `old` (it must occur once) in a file of the world's infra repo and commit the change; the new HEAD."""
    text = (Path(scenarios.world.info.infra_repo) / path).read_text()
    assert text.count(old) == 1, f"{path}: expected {old!r} exactly once; the sandbox CDK app changed"
    return commit_infra(scenarios.world, {path: text.replace(old, new)}, f"test: edit {path}")


def _expected(checks: tuple[str, ...], partitions: tuple[str, ...]) -> set[str]:
    return {f"{check}[{p}]" for check in checks for p in partitions}


# --- code and synth -------------------------------------------------------------------------------------------


DEFECTS = [
    (
        "role-name",
        STACK_TS,
        "      assumedBy: account,\n      description: `Creates DNS records",
        "      assumedBy: account,\n"
        '      roleName: "AddNsRecordsToAnyHostedZone",\n'
        "      description: `Creates DNS records",
        "test_roles_unnamed",
        ["AWS::IAM::Role DnsProvisioningRole", "set RoleName", "omit roleName in partition stacks"],
    ),
    (
        "missing-export",
        STACK_TS,
        "      EmailEncryptionKeyArn: encryptionKey.secretArn,\n",
        "",
        "test_exports_declared",
        ["the template does not export Alpha002-dev-API-EmailEncryptionKeyArn;"],
    ),
    (
        "wrong-stack-name",
        APP_TS,
        "`${instance.infrastructure}-${instance.partition}-Email`",
        "`${instance.partition}-Email`",
        "test_stack_identity",
        [
            "stack name is dev-Email, expected Alpha002-dev-Email: check the instance file "
            "src/main/cdk/instances/Alpha002/dev.ts"
        ],
    ),
    (
        "wrong-account",
        "src/main/cdk/instances/Alpha002/dev.ts",
        'account: "139852620346"',
        'account: "009765408297"',
        "test_stack_identity",
        ["template is for account 009765408297 region us-east-1, expected 139852620346 us-east-1 (Alpha002)"],
    ),
]


def test_the_synth_check_shows_the_apps_annotations_as_evidence(scenarios, run_checks, tmp_path: Path) -> None:
    """Before its first deploy a partition has no DKIM context entry: the app says why its template lacks the record."""
    run = run_checks("-m", "synth", "--partition", "dev", "-k", "test_synth_runs")

    assert run.outcomes == {"test_synth_runs[dev]": "passed"}, run.messages
    document = json.loads((tmp_path / "reports" / "latest" / "signoff.json").read_text(encoding="utf-8"))
    (entry,) = [c for c in document["checks"] if c["check"] == "test_synth_runs"]
    annotations = [e for e in entry["evidence"] if e.startswith("annotations\n")]
    assert len(annotations) == 1, f"expected one annotations entry in the evidence, got {entry['evidence']}"
    assert (
        "warning at /Alpha002-dev-Email: cdk.context.json has no partitionMail:Alpha002:dev entry" in (annotations[0])
    ), annotations[0]


@pytest.mark.parametrize(("path", "old", "new", "check", "says"), [d[1:] for d in DEFECTS], ids=[d[0] for d in DEFECTS])
def test_a_committed_defect_fails_exactly_its_synth_check(  # noqa: PLR0917 - fixtures and parameters
    scenarios, run_checks, tmp_path: Path, path: str, old: str, new: str, check: str, says: list[str]
) -> None:
    head = _edit(scenarios, path, old, new)
    partitions = _variant(scenarios, tmp_path, QUICK_CODE)

    run = run_checks("-m", CODE_OR_SYNTH, "--partition", "dev", "--expect-head", head, "--partitions-file", partitions)

    assert set(run.outcomes) == set(CODE) | _expected(SYNTH, ("dev",))
    assert run.failed() == {f"{check}[dev]"}, run.messages
    for text in says:
        assert text in run.messages[f"{check}[dev]"]


def test_a_formatting_defect_fails_only_lint_with_the_output_tail_and_the_log_path(
    scenarios, run_checks, tmp_path: Path
) -> None:
    commit_infra(
        scenarios.world, {"src/main/cdk/partition-mail/extra.ts": "export const answer=42\n"}, "test: unformatted"
    )

    run = run_checks("-m", CODE_OR_SYNTH, "--partition", "dev")

    assert run.failed() == {"test_lint"}, run.messages
    assert set(run.outcomes) == set(CODE) | _expected(SYNTH, ("dev",))
    message = run.messages["test_lint"]
    log = (tmp_path / "reports" / "latest").resolve() / "logs" / "lint.log"
    assert "`npm run lint` exited 1 after " in message
    assert f"(log: {log})" in message
    assert "[warn] src/main/cdk/partition-mail/extra.ts" in message
    output = [line.strip() for line in log.read_text().splitlines() if not line.startswith("===== ")]
    shown = _shown_tail(message)
    assert shown, message
    assert shown == output[-len(shown) :], "the message must show the log's last lines, in order"


def _shown_tail(message: str) -> list[str]:
    """The output lines a failed check's message shows after "last lines:" (indented; its evidence follows)."""
    lines = message.splitlines()
    start = next(i for i, line in enumerate(lines) if line.rstrip().endswith("last lines:")) + 1
    shown = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        shown.append(line.strip())
    return shown


def test_under_xdist_code_runs_once_and_each_partition_synthesizes_once(
    scenarios, pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """The real build, lint, unit tests and every synth check pass for four partitions, each step run once."""
    count = shlex.quote(str(tmp_path / "COUNT"))
    infra = yaml.safe_load(Path(scenarios.world.info.partitions_file).read_text())["infra"]
    wrapped = {step: f"echo {step} >> {count} && {infra[step]}" for step in ("build", "lint", "test")}
    wrapped["synth"] = f"echo synth-{{partition}} >> {count} && {infra['synth']}"
    result = pytester.runpytest_subprocess(
        *suite_args(
            "-n",
            "4",
            "-m",
            CODE_OR_SYNTH,
            "-q",
            str(ROOT / "tests_preflight"),
            partitions_file=_variant(scenarios, tmp_path, wrapped),
            reports_dir=tmp_path / "reports",
        ),
        timeout=600,
    )

    runs = Counter((tmp_path / "COUNT").read_text().split())
    assert runs == {"build": 1, "lint": 1, "test": 1, **{f"synth-{p}": 1 for p in PARTITIONS}}
    assert result.ret == 0, result.stdout.str()[-4000:]
    result.stdout.fnmatch_lines([f"*{len(CODE) + len(SYNTH) * len(PARTITIONS)} passed*"])
    document = json.loads((tmp_path / "reports" / "latest" / "signoff.json").read_text(encoding="utf-8"))
    outcomes = {
        f"{c['check']}[{c['partition']}]" if c["partition"] else c["check"]: c["outcome"] for c in document["checks"]
    }
    assert outcomes == dict.fromkeys(set(CODE) | _expected(SYNTH, PARTITIONS), "passed"), outcomes


# --- access ---------------------------------------------------------------------------------------------------


ACCESS = ("test_aws_identity", "test_postmark_credential")


def test_access_passes_for_every_partition_of_the_world(scenarios, run_checks) -> None:
    run = run_checks("-m", "access")

    assert run.outcomes == dict.fromkeys(_expected(ACCESS, PARTITIONS), "passed"), run.messages


def test_a_profile_missing_from_the_config_lists_the_profiles_that_exist(scenarios, run_checks, tmp_path: Path) -> None:
    partitions = _variant(scenarios, tmp_path, Alpha002={"profile": "Admin-Alpha002"})

    run = run_checks("-m", "access", "--partition", "dev,demo", "--partitions-file", partitions)

    assert run.failed() == {"test_aws_identity[dev]"}, run.messages
    assert (
        "AWS profile Admin-Alpha002 is not in the AWS config; profiles that exist: Admin-Alpha1, Alpha002-Admin, "
        "mailgate-sandbox-base, mailgate-sandbox-root. Name the right one in partitions.yaml"
    ) in run.messages["test_aws_identity[dev]"]


def test_a_profile_landing_in_another_account_names_both(scenarios, run_checks, tmp_path: Path) -> None:
    partitions = _variant(scenarios, tmp_path, Alpha002={"profile": "Admin-Alpha1"})

    run = run_checks("-m", "access", "--partition", "dev", "--partitions-file", partitions)

    assert run.failed() == {"test_aws_identity[dev]"}, run.messages
    message = run.messages["test_aws_identity[dev]"]
    assert "profile Admin-Alpha1 lands in account 009765408297 (arn:aws:sts::009765408297:" in message
    assert "expected 139852620346 (Alpha002): fix the profile in the AWS config or partitions.yaml" in message


OP_FAULTS = [
    ("missing", "credential op://Arda-DevOAM/Postmark/credential: `op` is not on PATH; install the 1Password CLI"),
    ("fail", "`op read` exited 1: [ERROR] "),
    ("empty", "credential op://Arda-DevOAM/Postmark/credential: resolved to an empty value; check the item"),
]


@pytest.mark.parametrize(("fault", "says"), OP_FAULTS, ids=[f[0] for f in OP_FAULTS])
def test_an_unusable_postmark_credential_fails_with_its_own_message(
    scenarios, run_checks, monkeypatch: pytest.MonkeyPatch, fault: str, says: str
) -> None:
    if fault == "missing":
        bin_dir = str(Path(scenarios.world.info.state_dir) / "bin")
        monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != bin_dir))
    else:
        scenarios.world.set_op(mode=fault)

    run = run_checks("-m", "access", "--partition", "dev")

    assert run.failed() == {"test_postmark_credential[dev]"}, run.messages
    message = run.messages["test_postmark_credential[dev]"]
    assert "Postmark token of PostmarkNonProd: credential op://Arda-DevOAM/Postmark/credential: " in message
    assert says in message
    assert [other for name, other in OP_FAULTS if name != fault and other in message] == []
    assert [token for token in scenarios.world.tokens.values() if token in message] == []


# --- diff -----------------------------------------------------------------------------------------------------


DMARC_LINE = (
    '    new route53.TxtRecord(this, "Dmarc", { zone: this.zone, recordName: `_dmarc.${zoneName}`, '
    "values: [DMARC_VALUE] });\n"
)


def _diff_report(tmp_path: Path, stack: str) -> list[str]:
    """The resource rows (action, type, logical id) of reports/latest/diff-<stack>.md."""
    report = (tmp_path / "reports" / "latest").resolve() / f"diff-{stack}.md"
    assert report.exists(), f"no diff report {report}"
    rows = [line.strip("| ").split(" | ") for line in report.read_text().splitlines() if line.startswith("| ")]
    return [" ".join(row) for row in rows if len(row) == 3 and row[0] in ("add", "modify", "replace", "destroy")]


def test_an_add_only_change_passes_and_is_reported(scenarios, run_checks, tmp_path: Path) -> None:
    scenarios.seed("dev")
    _edit(
        scenarios,
        STACK_TS,
        DMARC_LINE,
        DMARC_LINE
        + '    new route53.TxtRecord(this, "Verify", { zone: this.zone, recordName: `_v.${zoneName}`, values: ["v"] });'
        + "\n",
    )

    run = run_checks("-m", "diff", "--partition", "dev")

    assert run.outcomes == {"test_diff_is_safe[dev]": "passed"}, run.messages
    (row,) = _diff_report(tmp_path, "Alpha002-dev")
    assert row.startswith("add AWS::Route53::RecordSet Verify"), row
    from test_report_matrix import Page  # the report's parser

    page = Page((tmp_path / "reports" / "latest" / "report.html").read_text(encoding="utf-8"))
    assert "partition-dev" in page.sections, "the report has a section for the partition"
    assert f"| {row.replace(' ', ' | ')} |" in page.diffs["partition-dev"], "with its diff summary"


def test_a_change_that_destroys_a_record_set_fails(scenarios, run_checks, tmp_path: Path) -> None:
    scenarios.seed("dev")
    _edit(
        scenarios,
        STACK_TS,
        DMARC_LINE,
        "",
    )

    run = run_checks("-m", "diff", "--partition", "dev")

    assert run.failed() == {"test_diff_is_safe[dev]"}, run.messages
    report = (tmp_path / "reports" / "latest").resolve() / "diff-Alpha002-dev.md"
    assert (
        "cdk diff of Alpha002-dev-Email would destroy AWS::Route53::RecordSet Dmarc"
        in run.messages["test_diff_is_safe[dev]"]
    )
    assert (
        f"a partition deploy must not destroy or replace resources: review {report}"
        in run.messages["test_diff_is_safe[dev]"]
    )
    assert [row.split()[:2] for row in _diff_report(tmp_path, "Alpha002-dev")] == [
        ["destroy", "AWS::Route53::RecordSet"]
    ]


def test_a_modify_fails_on_production_unless_allowed(scenarios, run_checks, tmp_path: Path) -> None:
    scenarios.seed("dev")
    scenarios.seed("prod")
    _edit(scenarios, STACK_TS, "key when the primary path is unavailable`", "key if the primary path is down`")

    refused = run_checks("-m", "diff", "--partition", "dev,prod")
    allowed = run_checks("-m", "diff", "--partition", "prod", "--allow-modify")

    assert refused.failed() == {"test_diff_is_safe[prod]"}, refused.messages
    assert (
        "production partition prod: cdk diff modifies AWS::IAM::Role EncryptionKeyFallbackRole"
        in refused.messages["test_diff_is_safe[prod]"]
    )
    assert "rerun with --allow-modify if intended" in refused.messages["test_diff_is_safe[prod]"]
    assert allowed.outcomes == {"test_diff_is_safe[prod]": "passed"}, allowed.messages
    assert [row.split()[:2] for row in _diff_report(tmp_path, "Alpha001-prod")] == [["modify", "AWS::IAM::Role"]]
