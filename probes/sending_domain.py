"""Postmark's sending domain judged as the Domains API documents it, against cdk.context.json and the zone's DNS.

`DKIMVerified` is "whether DKIM has ever been verified ... this response will stay true, even if the record is
later removed from DNS" (https://postmarkapp.com/developer/api/domains-api), and it stays true through a key
rotation, so it is never the verdict alone. The domain is verified when Postmark has nothing left to confirm (no
key pending, DKIM and Return-Path verified), its key is not weak (WeakDKIM: "weaker than 1024 bit"), and its
current key (DKIMHost, DKIMTextValue) is the one cdk.context.json holds.

The record at cdk.context.json's selector is the DKIM check's to judge (served by every authoritative server,
valid, equal to the context's key): together the two checks require Postmark, cdk.context.json and DNS to agree,
and one defect fails one of them. DNS at the hosts that check does not look at (a rotation's pending or revoked
key, a current key other than the context's) is judged here.

Rotation, as Postmark's support article 1305 ("How often should I generate/rotate a new DKIM key?") describes it:
the new key waits in the Pending fields until Postmark sees it in DNS; then Postmark signs with it and revokes the
old one, whose TXT record can go once Postmark says SafeToRemoveRevokedKeyFromDNS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from probes.cdk import ContextEntry
from probes.config import Target
from probes.dns import Answer, ZoneObservation, name_of
from probes.mailauth import compact, decode_txt, is_name, parse_dkim
from probes.postmark import Domain

_STICKY = "DKIMVerified is true, but it means 'DKIM has ever been verified' and stays true after the key leaves DNS"


@dataclass(frozen=True)
class Finding:
    """One reason the domain is not verified: the rule it breaks, what was seen, and the next step."""

    rule: str  # weak-dkim, rotation, dkim-not-verified, return-path, context, revoked
    message: str
    next_step: str


@dataclass(frozen=True)
class KeyInDns:
    """Which authoritative servers serve one DKIM key at one host."""

    host: str
    serving: tuple[str, ...]  # "ns-1.example.net (127.0.0.2:53)"
    other: tuple[str, ...]  # servers without it, with what they said

    @property
    def everywhere(self) -> bool:
        return bool(self.serving) and not self.other

    def describe(self) -> str:
        count = f"served by {len(self.serving)} of {len(self.serving) + len(self.other)} authoritative servers"
        return f"{count} ({'; '.join(self.other)})" if self.other else count


InDns: TypeAlias = Callable[[str, str], KeyInDns | None]  # (host, text value) -> what DNS serves there
IsContextHost: TypeAlias = Callable[[str], bool]  # the host cdk.context.json names: the DKIM check's to judge


@dataclass(frozen=True)
class DomainVerdict:
    """The findings (none: verified), and the evidence they rest on."""

    domain: Domain
    findings: tuple[Finding, ...]
    keys: tuple[KeyInDns, ...]  # DNS of the Postmark hosts judged here
    notes: tuple[str, ...]  # what was seen and is fine, or is another check's to judge

    @property
    def fields(self) -> list[str]:
        d = self.domain
        shown = {
            "DKIMVerified": d.dkim_verified,
            "DKIMUpdateStatus": d.dkim_update_status,
            "WeakDKIM": d.weak_dkim,
            "DKIMHost": d.dkim_host,
            "DKIMPendingHost": d.dkim_pending_host,
            "DKIMRevokedHost": d.dkim_revoked_host,
            "SafeToRemoveRevokedKeyFromDNS": d.safe_to_remove_revoked_key,
            "ReturnPathDomain": d.return_path_domain,
            "ReturnPathDomainVerified": d.return_path_verified,
            "ReturnPathDomainCNAMEValue": d.return_path_cname_value,
        }
        return [f"{key}: {value}" for key, value in shown.items()]

    def explain(self) -> str:
        """Each finding and its next step, then the fields they were read from."""
        lines = [f"  {f.message}\n    next: {f.next_step}" for f in self.findings]
        return "\n".join(lines) + "\nseen: " + ", ".join(self.fields)


def judge(
    domain: Domain,
    target: Target,
    context: ContextEntry | None,
    zone: ZoneObservation | None,
    *,
    verify: bool,
    wait: float,
) -> DomainVerdict:
    """Judge `domain` against the partition's context entry and DNS (see the module docstring for the rules)."""
    context_host = target.dkim_host(context.selector) if context is not None else None
    keys: list[KeyInDns] = []
    notes: list[str] = []

    def in_dns(host: str, text_value: str) -> KeyInDns | None:
        found = key_in_dns(zone, host, text_value) if zone is not None and is_name(host) else None
        if found is not None and found not in keys:
            keys.append(found)
        return found

    def is_context_host(host: str) -> bool:
        return context_host is not None and is_name(host) and name_of(host) == name_of(context_host)

    findings: list[Finding] = []
    if domain.weak_dkim:
        findings.append(_weak(domain))
    if domain.rotating:
        findings.append(_rotation(domain, in_dns, is_context_host, verify=verify, wait=wait))
    findings += _unconfirmed(domain, verify=verify, wait=wait)
    if context is None:
        notes.append("cdk.context.json's entry was not read: the DKIM check (test_dkim) says why")
    else:
        stale = _context_stale(domain, target, context, in_dns, is_context_host)
        findings += [stale] if stale else []
    revoked = _revoked(domain, target, in_dns, is_context_host, notes)
    findings += [revoked] if revoked else []
    return DomainVerdict(domain, tuple(findings), tuple(keys), tuple(notes))


