"""The sandbox world: AWS (moto), DNS and Postmark on loopback, wired to one generated partitions file.

Everything a client needs (probes, the sandbox deploy, the fake `op`) reaches the world only through
the ordinary contract: an AWS config file with profiles, a resolver address, a Postmark URL, and `op`
on PATH. `world.json` in the state directory records the same for other processes.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from probes.config import Config, load
from sandbox import outside
from sandbox.aws_server import WORLD_ACCESS_KEY, AwsServer
from sandbox.dns_server import DnsServer, RecordSet, Zone
from sandbox.moto_route53 import generation, watch_route53
from sandbox.postmark_fake import PostmarkFake

ROOT = Path(__file__).resolve().parents[1]
INFRA_SOURCE = ROOT / "sandbox" / "infra"
ROOT_ACCOUNT = "210987654321"
ROOT_PROFILE = "mailgate-sandbox-root"
BASE_PROFILE = "mailgate-sandbox-base"
ROLE_NAME = "mailgate-sandbox-admin"
CHILD_NAMESERVERS = (
    "ns-2048.awsdns-64.com.",
    "ns-2049.awsdns-65.net.",
    "ns-2050.awsdns-66.org.",
    "ns-2051.awsdns-67.co.uk.",
)
PARENT_NAMESERVERS = ("ns-301.awsdns-37.com.", "ns-1602.awsdns-08.co.uk.")
UNSET_ENV = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
INSTANCE_FILE = """import {{ synthPartitionMail }} from "../../partition-mail/app";

synthPartitionMail({{
  infrastructure: "{infra}",
  partition: "{partition}",
  account: "{account}",
  region: "{region}",
  parentDomain: "{domain}",
}});
"""
INFRA_IGNORED = ("node_modules", "dist", "cdk.out", ".git")


@dataclass(frozen=True)
class WorldInfo:
    """What another process needs to use a running world (written to `world.json`)."""

    state_dir: str
    aws_url: str
    dns_port: int
    resolver: str
    postmark_url: str
    partitions_file: str
    infra_repo: str
    parent_zone_id: str
    pid: int

    @classmethod
    def read(cls, state_dir: Path) -> WorldInfo:
        return cls(**json.loads((state_dir / "world.json").read_text()))

    def env(self) -> dict[str, str]:
        """Environment that points boto3, Postmark, `op` and the sandbox tools at this world."""
        state = Path(self.state_dir)
        return {
            "AWS_CONFIG_FILE": str(state / "aws" / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(state / "aws" / "credentials"),
            "AWS_ENDPOINT_URL": self.aws_url,
            "POSTMARK_API_URL": self.postmark_url,
            "MAILGATE_SANDBOX": self.state_dir,
            "PATH": f"{state / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        }


def apply_env(env: dict[str, str], target: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Point a process environment at the world: set its variables, drop ambient AWS credentials."""
    for name in UNSET_ENV:
        target.pop(name, None)
    target.update(env)


