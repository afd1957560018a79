"""The sandbox's CDK app (sandbox/infra), for real: npm build, lint, test, synth, diff, and a deploy to moto.

Slow by nature (node + tsc + the CDK CLI): about 20-30 s in all on 2 cores. Every test works in a private copy
of the app (as a fresh clone has it: no dist, no cdk.out) sharing sandbox/infra/node_modules, which the
`node_modules` fixture installs with `npm ci` when it is missing (SLOW: one download of ~250 MB, then cached).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from probes.cdk import Assembly, exported_names, read_assembly, resource_counts, roles_with_name, summarize_diff
from probes.config import EXPORT_NAMES
from probes.shell import PLAIN_OUTPUT
from sandbox.moto_secrets import teach_moto_secrets

INFRA = Path(__file__).resolve().parents[1] / "sandbox" / "infra"
INSTANCES = {
    "Alpha002/dev": "139852620346",
    "Alpha002/stage": "139852620346",
    "Alpha001/demo": "009765408297",
    "Alpha001/prod": "009765408297",
}
SPF = "v=spf1 include:spf.mtasv.net ~all"
DMARC = "v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@arda.cards"
SELECTOR = "20260526234343pm"
# The moto account the stack is created in: its own, so that no other test's sandbox (same process) sees it.
MOTO_ACCOUNT = "424242424242"


def _run(
    args: list[str], cwd: Path, timeout: float = 180, cache: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command of the app; its synths are real unless `cache` names a synth cache (SANDBOX_SYNTH_CACHE)."""
    env = {k: v for k, v in os.environ.items() if k != "SANDBOX_SYNTH_CACHE"}
    env |= PLAIN_OUTPUT  # with CI=true node tools would colour their output
    if cache is not None:
        env["SANDBOX_SYNTH_CACHE"] = str(cache)
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, env=env)


def _explain(result: subprocess.CompletedProcess[str]) -> str:
    command = " ".join(result.args)
    return (
        f"`{command}` exited {result.returncode}\n"
        f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    )


