"""What receivers look up beyond the zone (probes.outside): which questions, in which rounds, and how the
DMARC report authorizations and the organizational fallback are judged from the answers."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from probes.dns import Answer, ZoneObservation
from probes.mailauth import parse_dmarc, show
from probes.outside import (
    Roots,
    Scope,
    authorization_checks,
    authorizations,
    fallback,
    follow,
    outside_org,
    wanted,
)

ZONE = "dev.ardamails.com"
SCOPE = Scope(ZONE, "ardamails.com", "dmarc-reports@arda.cards")


def answer(qname: str, rtype: str = "TXT", *txt: str, rcode: str = "NOERROR", records: tuple[str, ...] = ()) -> Answer:
    values = tuple(t.encode() for t in txt)
    return Answer(
        "resolver", "127.0.0.1:53", qname, rtype, "udp", rcode, False, records or tuple(f'"{t}"' for t in txt),
        (), values, (), 300, None, 1, 0.001, 0.0,
    )  # fmt: skip


def zone_with(*outside: Answer) -> ZoneObservation:
    from probes.dns import Delegation

    delegation = Delegation(ZONE, "ardamails.com", {}, (), ())
    return ZoneObservation(ZONE, delegation, {}, (), (), (), outside)


def test_report_destinations_with_size_limits_and_several_mailboxes() -> None:
    record = parse_dmarc(
        "v=DMARC1; p=reject; rua=mailto:dmarc-reports@arda.cards!10m, mailto:dmarc@ardamails.com!5m,"
        "mailto:x@Reports.Example.NET; ruf=mailto:dmarc-reports@arda.cards!1m",
        f"_dmarc.{ZONE}",
    )
    assert record.problems == ()
    assert [(u.address, u.size) for u in record.rua] == [
        ("dmarc-reports@arda.cards", "10m"),
        ("dmarc@ardamails.com", "5m"),
        ("x@Reports.Example.NET", None),
    ]
    found = authorizations(record, ZONE, "ardamails.com")
    assert [(a.destination, a.name) for a in found] == [
        ("arda.cards", "dev.ardamails.com._report._dmarc.arda.cards"),
        ("reports.example.net", "dev.ardamails.com._report._dmarc.reports.example.net"),
        ("arda.cards", "dev.ardamails.com._report._dmarc.arda.cards"),  # ruf: its own URI, the same record
    ]


@pytest.mark.parametrize(
    ("domain", "outside"),
    [("ardamails.com", False), ("Mail.ArdaMails.com.", False), ("arda.cards", True), ("notardamails.com", True)],
)
def test_outside_the_organizational_domain(domain: str, outside: bool) -> None:
    assert outside_org(domain, "ardamails.com") is outside


def test_authorization_checks_name_the_record_to_publish_and_keep_the_evidence() -> None:
    record = parse_dmarc("v=DMARC1; p=reject; rua=mailto:dmarc-reports@arda.cards!10m,mailto:r@example.net")
    authorized = answer("dev.ardamails.com._report._dmarc.arda.cards", "TXT", "v=DMARC1")
    missing = answer("dev.ardamails.com._report._dmarc.example.net", "TXT", rcode="NXDOMAIN")
    problems, lines = authorization_checks(SCOPE, record, zone_with(authorized, missing))
    assert problems == [
        "report destination mailto:r@example.net is outside ardamails.com and example.net does not authorize "
        "dev.ardamails.com (NXDOMAIN, 0 TXT value(s) none starting v=DMARC1), so receivers send it no reports "
        '(RFC 7489 §7.1): publish TXT dev.ardamails.com._report._dmarc.example.net "v=DMARC1"'
    ]
    assert lines[0] == "mailto:dmarc-reports@arda.cards!10m: dmarc-reports@arda.cards (size limit 10m)"
    assert "arda.cards authorizes dev.ardamails.com" in lines[2], lines
    unread = dataclasses.replace(missing, rcode="SERVFAIL")
    problems, _ = authorization_checks(SCOPE, record, zone_with(authorized, unread))
    assert problems == [
        "the report authorization TXT dev.ardamails.com._report._dmarc.example.net could not be read (SERVFAIL); "
        "rerun when it resolves"
    ]


def test_fallback_says_what_receivers_apply_instead() -> None:
    with_sp = answer("_dmarc.ardamails.com", "TXT", "v=DMARC1; p=reject; sp=quarantine")
    assert fallback(SCOPE, zone_with(with_sp)).endswith("and apply its sp=quarantine to the partition's mail")
    without_sp = answer("_dmarc.ardamails.com", "TXT", "v=DMARC1; p=none")
    assert "apply its p=none (it has no sp=, so p= governs subdomains)" in fallback(SCOPE, zone_with(without_sp))
    nothing = answer("_dmarc.ardamails.com", "TXT", rcode="NXDOMAIN")
    assert "there is none (NXDOMAIN, 0 TXT value(s)): no DMARC policy applies" in fallback(SCOPE, zone_with(nothing))
    assert "could not be read (not looked up)" in fallback(SCOPE, zone_with())


def test_follow_asks_round_by_round_only_what_the_records_make_receivers_ask() -> None:
    served = {
        ("spf.mtasv.net", "TXT"): answer("spf.mtasv.net", "TXT", "v=spf1 include:deep.example.net ~all"),
        ("deep.example.net", "TXT"): answer("deep.example.net", "TXT", "v=spf1 ip4:192.0.2.1 -all"),
        ("_dmarc.ardamails.com", "TXT"): answer("_dmarc.ardamails.com", rcode="NXDOMAIN"),
        ("dev.ardamails.com._report._dmarc.arda.cards", "TXT"): answer(
            "dev.ardamails.com._report._dmarc.arda.cards", "TXT", "v=DMARC1"
        ),
    }
    asked: list[str] = []

    async def ask(qname: str, rtype: str) -> Answer:
        asked.append(qname)
        await asyncio.sleep(0)
        return served[(qname, rtype)]

    roots = Roots(
        (b"v=spf1 include:spf.mtasv.net ~all",), (b"v=DMARC1; p=reject; rua=mailto:dmarc-reports@arda.cards",)
    )
    found = asyncio.run(follow(SCOPE, ask, lambda _known: roots))
    assert {(a.qname, a.rtype) for a in found} == set(served)
    assert sorted(asked) == sorted(q for q, _ in served), "each question asked once"
    assert asked[-1] == "deep.example.net", "the include's own include is asked once its record is known"
    assert wanted(SCOPE, roots, {}) == [
        ("_dmarc.ardamails.com", "TXT"),
        ("dev.ardamails.com._report._dmarc.arda.cards", "TXT"),
        ("spf.mtasv.net", "TXT"),
    ]


@pytest.mark.parametrize("domain", [f"{'a' * 64}.example.net", "reports..example.net"])
def test_a_report_domain_dns_cannot_name_is_asked_nothing_and_reported(domain: str) -> None:
    """A receiver cannot look up, or send to, a rua domain that is not a DNS name: no authorization question is
    built from it (dnspython would refuse the name), and the DMARC record says why."""
    dmarc = f"v=DMARC1; p=reject; rua=mailto:dmarc-reports@arda.cards,mailto:r@{domain}".encode()
    roots = Roots((b"v=spf1 -all",), (dmarc,))

    assert wanted(SCOPE, roots, {}) == [
        ("_dmarc.ardamails.com", "TXT"),
        ("dev.ardamails.com._report._dmarc.arda.cards", "TXT"),
    ]
    record = parse_dmarc(dmarc.decode(), f"_dmarc.{ZONE}")
    assert record.problems == (
        f"DMARC at _dmarc.{ZONE}: rua entry {show(f'mailto:r@{domain}')}: its domain is not a DNS name; no report "
        "reaches it",
    )