def dkim_hosts(domain: Domain, zone: str) -> list[str]:
    """The hosts of Postmark's current, pending and revoked keys that lie in `zone` (those DNS can be asked)."""
    hosts = (domain.dkim_host, domain.dkim_pending_host, domain.dkim_revoked_host)
    return [h for h in dict.fromkeys(hosts) if is_name(h) and name_of(h).is_subdomain(name_of(zone))]


def key_in_dns(zone: ZoneObservation, host: str, text_value: str) -> KeyInDns | None:
    """Which authoritative servers serve the `p=` of `text_value` at `host`; None when DNS was not asked."""
    answers = zone.answers_for(host, "TXT")
    if not answers:
        return None
    key = parse_dkim(text_value).public_key
    serving: list[str] = []
    other: list[str] = []
    for answer in answers:
        label = f"{answer.server} ({answer.address})"
        if _serves(answer, key):
            serving.append(label)
        else:
            other.append(f"{label} {_without(answer)}")
    return KeyInDns(host, tuple(serving), tuple(other))


def _serves(answer: Answer, key: str) -> bool:
    return bool(key) and answer.usable and any(parse_dkim(decode_txt(v)[0]).public_key == key for v in answer.txt)


def _without(answer: Answer) -> str:
    if answer.error is not None:
        return f"no reply: {answer.error}"
    if not answer.usable:
        return f"{answer.rcode}{'' if answer.authoritative else ' without AA'}"
    return f"{answer.rcode}, another key" if answer.txt else f"{answer.rcode}, no TXT"


def _weak(domain: Domain) -> Finding:
    return Finding(
        "weak-dkim",
        f"Postmark flags the DKIM key at {domain.dkim_host or domain.dkim_pending_host} as WeakDKIM (weaker than 1024 "
        "bits, Domains API): receivers ignore signatures by keys under 1024 bits (RFC 8301)",
        f"rotate it: POST /domains/{domain.id}/rotatedkim (or Generate New in the Postmark console), deploy the new "
        "key (the pre-deploy step writes it into cdk.context.json), then rerun",
    )


def _rotation(domain: Domain, in_dns: InDns, is_context_host: IsContextHost, *, verify: bool, wait: float) -> Finding:
    pending = in_dns(domain.dkim_pending_host, domain.dkim_pending_text_value)
    served = pending.describe() if pending is not None else "not known in DNS (not asked)"
    status = domain.dkim_update_status or "empty"
    if domain.dkim_host:
        message = (
            f"a DKIM key rotation is in progress (DKIMUpdateStatus {status}): Postmark's pending key "
            f"{domain.dkim_pending_host} is {served}; Postmark signs with {domain.dkim_host} until it confirms it"
        )
        current = None if is_context_host(domain.dkim_host) else in_dns(domain.dkim_host, domain.dkim_text_value)
        if current is not None and not current.everywhere:
            message += f"; that current key is {current.describe()}: mail signed meanwhile fails DKIM"
    else:
        message = (
            f"DKIM NOT verified: Postmark has not confirmed its first key {domain.dkim_pending_host} "
            f"(DKIMUpdateStatus {status}); it is {served}"
        )
    if pending is not None and not pending.everywhere:
        step = (
            f"publish the pending key at {domain.dkim_pending_host}: deploy the partition (the pre-deploy step writes "
            "DKIMPendingHost/DKIMPendingTextValue into cdk.context.json), then rerun: mailgate triggers verifyDkim"
        )
    elif verify:
        step = (
            f"Postmark did not confirm it within --postmark-wait {wait:g} s of PUT /domains/{domain.id}/verifyDkim: "
            "rerun with a longer --postmark-wait"
        )
    else:
        step = (
            f"have Postmark check it: rerun without --no-postmark-verify (mailgate calls PUT /domains/{domain.id}/"
            "verifyDkim), or wait for Postmark's periodic check"
        )
    return Finding("rotation", message, step)


