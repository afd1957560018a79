"""Put a partition of a running world into a known state in one line: deployed and healthy, or with a defect.

`Scenarios(world).seed("dev")` does what a deploy does (Postmark domain, context entry, the synthesized
stack, delegation), with Postmark already verified, reusing one synth per partition for the world's life.
`seed("dev", defects=["two-spf"])` then breaks exactly one thing, as an operator would find it.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from moto.cloudformation.models import Event, cloudformation_backends
from moto.route53.models import route53_backends

from probes.config import Target
from sandbox import outside
from sandbox.deploy import DkimEntry, create_stack, delegate, synth, write_context
from sandbox.dns_server import Fault
from sandbox.outside import route53_txt
from sandbox.postmark_fake import PostmarkFault
from sandbox.world import CHILD_NAMESERVERS, ROOT_ACCOUNT, World

OTHER_ACCOUNT = "999988887777"


@dataclass
class Seeded:
    """What a seed made: enough for a defect to reach in."""

    target: Target
    dkim: DkimEntry
    zone_id: str
    template: dict[str, Any]


class Scenarios:
    """Seeds partitions of one world; caches a synthesized template per partition (synth costs seconds)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._dkim: dict[str, DkimEntry] = {}
        self._templates: dict[str, dict[str, Any]] = {}

    def reset(self) -> None:
        """Back to a fresh world: nothing deployed, no faults, the infra repo as committed at start."""
        self.world.reset()

    def seed(
        self,
        partition: str,
        *,
        defects: tuple[str, ...] | list[str] = (),
        verified: bool = True,
        variations: tuple[str, ...] | list[str] = (),
        like: str | None = None,
    ) -> Seeded:
        """Deploy `partition` healthy, then apply `variations` (other healthy shapes receivers accept, see
        VARIATIONS) and break it with `defects` (see DEFECTS). With `like`, a seeded partition of the same
        infrastructure and Postmark account, its template is that one's renamed instead of a synth of its own
        (hundreds of partitions in a benchmark: a synth costs seconds, a rename milliseconds)."""
        unknown = [d for d in defects if d not in DEFECTS]
        if unknown:
            raise ValueError(f"unknown defect {', '.join(unknown)}; known: {', '.join(sorted(DEFECTS))}")
        unknown = [v for v in variations if v not in VARIATIONS]
        if unknown:
            raise ValueError(f"unknown variation {', '.join(unknown)}; known: {', '.join(sorted(VARIATIONS))}")
        world = self.world
        target = world.config.targets[partition]
        dkim = self._postmark(target, verified)
        write_context(Path(world.info.infra_repo), target.context_key, dkim)
        template = self._renamed(like, target) if like is not None else self._template(target)
        for name in defects:
            if name in TEMPLATE_DEFECTS:
                template = TEMPLATE_DEFECTS[name](template, target)
        create_stack(world.client("cloudformation", target.account), target.stack_name, template)
        outputs = world.client("cloudformation", target.account).describe_stacks(StackName=target.stack_name)
        exports = {o.get("ExportName"): o["OutputValue"] for o in outputs["Stacks"][0].get("Outputs", [])}
        zone_id = exports.get(target.export_name("PartitionMailZoneId")) or _zone_id(world, target)
        delegate(
            world.client("route53", target.account),
            world.client("route53", ROOT_ACCOUNT),
            world.info.parent_zone_id,
            zone_id,
            target.zone,
        )
        seeded = Seeded(target, dkim, zone_id, template)
        for name in variations:
            VARIATIONS[name](self, seeded)
        for name in defects:
            DEFECTS[name](self, seeded)
        return seeded

    def _postmark(self, target: Target, verified: bool) -> DkimEntry:
        postmark = self.world.postmark
        account = target.postmark_account
        if postmark.domain(account, target.zone) is None:
            postmark.create_domain(account, target.zone, target.return_path_host)
        if target.name not in self._dkim:
            domain = postmark.domain(account, target.zone) or {}
            host, text = domain["DKIMPendingHost"], domain["DKIMPendingTextValue"]
            key = text.split("p=", 1)[1].strip()
            self._dkim[target.name] = DkimEntry(host.split("._domainkey.")[0], key, target.return_path_target)
        dkim = self._dkim[target.name]
        host, text = target.dkim_host(dkim.selector), f"k=rsa; p={dkim.public_key}"
        fields: dict[str, Any] = (
            {
                "DKIMVerified": True,
                "DKIMHost": host,
                "DKIMTextValue": text,
                "DKIMPendingHost": "",
                "DKIMPendingTextValue": "",
                "DKIMUpdateStatus": "Verified",
                "ReturnPathDomainVerified": True,
            }
            if verified
            else {
                "DKIMVerified": False,
                "DKIMHost": "",
                "DKIMTextValue": "",
                "DKIMPendingHost": host,
                "DKIMPendingTextValue": text,
                "DKIMUpdateStatus": "Pending",
                "ReturnPathDomainVerified": False,
            }
        )
        postmark.set_domain(account, target.zone, **fields)
        return dkim

    def _template(self, target: Target) -> dict[str, Any]:
        if target.name not in self._templates:
            infra = Path(self.world.info.infra_repo)
            with tempfile.TemporaryDirectory(prefix=f"seed-{target.name}-") as out:
                self._templates[target.name] = synth(infra, self.world.config.file.infra.synth, target, Path(out))
        return self._templates[target.name]

    def _renamed(self, like: str, target: Target) -> dict[str, Any]:
        model = self.world.config.targets[like]
        if (model.infrastructure, model.postmark_account) != (target.infrastructure, target.postmark_account):
            raise ValueError(f"seed {target.name} like {like}: another infrastructure or Postmark account")
        if target.name not in self._templates:
            self._templates[target.name] = renamed_template(
                self._template(model), like, self._dkim[like], target.name, self._dkim[target.name]
            )
        return self._templates[target.name]

    def seed_many(
        self, names: Sequence[str], threads: int, seed: Callable[[str, str | None], object] | None = None
    ) -> None:
        """Seed many partitions, `threads` at once: the first of each infrastructure and Postmark account with a
        synth of its own, then the others `like` it (a rename). `seed(name, like)` seeds one (default: healthy)."""
        one = seed or (lambda name, like: self.seed(name, like=like))
        targets = self.world.config.targets
        first: dict[tuple[str, str], str] = {}
        like: dict[str, str | None] = {}
        for name in names:
            kind = (targets[name].infrastructure, targets[name].postmark_account)
            like[name] = first.get(kind)
            first.setdefault(kind, name)
        models = list(first.values())
        if not models:
            return
        one(models[0], None)  # alone first: boto3's default session and its loaders warm up in one thread
        with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="seed") as pool:
            list(pool.map(lambda name: one(name, None), models[1:]))
            list(pool.map(lambda name: one(name, like[name]), [n for n in names if like[n] is not None]))


