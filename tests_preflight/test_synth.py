"""The synthesized template of each partition: the right stack, its exports, no named IAM roles."""

from __future__ import annotations

import pytest

from plugins.preflight import InfraRunner, Synth
from plugins.report import Evidence
from probes import cdk
from probes.config import Target

pytestmark = [pytest.mark.preflight, pytest.mark.synth]


@pytest.fixture
def synth(target: Target, infra: InfraRunner, synth_overlap: tuple[Target, ...]) -> Synth:
    """This partition's synth (run once per run; others of this run start beside it)."""
    return infra.synth(target, synth_overlap)


def _stack(synth: Synth) -> cdk.StackArtifact:
    if synth.assembly is None:
        pytest.fail(f"no template to judge: the synth failed ({synth.problem}); see test_synth_runs")
    stacks = synth.assembly.stacks
    named = [s for s in stacks if s.stack_name == synth.target.stack_name]
    if not stacks:
        pytest.fail(f"the cloud assembly in {synth.out} has no CloudFormation stack")
    return named[0] if named else stacks[0]


def test_synth_runs(synth: Synth, evidence: Evidence) -> None:
    evidence.add(synth.result.describe(), synth.result.tail)
    assert synth.problem is None, synth.result.explained(str(synth.problem))
    assert synth.assembly is not None, f"the synth passed but left no cloud assembly in {synth.out}"
    if synth.assembly.messages:  # the app's own warnings: why the template lacks what a reviewer may look for
        evidence.add("annotations", [f"{m.level} at {m.path}: {m.text}" for m in synth.assembly.messages])
    assert not synth.assembly.missing_context, (
        f"the synth left unresolved context lookups: {', '.join(synth.assembly.missing_context)}; "
        "run the lookups with credentials once and commit cdk.context.json"
    )


def test_stack_identity(target: Target, synth: Synth, evidence: Evidence) -> None:
    stack = _stack(synth)
    assert synth.assembly is not None, f"no cloud assembly in {synth.out} to judge; see test_synth_runs"
    counts = cdk.resource_counts(stack.template)
    evidence.add(
        f"stack {stack.stack_name} for aws://{stack.account}/{stack.region} ({stack.template_path})",
        [f"{kind}: {n}" for kind, n in sorted(counts.items())],
    )
    names = [s.stack_name for s in synth.assembly.stacks]
    assert len(names) == 1, f"expected exactly one stack ({target.stack_name}) in the assembly, found: {names}"
    assert stack.stack_name == target.stack_name, (
        f"stack name is {stack.stack_name}, expected {target.stack_name}: check the instance file "
        f"src/main/cdk/instances/{target.infrastructure}/{target.name}.ts"
    )
    seen, expected = (stack.account, stack.region), (target.account, target.region)
    assert seen == expected, (
        f"template is for account {stack.account} region {stack.region}, expected {target.account} "
        f"{target.region} ({target.infrastructure}): fix the instance file's account/region"
    )
    if target.expected_resources is not None:
        wrong = [
            f"{kind}: expected {n}, synthesized {counts.get(kind, 0)}"
            for kind, n in target.expected_resources
            if counts.get(kind, 0) != n
        ]
        assert not wrong, "resource counts differ from expected_resources:\n  " + "\n  ".join(wrong)


def test_exports_declared(target: Target, synth: Synth, evidence: Evidence) -> None:
    declared = cdk.exported_names(_stack(synth).template)
    evidence.add(
        "exports declared by the template", [f"{name} (output {out})" for name, out in sorted(declared.items())]
    )
    missing = [name for name in target.export_names if name not in declared]
    assert not missing, f"the template does not export {', '.join(missing)}; expected all six {target.export_names}"


def test_roles_unnamed(synth: Synth, evidence: Evidence) -> None:
    named = cdk.roles_with_name(_stack(synth).template)
    evidence.add("AWS::IAM::Role with RoleName", named or ["none"])
    assert not named, (
        f"AWS::IAM::Role {', '.join(named)} set RoleName: a fixed name collides between partitions of one "
        "account (e.g. a role that adds NS records to the parent zone); omit roleName in partition stacks"
    )
