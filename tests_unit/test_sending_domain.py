"""probes.sending_domain on hand-made answers: what the sandbox cannot easily show (a silent server, a host that is
no DNS name, no context entry, Postmark's first key), judged as the scenarios judge the rest."""

from __future__ import annotations

import asyncio
from typing import Any

from probes.cdk import ContextEntry
from probes.config import Target
from probes.dns import Answer, Delegation, ZoneObservation, ask_more
from probes.postmark import Domain
from probes.sending_domain import dkim_hosts, judge, key_in_dns

ZONE = "dev.ardamails.com"
OLD, NEW = f"20260526234343pm._domainkey.{ZONE}", f"20260901120000pm._domainkey.{ZONE}"
SERVERS = {"ns-1.example.net": ("127.0.0.2",), "ns-2.example.org": ("127.0.0.3",)}


def _target() -> Target:
    return Target(
        name="dev",
        infrastructure="Alpha002",
        account="139852620346",
        profile="Alpha002-Admin",
        region="us-east-1",
        domain="ardamails.com",
        postmark_account="PostmarkNonProd",
        credential="env:TOKEN",
        production=False,
        return_path_target="pm.mtasv.net",
        spf_includes=("spf.mtasv.net",),
        expected_resources=None,
    )


def _domain(**fields: Any) -> Domain:
    data = {
        "ID": 7,
        "Name": ZONE,
        "DKIMVerified": True,
        "WeakDKIM": False,
        "DKIMHost": OLD,
        "DKIMTextValue": "k=rsa; p=OLDKEY",
        "DKIMPendingHost": "",
        "DKIMPendingTextValue": "",
        "DKIMRevokedHost": "",
        "DKIMRevokedTextValue": "",
        "SafeToRemoveRevokedKeyFromDNS": False,
        "DKIMUpdateStatus": "Verified",
        "ReturnPathDomain": f"pm-bounces.{ZONE}",
        "ReturnPathDomainVerified": True,
        "ReturnPathDomainCNAMEValue": "pm.mtasv.net",
    }
    return Domain.from_json(data | fields)


def _answer(server: str, qname: str, txt: tuple[bytes, ...], *, error: str | None = None) -> Answer:
    return Answer(
        server=server,
        address=f"{SERVERS[server][0]}:53",
        qname=qname,
        rtype="TXT",
        transport="" if error else "udp",
        rcode=None if error else ("NOERROR" if txt else "NXDOMAIN"),
        authoritative=error is None,
        records=tuple(t.decode() for t in txt),
        other=(),
        txt=txt,
        authority=(),
        ttl=300,
        error=error,
        tries=3 if error else 1,
        elapsed=0.01,
        at=0.0,
    )


def _zone(*answers: Answer) -> ZoneObservation:
    delegation = Delegation(ZONE, "ardamails.com", {}, (), tuple(SERVERS))
    return ZoneObservation(ZONE, delegation, SERVERS, answers, (), ())


CONTEXT = ContextEntry("partitionMail:Alpha002:dev", "20260526234343pm", "OLDKEY", "pm.mtasv.net")


def test_a_healthy_domain_has_no_findings_and_asks_dns_nothing_more() -> None:
    domain = _domain()
    verdict = judge(domain, _target(), CONTEXT, _zone(), verify=True, wait=60)
    assert verdict.findings == ()
    assert verdict.keys == ()
    assert dkim_hosts(domain, ZONE) == [OLD], "the context's own host: already asked by the first round"


def test_a_silent_server_is_named_and_the_pending_key_is_not_everywhere() -> None:
    domain = _domain(DKIMPendingHost=NEW, DKIMPendingTextValue="k=rsa; p=NEWKEY", DKIMUpdateStatus="Pending")
    zone = _zone(
        _answer("ns-1.example.net", NEW, (b"v=DKIM1; k=rsa; p=NEWKEY",)),
        _answer("ns-2.example.org", NEW, (), error="timeout after 3s (3 tries)"),
    )
    verdict = judge(domain, _target(), CONTEXT, zone, verify=True, wait=5)
    (finding,) = verdict.findings
    assert finding.rule == "rotation"
    assert finding.message == (
        f"a DKIM key rotation is in progress (DKIMUpdateStatus Pending): Postmark's pending key {NEW} is served by "
        "1 of 2 authoritative servers (ns-2.example.org (127.0.0.3:53) no reply: timeout after 3s (3 tries)); "
        f"Postmark signs with {OLD} until it confirms it"
    )
    assert finding.next_step.startswith(f"publish the pending key at {NEW}: deploy the partition")