def _unconfirmed(domain: Domain, *, verify: bool, wait: float) -> list[Finding]:
    """What Postmark has not confirmed, outside a rotation (whose finding covers DKIM). The check named judges the
    DNS Postmark reads, so its verdict comes first; if DNS is right, Postmark has not looked again (or was not
    asked to)."""
    unconfirmed: list[tuple[str, str, str]] = []  # rule, message, the check of the DNS behind it
    if not domain.dkim_verified and not domain.rotating:
        unconfirmed.append(
            (
                "dkim-not-verified",
                f"DKIM NOT verified (DKIMVerified false, DKIMUpdateStatus {domain.dkim_update_status or 'empty'}, "
                f"DKIMHost {domain.dkim_host or 'empty'})",
                "the DKIM TXT check (test_dkim)",
            )
        )
    if not domain.return_path_verified:
        unconfirmed.append(
            (
                "return-path",
                f"Return-Path {domain.return_path_domain or '(none)'} NOT verified (ReturnPathDomainVerified false; "
                f"Postmark expects a CNAME to {domain.return_path_cname_value or '?'})",
                "the Return-Path CNAME check (test_return_path)",
            )
        )
    if verify:
        later = f"Postmark did not recheck in {wait:g} s: rerun with a longer --postmark-wait"
    else:
        later = "rerun without --no-postmark-verify so mailgate asks Postmark to check"
    return [Finding(rule, message, f"see {check}; if it passes, {later}") for rule, message, check in unconfirmed]


def _context_stale(
    domain: Domain, target: Target, context: ContextEntry, in_dns: InDns, is_context_host: IsContextHost
) -> Finding | None:
    """cdk.context.json must hold Postmark's current key (or, during a rotation, its pending one)."""
    host, key = target.dkim_host(context.selector), compact(context.public_key)
    if _is_postmarks_key(host, key, domain.dkim_pending_host, domain.dkim_pending_text_value):
        return None  # the rotation's finding says what is left to do
    if not domain.dkim_host or _is_postmarks_key(host, key, domain.dkim_host, domain.dkim_text_value):
        return None
    where = f"cdk.context.json's {context.key}"
    same_host = is_context_host(domain.dkim_host)
    if domain.dkim_revoked_host and is_context_host(domain.dkim_revoked_host):
        message = (
            f"{where} names selector {context.selector}, the key Postmark revoked in a rotation (DKIMRevokedHost); "
            f"Postmark signs with {domain.dkim_host} (DKIMHost)"
        )
    elif same_host:
        message = f"{where} dkimPublicKey differs from Postmark's DKIMTextValue for {domain.dkim_host}"
    else:
        message = f"{where} names selector {context.selector}; Postmark signs with {domain.dkim_host} (DKIMHost)"
    current = None if same_host else in_dns(domain.dkim_host, domain.dkim_text_value)
    if current is not None:
        message += f"; that key is {current.describe()}"
        if not current.everywhere and domain.dkim_verified:
            message += f" ({_STICKY})"
    selector = domain.dkim_host.split("._domainkey.", 1)[0]
    if current is not None and not current.everywhere:
        step = (
            f"publish Postmark's current key at {domain.dkim_host}: deploy the partition (the pre-deploy step writes "
            "DKIMHost/DKIMTextValue into cdk.context.json); until then receivers cannot verify mail Postmark signs"
        )
    else:
        step = (
            f"rerun the deploy's pre-deploy step so {where} holds selector {selector} and Postmark's DKIMTextValue, "
            "then deploy"
        )
    return Finding("context", message, step)


def _revoked(
    domain: Domain, target: Target, in_dns: InDns, is_context_host: IsContextHost, notes: list[str]
) -> Finding | None:
    """A revoked key still in DNS is reported as safe to remove once Postmark says so; before, it is only noted."""
    host = domain.dkim_revoked_host
    if not host or is_context_host(host):
        return None  # none, or cdk.context.json still names it: the context finding covers it
    seen = in_dns(host, domain.dkim_revoked_text_value)
    if seen is None or not seen.serving:
        notes.append(f"the revoked key at {host} is no longer served" if seen else f"{host} was not asked of DNS")
        return None
    if not domain.safe_to_remove_revoked_key:
        notes.append(
            f"the revoked key at {host} is still {seen.describe()}; Postmark does not yet call it safe to remove "
            "(mail signed with it may still be on its way)"
        )
        return None
    return Finding(
        "revoked",
        f"the revoked DKIM key at {host} (DKIMRevokedHost) is still {seen.describe()}, and Postmark says "
        "SafeToRemoveRevokedKeyFromDNS: it is safe to remove",
        f"remove TXT {host} from the {target.zone} zone: Postmark no longer signs with it, and whoever holds its "
        f"private key can still sign mail as {target.zone}",
    )


def _is_postmarks_key(host: str, key: str, postmark_host: str, postmark_text: str) -> bool:
    """Whether (host, key) is Postmark's (host, text value): names as DNS names, keys as compacted p= values."""
    return (
        is_name(postmark_host)
        and name_of(host) == name_of(postmark_host)
        and key == parse_dkim(postmark_text).public_key
    )
