"""The sandbox's `amm.sh`: register the Postmark domain, write the context entry, synth, create the stack, delegate.

Each step is a function so scenario seeding reuses the same code; `deploy()` runs them in the order the
real pre-deploy CLI and `cdk deploy` do, as a client of a running world (it reads `world.json`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx

from probes.cdk import read_assembly
from probes.config import Target, load

GIT = ["git", "-c", "user.name=mailgate sandbox", "-c", "user.email=sandbox@mailgate.invalid"]


class DeployError(Exception):
    """A sandbox deploy step failed; the message says which and why."""


@dataclass(frozen=True)
class DkimEntry:
    selector: str
    public_key: str
    return_path_target: str

    def as_context(self) -> dict[str, str]:
        return {
            "dkimSelector": self.selector,
            "dkimPublicKey": self.public_key,
            "returnPathTarget": self.return_path_target,
        }


def postmark_domain(api_url: str, token: str, target: Target) -> DkimEntry:
    """Find or create the partition's sending domain and return the DKIM values Postmark issued."""
    headers = {"X-Postmark-Account-Token": token, "Accept": "application/json"}
    try:
        with httpx.Client(base_url=api_url, headers=headers, timeout=30) as client:
            domain_id = _find_domain(client, target.zone)
            if domain_id is None:
                body = {"Name": target.zone, "ReturnPathDomain": target.return_path_host}
                domain_id = int(_json(client.post("/domains", json=body))["ID"])
            domain = _json(client.get(f"/domains/{domain_id}"))
    except httpx.HTTPError as exc:
        raise DeployError(f"Postmark {api_url} unreachable: {type(exc).__name__}: {exc}") from None
    host = domain.get("DKIMPendingHost") or domain.get("DKIMHost") or ""
    text = domain.get("DKIMPendingTextValue") or domain.get("DKIMTextValue") or ""
    if "._domainkey." not in host or "p=" not in text:
        raise DeployError(f"Postmark domain {target.zone} has no DKIM host/value yet (DKIMPendingHost={host!r})")
    key = text.split("p=", 1)[1].split(";", 1)[0].strip()
    return DkimEntry(host.split("._domainkey.", 1)[0], key, domain.get("ReturnPathDomainCNAMEValue") or "pm.mtasv.net")


def _find_domain(client: httpx.Client, name: str) -> int | None:
    offset = 0
    while True:
        page = _json(client.get("/domains", params={"count": 500, "offset": offset}))
        for domain in page.get("Domains", []):
            if str(domain.get("Name", "")).lower() == name.lower():
                return int(domain["ID"])
        offset += 500
        if offset >= int(page.get("TotalCount", 0)):
            return None


