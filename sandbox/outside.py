"""The world beyond ardamails.com that receivers consult: Postmark's SPF include target, the DMARC report
mailbox's domain with its report authorizations, and a third party's domain for scenarios.

Each zone is served by the sandbox DNS server like any other (its own NS hosts on loopback), so the
resolver finds it by the same iteration receivers' resolvers use.
"""

from __future__ import annotations

from collections.abc import Iterable

from probes.config import Target
from sandbox.dns_server import RecordSet, Zone

NAMESERVERS = ("ns1.outside-dns.test.", "ns2.outside-dns.test.")  # stand-ins: the real hosts do not matter here
THIRD_PARTY = "example.net"  # RFC 2606 reserves it: the sandbox's other senders and report receivers live here

# Postmark: "By publishing the SPF record in DNS that includes spf.mtasv.net (which lists all of Postmark's
# mail servers)" (postmarkapp.com/support/article/900-what-is-spf): a list of ip4 terms that costs receivers
# no further lookup. The addresses are illustrative, the shape is Postmark's.
POSTMARK_SPF = "v=spf1 ip4:50.31.156.96/27 ip4:104.245.209.192/26 ip4:3.134.147.250 ip4:50.31.205.0/24 ~all"
# The Return-Path host's own SPF record includes the same list: a public record view of a Postmark sender's
# pm-bounces CNAME shows pm.mtasv.net as "v=spf1 include:spf.mtasv.net -all" (dnsdigest.com/domains/38/
# outbound-email/spf); pm.mtasv.net is Postmark's bounce host (emailsherpa.net/faq/what-is-pmmtasvnet).
RETURN_PATH_SPF = "v=spf1 include:spf.mtasv.net -all"
# RFC 7489 §7.1: a report receiver outside the sender's organizational domain authorizes each sender domain
# with TXT "v=DMARC1" at <sender domain>._report._dmarc.<receiver domain>.
AUTHORIZATION = "v=DMARC1"


def records(targets: Iterable[Target], mailbox: str) -> dict[str, list[RecordSet]]:
    """Every outside zone (apex -> its record sets) as the healthy world publishes it, for these partitions."""
    report_domain = mailbox.rsplit("@", 1)[-1].lower().rstrip(".")
    zones: dict[str, list[RecordSet]] = {
        "mtasv.net": [
            RecordSet("spf.mtasv.net", "TXT", 3600, (route53_txt(POSTMARK_SPF),)),
            RecordSet("pm.mtasv.net", "TXT", 3600, (route53_txt(RETURN_PATH_SPF),)),
        ],
        report_domain: [
            RecordSet(f"{t.zone}._report._dmarc.{report_domain}", "TXT", 3600, (route53_txt(AUTHORIZATION),))
            for t in targets
        ],
        THIRD_PARTY: [],
    }
    return {apex: [RecordSet(apex, "NS", 172800, NAMESERVERS), *sets] for apex, sets in zones.items()}


def as_zones(records_by_zone: dict[str, list[RecordSet]]) -> tuple[Zone, ...]:
    return tuple(Zone(apex, tuple(sets)) for apex, sets in records_by_zone.items())


def route53_txt(text: str) -> str:
    """One TXT value in Route 53 text form: quoted strings of at most 255 characters."""
    return " ".join(f'"{text[i : i + 255]}"' for i in range(0, len(text), 255))
