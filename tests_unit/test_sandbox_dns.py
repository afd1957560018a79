"""The sandbox DNS server, observed by dnspython clients exactly as they would observe real servers."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.rrset
import pytest

from sandbox.dns_server import DnsServer, Fault, QueryRecord, RecordSet, Zone

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


def test_hundreds_of_zones_are_indexed_once_not_on_every_question(monkeypatch: pytest.MonkeyPatch) -> None:
    """300 partition zones: each zone's index is built once; a cache smaller than the zones rebuilt some on every
    question, and the server fell seconds behind at 256 partitions."""
    import sandbox.dns_server as server_module

    many = tuple(
        Zone(f"p{i:03d}.ardamails.com.", (_rs(f"p{i:03d}.ardamails.com.", "NS", *CHILD_NS, ttl=172800),))
        for i in range(300)
    )
    served = (PARENT, *many)
    built: list[str] = []
    real_index = server_module._index

    def counting(zone: Zone) -> object:
        built.append(zone.name)
        return real_index(zone)

    monkeypatch.setattr(server_module, "_index", counting)
    with DnsServer(lambda: served, ADDRESSES) as running:
        for i in (0, 150, 299, 0):
            reply = ask(running, running.address_of(CHILD_NS[0]), f"p{i:03d}.ardamails.com.", "NS")
            assert reply.rcode() == dns.rcode.NOERROR, f"p{i:03d}: {dns.rcode.to_text(reply.rcode())}"
    assert len(built) == len(served), f"{len(built)} index builds for {len(served)} zones over 4 questions"