def renamed_template(
    template: dict[str, Any], old_name: str, old_dkim: DkimEntry, new_name: str, new_dkim: DkimEntry
) -> dict[str, Any]:
    """A partition's synthesized template made another partition's of the same infrastructure: partition name, DKIM
    selector and key replaced (a synth costs seconds, a rename milliseconds)."""
    text = json.dumps(template).replace(old_dkim.public_key, new_dkim.public_key)
    text = text.replace(f"{old_dkim.selector}._domainkey", f"{new_dkim.selector}._domainkey")
    result: dict[str, Any] = json.loads(re.sub(rf"\b{re.escape(old_name)}\b", new_name, text))
    return result


def _zone_id(world: World, target: Target) -> str:
    zones = world.client("route53", target.account).list_hosted_zones_by_name(DNSName=target.zone)["HostedZones"]
    return str(zones[0]["Id"]).rsplit("/", 1)[-1]


def _records(
    scenarios: Scenarios,
    seeded: Seeded,
    changes: list[tuple[str, str, str, list[str]]],
    *,
    account: str | None = None,
    zone_id: str | None = None,
) -> None:
    """Apply (action, name, type, values) changes to the partition zone (or another zone/account)."""
    route53 = scenarios.world.client("route53", account or seeded.target.account)
    batch = []
    for action, name, rtype, values in changes:
        record: dict[str, Any] = {"Name": name, "Type": rtype, "TTL": 300}
        if action == "DELETE":  # moto refuses DELETE of quoted TXT values over its API: go to its backend
            zone = route53_backends[account or seeded.target.account]["global"].get_hosted_zone(
                zone_id or seeded.zone_id
            )
            zone.delete_rrset({"Name": name.rstrip(".") + ".", "Type": rtype})
            continue
        record["ResourceRecords"] = [{"Value": v} for v in values]
        batch.append({"Action": action, "ResourceRecordSet": record})
    if batch:
        route53.change_resource_record_sets(HostedZoneId=zone_id or seeded.zone_id, ChangeBatch={"Changes": batch})


