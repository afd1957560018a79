"""probes/cdk.py on hand-written cloud assemblies, context files, and real `cdk diff` output.

The DIFF_* texts are verbatim stderr of `cdk diff --app <assembly> --template <deployed.json> Alpha001-prod-Email`
(aws-cdk 2.1148.1) on the sandbox app: deployed template vs a new synth.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from probes.cdk import (
    CdkError,
    ContextEntry,
    OutputChange,
    exported_names,
    read_assembly,
    read_context_entry,
    resource_counts,
    roles_with_name,
    summarize_diff,
)

# Deployed without the DKIM record (no context entry yet); the new synth has it.
DIFF_ADD = """\
Stack Alpha001-prod-Email
Resources
[+] AWS::Route53::RecordSet Dkim DkimE5B7621F



✨  Number of stacks with differences: 1

"""

# Deployed DMARC p=none and a hard-coded RoleName (the collision between partitions); the new synth fixes both.
DIFF_MODIFY = """\
Stack Alpha001-prod-Email
Resources
[~] AWS::Route53::RecordSet Dmarc Dmarc65510571
 └─ [~] ResourceRecords
     └─ @@ -1,3 +1,3 @@
        [ ] [
        [-]   "\\"v=DMARC1; p=none; rua=mailto:dmarc-reports@arda.cards\\""
        [+]   "\\"v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@arda.cards\\""
        [ ] ]
[~] AWS::IAM::Role DnsProvisioningRole DnsProvisioningRole19B4E3A5 replace
 └─ [-] RoleName (requires replacement)
     └─ AddNsRecordsToAnyHostedZone



✨  Number of stacks with differences: 1

"""

# The DKIM selector was re-issued: the record's Name changes.
DIFF_REPLACE = """\
Stack Alpha001-prod-Email
Resources
[~] AWS::Route53::RecordSet Dkim DkimE5B7621F replace
 └─ [~] Name (requires replacement)
     ├─ [-] 20260527061409pm._domainkey.prod.ardamails.com.
     └─ [+] 20260601000000pm._domainkey.prod.ardamails.com.



✨  Number of stacks with differences: 1

"""

# The context entry was removed: the DKIM record goes (the synth warns first, on the same stream).
DIFF_DESTROY = """\
WARNING cdk.context.json has no partitionMail:Alpha001:prod entry: synthesized without the DKIM record; the deploy's pre-deploy step writes it (Construct Annotations)
   Alpha001-prod-Email
   Acknowledge with 'Annotation::@mailgate/partition-mail:no-dkim'
Stack Alpha001-prod-Email
Resources
[-] AWS::Route53::RecordSet Dkim DkimE5B7621F destroy



✨  Number of stacks with differences: 1

"""  # noqa: E501

# Deployed: an extra SNS topic and output, another password length, another zone name output.
DIFF_OUTPUTS = """\
Stack Alpha001-prod-Email
Resources
[-] AWS::SNS::Topic LegacyTopic destroy
[~] AWS::SecretsManager::Secret EncryptionKey EncryptionKey1B843E66
 └─ [~] GenerateSecretString
     └─ [~] .PasswordLength:
         ├─ [-] 32
         └─ [+] 64

Outputs
[-] Output Legacy: {"Value":"x","Export":{"Name":"Alpha001-prod-API-Legacy"}}
[~] Output PartitionMailZoneName PartitionMailZoneName: {"Value":"old.ardamails.com","Export":{"Name":"Alpha001-prod-API-PartitionMailZoneName"}} to {"Value":"prod.ardamails.com","Export":{"Name":"Alpha001-prod-API-PartitionMailZoneName"}}



✨  Number of stacks with differences: 1

