"""The sandbox DNS server, observed by dnspython clients exactly as they would observe real servers."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.rrset
import pytest
from moto.route53.models import route53_backends

from sandbox import moto_route53
from sandbox.dns_server import DnsServer, Fault, QueryRecord, RecordSet, Zone
from sandbox.scenarios import Scenarios
from sandbox.world import CHILD_NAMESERVERS, PARENT_NAMESERVERS, ROOT_ACCOUNT

PARENT_NS = ("ns-101.awsdns-01.com.", "ns-102.awsdns-02.net.")
CHILD_NS = ("ns-826.awsdns-39.net.", "ns-1215.awsdns-23.org.", "ns-442.awsdns-55.com.", "ns-1930.awsdns-49.co.uk.")
ADDRESSES = {host: f"127.53.0.{i}" for i, host in enumerate((*PARENT_NS, *CHILD_NS), start=1)}
SPF = "v=spf1 include:spf.mtasv.net ~all"
DMARC = "v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@arda.cards"
KEY = "".join(random.Random(7).choices("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", k=392))
DKIM = f"k=rsa;p={KEY}"
DKIM_NAME = "20260526234343pm._domainkey.dev.ardamails.com."
BIG = ("a" * 250, "b" * 250, "c" * 250)  # one TXT rdata of ~750 bytes: more than 512


def _rs(name: str, rtype: str, *values: str, ttl: int = 300) -> RecordSet:
    return RecordSet(name, rtype, ttl, values)


PARENT = Zone(
    "ardamails.com.",
    (
        _rs("ardamails.com.", "NS", *PARENT_NS, ttl=172800),
        _rs("ardamails.com.", "SOA", f"{PARENT_NS[0]} awsdns-hostmaster.amazon.com. 1 7200 900 1209600 86400", ttl=900),
        _rs("dev.ardamails.com.", "NS", *CHILD_NS, ttl=172800),
    ),
)
CHILD = Zone(
    "dev.ardamails.com.",
    (
        _rs("dev.ardamails.com.", "NS", *CHILD_NS, ttl=172800),
        _rs("dev.ardamails.com.", "TXT", f'"{SPF}"'),
        _rs("_dmarc.dev.ardamails.com.", "TXT", f'"{DMARC}"'),
        _rs(DKIM_NAME, "TXT", f'"{DKIM[:200]}" "{DKIM[200:]}"'),
        _rs("pm-bounces.dev.ardamails.com.", "CNAME", "pm.mtasv.net"),
        _rs("mail.dev.ardamails.com.", "A", "192.0.2.10"),
        _rs("alias.dev.ardamails.com.", "CNAME", "mail.dev.ardamails.com."),
        _rs("big.dev.ardamails.com.", "TXT", " ".join(f'"{s}"' for s in BIG)),
    ),
)


def _threads_of(port: int) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("dns-") and t.name.endswith(f":{port}")]


@pytest.fixture
def zones() -> list[Zone]:
    """The zones the server serves (a test may change the list before the server reads it)."""
    return [PARENT, CHILD]


@pytest.fixture
def server(zones: list[Zone]) -> Iterator[DnsServer]:
    """The sandbox DNS server over `zones`; it must leave no thread behind when stopped."""
    with DnsServer(lambda: tuple(zones), ADDRESSES) as running:
        port = running.port
        yield running
    assert not _threads_of(port), "the server left threads behind"


def ask(
    server: DnsServer, where: str, name: str, rtype: str, *, tcp: bool = False, timeout: float = 2.0, **query: object
) -> dns.message.Message:
    message = dns.message.make_query(name, rtype, **query)  # type: ignore[arg-type]  # flags by name
    send = dns.query.tcp if tcp else dns.query.udp
    return send(message, where, timeout=timeout, port=server.port)


def texts(rrset: dns.rrset.RRset) -> list[str]:
    return [b"".join(rdata.strings).decode() for rdata in rrset]


def child(server: DnsServer, i: int = 0) -> str:
    return server.address_of(CHILD_NS[i])


def stub(server: DnsServer) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.resolver]
    resolver.port = server.port
    resolver.lifetime = 2.0
    return resolver


# -- authoritative servers -----------------------------------------------------------------------------


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_child_server_answers_authoritatively(server: DnsServer, tcp: bool) -> None:
    response = ask(server, child(server), "dev.ardamails.com.", "TXT", tcp=tcp)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert not response.flags & dns.flags.RA
    assert [texts(rrset) for rrset in response.answer] == [[SPF]]
    assert response.answer[0].ttl == 300


def test_every_child_server_answers_on_the_same_port(server: DnsServer) -> None:
    for i, host in enumerate(CHILD_NS):
        assert server.address_of(host) == ADDRESSES[host]
        response = ask(server, child(server, i), "_dmarc.dev.ardamails.com.", "TXT")
        assert response.flags & dns.flags.AA, host
        assert texts(response.answer[0]) == [DMARC]


def test_parent_refers_to_the_child_with_glue(server: DnsServer) -> None:
    parent = server.address_of(PARENT_NS[0])
    for name in ("dev.ardamails.com.", "_dmarc.dev.ardamails.com."):
        response = ask(server, parent, name, "TXT")
        assert response.rcode() == dns.rcode.NOERROR
        assert not response.flags & dns.flags.AA
        assert response.answer == []
        [ns] = response.authority
        assert (ns.name.to_text(), ns.rdtype) == ("dev.ardamails.com.", dns.rdatatype.NS)
        assert sorted(rd.target.to_text() for rd in ns) == sorted(CHILD_NS)
        glue = {rrset.name.to_text(): rrset[0].address for rrset in response.additional}
        assert glue == {host: ADDRESSES[host] for host in CHILD_NS}


def test_parent_answers_ds_at_the_cut_itself(server: DnsServer) -> None:
    response = ask(server, server.address_of(PARENT_NS[1]), "dev.ardamails.com.", "DS")
    assert response.flags & dns.flags.AA
    assert response.answer == []
    assert [rrset.name.to_text() for rrset in response.authority] == ["ardamails.com."]


def test_nxdomain_and_nodata_carry_the_zone_soa(server: DnsServer) -> None:
    missing = ask(server, child(server), "nope.dev.ardamails.com.", "A")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert missing.flags & dns.flags.AA
    [soa] = missing.authority
    assert (soa.name.to_text(), soa.rdtype, soa.ttl) == ("dev.ardamails.com.", dns.rdatatype.SOA, 900)
    assert soa[0].mname.to_text() == CHILD_NS[0]  # synthesized: the zone has no SOA of its own
    for name, rtype in (("dev.ardamails.com.", "MX"), ("_domainkey.dev.ardamails.com.", "TXT")):
        nodata = ask(server, child(server), name, rtype)
        assert (nodata.rcode(), nodata.answer) == (dns.rcode.NOERROR, []), name
        assert nodata.flags & dns.flags.AA
        assert [rrset.rdtype for rrset in nodata.authority] == [dns.rdatatype.SOA]


def test_names_match_case_insensitively_and_keep_their_stored_case(server: DnsServer) -> None:
    response = ask(server, child(server), "DEV.ArdaMails.COM.", "TXT", tcp=True)
    assert texts(response.answer[0]) == [SPF]
    assert ask(server, child(server), "dev.ardamails.com.", "SOA").answer[0].name.to_text() == "dev.ardamails.com."


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_dkim_key_in_two_strings_joins_back_to_the_key(server: DnsServer, tcp: bool) -> None:
    response = ask(server, child(server), DKIM_NAME, "TXT", tcp=tcp)
    [rrset] = response.answer
    [rdata] = rrset
    assert len(rdata.strings) == 2
    assert b"".join(rdata.strings).decode() == DKIM


def test_cname_answers_and_follows_inside_the_zone(server: DnsServer) -> None:
    for rtype in ("A", "CNAME"):
        response = ask(server, child(server), "pm-bounces.dev.ardamails.com.", rtype)
        assert response.flags & dns.flags.AA
        [cname] = response.answer
        assert (cname.rdtype, cname[0].target.to_text()) == (dns.rdatatype.CNAME, "pm.mtasv.net.")
    chain = ask(server, child(server), "alias.dev.ardamails.com.", "A").answer
    assert [(rrset.name.to_text(), rrset.rdtype) for rrset in chain] == [
        ("alias.dev.ardamails.com.", dns.rdatatype.CNAME),
        ("mail.dev.ardamails.com.", dns.rdatatype.A),
    ]


def test_a_server_refuses_zones_it_does_not_host(server: DnsServer) -> None:
    for name in ("example.org.", "ardamails.com."):
        response = ask(server, child(server), name, "NS")
        assert response.rcode() == dns.rcode.REFUSED, name
        assert not response.flags & dns.flags.AA


def test_large_udp_answer_is_truncated_to_the_client_payload(server: DnsServer) -> None:
    plain = ask(server, child(server), "big.dev.ardamails.com.", "TXT")
    assert plain.flags & dns.flags.TC
    assert plain.answer == []
    assert plain.edns == -1
    with_edns = ask(server, child(server), "big.dev.ardamails.com.", "TXT", use_edns=0, payload=4096)
    assert not with_edns.flags & dns.flags.TC
    assert with_edns.edns == 0
    assert [rdata.strings for rdata in with_edns.answer[0]] == [tuple(s.encode() for s in BIG)]
    query = dns.message.make_query("big.dev.ardamails.com.", "TXT")
    response, used_tcp = dns.query.udp_with_fallback(query, child(server), timeout=2, port=server.port)
    assert used_tcp is True
    assert response.answer == with_edns.answer


def test_queries_are_logged_with_server_and_transport(server: DnsServer) -> None:
    ask(server, child(server, 2), "Dev.ardamails.com.", "TXT")
    ask(server, server.resolver, "_dmarc.dev.ardamails.com.", "TXT", tcp=True)
    assert list(server.queries) == [
        QueryRecord(ADDRESSES[CHILD_NS[2]], "Dev.ardamails.com.", "TXT", "udp"),
        QueryRecord("127.0.0.1", "_dmarc.dev.ardamails.com.", "TXT", "tcp"),
    ]


def test_a_bad_record_is_reported_and_the_rest_still_served(zones: list[Zone], server: DnsServer) -> None:
    zones[1] = Zone(CHILD.name, (*CHILD.records, _rs("long.dev.ardamails.com.", "TXT", '"' + "x" * 300 + '"')))
    assert texts(ask(server, child(server), "dev.ardamails.com.", "TXT").answer[0]) == [SPF]
    assert ask(server, child(server), "long.dev.ardamails.com.", "TXT").rcode() == dns.rcode.NXDOMAIN
    assert any("long.dev.ardamails.com." in error and "string too long" in error for error in server.errors)


# -- resolver ------------------------------------------------------------------------------------------


def test_resolver_answers_recursively_and_knows_the_ns_hosts(server: DnsServer) -> None:
    resolver = stub(server)
    answer = resolver.resolve("dev.ardamails.com.", "TXT")
    assert texts(answer.rrset) == [SPF]
    assert answer.response.flags & dns.flags.RA
    assert not answer.response.flags & dns.flags.AA
    assert texts(resolver.resolve(DKIM_NAME, "TXT").rrset) == [DKIM]
    hosts = sorted(rd.target.to_text() for rd in resolver.resolve("dev.ardamails.com.", "NS"))
    assert hosts == sorted(CHILD_NS)
    for host in hosts:
        [address] = [rd.address for rd in resolver.resolve(host, "A")]
        assert address == ADDRESSES[host]
        assert ask(server, address, "dev.ardamails.com.", "NS").flags & dns.flags.AA


def test_resolver_negative_answers(server: DnsServer) -> None:
    resolver = stub(server)
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("nope.dev.ardamails.com.", "TXT")
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("dev.ardamails.com.", "MX")
    outside = ask(server, server.resolver, "pm.mtasv.net.", "A")
    assert outside.rcode() == dns.rcode.NXDOMAIN
    assert outside.flags & dns.flags.RA
    assert [rrset.name.to_text() for rrset in outside.authority] == ["."]


def test_resolver_follows_the_delegation_like_a_real_one(zones: list[Zone], server: DnsServer) -> None:
    zones[0] = Zone(PARENT.name, PARENT.records[:2])  # the parent no longer delegates dev
    undelegated = ask(server, server.resolver, "dev.ardamails.com.", "TXT")
    assert undelegated.rcode() == dns.rcode.NXDOMAIN
    assert [rrset.name.to_text() for rrset in undelegated.authority] == ["ardamails.com."]
    assert ask(server, child(server), "dev.ardamails.com.", "TXT").flags & dns.flags.AA  # child still serves
    zones[0] = Zone(PARENT.name, (*PARENT.records[:2], _rs("dev.ardamails.com.", "NS", *PARENT_NS)))
    stale = ask(server, server.resolver, "dev.ardamails.com.", "TXT")  # delegated to servers without the zone
    assert stale.rcode() == dns.rcode.SERVFAIL


def test_resolver_skips_failing_servers_and_fails_when_none_is_left(server: DnsServer) -> None:
    server.inject(Fault("servfail", server=CHILD_NS[0]))
    server.inject(Fault("lame", server=CHILD_NS[1]))
    server.inject(Fault("timeout", name="dev.ardamails.com.", server=CHILD_NS[2]))
    assert texts(stub(server).resolve("dev.ardamails.com.", "TXT").rrset) == [SPF]  # the fourth server answers
    server.inject(Fault("down", server=ADDRESSES[CHILD_NS[3]]))
    assert ask(server, server.resolver, "dev.ardamails.com.", "TXT").rcode() == dns.rcode.SERVFAIL
    server.clear_faults()
    server.inject(Fault("nxdomain", name=DKIM_NAME, server=CHILD_NS[0]))
    with pytest.raises(dns.resolver.NXDOMAIN):  # a real resolver believes the first authoritative answer
        stub(server).resolve(DKIM_NAME, "TXT")


# -- faults --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "rcode", "aa", "soa"),
    [
        pytest.param("servfail", dns.rcode.SERVFAIL, False, False, id="servfail"),
        pytest.param("refused", dns.rcode.REFUSED, False, False, id="refused"),
        pytest.param("nxdomain", dns.rcode.NXDOMAIN, True, True, id="nxdomain"),
        pytest.param("noanswer", dns.rcode.NOERROR, True, True, id="noanswer"),
        pytest.param("lame", dns.rcode.NOERROR, False, False, id="lame"),
    ],
)
def test_answer_shaping_faults(server: DnsServer, kind: str, rcode: dns.rcode.Rcode, aa: bool, soa: bool) -> None:
    server.inject(Fault(kind, name="DEV.ardamails.com", rtype="TXT", server=CHILD_NS[0]))  # type: ignore[arg-type]  # kind is any FaultKind
    for tcp in (False, True):
        response = ask(server, child(server), "dev.ardamails.com.", "TXT", tcp=tcp)
        assert (response.rcode(), bool(response.flags & dns.flags.AA)) == (rcode, aa)
        assert response.answer == []
        assert [rrset.rdtype for rrset in response.authority] == ([dns.rdatatype.SOA] if soa else [])
    assert texts(ask(server, child(server), "_dmarc.dev.ardamails.com.", "TXT").answer[0]) == [DMARC]
    assert ask(server, child(server), "dev.ardamails.com.", "NS").answer != []
    assert texts(ask(server, child(server, 1), "dev.ardamails.com.", "TXT").answer[0]) == [SPF]
    server.clear_faults()
    assert texts(ask(server, child(server), "dev.ardamails.com.", "TXT").answer[0]) == [SPF]


def test_fault_without_server_applies_to_the_resolver_too(server: DnsServer) -> None:
    server.inject(Fault("servfail", name="dev.ardamails.com."))
    for where in (server.resolver, child(server, 3)):
        assert ask(server, where, "dev.ardamails.com.", "TXT").rcode() == dns.rcode.SERVFAIL, where
    with pytest.raises(dns.resolver.NoNameservers):
        stub(server).resolve("dev.ardamails.com.", "TXT")


@pytest.mark.parametrize("kind", ["timeout", "down"])
def test_silent_faults_time_out_on_udp_and_tcp(server: DnsServer, kind: str) -> None:
    fault = Fault("timeout", name="dev.ardamails.com.") if kind == "timeout" else Fault("down", server=CHILD_NS[1])
    server.inject(fault)
    for tcp in (False, True):
        started = time.monotonic()
        with pytest.raises(dns.exception.Timeout):
            ask(server, child(server, 1), "dev.ardamails.com.", "TXT", tcp=tcp, timeout=0.25)
        assert time.monotonic() - started < 1.0
    other = "_dmarc.dev.ardamails.com." if kind == "timeout" else "dev.ardamails.com."
    where = child(server, 1) if kind == "timeout" else child(server, 0)
    assert ask(server, where, other, "TXT").answer != []


def test_truncate_fault_sends_tc_and_tcp_answers(server: DnsServer) -> None:
    server.inject(Fault("truncate", name="dev.ardamails.com.", rtype="TXT"))
    udp = ask(server, child(server), "dev.ardamails.com.", "TXT")
    assert udp.flags & dns.flags.TC
    assert udp.answer == []
    query = dns.message.make_query("dev.ardamails.com.", "TXT")
    response, used_tcp = dns.query.udp_with_fallback(query, child(server), timeout=2, port=server.port)
    assert used_tcp is True
    assert texts(response.answer[0]) == [SPF]


def test_delay_holds_one_answer_without_blocking_others(server: DnsServer) -> None:
    server.inject(Fault("delay", name="dev.ardamails.com.", rtype="TXT", seconds=0.4))
    delayed: list[float] = []

    def slow() -> None:
        started = time.monotonic()
        assert ask(server, child(server), "dev.ardamails.com.", "TXT").answer != []
        delayed.append(time.monotonic() - started)

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.05)
    started = time.monotonic()
    assert texts(ask(server, child(server), "_dmarc.dev.ardamails.com.", "TXT").answer[0]) == [DMARC]
    assert time.monotonic() - started < 0.2
    thread.join()
    assert len(delayed) == 1
    assert delayed[0] >= 0.4


def test_latency_is_added_to_every_answer(server: DnsServer) -> None:
    server.latency = 0.15
    started = time.monotonic()
    ask(server, server.resolver, "dev.ardamails.com.", "TXT", tcp=True)
    assert time.monotonic() - started >= 0.15


def test_packet_loss_drops_that_share_of_udp_queries_deterministically(server: DnsServer) -> None:
    def answered_ids(seed: int) -> set[int]:
        server.set_packet_loss(0.3, seed=seed)
        ids: set[int] = set()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.3)

            def receive() -> None:
                try:
                    while True:
                        ids.add(dns.message.from_wire(sock.recv(4096)).id)
                except TimeoutError:
                    return

            receiver = threading.Thread(target=receive)
            receiver.start()
            for i in range(200):
                query = dns.message.make_query("dev.ardamails.com.", "TXT", id=i)
                sock.sendto(query.to_wire(), (server.resolver, server.port))
                if i % 20 == 19:
                    time.sleep(0.002)
            receiver.join()
        return ids

    first = answered_ids(seed=7)
    assert 0.2 <= 1 - len(first) / 200 <= 0.4
    assert answered_ids(seed=7) == first
    server.set_packet_loss(1.0)
    with pytest.raises(dns.exception.Timeout):
        ask(server, server.resolver, "dev.ardamails.com.", "TXT", timeout=0.2)
    assert ask(server, server.resolver, "dev.ardamails.com.", "TXT", tcp=True).answer != []


def test_fault_and_config_errors_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="unknown; use one of servfail"):
        Fault("explode")  # type: ignore[arg-type]  # an unknown kind, on purpose
    with pytest.raises(ValueError, match="needs seconds > 0"):
        Fault("delay")
    with pytest.raises(ValueError, match="give server="):
        Fault("down", name="dev.ardamails.com.")
    with pytest.raises(ValueError, match="not a loopback address"):
        DnsServer(lambda: (), {"ns-1.example.": "10.0.0.1"})
    with pytest.raises(ValueError, match=r"also the address of ns-1\.example\."):
        DnsServer(lambda: (), {"ns-1.example.": "127.0.0.1"})
    dns_server = DnsServer(lambda: (), ADDRESSES)
    with pytest.raises(KeyError, match=r"known hosts: ns-101\.awsdns-01\.com\."):
        dns_server.address_of("ns-9.example.")
    with pytest.raises(ValueError, match="not a sandbox address"):
        dns_server.inject(Fault("down", server="127.9.9.9"))
    with pytest.raises(RuntimeError, match="call start"):
        _ = dns_server.port


# -- lifecycle -----------------------------------------------------------------------------------------


def test_start_and_stop_are_fast_and_leave_nothing_behind() -> None:
    started = time.monotonic()
    server = DnsServer(lambda: (PARENT, CHILD), ADDRESSES)
    server.start()
    port = server.port
    server.inject(Fault("delay", seconds=5.0))
    held = socket.create_connection((child(server), port))  # an idle TCP connection the server is reading
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.sendto(dns.message.make_query("dev.ardamails.com.", "TXT").to_wire(), (child(server), port))
        while len(_threads_of(port)) < 3 and time.monotonic() - started < 1.0:  # loop, connection, held answer
            time.sleep(0.01)
        assert len(_threads_of(port)) == 3
        server.stop()
    server.stop()
    held.close()
    assert time.monotonic() - started < 1.0
    assert not _threads_of(port)
    for address in ("127.0.0.1", *ADDRESSES.values()):
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(socket.AF_INET, kind) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((address, port))  # free again: the server closed every socket


def _zone_names_passed_to(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[str]:
    """The names of the zones `owner.name(zone)` is called with from now on (it still does its work)."""
    called: list[str] = []
    real = getattr(owner, name)

    def counting(zone: Any) -> Any:
        called.append(zone.name)
        return real(zone)

    monkeypatch.setattr(owner, name, counting)
    return called


def test_hundreds_of_zones_are_indexed_once_not_on_every_question(monkeypatch: pytest.MonkeyPatch) -> None:
    """300 partition zones: each zone's index is built once; a cache smaller than the zones rebuilt some on every
    question, and the server fell seconds behind at 256 partitions."""
    import sandbox.dns_server as server_module

    many = tuple(
        Zone(f"p{i:03d}.ardamails.com.", (_rs(f"p{i:03d}.ardamails.com.", "NS", *CHILD_NS, ttl=172800),))
        for i in range(300)
    )
    served = (PARENT, *many)
    built = _zone_names_passed_to(monkeypatch, server_module, "_index")
    with DnsServer(lambda: served, ADDRESSES) as running:
        for i in (0, 150, 299, 0):
            reply = ask(running, running.address_of(CHILD_NS[0]), f"p{i:03d}.ardamails.com.", "NS")
            assert reply.rcode() == dns.rcode.NOERROR, f"p{i:03d}: {dns.rcode.to_text(reply.rcode())}"
    assert len(built) == len(served), f"{len(built)} index builds for {len(served)} zones over 4 questions"


def _server_comparisons(zones: tuple[Zone, ...], monkeypatch: pytest.MonkeyPatch) -> int:
    """How many name comparisons the server's own thread makes for a fixed set of questions, once warm."""
    compared = [0]
    real = dns.name.Name.fullcompare

    def counting(self: dns.name.Name, other: dns.name.Name) -> tuple[int, int, int]:
        if threading.current_thread().name.startswith("dns-server:"):
            compared[0] += 1
        return real(self, other)

    monkeypatch.setattr(dns.name.Name, "fullcompare", counting)
    with DnsServer(lambda: zones, ADDRESSES) as running:
        parent = running.address_of(PARENT_NS[0])
        questions = (
            (child(running), "dev.ardamails.com.", "TXT"),
            (child(running), "alias.dev.ardamails.com.", "A"),
            (child(running), "nothing.dev.ardamails.com.", "TXT"),
            (parent, "_dmarc.dev.ardamails.com.", "TXT"),
            (running.resolver, "ardamails.com.", "NS"),
            (running.resolver, "_dmarc.dev.ardamails.com.", "TXT"),
            (running.resolver, "pm-bounces.dev.ardamails.com.", "A"),
            (running.resolver, "elsewhere.example.", "A"),
        )
        for _ in range(2):  # the first round builds the indexes and fills the server's caches
            compared[0] = 0
            for where, name, rtype in questions:
                assert ask(running, where, name, rtype).rcode() != dns.rcode.SERVFAIL, name
    monkeypatch.undo()
    return compared[0]