def _ok(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = _run(args, cwd)
    assert result.returncode == 0, _explain(result)
    return result


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """sandbox/infra/node_modules; SLOW when missing: `npm ci` from the committed lock (once, under a file lock)."""
    if shutil.which("npm") is None:
        pytest.fail("npm is not on PATH: install Node.js 20+ and npm to test sandbox/infra")
    target = INFRA / "node_modules"
    lock_name = f"mailgate-npm-ci-{hashlib.sha256(str(INFRA).encode()).hexdigest()[:12]}.lock"
    with open(Path(tempfile.gettempdir()) / lock_name, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / ".package-lock.json").exists():
            _ok(["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"], INFRA)
    return target


@pytest.fixture
def repo(tmp_path: Path, node_modules: Path) -> Path:
    """A private copy of the app as a fresh clone has it, sharing the installed node_modules."""
    copy = tmp_path / "infra"
    shutil.copytree(INFRA, copy, ignore=shutil.ignore_patterns("node_modules", "dist", "cdk.out*"))
    (copy / "node_modules").symlink_to(node_modules, target_is_directory=True)
    return copy


def _synth(repo: Path, instance: str, out: Path, cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    return _run(["npm", "run", "--silent", "synth", "--", instance, str(out)], repo, cache=cache)


def _dkim_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    return base64.b64encode(
        key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).decode()


def _write_context(repo: Path, key: str, public_key: str) -> None:
    entry = {"dkimSelector": SELECTOR, "dkimPublicKey": public_key, "returnPathTarget": "pm.mtasv.net"}
    (repo / "cdk.context.json").write_text(json.dumps({key: entry}, indent=2))


def test_build_lint_and_unit_tests_pass(repo: Path) -> None:
    _ok(["npm", "run", "build"], repo)
    assert (repo / "dist" / "main" / "cdk" / "partition-mail" / "partition-mail-stack.js").exists()
    _ok(["npm", "run", "lint"], repo)

    tested = _ok(["npm", "test"], repo)

    assert "# fail 0" in tested.stdout, _explain(tested)
    passed = next(line for line in tested.stdout.splitlines() if line.startswith("# pass "))
    assert int(passed.split()[-1]) >= 7, _explain(tested)


def test_lint_fails_on_a_formatting_defect_then_on_an_unused_variable(repo: Path) -> None:
    module = repo / "src" / "main" / "cdk" / "partition-mail" / "extra.ts"
    module.write_text("export const answer=42\n")

    badly_formatted = _run(["npm", "run", "lint"], repo)

    assert badly_formatted.returncode != 0
    assert "[warn] src/main/cdk/partition-mail/extra.ts" in badly_formatted.stdout + badly_formatted.stderr
    module.write_text("export function answer(): number {\n  const unused = 1;\n  return 42;\n}\n")

    unused = _run(["npm", "run", "lint"], repo)

    assert unused.returncode != 0
    assert "extra.ts(2,9): error TS6133: 'unused' is declared but its value is never read." in unused.stdout


def _check_partition_assembly(assembly: Assembly, instance: str, account: str) -> None:
    infrastructure, partition = instance.split("/")
    stack_name = f"{infrastructure}-{partition}-Email"
    assert [s.stack_name for s in assembly.stacks] == [stack_name]
    stack = assembly.stacks[0]
    assert (stack.account, stack.region) == (account, "us-east-1")
    assert sorted(exported_names(stack.template)) == sorted(
        f"{infrastructure}-{partition}-API-{n}" for n in EXPORT_NAMES
    )
    assert roles_with_name(stack.template) == []
    assert "Parameters" not in stack.template, "a bootstrap-version parameter would not deploy to moto"
    assert not any(
        kind.startswith(("Custom::", "AWS::Lambda::", "AWS::CDK::")) for kind in resource_counts(stack.template)
    )
    assert assembly.missing_context == ()
    (warning,) = [m for m in assembly.messages if m.level == "warning"]
    assert f"cdk.context.json has no partitionMail:{infrastructure}:{partition} entry" in warning.text


def test_four_partitions_synthesize_concurrently_without_a_build(repo: Path, tmp_path: Path) -> None:
    outs = {instance: tmp_path / instance.replace("/", "-") for instance in INSTANCES}
    before = sorted(p.relative_to(repo) for p in repo.rglob("*") if "node_modules" not in p.parts)
    started = time.monotonic()

    with ThreadPoolExecutor(len(outs)) as pool:
        results = dict(zip(outs, pool.map(lambda item: _synth(repo, *item), outs.items()), strict=True))

    elapsed = time.monotonic() - started
    for instance, result in results.items():
        assert result.returncode == 0, _explain(result)
        _check_partition_assembly(read_assembly(outs[instance]), instance, INSTANCES[instance])
    after = sorted(p.relative_to(repo) for p in repo.rglob("*") if "node_modules" not in p.parts)
    assert after == before, "synth wrote into the repo (a shared file makes concurrent synths interfere)"
    print(f"4 concurrent synths: {elapsed:.1f} s")


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_synth_cache_copies_a_real_synth_of_the_same_inputs_and_only_those(repo: Path, tmp_path: Path) -> None:
    """The suite's scenario tests synthesize through SANDBOX_SYNTH_CACHE: a copy must be what a synth of the same
    inputs gives, output included; any input changed, or a failed synth, must mean a real synth."""
    cache = tmp_path / "cache"
    cache.mkdir()
    first = _synth(repo, "Alpha002/dev", tmp_path / "first", cache)  # a miss: the CLI synthesizes
    copied = _synth(repo, "Alpha002/dev", tmp_path / "copied", cache)

    for result in (first, copied):
        assert result.returncode == 0, _explain(result)
    _check_partition_assembly(read_assembly(tmp_path / "first"), "Alpha002/dev", INSTANCES["Alpha002/dev"])
    assert _files(tmp_path / "copied") == _files(tmp_path / "first")
    assert (copied.stdout, copied.stderr) == (first.stdout, first.stderr)
    assert "cdk.context.json has no partitionMail:Alpha002:dev entry" in copied.stderr, copied.stderr
    (entry,) = [p for p in cache.iterdir() if p.is_dir()]
    template = entry / "assembly" / "Alpha002-dev-Email.template.json"
    template.write_text(template.read_text().replace("dmarc-reports@", "copied-from-the-cache@"))
    assert _synth(repo, "Alpha002/dev", tmp_path / "marked", cache).returncode == 0
    assert "copied-from-the-cache@" in (tmp_path / "marked" / template.name).read_text(), "same inputs: a copy"

    _write_context(repo, "partitionMail:Alpha002:dev", _dkim_key())
    changed = _synth(repo, "Alpha002/dev", tmp_path / "changed", cache)
    assert changed.returncode == 0, _explain(changed)
    assert "copied-from-the-cache@" not in (tmp_path / "changed" / template.name).read_text(), "new inputs: a synth"
    assert "has no partitionMail:Alpha002:dev entry" not in changed.stderr
    _write_context(repo, "partitionMail:Alpha002:dev", "not base64!")
    assert _synth(repo, "Alpha002/dev", tmp_path / "failed", cache).returncode != 0
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 2, (
        f"a failed synth is never kept: {sorted(cache.iterdir())}"
    )


def test_unknown_instance_lists_the_known_ones(repo: Path, tmp_path: Path) -> None:
    result = _synth(repo, "Alpha001/qa", tmp_path / "out")

    assert result.returncode == 2
    assert result.stderr.strip() == (
        "cdk-runner: no instance file src/main/cdk/instances/Alpha001/qa.ts; "
        "known instances: Alpha001/demo, Alpha001/prod, Alpha002/dev, Alpha002/stage"
    )


def test_bad_context_entry_fails_the_synth_in_one_line_naming_key_and_field(repo: Path, tmp_path: Path) -> None:
    _write_context(repo, "partitionMail:Alpha002:dev", "not base64!")

    result = _synth(repo, "Alpha002/dev", tmp_path / "out")

    assert result.returncode != 0
    assert (
        "error: cdk.context.json: partitionMail:Alpha002:dev.dkimPublicKey must be the base64 RSA public key "
        'without spaces; got "not base64!"\n'
    ) in result.stderr
    assert "    at " not in result.stderr, "a stack trace buries the message"


def test_diff_against_a_deployed_template_runs_offline_and_parses(repo: Path, tmp_path: Path) -> None:
    deployed = tmp_path / "deployed.json"
    deployed.write_text("{}")  # nothing deployed yet: the first deploy adds everything
    offline = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {"AWS_EC2_METADATA_DISABLED": "true"}
    offline |= PLAIN_OUTPUT

    result = subprocess.run(
        ["npm", "run", "--silent", "diff", "--", "Alpha001/prod", str(deployed)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=offline,
    )

    assert result.returncode == 0, _explain(result)
    summary = summarize_diff(result.stdout + result.stderr)  # the CDK CLI writes to stdout when CI=true
    assert summary.stacks == ("Alpha001-prod-Email",)
    assert summary.by_type == {
        "AWS::IAM::Role": {"add": 2},
        "AWS::Route53::HostedZone": {"add": 1},
        "AWS::Route53::RecordSet": {"add": 3},
        "AWS::SecretsManager::Secret": {"add": 2},
    }, result.stderr
    assert sorted(o.name for o in summary.outputs) == sorted(EXPORT_NAMES)


def test_diff_of_a_folder_that_holds_the_stack_reads_it_without_a_synth(repo: Path, tmp_path: Path) -> None:
    """mailgate hands the diff the synth checks' assembly: the diff must judge that template, not a fresh one."""
    out = tmp_path / "assembly"
    assert _synth(repo, "Alpha001/prod", out).returncode == 0, "the synth the diff is handed failed"
    template_path = out / "Alpha001-prod-Email.template.json"
    deployed = tmp_path / "deployed.json"
    deployed.write_text(template_path.read_text())  # deployed = synthesized: no differences, unless edited
    template = json.loads(template_path.read_text())
    template["Resources"]["OnlyInTheHandedAssembly"] = {"Type": "AWS::SNS::Topic", "Properties": {}}
    template_path.write_text(json.dumps(template))
    offline = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {"AWS_EC2_METADATA_DISABLED": "true"}

    result = subprocess.run(
        ["npm", "run", "--silent", "diff", "--", "Alpha001/prod", str(deployed), str(out)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=offline | PLAIN_OUTPUT,
    )

    assert result.returncode == 0, _explain(result)
    summary = summarize_diff(result.stdout + result.stderr)
    assert summary.by_type == {"AWS::SNS::Topic": {"add": 1}}, (
        f"the diff synthesized afresh instead of reading the handed assembly: {summary.by_type}"
    )


# --- moto ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A moto server on loopback; on teardown, this module's account is emptied (moto's state is process-wide)."""
    from moto.core.base_backend import BackendDict
    from moto.server import ThreadedMotoServer

    teach_moto_secrets()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    for backends in list(BackendDict._instances):
        if MOTO_ACCOUNT in backends:
            backends[MOTO_ACCOUNT].reset()


def _client(service: str, url: str, account: str) -> Any:
    client = boto3.client(
        service, endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )

    def in_account(request: Any, **_: Any) -> None:
        request.headers["x-moto-account-id"] = account

    client.meta.events.register("before-send.*.*", in_account)
    return client


def test_synthesized_stack_creates_in_moto_with_its_exports_and_records(
    repo: Path, tmp_path: Path, moto_url: str
) -> None:
    public_key = _dkim_key()
    _write_context(repo, "partitionMail:Alpha002:dev", public_key)
    result = _synth(repo, "Alpha002/dev", tmp_path / "out")
    assert result.returncode == 0, _explain(result)
    assembly = read_assembly(tmp_path / "out")
    assert [m for m in assembly.messages if m.level == "warning"] == [], "with its context entry it warns of nothing"
    stack = assembly.stacks[0]
    print("resource counts:", resource_counts(stack.template))
    cloudformation = _client("cloudformation", moto_url, MOTO_ACCOUNT)

    cloudformation.create_stack(StackName=stack.stack_name, TemplateBody=stack.template_path.read_text())

    described = cloudformation.describe_stacks(StackName=stack.stack_name)["Stacks"][0]
    assert described["StackStatus"] == "CREATE_COMPLETE"
    outputs = {o["ExportName"]: o["OutputValue"] for o in described["Outputs"]}
    assert sorted(outputs) == sorted(f"Alpha002-dev-API-{name}" for name in EXPORT_NAMES)
    route53 = _client("route53", moto_url, MOTO_ACCOUNT)
    zone = route53.get_hosted_zone(Id=outputs["Alpha002-dev-API-PartitionMailZoneId"])["HostedZone"]
    assert zone["Name"] == "dev.ardamails.com."
    assert outputs["Alpha002-dev-API-PartitionMailZoneName"] == "dev.ardamails.com"
    arns = [outputs[f"Alpha002-dev-API-{name}"] for name in EXPORT_NAMES[2:]]
    assert [arn.split(":")[2:5] for arn in arns] == [
        ["secretsmanager", "us-east-1", MOTO_ACCOUNT],
        ["secretsmanager", "us-east-1", MOTO_ACCOUNT],
        ["iam", "", MOTO_ACCOUNT],
        ["iam", "", MOTO_ACCOUNT],
    ], arns
    secretsmanager = _client("secretsmanager", moto_url, MOTO_ACCOUNT)
    assert (
        secretsmanager.describe_secret(SecretId=arns[1])["Description"] == "Encryption key for dev.ardamails.com mail"
    )
    records = {
        (r["Name"], r["Type"]): [v["Value"] for v in r.get("ResourceRecords", [])]
        for r in route53.list_resource_record_sets(HostedZoneId=zone["Id"])["ResourceRecordSets"]
    }
    assert records[("dev.ardamails.com.", "TXT")] == [f'"{SPF}"']
    assert records[("_dmarc.dev.ardamails.com.", "TXT")] == [f'"{DMARC}"']
    assert records[("pm-bounces.dev.ardamails.com.", "CNAME")] == ["pm.mtasv.net"]
    (dkim,) = records[(f"{SELECTOR}._domainkey.dev.ardamails.com.", "TXT")]
    strings = dkim[1:-1].split('" "')
    assert len(strings) == 2
    assert all(len(s) <= 255 for s in strings)
    assert "".join(strings) == f"k=rsa;p={public_key}"