def test_the_first_key_not_yet_confirmed_is_named_as_such() -> None:
    domain = _domain(
        DKIMVerified=False,
        DKIMHost="",
        DKIMTextValue="",
        DKIMPendingHost=OLD,
        DKIMPendingTextValue="k=rsa; p=OLDKEY",
        DKIMUpdateStatus="Pending",
    )
    zone = _zone(*(_answer(s, OLD, (b"k=rsa; p=OLDKEY",)) for s in SERVERS))
    verdict = judge(domain, _target(), CONTEXT, zone, verify=False, wait=0)
    (finding,) = verdict.findings
    assert finding.message == (
        f"DKIM NOT verified: Postmark has not confirmed its first key {OLD} (DKIMUpdateStatus Pending); it is "
        "served by 2 of 2 authoritative servers"
    )
    assert finding.next_step.startswith("have Postmark check it: rerun without --no-postmark-verify")


def test_what_postmark_has_not_confirmed_points_at_the_check_of_its_dns_first() -> None:
    domain = _domain(DKIMVerified=False, DKIMUpdateStatus="", ReturnPathDomainVerified=False)
    verified = judge(domain, _target(), CONTEXT, _zone(), verify=True, wait=5)
    assert [(f.rule, f.message, f.next_step) for f in verified.findings] == [
        (
            "dkim-not-verified",
            f"DKIM NOT verified (DKIMVerified false, DKIMUpdateStatus empty, DKIMHost {OLD})",
            "see the DKIM TXT check (test_dkim); if it passes, Postmark did not recheck in 5 s: rerun with a longer "
            "--postmark-wait",
        ),
        (
            "return-path",
            f"Return-Path pm-bounces.{ZONE} NOT verified (ReturnPathDomainVerified false; Postmark expects a CNAME to "
            "pm.mtasv.net)",
            "see the Return-Path CNAME check (test_return_path); if it passes, Postmark did not recheck in 5 s: rerun "
            "with a longer --postmark-wait",
        ),
    ], verified.explain()
    read_only = judge(domain, _target(), CONTEXT, _zone(), verify=False, wait=5)
    assert [f.next_step for f in read_only.findings] == [
        "see the DKIM TXT check (test_dkim); if it passes, rerun without --no-postmark-verify so mailgate asks "
        "Postmark to check",
        "see the Return-Path CNAME check (test_return_path); if it passes, rerun without --no-postmark-verify so "
        "mailgate asks Postmark to check",
    ], read_only.explain()


def test_without_a_context_entry_the_context_is_left_to_test_dkim() -> None:
    verdict = judge(_domain(), _target(), None, _zone(), verify=True, wait=60)
    assert verdict.findings == ()
    assert verdict.notes == ("cdk.context.json's entry was not read: the DKIM check (test_dkim) says why",)


def test_hosts_that_are_no_dns_names_or_lie_outside_the_zone_are_not_asked_and_do_not_crash() -> None:
    junk = "a" * 70 + "._domainkey." + ZONE  # a label over 63 characters
    domain = _domain(DKIMHost=junk, DKIMRevokedHost="20200101000000pm._domainkey.example.net")
    assert dkim_hosts(domain, ZONE) == []
    (finding,) = judge(domain, _target(), CONTEXT, _zone(), verify=True, wait=60).findings
    assert finding.rule == "context"
    assert f"names selector 20260526234343pm; Postmark signs with {junk} (DKIMHost)" in finding.message


def test_key_in_dns_compares_p_values_not_record_text() -> None:
    zone = _zone(
        _answer("ns-1.example.net", NEW, (b"google-site-verification=x", b"v=DKIM1;k=rsa;p=NEW KEY")),
        _answer("ns-2.example.org", NEW, (b"v=DKIM1; k=rsa; p=OTHER",)),
    )
    seen = key_in_dns(zone, NEW, "k=rsa; p=NEWKEY")
    assert seen is not None
    assert seen.serving == ("ns-1.example.net (127.0.0.2:53)",)
    assert seen.other == ("ns-2.example.org (127.0.0.3:53) NOERROR, another key",)
    assert not seen.everywhere
    assert key_in_dns(zone, OLD, "k=rsa; p=OLDKEY") is None, "a host DNS was not asked"


def test_the_second_dns_round_asks_only_hosts_not_asked_yet() -> None:
    """On the healthy path Postmark names only the context's host, which the first round asked: no second round."""
    asked = _zone(*(_answer(s, OLD, (b"k=rsa; p=OLDKEY",)) for s in SERVERS))
    assert asyncio.run(ask_more(asked, [(OLD.upper() + ".", "txt")], port=9, timeout=0.1)) is asked