def _parent_ns(scenarios: Scenarios, seeded: Seeded, servers: tuple[str, ...]) -> None:
    _records(
        scenarios,
        seeded,
        [("UPSERT", seeded.target.zone, "NS", list(servers))],
        account=ROOT_ACCOUNT,
        zone_id=scenarios.world.info.parent_zone_id,
    )


def _rollback(scenarios: Scenarios, seeded: Seeded) -> None:
    target = seeded.target
    backend = cloudformation_backends[target.account][target.region]
    stack = next(s for s in backend.stacks.values() if s.name == target.stack_name)
    reason = "Resource handler returned message: AddNsRecordsToAnyHostedZone already exists"
    stack.events.append(
        Event(
            stack.stack_id,
            stack.name,
            "EmailDnsProvisioningRole",
            "role",
            "AWS::IAM::Role",
            "CREATE_FAILED",
            reason,
            None,
        )
    )
    stack.status = "ROLLBACK_COMPLETE"


def _without_export(template: dict[str, Any], target: Target) -> dict[str, Any]:
    wanted = target.export_name("EmailEncryptionKeyArn")
    outputs = {k: v for k, v in template["Outputs"].items() if wanted not in str(v.get("Export", {}))}
    return {**template, "Outputs": outputs}


def _foreign_arn(template: dict[str, Any], target: Target) -> dict[str, Any]:
    wanted = target.export_name("EmailDnsProvisioningRoleArn")
    outputs = {
        k: {**v, "Value": f"arn:aws:iam::{OTHER_ACCOUNT}:role/foreign-role"}
        if wanted in str(v.get("Export", {}))
        else v
        for k, v in template["Outputs"].items()
    }
    return {**template, "Outputs": outputs}


def _one_char(key: str) -> str:
    index = len(key) // 2
    return key[:index] + ("A" if key[index] != "A" else "B") + key[index + 1 :]


THIRD = outside.THIRD_PARTY
THIRD_PARTY_RUA = f"mailto:dmarc-reports@{THIRD}"


def _spf(scenarios: Scenarios, seeded: Seeded, *values: str) -> None:
    """Publish `values` as the TXT values at the partition's apex (its SPF record and whatever stands beside it)."""
    _records(scenarios, seeded, [("UPSERT", seeded.target.zone, "TXT", [route53_txt(v) for v in values])])


def _third_party_spf(scenarios: Scenarios, label: str, text: str) -> None:
    """An SPF record at <label>.example.net, the sandbox's third party."""
    scenarios.world.publish_outside(f"{label}.{THIRD}", "TXT", [route53_txt(text)])


def _dmarc(scenarios: Scenarios, seeded: Seeded, tags: str, *, policy: str = "quarantine") -> None:
    """Publish the partition's DMARC record as `v=DMARC1; p=<policy>; <tags>`."""
    text = f"v=DMARC1; p={policy}; {tags}"
    _records(scenarios, seeded, [("UPSERT", seeded.target.dmarc_host, "TXT", [route53_txt(text)])])


def _authorization(scenarios: Scenarios, seeded: Seeded, domain: str | None = None) -> str:
    """The report authorization name of the partition at `domain` (the report mailbox's domain by default)."""
    mailbox_domain = scenarios.world.config.file.dmarc.report_mailbox.rsplit("@", 1)[-1]
    return f"{seeded.target.zone}._report._dmarc.{domain or mailbox_domain}"