def _json(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        request = response.request
        raise DeployError(
            f"Postmark {request.method} {request.url.path}: HTTP {response.status_code} {response.text[:200]}"
        )
    return dict(response.json())


def write_context(infra_repo: Path, key: str, entry: DkimEntry) -> None:
    """Set `key` in cdk.context.json atomically, under a lock (parallel deploys share the file), and commit it."""
    path = infra_repo / "cdk.context.json"
    with _locked(infra_repo / ".git" / "mailgate-context.lock"):
        data = json.loads(path.read_text()) if path.exists() else {}
        if data.get(key) == entry.as_context():
            return
        data[key] = entry.as_context()
        handle, tmp = tempfile.mkstemp(dir=infra_repo, prefix=".cdk.context.", suffix=".tmp")
        with os.fdopen(handle, "w") as out:
            json.dump(data, out, indent=2, sort_keys=True)
            out.write("\n")
        os.replace(tmp, path)
        subprocess.run([*GIT, "add", "cdk.context.json"], cwd=infra_repo, check=True, capture_output=True)
        subprocess.run(
            [*GIT, "commit", "-q", "-m", f"{key}: DKIM context"], cwd=infra_repo, check=True, capture_output=True
        )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def synth(infra_repo: Path, command: str, target: Target, out: Path) -> dict[str, Any]:
    """Run the infra app's synth into `out` and return the partition stack's template."""
    line = command.format(**target.command_vars(out=str(out)))
    done = subprocess.run(line, shell=True, cwd=infra_repo, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise DeployError(f"synth `{line}` exited {done.returncode}:\n{tail}")
    stacks = [s for s in read_assembly(out).stacks if s.stack_name == target.stack_name]
    if len(stacks) != 1:
        raise DeployError(f"synth produced no stack named {target.stack_name} in {out}")
    return stacks[0].template


def create_stack(cloudformation: Any, name: str, template: dict[str, Any]) -> str:
    """Create the stack, or update it when it exists; return its final status."""
    body = json.dumps(template)
    try:
        cloudformation.describe_stacks(StackName=name)
        exists = True
    except cloudformation.exceptions.ClientError:
        exists = False
    if exists:
        try:
            cloudformation.update_stack(StackName=name, TemplateBody=body, Capabilities=["CAPABILITY_IAM"])
        except cloudformation.exceptions.ClientError as exc:
            if "No updates are to be performed" not in str(exc):
                raise
    else:
        cloudformation.create_stack(StackName=name, TemplateBody=body, Capabilities=["CAPABILITY_IAM"])
    return str(cloudformation.describe_stacks(StackName=name)["Stacks"][0]["StackStatus"])


def delegate(route53_child: Any, route53_parent: Any, parent_zone_id: str, zone_id: str, zone: str) -> tuple[str, ...]:
    """Write the child zone's name servers as NS in the parent (the cross-account delegation)."""
    servers = tuple(route53_child.get_hosted_zone(Id=zone_id)["DelegationSet"]["NameServers"])
    route53_parent.change_resource_record_sets(
        HostedZoneId=parent_zone_id,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": {
                        "Name": zone,
                        "Type": "NS",
                        "TTL": 172800,
                        "ResourceRecords": [{"Value": s} for s in servers],
                    },
                }
            ]
        },
    )
    return servers


def deploy(infrastructure: str, partition: str, say: Callable[[str], None] = print) -> None:
    """The whole sandbox deploy of one partition, as a client of the running world."""
    from sandbox.world import ROOT_PROFILE, WorldInfo

    state = os.environ.get("MAILGATE_SANDBOX")
    if not state:
        raise DeployError("MAILGATE_SANDBOX is not set: start the world with `python -m sandbox up` and use its env")
    info = WorldInfo.read(Path(state))
    config = load(Path(info.partitions_file))
    target = config.targets.get(partition)
    if target is None or target.infrastructure != infrastructure:
        raise DeployError(f"no partition {partition} on {infrastructure} in {info.partitions_file}")
    infra_repo = Path.cwd()
    say(f"pre-deploy: reading the Postmark token of {target.postmark_account} with op read")
    token = _op_read(target.credential)
    entry = postmark_domain(info.postmark_url, token, target)
    say(f"pre-deploy: Postmark domain {target.zone}: DKIM selector {entry.selector}")
    write_context(infra_repo, target.context_key, entry)
    say(f"pre-deploy: cdk.context.json {target.context_key} written")
    with tempfile.TemporaryDirectory(prefix=f"synth-{partition}-") as out:
        template = synth(infra_repo, config.file.infra.synth, target, Path(out))
    session = boto3.Session(profile_name=target.profile, region_name=target.region)
    status = create_stack(session.client("cloudformation"), target.stack_name, template)
    say(f"deploy: stack {target.stack_name} {status}")
    if status not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        raise DeployError(f"stack {target.stack_name} ended {status}")
    outputs = session.client("cloudformation").describe_stacks(StackName=target.stack_name)["Stacks"][0]["Outputs"]
    zone_id = next(
        o["OutputValue"] for o in outputs if o.get("ExportName") == target.export_name("PartitionMailZoneId")
    )
    root = boto3.Session(profile_name=ROOT_PROFILE, region_name=target.region)
    servers = delegate(session.client("route53"), root.client("route53"), info.parent_zone_id, zone_id, target.zone)
    say(f"deploy: {target.zone} delegated to {', '.join(servers)}")


def _op_read(reference: str) -> str:
    done = subprocess.run(["op", "read", reference], capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0 or not done.stdout.strip():
        raise DeployError(f"op read {reference} failed (exit {done.returncode}): {done.stderr.strip()[-200:]}")
    return done.stdout.strip()
