"""What receivers look up beyond the partition zone, asked of the resolvers as receivers ask them.

SPF include and redirect targets and the names of a/mx/exists terms (RFC 7208 §5), the organizational
domain's DMARC record receivers fall back to (RFC 7489 §6.6.3), and the report authorization record of
every report destination outside the organizational domain (RFC 7489 §7.1). `follow` asks, round after
round, only what the records known so far make a receiver ask next, all of a round at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import dns.name

from probes import spf
from probes.dns import Answer, ZoneObservation, content, name_of
from probes.mailauth import DmarcRecord, ReportUri, read_dmarc

MAX_ROUNDS = 12  # an SPF tree deeper than this crosses the lookup limit long before
Ask = Callable[[str, str], Awaitable[Answer]]
Key = tuple[dns.name.Name, str]


@dataclass(frozen=True)
class Scope:
    """Whose records: the partition zone, its organizational domain, the configured report mailbox. The
    organizational domain is the configured parent: RFC 7489 §3.2 derives it from the Public Suffix List, and
    for a parent registered under a public suffix (ardamails.com) both give the same name."""

    zone: str
    org: str
    mailbox: str


@dataclass(frozen=True)
class Roots:
    """The partition's own records the outside lookups start from: TXT at the apex and at `_dmarc.`."""

    apex: tuple[bytes, ...]
    dmarc: tuple[bytes, ...]


@dataclass(frozen=True)
class Authorization:
    """One report destination outside the organizational domain, and the record that authorizes it."""

    uri: ReportUri
    destination: str  # the mailbox's domain, lower case
    name: str  # <policy domain>._report._dmarc.<destination>


def key(qname: str, rtype: str) -> Key:
    return name_of(qname), rtype.upper()


def organizational_record(org: str) -> str:
    """Where receivers find the organizational domain's DMARC record."""
    return f"_dmarc.{org}"


def authorizations(record: DmarcRecord, zone: str, org: str) -> tuple[Authorization, ...]:
    """The rua/ruf mailto destinations outside `org` and their authorization names (RFC 7489 §7.1: the
    policy domain, `_report._dmarc`, then the destination host)."""
    found: dict[str, Authorization] = {}
    for uri in (*record.rua, *record.ruf):
        if uri.scheme != "mailto":
            continue
        destination = uri.address.rsplit("@", 1)[-1].lower().rstrip(".")
        if not outside_org(destination, org):
            continue
        name = f"{zone.lower().rstrip('.')}._report._dmarc.{destination}"
        found.setdefault(f"{uri.uri}", Authorization(uri, destination, name))
    return tuple(found.values())


def outside_org(domain: str, org: str) -> bool:
    """Whether `domain` lies outside the organizational domain `org` (names compared as DNS names; the DMARC
    parser and the configuration let only DNS names through)."""
    return not name_of(domain).is_subdomain(name_of(org))


def wanted(scope: Scope, roots: Roots, known: Mapping[Key, Answer]) -> list[tuple[str, str]]:
    """The questions a receiver would ask next, given the partition's records and the answers known."""
    zone, org, mailbox = scope.zone, scope.org, scope.mailbox
    questions = [(organizational_record(org), "TXT")]
    domain = mailbox.rsplit("@", 1)[-1]
    if "@" in mailbox and outside_org(domain, org):
        questions.append((f"{zone}._report._dmarc.{domain}", "TXT"))
    dmarc = read_dmarc(f"_dmarc.{zone}", roots.dmarc)
    if dmarc.text is not None:
        questions += [(a.name, "TXT") for a in authorizations(dmarc, zone, org)]
    if roots.apex:
        questions += spf.evaluate(zone, roots.apex, lambda q, t: known.get(key(q, t))).missing
    return [q for q in dict.fromkeys(questions) if key(*q) not in known]


async def follow(
    scope: Scope, ask: Ask, roots: Callable[[Mapping[Key, Answer]], Roots], known: tuple[Answer, ...] = ()
) -> tuple[Answer, ...]:
    """Ask what `wanted` names, round after round, until nothing is left; every answer, `known` included."""
    answers = {key(a.qname, a.rtype): a for a in known}
    for _ in range(MAX_ROUNDS):
        questions = wanted(scope, roots(answers), answers)
        if not questions:
            break
        for answer in await asyncio.gather(*(ask(q, t) for q, t in questions)):
            answers[key(answer.qname, answer.rtype)] = answer
    return tuple(answers.values())