def test_a_question_costs_the_same_at_3_zones_and_at_300(monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding the zone of a question is a lookup by name, not a scan: the same questions make the same name
    comparisons whether 3 or 300 partition zones are served (a scan over 300 zones cost the sandbox most of its
    time per question at 256 partitions)."""

    def partitions(count: int) -> tuple[Zone, ...]:
        return tuple(
            Zone(f"p{i:03d}.ardamails.com.", (_rs(f"p{i:03d}.ardamails.com.", "NS", *CHILD_NS, ttl=172800),))
            for i in range(count)
        )

    few = _server_comparisons((PARENT, CHILD, *partitions(3)), monkeypatch)
    many = _server_comparisons((PARENT, CHILD, *partitions(300)), monkeypatch)
    assert few > 0
    assert many == few, f"{many} name comparisons at 300 zones, {few} at 3"


def test_the_same_tuple_of_zones_is_walked_once_and_a_new_one_at_once() -> None:
    """A provider handing back the same tuple means nothing changed: the server walks it once, whatever it is
    asked; the next tuple is served on the very next question."""

    class Walked(tuple[Zone, ...]):
        walks = 0

        def __iter__(self) -> Iterator[Zone]:
            Walked.walks += 1
            return super().__iter__()

    changed = Zone(CHILD.name, (*CHILD.records, _rs("new.dev.ardamails.com.", "TXT", '"fresh"')))
    served: list[tuple[Zone, ...]] = [Walked((PARENT, CHILD))]
    with DnsServer(lambda: served[0], ADDRESSES) as running:
        for _ in range(5):
            assert ask(running, child(running), "new.dev.ardamails.com.", "TXT").rcode() == dns.rcode.NXDOMAIN
            assert ask(running, running.resolver, "dev.ardamails.com.", "TXT").answer
        assert Walked.walks == 1
        served[0] = Walked((PARENT, changed))
        assert texts(ask(running, child(running), "new.dev.ardamails.com.", "TXT").answer[0]) == ["fresh"]
        assert Walked.walks == 2


def _txt(scenarios: Scenarios, where: str, name: str) -> list[str] | None:
    """The TXT strings the world's server at `where` answers for name (None: NXDOMAIN)."""
    reply = ask(scenarios.world.dns, where, name, "TXT")
    if reply.rcode() == dns.rcode.NXDOMAIN:
        return None
    assert reply.rcode() == dns.rcode.NOERROR, f"{name}: {dns.rcode.to_text(reply.rcode())}"
    return [text for rrset in reply.answer for text in texts(rrset)]


def test_a_change_through_moto_is_served_on_the_very_next_question(scenarios: Scenarios) -> None:
    """The world serves moto's zones without walking them on every question; each way moto writes them
    (ChangeResourceRecordSets create, upsert and delete; a CloudFormation record set created and deleted with its
    stack; a hosted zone created and deleted; the scenarios' direct delete) shows on the next question."""
    world = scenarios.world
    domain = world.config.file.domain.rstrip(".")
    parent = world.dns.address_of(PARENT_NAMESERVERS[0])
    route53 = world.client("route53", ROOT_ACCOUNT)
    zone_id = world.info.parent_zone_id
    name = f"moto-change.{domain}."

    def change(action: str, value: str) -> None:
        record = {"Name": name, "Type": "TXT", "TTL": 300, "ResourceRecords": [{"Value": f'"{value}"'}]}
        route53.change_resource_record_sets(
            HostedZoneId=zone_id, ChangeBatch={"Changes": [{"Action": action, "ResourceRecordSet": record}]}
        )

    assert _txt(scenarios, parent, name) is None
    change("CREATE", "one")
    assert _txt(scenarios, parent, name) == ["one"]
    change("UPSERT", "two")
    assert _txt(scenarios, parent, name) == ["two"]
    route53_backends[ROOT_ACCOUNT]["global"].get_hosted_zone(zone_id).delete_rrset({"Name": name, "Type": "TXT"})
    assert _txt(scenarios, parent, name) is None

    stacked = f"stack-record.{domain}."
    resource = {"HostedZoneId": zone_id, "Name": stacked, "Type": "TXT", "TTL": "300", "ResourceRecords": ['"cfn"']}
    template = {"Resources": {"Record": {"Type": "AWS::Route53::RecordSet", "Properties": resource}}}
    cloudformation = world.client("cloudformation", ROOT_ACCOUNT)
    cloudformation.create_stack(StackName="moto-change", TemplateBody=json.dumps(template))
    assert _txt(scenarios, parent, stacked) == ["cfn"]
    cloudformation.delete_stack(StackName="moto-change")
    assert _txt(scenarios, parent, stacked) is None

    other = f"other-zone.{domain}."
    created = route53.create_hosted_zone(Name=other, CallerReference="moto-change")["HostedZone"]["Id"]
    server = world.dns.address_of(CHILD_NAMESERVERS[0])
    assert ask(world.dns, server, other, "SOA").rcode() == dns.rcode.NOERROR
    route53.delete_hosted_zone(Id=created)
    assert ask(world.dns, server, other, "SOA").rcode() == dns.rcode.REFUSED


def test_the_world_walks_moto_zones_again_only_after_a_write(
    scenarios: Scenarios, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Questions with no write between them cost no walk over moto's zones; one write costs one walk."""
    world = scenarios.world
    walked = _zone_names_passed_to(monkeypatch, world, "_served_zone")
    parent = world.dns.address_of(PARENT_NAMESERVERS[0])
    domain = world.config.file.domain.rstrip(".")
    assert _txt(scenarios, parent, f"quiet.{domain}.") is None
    walked.clear()
    for _ in range(5):
        assert _txt(scenarios, parent, f"quiet.{domain}.") is None
    assert walked == []
    world.client("route53", ROOT_ACCOUNT).change_resource_record_sets(
        HostedZoneId=world.info.parent_zone_id,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "CREATE",
                    "ResourceRecordSet": {
                        "Name": f"quiet.{domain}.",
                        "Type": "TXT",
                        "TTL": 300,
                        "ResourceRecords": [{"Value": '"written"'}],
                    },
                }
            ]
        },
    )
    for _ in range(3):
        assert _txt(scenarios, parent, f"quiet.{domain}.") == ["written"]
    assert walked == [f"{domain}."]