def _rsa_key(bits: int) -> str:
    """A base64 DER (SubjectPublicKeyInfo) RSA public key of `bits` bits, as a DKIM p= holds it. Under 1024
    bits `cryptography` generates no key pair, and a public modulus of that size is all DNS carries."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if bits < 1024:
        public = rsa.RSAPublicNumbers(65537, (1 << (bits - 1)) | secrets.randbits(bits - 1) | 1).public_key()
    else:
        public = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def _dkim_text(scenarios: Scenarios, seeded: Seeded, text: str) -> None:
    """Publish `text` (`{key}` standing for the partition's key) as the DKIM record; Postmark and the context
    keep the key, so only what DNS serves changes."""
    host = seeded.target.dkim_host(seeded.dkim.selector)
    _records(scenarios, seeded, [("UPSERT", host, "TXT", [route53_txt(text.format(key=seeded.dkim.public_key))])])


def _rekey(scenarios: Scenarios, seeded: Seeded, *, selector: str | None = None, key: str | None = None) -> None:
    """Give the partition another DKIM selector or key everywhere at once, as a deploy after Postmark issued
    them would: Postmark's DKIMHost/DKIMTextValue, cdk.context.json and the TXT record (the old name removed)."""
    target, old = seeded.target, seeded.dkim
    new = DkimEntry(selector or old.selector, key or old.public_key, old.return_path_target)
    host, text = target.dkim_host(new.selector), f"k=rsa; p={new.public_key}"
    scenarios.world.postmark.set_domain(
        target.postmark_account, target.zone, DKIMHost=host, DKIMTextValue=text, DKIMVerified=True
    )
    write_context(Path(scenarios.world.info.infra_repo), target.context_key, new)
    if new.selector != old.selector:
        _records(scenarios, seeded, [("DELETE", target.dkim_host(old.selector), "TXT", [])])
    _records(scenarios, seeded, [("UPSERT", host, "TXT", [route53_txt(text)])])
    seeded.dkim = new


def _rotate(
    scenarios: Scenarios,
    seeded: Seeded,
    *,
    publish: bool = True,
    confirm: bool = True,
    context: str = "old",
    old_record: bool = True,
    new_record: bool = True,
    safe: bool = False,
) -> None:
    """A DKIM key rotation of the partition's domain (`POST /domains/{id}/rotatedkim`), taken as far as asked:
    `publish` the new key in the zone; `confirm` (Postmark saw it: the old key is revoked, `safe` to remove once its
    grace has passed); `context` "old" or "new" is the key cdk.context.json names; `old_record`/`new_record` say
    which records the zone keeps afterwards."""
    postmark, target = scenarios.world.postmark, seeded.target
    pending = postmark.rotate(target.postmark_account, target.zone)
    host, text = pending["DKIMPendingHost"], pending["DKIMPendingTextValue"]
    if publish:
        _records(scenarios, seeded, [("UPSERT", host, "TXT", [route53_txt(text)])])
        if confirm:
            done = postmark.confirm_dkim(target.postmark_account, target.zone, safe=safe)
            assert done["DKIMHost"] == host, f"the fake did not confirm the rotation: {done}"
    if not old_record:
        _records(scenarios, seeded, [("DELETE", target.dkim_host(seeded.dkim.selector), "TXT", [])])
    if publish and not new_record:
        _records(scenarios, seeded, [("DELETE", host, "TXT", [])])
    if context == "new":
        entry = replace(seeded.dkim, selector=host.split("._domainkey.")[0], public_key=text.split("p=", 1)[1].strip())
        write_context(Path(scenarios.world.info.infra_repo), target.context_key, entry)
        seeded.dkim = entry


def _rotated(**how: Any) -> Callable[[Scenarios, Seeded], None]:
    return lambda scenarios, seeded: _rotate(scenarios, seeded, **how)


def _return_path_unverified(scenarios: Scenarios, seeded: Seeded) -> None:
    """Postmark has not verified the Return-Path, and will not within the run, though the CNAME is right."""
    postmark, target = scenarios.world.postmark, seeded.target
    postmark.set_domain(target.postmark_account, target.zone, ReturnPathDomainVerified=False)
    postmark.stuck(target.postmark_account, target.zone, dkim=False)


def _sender_only(scenarios: Scenarios, seeded: Seeded) -> None:
    """The partition's domain exists in Postmark as a Sender Signature (an address), not as a Domain."""
    postmark, target = scenarios.world.postmark, seeded.target
    postmark.delete_domain(target.postmark_account, target.zone)
    postmark.create_sender(target.postmark_account, f"mail@{target.zone}", "Arda mail")


def _spf_11_lookups(s: Scenarios, d: Seeded) -> None:
    for i in range(1, 10):
        _third_party_spf(s, f"s{i}", f"v=spf1 ip4:192.0.2.{i} -all")
    _third_party_spf(s, "bulk", "v=spf1 " + " ".join(f"include:s{i}.{THIRD}" for i in range(1, 10)) + " -all")
    _spf(s, d, f"v=spf1 include:spf.mtasv.net include:bulk.{THIRD} ~all")


def _spf_include_two_records(s: Scenarios, d: Seeded) -> None:
    two = [route53_txt("v=spf1 ip4:192.0.2.1 -all"), route53_txt("v=spf1 ip4:192.0.2.2 -all")]
    s.world.publish_outside(f"two.{THIRD}", "TXT", two)
    _spf(s, d, f"v=spf1 include:spf.mtasv.net include:two.{THIRD} ~all")


def _spf_include_loop(s: Scenarios, d: Seeded) -> None:
    _third_party_spf(s, "loop", f"v=spf1 include:loop2.{THIRD} -all")
    _third_party_spf(s, "loop2", f"v=spf1 include:loop.{THIRD} -all")
    _spf(s, d, f"v=spf1 include:spf.mtasv.net include:loop.{THIRD} ~all")


def _dmarc_several_rua(s: Scenarios, d: Seeded) -> None:
    s.world.publish_outside(_authorization(s, d, THIRD), "TXT", [route53_txt(outside.AUTHORIZATION)])
    _dmarc(
        s,
        d,
        f"rua=mailto:dmarc-reports@arda.cards!10m,mailto:dmarc@{d.target.domain}!5m,{THIRD_PARTY_RUA}!1m; "
        "ruf=mailto:dmarc-reports@arda.cards!1m",
    )


def _spf_redirect(s: Scenarios, d: Seeded) -> None:
    spf = [route53_txt("v=spf1 include:spf.mtasv.net ~all")]
    parent = s.world.info.parent_zone_id
    _records(s, d, [("UPSERT", f"_spf.{d.target.domain}", "TXT", spf)], account=ROOT_ACCOUNT, zone_id=parent)
    _spf(s, d, f"v=spf1 redirect=_spf.{d.target.domain}")


TEMPLATE_DEFECTS: dict[str, Callable[[dict[str, Any], Target], dict[str, Any]]] = {
    "missing-export": _without_export,
    "foreign-arn": _foreign_arn,
}


def _dmarc_parent_only(s: Scenarios, d: Seeded) -> None:
    """The partition's own _dmarc record gone, only the parent's left (receivers fall back to it)."""
    _records(s, d, [("DELETE", d.target.dmarc_host, "TXT", [])])
    _records(
        s,
        d,
        [
            (
                "UPSERT",
                f"_dmarc.{d.target.domain}",
                "TXT",
                [route53_txt("v=DMARC1; p=reject; rua=mailto:dmarc-reports@arda.cards")],
            )
        ],
        account=ROOT_ACCOUNT,
        zone_id=s.world.info.parent_zone_id,
    )


DEFECTS: dict[str, Callable[[Scenarios, Seeded], None]] = {
    "missing-export": lambda s, d: None,
    "foreign-arn": lambda s, d: None,
    "rollback": _rollback,
    "one-ns": lambda s, d: _parent_ns(s, d, CHILD_NAMESERVERS[:1]),
    "ns-mismatch": lambda s, d: _parent_ns(s, d, CHILD_NAMESERVERS[:3]),
    "lame-ns": lambda s, d: s.world.dns.inject(Fault("lame", server=CHILD_NAMESERVERS[1])),
    "two-spf": lambda s, d: _records(
        s,
        d,
        [
            (
                "UPSERT",
                d.target.zone,
                "TXT",
                [route53_txt("v=spf1 include:spf.mtasv.net ~all"), route53_txt("v=spf1 include:_spf.google.com ~all")],
            )
        ],
    ),
    # RFC 7208 §4.6.4: spf.mtasv.net, bulk and its nine includes make 11 lookups; the 11th crosses the limit
    "spf-11-lookups": _spf_11_lookups,
    # RFC 7208 §4.6.4: a (no A at the apex), mx (no MX) and a:mail (NXDOMAIN) are three void lookups
    "spf-void-lookups": lambda s, d: _spf(s, d, f"v=spf1 a mx a:mail.{THIRD} include:spf.mtasv.net ~all"),
    # RFC 7208 §5.2: an include whose target has no SPF record is a permerror
    "spf-include-without-record": lambda s, d: _spf(s, d, f"v=spf1 include:spf.mtasv.net include:spf.{THIRD} ~all"),
    "spf-include-two-records": _spf_include_two_records,
    "spf-include-loop": _spf_include_loop,
    "spf-without-postmark": lambda s, d: _spf(s, d, "v=spf1 ip4:192.0.2.10 ~all"),
    "spf-no-all": lambda s, d: _spf(s, d, "v=spf1 include:spf.mtasv.net"),
    "dmarc-parent-only": _dmarc_parent_only,
    "dmarc-nowhere": lambda s, d: _records(s, d, [("DELETE", d.target.dmarc_host, "TXT", [])]),
    # RFC 7489 §7.1: without its authorization record the mailbox's domain receives no reports
    "dmarc-report-unauthorized": lambda s, d: s.world.publish_outside(_authorization(s, d), "TXT", None),
    "dmarc-third-party-rua": lambda s, d: _dmarc(s, d, f"rua=mailto:dmarc-reports@arda.cards,{THIRD_PARTY_RUA}"),
    "dmarc-policy-none": lambda s, d: _dmarc(s, d, "rua=mailto:dmarc-reports@arda.cards", policy="none"),
    "dmarc-no-policy": lambda s, d: _records(
        s, d, [("UPSERT", d.target.dmarc_host, "TXT", [route53_txt("v=DMARC1; rua=mailto:dmarc-reports@arda.cards")])]
    ),
    "dkim-one-char": lambda s, d: _records(
        s,
        d,
        [
            (
                "UPSERT",
                d.target.dkim_host(d.dkim.selector),
                "TXT",
                [route53_txt(f"k=rsa; p={_one_char(d.dkim.public_key)}")],
            )
        ],
    ),
    "dkim-revoked": lambda s, d: _records(
        s, d, [("UPSERT", d.target.dkim_host(d.dkim.selector), "TXT", [route53_txt("k=rsa; p=")])]
    ),
    "cname-target": lambda s, d: _records(
        s, d, [("UPSERT", d.target.return_path_host, "CNAME", ["bounces.example.net"])]
    ),
    "postmark-stuck": lambda s, d: s.world.postmark.stuck(d.target.postmark_account, d.target.zone),
    "postmark-401": lambda s, d: s.world.postmark.inject(PostmarkFault(401)),
    # RFC 8301 §3.2: verifiers reject RSA keys under 1024 bits (Postmark, the context and DNS agree on it)
    "dkim-weak-key": lambda s, d: _rekey(s, d, key=_rsa_key(512)),
    # RFC 6376 §3.6.1: t=y, testing: receivers treat the mail as unsigned
    "dkim-testing": lambda s, d: _dkim_text(s, d, "v=DKIM1; k=rsa; t=y; p={key}"),
    "dkim-version-not-first": lambda s, d: _dkim_text(s, d, "k=rsa; v=DKIM1; p={key}"),
    # RFC 8301 §3.1: rsa-sha1 is not accepted, so a key limited to sha1 verifies nothing
    "dkim-sha1-only": lambda s, d: _dkim_text(s, d, "v=DKIM1; h=sha1; k=rsa; p={key}"),
    # s=tlsrpt (RFC 8460 §3) limits the key to TLS reports: not for mail
    "dkim-not-for-email": lambda s, d: _dkim_text(s, d, "v=DKIM1; k=rsa; s=tlsrpt; p={key}"),
    "dkim-unknown-key-type": lambda s, d: _dkim_text(s, d, "v=DKIM1; k=dsa; p={key}"),
    # Postmark, as its API documents it (probes/sending_domain.py): defects (healthy variations: VARIATIONS)
    "postmark-weak-dkim": lambda s, d: s.world.postmark.set_domain(
        d.target.postmark_account, d.target.zone, WeakDKIM=True
    ),
    "postmark-return-path-unverified": _return_path_unverified,
    "rotation-pending": _rotated(publish=False),
    "rotation-context-old-key": _rotated(),
    "rotation-key-left-dns": _rotated(new_record=False),
    "rotation-revoked-in-dns-safe": _rotated(context="new", safe=True),
    "postmark-sender-signature-only": _sender_only,
    # the new key deployed, Postmark not told yet: a defect for a read-only run; verifying, mailgate completes it
    "rotation-pending-in-dns": _rotated(confirm=False, context="new", old_record=False),
}

# Healthy shapes receivers accept: each must leave every check green.
VARIATIONS: dict[str, Callable[[Scenarios, Seeded], None]] = {
    # several destinations with RFC 7489 §6.2 size limits; the one outside both organizations authorizes it
    "dmarc-several-rua": _dmarc_several_rua,
    # RFC 7208 §6.1: a record that hands over with redirect= needs no all of its own
    "spf-redirect": _spf_redirect,
    # site verifications beside the SPF record are no second SPF record (RFC 7208 §4.5 selects by v=spf1)
    "spf-extra-txt": lambda s, d: _spf(
        s,
        d,
        "v=spf1 include:spf.mtasv.net ~all",
        "google-site-verification=rXOxyZounnZasA8Z7oaD3c14JdjS9aKSWvsR1EbUSIQ",
        "MS=ms64724381",
    ),
    # Postmark's suggested record (support article 900): a and mx cost two void lookups here, within the limit
    "spf-postmark-suggested": lambda s, d: _spf(s, d, "v=spf1 a mx include:spf.mtasv.net ~all"),
    "dmarc-partial-pct": lambda s, d: _dmarc(s, d, "rua=mailto:dmarc-reports@arda.cards; pct=50"),
    # selectors of Postmark's older form hold a dot (DESIGN.md; RFC 6376 §3.1 allows dotted selectors)
    "dkim-dotted-selector": lambda s, d: _rekey(s, d, selector="20150316104110.pm"),
    "dkim-no-spaces": lambda s, d: _dkim_text(s, d, "v=DKIM1;k=rsa;p={key}"),
    # Postmark issues 1024-bit RSA keys: accepted (RFC 8301 §3.2), recorded as evidence
    "dkim-1024-bit": lambda s, d: _rekey(s, d, key=_rsa_key(1024)),
    # a key larger than one TXT string (255 bytes) holds: strings joined with no separator
    "dkim-2048-bit": lambda s, d: _rekey(s, d, key=_rsa_key(2048)),
    # a finished DKIM key rotation (Postmark support article 1305), the old key still in DNS or removed
    "rotation-revoked-in-dns-not-yet-safe": _rotated(context="new"),
    "rotation-done": _rotated(context="new", old_record=False, safe=True),
}


def commit_infra(world: World, files: dict[str, str], message: str) -> str:
    """Write `files` (path relative to the world's infra repo -> new text) there and commit them; the new HEAD.

    Defect variants of the CDK app live in commits, so the repo stays clean (`world.reset()` undoes them).
    """
    import subprocess

    repo = Path(world.info.infra_repo)
    git = ["git", "-c", "user.name=mailgate sandbox", "-c", "user.email=sandbox@mailgate.invalid"]
    for name, text in files.items():
        (repo / name).write_text(text)
    subprocess.run([*git, "add", "--", *files], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", message, "--", *files], cwd=repo, check=True)
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