"""  # noqa: E501

# First deploy: against an empty template `{}`; the IAM table must not count as resources.
DIFF_FIRST_DEPLOY = """\
Stack Alpha001-prod-Email
IAM Statement Changes
┌───┬────────────────────────────────────────────────────────────┬────────┬──────────────────────────────────┬──────────────────────────────────────────────────┬───────────┐
│   │ Resource                                                   │ Effect │ Action                           │ Principal                                        │ Condition │
├───┼────────────────────────────────────────────────────────────┼────────┼──────────────────────────────────┼──────────────────────────────────────────────────┼───────────┤
│ + │ ${DnsProvisioningRole.Arn}                                 │ Allow  │ sts:AssumeRole                   │ AWS:arn:${AWS::Partition}:iam::009765408297:root │           │
├───┼────────────────────────────────────────────────────────────┼────────┼──────────────────────────────────┼──────────────────────────────────────────────────┼───────────┤
│ + │ ${EncryptionKey}                                           │ Allow  │ secretsmanager:DescribeSecret    │ AWS:${EncryptionKeyFallbackRole}                 │           │
│   │                                                            │        │ secretsmanager:GetSecretValue    │                                                  │           │
├───┼────────────────────────────────────────────────────────────┼────────┼──────────────────────────────────┼──────────────────────────────────────────────────┼───────────┤
│ + │ ${EncryptionKeyFallbackRole.Arn}                           │ Allow  │ sts:AssumeRole                   │ AWS:arn:${AWS::Partition}:iam::009765408297:root │           │
├───┼────────────────────────────────────────────────────────────┼────────┼──────────────────────────────────┼──────────────────────────────────────────────────┼───────────┤
│ + │ arn:${AWS::Partition}:route53:::hostedzone/${ZoneA5DE4B68} │ Allow  │ route53:ChangeResourceRecordSets │ AWS:${DnsProvisioningRole}                       │           │
│   │                                                            │        │ route53:GetHostedZone            │                                                  │           │
│   │                                                            │        │ route53:ListResourceRecordSets   │                                                  │           │
├───┼────────────────────────────────────────────────────────────┼────────┼──────────────────────────────────┼──────────────────────────────────────────────────┼───────────┤
│ + │ arn:aws:route53:::change/*                                 │ Allow  │ route53:GetChange                │ AWS:${DnsProvisioningRole}                       │           │
└───┴────────────────────────────────────────────────────────────┴────────┴──────────────────────────────────┴──────────────────────────────────────────────────┴───────────┘
(NOTE: There may be security-related changes not in this list. See https://github.com/aws/aws-cdk/issues/1299)

Resources
[+] AWS::Route53::HostedZone Zone ZoneA5DE4B68
[+] AWS::Route53::RecordSet Spf Spf455B68FA
[+] AWS::Route53::RecordSet Dmarc Dmarc65510571
[+] AWS::Route53::RecordSet Dkim DkimE5B7621F
[+] AWS::Route53::RecordSet ReturnPath ReturnPathDB3F5AF4
[+] AWS::SecretsManager::Secret PostmarkAccountToken PostmarkAccountToken20D830C2
[+] AWS::SecretsManager::Secret EncryptionKey EncryptionKey1B843E66
[+] AWS::IAM::Role DnsProvisioningRole DnsProvisioningRole19B4E3A5
[+] AWS::IAM::Role EncryptionKeyFallbackRole EncryptionKeyFallbackRole54B89E72

Outputs
[+] Output PartitionMailZoneId PartitionMailZoneId: {"Value":{"Ref":"ZoneA5DE4B68"},"Export":{"Name":"Alpha001-prod-API-PartitionMailZoneId"}}
[+] Output PartitionMailZoneName PartitionMailZoneName: {"Value":"prod.ardamails.com","Export":{"Name":"Alpha001-prod-API-PartitionMailZoneName"}}
[+] Output EmailPostmarkAccountTokenArn EmailPostmarkAccountTokenArn: {"Value":{"Ref":"PostmarkAccountToken20D830C2"},"Export":{"Name":"Alpha001-prod-API-EmailPostmarkAccountTokenArn"}}
[+] Output EmailEncryptionKeyArn EmailEncryptionKeyArn: {"Value":{"Ref":"EncryptionKey1B843E66"},"Export":{"Name":"Alpha001-prod-API-EmailEncryptionKeyArn"}}
[+] Output EmailDnsProvisioningRoleArn EmailDnsProvisioningRoleArn: {"Value":{"Fn::GetAtt":["DnsProvisioningRole19B4E3A5","Arn"]},"Export":{"Name":"Alpha001-prod-API-EmailDnsProvisioningRoleArn"}}
[+] Output EmailEncryptionKeyFallbackRoleArn EmailEncryptionKeyFallbackRoleArn: {"Value":{"Fn::GetAtt":["EncryptionKeyFallbackRole54B89E72","Arn"]},"Export":{"Name":"Alpha001-prod-API-EmailEncryptionKeyFallbackRoleArn"}}



✨  Number of stacks with differences: 1

"""  # noqa: E501

# DIFF_OUTPUTS again as a terminal shows it (FORCE_COLOR=1): colours must not change the summary.
DIFF_OUTPUTS_COLOURED = 'Stack \x1b[1mAlpha001-prod-Email\x1b[22m\n\x1b[0m\x1b[4m\x1b[1mResources\x1b[22m\x1b[24m\x1b[0m\n\x1b[0m\x1b[31m[-]\x1b[39m \x1b[36mAWS::SNS::Topic\x1b[39m LegacyTopic \x1b[3m\x1b[1m\x1b[31mdestroy\x1b[39m\x1b[22m\x1b[23m\x1b[0m\n\x1b[0m\x1b[33m[~]\x1b[39m \x1b[36mAWS::SecretsManager::Secret\x1b[39m EncryptionKey \x1b[90mEncryptionKey1B843E66\x1b[39m\x1b[0m\n\x1b[0m └─ \x1b[33m[~]\x1b[39m GenerateSecretString\x1b[0m\n\x1b[0m     └─ \x1b[33m[~]\x1b[39m \x1b[34m.PasswordLength\x1b[39m:\x1b[0m\n\x1b[0m         ├─ \x1b[31m[-]\x1b[39m \x1b[31m32\x1b[39m\x1b[0m\n\x1b[0m         └─ \x1b[32m[+]\x1b[39m \x1b[32m64\x1b[39m\x1b[0m\n\n\x1b[0m\x1b[4m\x1b[1mOutputs\x1b[22m\x1b[24m\x1b[0m\n\x1b[0m\x1b[31m[-]\x1b[39m \x1b[36mOutput\x1b[39m Legacy: \x1b[31m{"Value":"x","Export":{"Name":"Alpha001-prod-API-Legacy"}}\x1b[39m\x1b[0m\n\x1b[0m\x1b[33m[~]\x1b[39m \x1b[36mOutput\x1b[39m PartitionMailZoneName \x1b[90mPartitionMailZoneName\x1b[39m: \x1b[31m{"Value":"old.ardamails.com","Export":{"Name":"Alpha001-prod-API-PartitionMailZoneName"}}\x1b[39m to \x1b[32m{"Value":"prod.ardamails.com","Export":{"Name":"Alpha001-prod-API-PartitionMailZoneName"}}\x1b[39m\x1b[0m\n\n\n\n✨  Number of stacks with differences: 1\n\n'  # noqa: E501

STACK = "Alpha001-prod-Email"


def _write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _template() -> dict[str, Any]:
    return {
        "Resources": {
            "ZoneA5DE4B68": {"Type": "AWS::Route53::HostedZone", "Properties": {"Name": "prod.ardamails.com."}},
            "Spf455B68FA": {"Type": "AWS::Route53::RecordSet", "Properties": {"Type": "TXT"}},
            "Dmarc65510571": {"Type": "AWS::Route53::RecordSet", "Properties": {"Type": "TXT"}},
            "DnsRole": {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": {}}},
            "LegacyRole": {"Type": "AWS::IAM::Role", "Properties": {"RoleName": "AddNsRecordsToAnyHostedZone"}},
        },
        "Outputs": {
            "PartitionMailZoneId": {
                "Value": {"Ref": "ZoneA5DE4B68"},
                "Export": {"Name": "Alpha001-prod-API-PartitionMailZoneId"},
            },
            "Joined": {
                "Value": "x",
                "Export": {"Name": {"Fn::Join": ["-", ["Alpha001", "prod", "API", "Joined"]]}},
            },
            "Subbed": {"Value": "x", "Export": {"Name": {"Fn::Sub": "Alpha001-prod-API-Subbed"}}},
            "NotExported": {"Value": "x"},
        },
    }


def _assembly(directory: Path, **stack_properties: Any) -> Path:
    """A cloud assembly as `cdk synth` writes it: stack, asset manifest and tree artifacts, metadata file."""
    _write(directory / f"{STACK}.template.json", _template())
    _write(
        directory / f"{STACK}.metadata.json",
        {
            f"/{STACK}": [
                {"type": "aws:cdk:warning", "data": "no partitionMail:Alpha001:prod entry"},
                {"type": "aws:cdk:logicalId", "data": "x"},
            ]
        },
    )
    manifest = {
        "version": "55.0.0",
        "artifacts": {
            f"{STACK}.assets": {"type": "cdk:asset-manifest", "properties": {"file": f"{STACK}.assets.json"}},
            STACK: {
                "type": "aws:cloudformation:stack",
                "environment": "aws://009765408297/us-east-1",
                "properties": {"templateFile": f"{STACK}.template.json", **stack_properties},
                "metadata": {f"/{STACK}/Zone": [{"type": "aws:cdk:error", "data": "zone name too long"}]},
                "additionalMetadataFile": f"{STACK}.metadata.json",
            },
            "Tree": {"type": "cdk:tree", "properties": {"file": "tree.json"}},
        },
        "missing": [{"key": "hosted-zone:account=1:domainName=x", "provider": "hosted-zone", "props": {}}],
    }
    _write(directory / "manifest.json", manifest)
    return directory


def test_read_assembly_reads_the_stack_artifact_its_environment_template_and_annotations(tmp_path: Path) -> None:
    assembly = read_assembly(_assembly(tmp_path))

    assert [s.stack_name for s in assembly.stacks] == [STACK]
    stack = assembly.stacks[0]
    assert (stack.artifact_id, stack.account, stack.region) == (STACK, "009765408297", "us-east-1")
    assert stack.template_path == tmp_path / f"{STACK}.template.json"
    assert stack.template == _template()
    assert assembly.version == "55.0.0"
    assert assembly.missing_context == ("hosted-zone:account=1:domainName=x",)
    assert [(m.level, m.path, m.text) for m in assembly.messages] == [
        ("error", f"/{STACK}/Zone", "zone name too long"),
        ("warning", f"/{STACK}", "no partitionMail:Alpha001:prod entry"),
    ]
    assert assembly.stack(STACK) is stack
    assert assembly.stack("Alpha001-demo-Email") is None


def test_stack_name_property_wins_over_the_artifact_id(tmp_path: Path) -> None:
    assembly = read_assembly(_assembly(tmp_path, stackName="Renamed-Email"))

    assert (assembly.stacks[0].artifact_id, assembly.stacks[0].stack_name) == (STACK, "Renamed-Email")


def test_missing_manifest_names_the_file_and_says_to_synth(tmp_path: Path) -> None:
    with pytest.raises(CdkError, match=r"manifest\.json: cloud assembly manifest not found; run the synth") as info:
        read_assembly(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_corrupt_manifest_names_the_file_and_line(tmp_path: Path) -> None:
    _write(tmp_path / "manifest.json", '{\n  "version": "55.0.0",\n  "artifacts": {\n')

    with pytest.raises(CdkError, match=r"manifest\.json:4: cloud assembly manifest is not valid JSON"):
        read_assembly(tmp_path)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda m: m.update(artifacts=[]), r"'artifacts' must be an object, got list"),
        (
            lambda m: m["artifacts"][STACK].update(environment="aws://unknown-account"),
            r"environment must look like aws://ACCOUNT/REGION, got 'aws://unknown-account'",
        ),
        (
            lambda m: m["artifacts"][STACK]["properties"].pop("templateFile"),
            rf"artifacts\.{STACK}\.properties\.templateFile is missing",
        ),
    ],
    ids=["artifacts-list", "environment", "template-file-key"],
)
def test_malformed_manifest_says_which_field(tmp_path: Path, change: Any, expected: str) -> None:
    manifest = json.loads((_assembly(tmp_path) / "manifest.json").read_text())
    change(manifest)
    _write(tmp_path / "manifest.json", manifest)

    with pytest.raises(CdkError, match=expected):
        read_assembly(tmp_path)


def test_missing_template_names_the_template_and_the_stack(tmp_path: Path) -> None:
    (_assembly(tmp_path) / f"{STACK}.template.json").unlink()

    with pytest.raises(CdkError, match=rf"{STACK}\.template\.json: template of stack {STACK} not found"):
        read_assembly(tmp_path)


def test_template_helpers_count_types_find_role_names_and_resolve_export_names() -> None:
    template = _template()

    assert resource_counts(template) == {
        "AWS::IAM::Role": 2,
        "AWS::Route53::HostedZone": 1,
        "AWS::Route53::RecordSet": 2,
    }
    assert roles_with_name(template) == ["LegacyRole"]
    assert exported_names(template) == {
        "Alpha001-prod-API-PartitionMailZoneId": "PartitionMailZoneId",
        "Alpha001-prod-API-Joined": "Joined",
        "Alpha001-prod-API-Subbed": "Subbed",
    }
    assert resource_counts({}) == {}
    assert roles_with_name({"Resources": None}) == []


@pytest.mark.parametrize(
    "name",
    [{"Fn::Sub": "${AWS::StackName}-ZoneId"}, {"Fn::Join": ["-", [{"Ref": "AWS::StackName"}, "ZoneId"]]}],
    ids=["sub-pseudo-parameter", "join-of-ref"],
)
def test_export_name_computed_at_deploy_time_is_an_error_naming_the_output(name: dict[str, Any]) -> None:
    template = {"Outputs": {"ZoneId": {"Value": "x", "Export": {"Name": name}}}}

    with pytest.raises(CdkError, match=r"Outputs\.ZoneId\.Export\.Name is computed at deploy time"):
        exported_names(template)


KEY = "partitionMail:Alpha002:dev"
ENTRY = {"dkimSelector": "20260526234343pm", "dkimPublicKey": "MIIBIjANBgkq+/AB==", "returnPathTarget": "pm.mtasv.net"}


def test_context_entry_is_read_exactly_as_written(tmp_path: Path) -> None:
    context = _write(tmp_path / "cdk.context.json", {KEY: ENTRY, "other": 1})

    assert read_context_entry(context, KEY) == ContextEntry(
        key=KEY, selector="20260526234343pm", public_key="MIIBIjANBgkq+/AB==", return_path_target="pm.mtasv.net"
    )


def test_context_entry_absent_before_the_first_deploy(tmp_path: Path) -> None:
    assert read_context_entry(tmp_path / "cdk.context.json", KEY) is None
    assert read_context_entry(_write(tmp_path / "cdk.context.json", {}), KEY) is None
    without_target = {k: v for k, v in ENTRY.items() if k != "returnPathTarget"}
    entry = read_context_entry(_write(tmp_path / "cdk.context.json", {KEY: without_target}), KEY)
    assert entry is not None
    assert entry.return_path_target is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"partitionMail:Alpha002:dev": ', r"cdk\.context\.json:1: CDK context file is not valid JSON"),
        ("[]", r"CDK context file must be a JSON object, got list"),
        (json.dumps({KEY: "20260526234343pm"}), rf"{KEY} must be an object \{{dkimSelector, dkimPublicKey"),
        (
            json.dumps({KEY: {**ENTRY, "dkimPublicKey": ""}}),
            rf"{KEY}\.dkimPublicKey must be a non-empty string, got ''",
        ),
        (
            json.dumps({KEY: {"dkimPublicKey": "MIIB"}}),
            rf"{KEY}\.dkimSelector must be a non-empty string, got nothing",
        ),
    ],
    ids=["not-json", "not-object", "entry-not-object", "empty-key", "no-selector"],
)
def test_bad_context_file_names_file_key_and_field(tmp_path: Path, content: str, expected: str) -> None:
    context = _write(tmp_path / "cdk.context.json", content)

    with pytest.raises(CdkError, match=expected) as info:
        read_context_entry(context, KEY)
    assert str(context) in str(info.value)


def _actions(text: str) -> list[tuple[str, str, str, str]]:
    return [(c.logical_id, c.resource_type, c.action, c.path) for c in summarize_diff(text).resources]


def test_diff_add_only() -> None:
    summary = summarize_diff(DIFF_ADD)

    assert _actions(DIFF_ADD) == [("DkimE5B7621F", "AWS::Route53::RecordSet", "add", "Dkim")]
    assert summary.by_action == {"add": 1, "modify": 0, "replace": 0, "destroy": 0, "import": 0}
    assert summary.stacks == (STACK,)
    assert summary.stacks_with_differences == 1


def test_diff_modify_in_place_and_a_replacement_with_its_reason() -> None:
    summary = summarize_diff(DIFF_MODIFY)

    assert _actions(DIFF_MODIFY) == [
        ("Dmarc65510571", "AWS::Route53::RecordSet", "modify", "Dmarc"),
        ("DnsProvisioningRole19B4E3A5", "AWS::IAM::Role", "replace", "DnsProvisioningRole"),
    ]
    role = summary.resources[1]
    assert role.impact == "replace"
    assert role.details == ("└─ [-] RoleName (requires replacement)", "└─ AddNsRecordsToAnyHostedZone")
    assert summary.resources[0].details[0] == "└─ [~] ResourceRecords"
    assert summary.by_type == {"AWS::IAM::Role": {"replace": 1}, "AWS::Route53::RecordSet": {"modify": 1}}


def test_diff_replace() -> None:
    assert _actions(DIFF_REPLACE) == [("DkimE5B7621F", "AWS::Route53::RecordSet", "replace", "Dkim")]


def test_diff_destroy_after_a_synth_warning() -> None:
    summary = summarize_diff(DIFF_DESTROY)

    assert _actions(DIFF_DESTROY) == [("DkimE5B7621F", "AWS::Route53::RecordSet", "destroy", "Dkim")]
    assert summary.resources[0].impact == "destroy"
    assert summary.stacks == (STACK,)


def test_diff_outputs_and_a_resource_without_construct_path() -> None:
    summary = summarize_diff(DIFF_OUTPUTS)

    assert _actions(DIFF_OUTPUTS) == [
        ("LegacyTopic", "AWS::SNS::Topic", "destroy", ""),
        ("EncryptionKey1B843E66", "AWS::SecretsManager::Secret", "modify", "EncryptionKey"),
    ]
    assert summary.outputs == (
        OutputChange(STACK, "Legacy", "destroy"),
        OutputChange(STACK, "PartitionMailZoneName", "modify"),
    )


def test_diff_colours_do_not_change_the_summary() -> None:
    assert "\x1b[" in DIFF_OUTPUTS_COLOURED
    assert summarize_diff(DIFF_OUTPUTS_COLOURED) == summarize_diff(DIFF_OUTPUTS)


def test_diff_first_deploy_counts_resources_not_iam_table_rows() -> None:
    summary = summarize_diff(DIFF_FIRST_DEPLOY)

    assert summary.by_type == {
        "AWS::IAM::Role": {"add": 2},
        "AWS::Route53::HostedZone": {"add": 1},
        "AWS::Route53::RecordSet": {"add": 4},
        "AWS::SecretsManager::Secret": {"add": 2},
    }
    assert summary.by_action["add"] == 9
    assert all(r.details == () for r in summary.resources)
    assert [o.action for o in summary.outputs] == ["add"] * 6


def test_diff_without_differences() -> None:
    text = "Stack Alpha001-prod-Email\nThere were no differences\n\n\n✨  Number of stacks with differences: 0\n"

    summary = summarize_diff(text)

    assert (summary.stacks, summary.resources, summary.outputs) == ((STACK,), (), ())
    assert summary.stacks_with_differences == 0
    assert summarize_diff("").stacks_with_differences is None


def test_diff_import_and_may_be_replaced_and_move() -> None:
    text = (
        "Stack S\nResources\n"
        "[←] AWS::S3::Bucket Bucket Bucket83908E77 import\n"
        "[~] AWS::Route53::RecordSet Spf Spf455B68FA may be replaced\n"
        "[-] AWS::IAM::Role Old Old1234 destroy (OR move to T.New1234 via refactoring)\n"
    )

    assert [(c.logical_id, c.action, c.impact) for c in summarize_diff(text).resources] == [
        ("Bucket83908E77", "import", "import"),
        ("Spf455B68FA", "replace", "may be replaced"),
        ("Old1234", "destroy", "destroy"),
    ]
