"""The partition stack and its six exports, read with describe-stacks on that one stack."""

from __future__ import annotations

import dns.name
import pytest

from plugins.report import Evidence
from probes import arn, aws
from probes.config import Target
from probes.observe import PartitionObservation

pytestmark = [pytest.mark.postmerge, pytest.mark.aws]

ARN_SERVICE = {
    "EmailPostmarkAccountTokenArn": "secretsmanager",
    "EmailEncryptionKeyArn": "secretsmanager",
    "EmailDnsProvisioningRoleArn": "iam",
    "EmailEncryptionKeyFallbackRoleArn": "iam",
}


def _stack_evidence(stack: aws.Stack, evidence: Evidence) -> None:
    lines = [f"status: {stack.status}", *(f"{o.key} = {o.value} (export {o.export_name})" for o in stack.outputs)]
    if stack.throttled:
        lines.append(f"throttled {stack.throttled} time(s), retried (botocore adaptive mode)")
    evidence.add(f"describe-stacks {stack.name} (profile {stack.profile}, {stack.region})", lines)


def _zone_evidence(zone: aws.HostedZone, evidence: Evidence) -> None:
    lines = [f"name: {zone.name}", *(f"name server: {server}" for server in zone.name_servers)]
    if zone.problem is not None:
        lines.append(f"problem ({zone.problem.kind}): {zone.problem}")
    lines.append(f"waited {zone.paced:.2f} s for Route 53 tokens; throttled {zone.throttled} time(s)")
    evidence.add(f"get-hosted-zone {zone.zone_id} (profile {zone.profile})", lines)


def test_stack_status(observed: PartitionObservation, evidence: Evidence) -> None:
    stack = observed.stack
    _stack_evidence(stack, evidence)
    assert stack.problem is None, str(stack.problem)
    next_step = (
        "wait for it to finish, then run postmerge again"
        if stack.status and stack.status.endswith("_IN_PROGRESS")
        else "fix the cause and deploy again"
    )
    assert stack.status in aws.HEALTHY_STACK, (
        f"stack {stack.name} is {stack.status}, expected CREATE_COMPLETE or UPDATE_COMPLETE "
        f"(account profile {stack.profile}, {stack.region}); last failure: {stack.last_failure or 'none recorded'}; "
        f"{next_step}"
    )


def test_exports(target: Target, observed: PartitionObservation, evidence: Evidence) -> None:
    stack = observed.stack
    _stack_evidence(stack, evidence)
    assert stack.problem is None, f"no exports to judge: {stack.problem}"
    exports = stack.exports()
    problems = [f"missing export {name}" for name in target.export_names if not exports.get(name)]
    prefix = target.export_name("")
    problems += [
        f"unexpected export {name} (not one of the six)"
        for name in exports
        if name.startswith(prefix) and name not in target.export_names
    ]
    zone_name = exports.get(target.export_name("PartitionMailZoneName"))
    if zone_name and dns.name.from_text(zone_name) != dns.name.from_text(target.zone):
        problems.append(f"PartitionMailZoneName is {zone_name}, expected {target.zone}")
    zone_id = exports.get(target.export_name("PartitionMailZoneId"))
    if observed.zone is not None:
        _zone_evidence(observed.zone, evidence)
    if zone_id:
        problems += _zone_problems(target, zone_id, observed.zone)
    for name, service in ARN_SERVICE.items():
        value = exports.get(target.export_name(name))
        if value:
            problems += _arn_problems(target, name, value, service)
    assert not problems, (
        f"exports of {stack.name} are wrong ({len(problems)}):\n  "
        + "\n  ".join(problems)
        + f"\nexpected the six {prefix}<Name> exports of account {target.account}; fix the stack and deploy again"
    )


def _zone_problems(target: Target, zone_id: str, zone: aws.HostedZone | None) -> list[str]:
    if zone is None:
        return [f"PartitionMailZoneId {zone_id} was not looked up in Route53"]
    problem = zone.problem
    if problem is not None and problem.kind == "not-found":
        return [f"PartitionMailZoneId {zone_id} is not a Route53 hosted zone of {target.profile}: {problem}"]
    if problem is not None:  # throttled, denied, unreachable: the export may be right; Route53 could not say
        return [f"PartitionMailZoneId {zone_id} could not be read from Route53: {problem}"]
    if zone.name is None or dns.name.from_text(zone.name) != dns.name.from_text(target.zone):
        return [f"PartitionMailZoneId {zone_id} is Route53's zone {zone.name}, expected {target.zone}"]
    return []


def _arn_problems(target: Target, name: str, value: str, service: str) -> list[str]:
    parsed = arn.parse(value)
    if parsed is None:
        return [f"{name} is not an ARN: {value}"]
    problems = []
    if parsed.account != target.account:
        problems.append(
            f"{name} is in account {parsed.account}, expected {target.account} ({target.infrastructure}): {value}"
        )
    if parsed.service != service:
        problems.append(f"{name} is a {parsed.service} ARN, expected {service}: {value}")
    elif service == "iam" and not parsed.resource.startswith("role/"):
        problems.append(f"{name} is not an IAM role ARN: {value}")
    elif service == "secretsmanager" and not parsed.resource.startswith("secret:"):
        problems.append(f"{name} is not a Secrets Manager secret ARN: {value}")
    return problems