def _moto_zones() -> list[tuple[object, ...]]:
    """Everything of moto's Route 53 data the world serves, in a comparable form (partly built objects skipped)."""
    zones = []
    for account in list(route53_backends.values()):
        for backend in list(account.values()):
            zone: Any
            for zone in list(getattr(backend, "zones", {}).values()):
                rrsets = tuple(
                    (r.name, r.type, r.ttl, r.set_identifier, tuple(str(v) for v in r.records or ()))
                    for r in getattr(zone, "rrsets", ())
                    if hasattr(r, "multi_value_answer")  # the last attribute RecordSet.__init__ sets
                )
                zones.append((zone.name, getattr(zone, "private_zone", None), rrsets))
    return sorted(zones, key=repr)


def test_every_write_to_moto_route53_moves_the_generation_once_it_is_done(
    scenarios: Scenarios, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The world trusts the generation to tell it moto's zones changed: for each way a zone or record set is written
    (ChangeResourceRecordSets create, upsert, delete, by set identifier too; a hosted zone created and deleted;
    CloudFormation's RecordSet and RecordSetGroup created and deleted with their stack; a direct delete; moto's
    reset), the last move of the generation must see the data as the write left it."""
    world = scenarios.world
    seen: list[list[tuple[object, ...]]] = []
    bump = moto_route53._bump

    def recording() -> None:
        bump()
        seen.append(_moto_zones())

    monkeypatch.setattr(moto_route53, "_bump", recording)

    def written(what: str) -> None:
        assert seen, f"{what}: the generation did not move"
        assert seen[-1] == _moto_zones(), f"{what}: the generation moved before the write was done"
        seen.clear()

    domain = world.config.file.domain.rstrip(".")
    route53 = world.client("route53", ROOT_ACCOUNT)
    zone_id = world.info.parent_zone_id

    def change(action: str, name: str, rtype: str, value: str, **extra: object) -> None:
        record = {"Name": name, "Type": rtype, "TTL": 300, "ResourceRecords": [{"Value": value}], **extra}
        route53.change_resource_record_sets(
            HostedZoneId=zone_id, ChangeBatch={"Changes": [{"Action": action, "ResourceRecordSet": record}]}
        )

    change("CREATE", f"a.{domain}.", "A", "192.0.2.1")
    written("CREATE")
    change("UPSERT", f"a.{domain}.", "A", "192.0.2.2")
    written("UPSERT of an existing record set")
    change("DELETE", f"a.{domain}.", "A", "192.0.2.2")
    written("DELETE")
    weighted = {"SetIdentifier": "one", "Weight": 1}
    change("CREATE", f"w.{domain}.", "A", "192.0.2.3", **weighted)
    written("CREATE weighted")
    change("DELETE", f"w.{domain}.", "A", "192.0.2.3", **weighted)
    written("DELETE by set identifier")
    change("CREATE", f"t.{domain}.", "TXT", '"direct"')
    seen.clear()
    route53_backends[ROOT_ACCOUNT]["global"].get_hosted_zone(zone_id).delete_rrset({"Name": f"t.{domain}."})
    written("a direct delete_rrset (the scenarios' path)")

    created = route53.create_hosted_zone(Name=f"other.{domain}", CallerReference="watch")["HostedZone"]["Id"]
    written("CreateHostedZone")
    route53.delete_hosted_zone(Id=created)
    written("DeleteHostedZone")

    record = {"Name": f"cfn.{domain}.", "Type": "TXT", "TTL": "300", "ResourceRecords": ['"one"']}
    group = {"Name": f"group.{domain}.", "Type": "TXT", "TTL": "300", "ResourceRecords": ['"two"']}
    template = {
        "Resources": {
            "Record": {"Type": "AWS::Route53::RecordSet", "Properties": {"HostedZoneId": zone_id, **record}},
            "Group": {
                "Type": "AWS::Route53::RecordSetGroup",
                "Properties": {"HostedZoneId": zone_id, "RecordSets": [group]},
            },
            "Zone": {"Type": "AWS::Route53::HostedZone", "Properties": {"Name": f"stacked.{domain}"}},
        }
    }
    cloudformation = world.client("cloudformation", ROOT_ACCOUNT)
    cloudformation.create_stack(StackName="watch", TemplateBody=json.dumps(template))
    written("CloudFormation CreateStack")
    assert any(r[0] == f"cfn.{domain}." for z in _moto_zones() for r in z[2]), "the stack made no record set"
    cloudformation.delete_stack(StackName="watch")
    written("CloudFormation DeleteStack")

    urllib.request.urlopen(urllib.request.Request(f"{world.aws.url}/moto-api/reset", method="POST"), timeout=30)
    written("moto's reset")