class World:
    """Start, scenario-seed and stop the sandbox; one per process (moto's backends are global)."""

    def __init__(
        self,
        state_dir: Path,
        *,
        source: Path = ROOT / "partitions.yaml",
        extra_partitions: int = 0,
        extras_on: str | None = None,
        verify_delay: float = 1.0,
    ) -> None:
        self.state_dir = state_dir.resolve()
        self.source = source
        self.extra_partitions = extra_partitions
        self.extras_on = extras_on  # one infrastructure (one AWS account) for every extra partition
        self.aws = AwsServer()
        self.postmark: PostmarkFake
        self.dns: DnsServer
        self.tokens: dict[str, str] = {}
        self._verify_delay = verify_delay
        self._info: WorldInfo | None = None
        self._served: dict[int, tuple[Any, tuple[Any, ...], Zone]] = {}  # id(moto zone) -> (zone, its rrsets, Zone)
        self._snapshot: tuple[int, tuple[Zone, ...], tuple[Zone, ...]] | None = None  # generation, outside, served
        self._mailbox = ""
        self._outside_records: dict[str, list[RecordSet]] = {}  # the world beyond the parent domain
        self._outside: tuple[Zone, ...] = ()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> WorldInfo:
        started = time.monotonic()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        from probes.aws import forget_clients

        forget_clients()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        source = load(self.source)
        self.aws.start()
        hosts = CHILD_NAMESERVERS + PARENT_NAMESERVERS + outside.NAMESERVERS
        servers = {host: f"127.0.0.{index}" for index, host in enumerate(hosts, 2)}
        self._mailbox = source.file.dmarc.report_mailbox
        watch_route53()
        self.dns = DnsServer(self._zones, servers, resolver="127.0.0.1")
        self.dns.start()
        self.tokens = {account: str(uuid.uuid4()) for account in source.file.postmark.accounts}
        self.postmark = PostmarkFake(self.tokens, dns=("127.0.0.1", self.dns.port), verify_delay=self._verify_delay)
        self.postmark.start()
        infra_repo = self._copy_infra(source)
        partitions_file = self._write_partitions(source, infra_repo)
        config = load(partitions_file)
        self._outside_records = outside.records(config.targets.values(), self._mailbox)
        self._outside = outside.as_zones(self._outside_records)
        self._write_aws_config(config)
        self._write_op(config)
        self._info = WorldInfo(
            state_dir=str(self.state_dir),
            aws_url=self.aws.url,
            dns_port=self.dns.port,
            resolver=f"127.0.0.1:{self.dns.port}",
            postmark_url=self.postmark.url,
            partitions_file=str(partitions_file),
            infra_repo=str(infra_repo),
            parent_zone_id="",
            pid=os.getpid(),
        )
        self._info = WorldInfo(**{**asdict(self._info), "parent_zone_id": self._create_parent_zone(config)})
        (self.state_dir / "world.json").write_text(json.dumps(asdict(self._info), indent=2))
        self.started_in = time.monotonic() - started
        return self._info

    def reset(self) -> None:
        """Back to a fresh world: moto emptied (parent zone recreated), no faults, the infra repo as copied."""
        import urllib.request

        from probes.aws import forget_clients

        urllib.request.urlopen(urllib.request.Request(f"{self.aws.url}/moto-api/reset", method="POST"), timeout=30)
        forget_clients()  # assumed-role keys die with the reset
        self.aws.latency = 0.0
        self.aws.set_route53_quota()
        self.aws.set_cloudformation_quota(None)
        self.postmark.reset()
        self.postmark.latency = 0.0
        self.dns.clear_faults()
        self._outside_records = outside.records(self.config.targets.values(), self._mailbox)
        self._outside = outside.as_zones(self._outside_records)
        self.dns.set_packet_loss(0.0)
        self.dns.latency = 0.0
        self.set_op(mode="ok")
        git = ["git", "-c", "user.name=mailgate sandbox", "-c", "user.email=sandbox@mailgate.invalid"]
        subprocess.run([*git, "reset", "-q", "--hard", self._infra_commit], cwd=self.info.infra_repo, check=True)
        subprocess.run([*git, "clean", "-q", "-fd"], cwd=self.info.infra_repo, check=True)
        parent = self._create_parent_zone(self.config)
        self.aws.calls.clear()  # the world's own set-up is not a client's write
        self._info = WorldInfo(**{**asdict(self.info), "parent_zone_id": parent})
        (self.state_dir / "world.json").write_text(json.dumps(asdict(self._info), indent=2))

    def stop(self) -> None:
        for part in ("postmark", "dns"):
            server = getattr(self, part, None)
            if server is not None:
                server.stop()
        self.aws.stop()

    def __enter__(self) -> World:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def info(self) -> WorldInfo:
        assert self._info is not None, "World.start() first"
        return self._info

    @property
    def config(self) -> Config:
        return load(Path(self.info.partitions_file))

    def env(self) -> dict[str, str]:
        return self.info.env()

    def publish_outside(self, name: str, rtype: str, values: list[str] | None) -> None:
        """Set (values in Route 53 text form) or, with None, remove a record set in a zone beyond the parent
        domain (outside.records: mtasv.net, the report mailbox's domain, example.net)."""
        owner = name.lower().rstrip(".")
        apex = max((a for a in self._outside_records if owner == a or owner.endswith(f".{a}")), key=len, default=None)
        if apex is None:
            raise ValueError(f"{name} is in no outside zone; known: {', '.join(self._outside_records)}")
        kept = [r for r in self._outside_records[apex] if (r.name.lower().rstrip("."), r.rtype) != (owner, rtype)]
        self._outside_records[apex] = kept + ([RecordSet(name, rtype, 300, tuple(values))] if values else [])
        self._outside = outside.as_zones(self._outside_records)

    # -- wiring --------------------------------------------------------------------------------

    def _zones(self) -> tuple[Zone, ...]:
        """Every public hosted zone of every moto account, and the zones beyond, as the DNS server serves them.
        The DNS server asks on every question; moto's zones are walked again only after a write to them moved
        the generation (sandbox.moto_route53), and the same tuple handed back tells the server nothing changed."""
        from moto.route53.models import route53_backends

        seen = generation()  # read before the walk: a write during it moves the generation, the next ask walks
        outside = self._outside
        snapshot = self._snapshot
        if snapshot is not None and snapshot[0] == seen and snapshot[1] is outside:
            return snapshot[2]
        zones = list(outside)
        for account in list(route53_backends.keys()):
            for zone in list(route53_backends[account]["global"].zones.values()):
                if not zone.private_zone:
                    zones.append(self._served_zone(zone))
        served = tuple(zones)
        self._snapshot = (seen, outside, served)
        return served

    def _served_zone(self, zone: Any) -> Zone:
        """A moto zone as served, rebuilt only when its record sets changed: moto replaces a RecordSet object on
        every change (upsert, delete), so the same objects mean the same records (a walk after one write
        converts one zone, not all)."""
        rrsets = tuple(zone.rrsets)
        cached = self._served.get(id(zone))
        if (
            cached is not None
            and cached[0] is zone
            and cached[2].name == zone.name
            and len(cached[1]) == len(rrsets)
            and all(a is b for a, b in zip(cached[1], rrsets, strict=True))
        ):
            return cached[2]
        records = tuple(
            RecordSet(rrset.name, rrset.type, int(rrset.ttl or 300), tuple(_value(v) for v in rrset.records))
            for rrset in rrsets
        )
        served = Zone(zone.name, records)
        self._served[id(zone)] = (zone, rrsets, served)
        return served

    def _extras(self, source: Config) -> dict[str, tuple[str, str]]:
        """Extra partitions p01..pNN (benchmarks, load tests): name -> (infrastructure, Postmark account); spread
        over the infrastructures, or all on `extras_on`."""
        infras = [self.extras_on] if self.extras_on else list(source.file.infrastructures)
        accounts = source.file.postmark.accounts
        return {
            f"p{i:02d}": (infras[i % len(infras)], accounts[i % len(accounts)])
            for i in range(1, self.extra_partitions + 1)
        }

    def _copy_infra(self, source: Config) -> Path:
        """A private git copy of the sandbox CDK app (deploys write cdk.context.json into it)."""
        target = self.state_dir / "infra"
        if target.exists():
            return target
        shutil.copytree(INFRA_SOURCE, target, ignore=shutil.ignore_patterns(*INFRA_IGNORED, "cdk.out*"))
        modules = INFRA_SOURCE / "node_modules"
        if modules.exists():
            (target / "node_modules").symlink_to(modules, target_is_directory=True)
        for name, (infra, _) in self._extras(source).items():
            instance = target / "src" / "main" / "cdk" / "instances" / infra / f"{name}.ts"
            instance.write_text(
                INSTANCE_FILE.format(
                    infra=infra,
                    partition=name,
                    account=source.file.infrastructures[infra].account,
                    region=source.file.region,
                    domain=source.file.domain,
                )
            )
        git = ["git", "-c", "user.name=mailgate sandbox", "-c", "user.email=sandbox@mailgate.invalid"]
        subprocess.run([*git, "init", "-q", "-b", "main"], cwd=target, check=True)
        (target / ".git" / "info" / "exclude").write_text("node_modules\ndist\ncdk.out*\n")
        subprocess.run([*git, "add", "-A"], cwd=target, check=True)
        subprocess.run([*git, "commit", "-q", "-m", "sandbox infrastructure repo"], cwd=target, check=True)
        return target

    @property
    def _infra_commit(self) -> str:
        repo = self.info.infra_repo
        return subprocess.run(
            ["git", "rev-list", "--max-parents=0", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.split()[0]

    def _write_partitions(self, source: Config, infra_repo: Path) -> Path:
        data: dict[str, Any] = yaml.safe_load(source.path.read_text())
        for name, (infra, account) in self._extras(source).items():
            data["partitions"][name] = {
                "infrastructure": infra,
                "postmark_account": account,
                "credential": f"op://Sandbox/Postmark-{name}/credential",
            }
        python = shlex.quote(sys.executable)
        data["dns"] = {**data["dns"], "resolvers": [f"127.0.0.1:{self.dns.port}"], "nameserver_port": self.dns.port}
        data["postmark"] = {**data["postmark"], "api_url": self.postmark.url}
        data["infra"] = {
            **data["infra"],
            "repo": str(infra_repo),
            "synth": "npm run --silent synth -- {infrastructure}/{partition} {out}",
            "diff": f"{python} -m sandbox diff {{infrastructure}} {{partition}} {{out}}",
        }
        data["deploy"] = {"command": f"{python} -m sandbox deploy {{infrastructure}} {{partition}}"}
        data.setdefault("signoff", {})["log"] = None
        # the copy lives elsewhere: paths the source gives relative to itself are made absolute
        if data.get("waivers"):
            data["waivers"] = str((source.path.parent / data["waivers"]).resolve())
        matrix = data["signoff"].get("verification") or {}
        if matrix.get("file"):
            matrix["file"] = str((source.path.parent / matrix["file"]).resolve())
        path = self.state_dir / "partitions.yaml"
        header = f"# Generated by the mailgate sandbox from {source.path}; do not edit.\n"
        path.write_text(header + yaml.safe_dump(data, sort_keys=False))
        return path

    def _write_aws_config(self, config: Config) -> None:
        aws_dir = self.state_dir / "aws"
        aws_dir.mkdir(exist_ok=True)
        region = config.file.region
        sections = [f"[profile {BASE_PROFILE}]\nregion = {region}\nendpoint_url = {self.aws.url}\n"]
        accounts = {infra.profile: infra.account for infra in config.file.infrastructures.values()}
        accounts[ROOT_PROFILE] = ROOT_ACCOUNT
        for profile, account in accounts.items():
            sections.append(
                f"[profile {profile}]\nregion = {region}\nendpoint_url = {self.aws.url}\n"
                f"role_arn = arn:aws:iam::{account}:role/{ROLE_NAME}\nsource_profile = {BASE_PROFILE}\n"
            )
        (aws_dir / "config").write_text("\n".join(sections))
        (aws_dir / "credentials").write_text(
            f"[{BASE_PROFILE}]\naws_access_key_id = AKIASANDBOXBASE00001\n"
            "aws_secret_access_key = sandbox-not-a-secret\n"
        )

    def _write_op(self, config: Config) -> None:
        """A fake 1Password CLI: `op read <reference>` answers the sandbox tokens; `op.json` steers faults."""
        references = {t.credential: self.tokens[t.postmark_account] for t in config.targets.values()}
        self.set_op(references=references, mode="ok")
        bin_dir = self.state_dir / "bin"
        bin_dir.mkdir(exist_ok=True)
        op = bin_dir / "op"
        # -IS: no site-packages to scan at start-up (a start costs ~12 ms instead of ~35 ms of CPU; a run
        # of 32 partitions starts 32 of them alongside the checks)
        op.write_text(
            f"#!{sys.executable} -IS\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
            "from pathlib import Path\nfrom sandbox.fake_op import main\n"
            "raise SystemExit(main(Path(__file__).resolve().parent.parent))\n"
        )
        op.chmod(0o755)

    def set_op(self, *, references: dict[str, str] | None = None, mode: str = "ok") -> None:
        """Steer the fake `op`: mode ok, fail (exit 1 with an error) or empty (prints nothing)."""
        path = self.state_dir / "op.json"
        current = json.loads(path.read_text()) if path.exists() else {"references": {}}
        current["mode"] = mode
        if references is not None:
            current["references"] = references
        path.write_text(json.dumps(current))

    def _create_parent_zone(self, config: Config) -> str:
        """The parent zone (e.g. ardamails.com) in a root account, with name servers of its own."""
        route53 = self.client("route53", ROOT_ACCOUNT)
        zone = route53.create_hosted_zone(Name=config.file.domain, CallerReference=f"sandbox-{uuid.uuid4()}")
        zone_id: str = zone["HostedZone"]["Id"].rsplit("/", 1)[-1]
        ns = [{"Value": host} for host in PARENT_NAMESERVERS]
        route53.change_resource_record_sets(
            HostedZoneId=zone_id,
            ChangeBatch={
                "Changes": [
                    {
                        "Action": "UPSERT",
                        "ResourceRecordSet": {
                            "Name": config.file.domain,
                            "Type": "NS",
                            "TTL": 172800,
                            "ResourceRecords": ns,
                        },
                    }
                ]
            },
        )
        return zone_id

    def client(self, service: Literal["cloudformation", "route53"], account: str) -> Any:
        """A boto3 client into one moto account (the world's own back door, not the probes' path)."""
        import boto3

        client = boto3.client(
            service,
            region_name="us-east-1",
            endpoint_url=self.aws.url,
            aws_access_key_id=WORLD_ACCESS_KEY,
            aws_secret_access_key="sandbox-not-a-secret",
        )

        def pick_account(request: Any, **_: Any) -> None:
            request.headers["x-moto-account-id"] = account

        client.meta.events.register("before-send", pick_account)
        return client


def _value(value: object) -> str:
    """A Route53 record value as text (moto keeps some SOA values as {'Value': ...})."""
    if isinstance(value, dict):
        return str(value.get("Value", ""))
    return str(value)