async def from_resolvers(scope: Scope, ask: Ask) -> tuple[Answer, ...]:
    """The outside lookups as the resolvers see the partition's own records: they start at once, beside the
    delegation walk, so they cost no round of their own."""
    own = await asyncio.gather(ask(scope.zone, "TXT"), ask(f"_dmarc.{scope.zone}", "TXT"))

    def roots(_answers: Mapping[Key, Answer]) -> Roots:
        return Roots(own[0].txt, own[1].txt)

    found = await follow(scope, ask, roots, own)
    return tuple(a for a in found if a not in own)  # the resolvers' view of the zone itself is kept elsewhere


async def from_authoritative(scope: Scope, ask: Ask, zone: ZoneObservation) -> ZoneObservation:
    """`zone` with its outside lookups completed from the records the authoritative servers agree on: only
    where those differ from the resolvers' view (a record just changed) is anything left to ask."""
    apex = content(zone, scope.zone, "TXT").txt
    dmarc = content(zone, f"_dmarc.{scope.zone}", "TXT").txt
    found = await follow(scope, ask, lambda _answers: Roots(apex, dmarc), zone.outside)
    return dataclasses.replace(zone, outside=found)


def fallback(scope: Scope, zone: ZoneObservation) -> str:
    """What receivers apply to the partition's mail when it has no DMARC record of its own (RFC 7489 §6.6.3:
    the organizational domain's record, whose sp= governs subdomains, p= when sp= is absent)."""
    where = organizational_record(scope.org)
    answer = zone.outside_for(where, "TXT")
    if answer is None or answer.error is not None or answer.rcode not in ("NOERROR", "NXDOMAIN"):
        why = "not looked up" if answer is None else answer.error or answer.rcode
        return (
            f"receivers fall back to the organizational domain's record at {where} (RFC 7489 §6.6.3), "
            f"which could not be read ({why})"
        )
    record = read_dmarc(where, answer.txt)
    if record.text is None:
        return (
            f"receivers fall back to the organizational domain's record at {where} (RFC 7489 §6.6.3), and there "
            f"is none ({answer.rcode}, {len(answer.txt)} TXT value(s)): no DMARC policy applies to the partition's mail"
        )
    sp = dict(record.tags).get("sp")
    applied = f"sp={sp}" if sp else f"p={record.policy} (it has no sp=, so p= governs subdomains)"
    return (
        f"receivers fall back to the organizational domain's record at {where} (RFC 7489 §6.6.3), "
        f"{record.text!r}, and apply its {applied} to the partition's mail"
    )


def authorization_checks(scope: Scope, record: DmarcRecord, zone: ZoneObservation) -> tuple[list[str], list[str]]:
    """For each report destination outside the organizational domain, whether it authorizes the partition
    (RFC 7489 §7.1: without the record receivers send it no reports): (problems, evidence lines)."""
    problems: list[str] = []
    lines: list[str] = []
    for uri in (*record.rua, *record.ruf):
        limit = f" (size limit {uri.size})" if uri.size else ""
        lines.append(f"{uri.uri}: {uri.address}{limit}")
    for auth in authorizations(record, scope.zone, scope.org):
        answer = zone.outside_for(auth.name, "TXT")
        values = [v for v in (answer.txt if answer else ()) if v.startswith(b"v=DMARC1")]
        if answer is not None and values:
            lines.append(
                f"{auth.destination} authorizes {scope.zone}: TXT {auth.name} {values[0].decode(errors='replace')!r}"
            )
            continue
        if answer is None or answer.error is not None or answer.rcode not in ("NOERROR", "NXDOMAIN"):
            why = "not looked up" if answer is None else answer.error or answer.rcode
            problems.append(
                f"the report authorization TXT {auth.name} could not be read ({why}); rerun when it resolves"
            )
            continue
        seen = f"{answer.rcode}, {len(answer.txt)} TXT value(s) none starting v=DMARC1"
        problems.append(
            f"report destination {auth.uri.uri} is outside {scope.org} and {auth.destination} does not authorize "
            f"{scope.zone} ({seen}), so receivers send it no reports (RFC 7489 §7.1): publish TXT {auth.name} "
            '"v=DMARC1"'
        )
    return problems, lines
