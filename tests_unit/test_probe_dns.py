"""probes.dns against the sandbox DNS server: delegation, agreement, faults, TCP fallback, loss, overlap."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from probes import dns as dns_probe
from probes.dns import (
    Answer,
    ZoneObservation,
    agreed,
    as_names,
    delegation_problem,
    evidence,
    observe_zone,
    parse_server,
    query,
)
from probes.mailauth import read_dkim, read_dmarc, read_spf
from sandbox.dns_server import DnsServer, Fault, FaultKind, RecordSet, Zone

PARENT = "ardamails.com"
PARTITIONS = ("dev", "stage", "demo", "prod")
SELECTOR = "20260526234343pm"
PARENT_NS = ("ns-p1.parent-dns.net", "ns-p2.parent-dns.net")
SPF = "v=spf1 include:spf.mtasv.net -all"
DMARC = "v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@arda.cards"
FAST = {"timeout": 0.4, "retries": 1}


def _ns_hosts(index: int) -> tuple[str, ...]:
    tlds = ("com", "net", "org", "co.uk")
    return tuple(f"ns-{index * 4 + i}.awsdns-{index:02d}.{tld}" for i, tld in enumerate(tlds))


ZONE_NS = {p: _ns_hosts(i) for i, p in enumerate(PARTITIONS)}


def _dkim_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


KEY = _dkim_key()


def _zones() -> list[Zone]:
    parent = Zone(
        PARENT,
        [
            RecordSet(PARENT, "NS", 172800, [f"{h}." for h in PARENT_NS]),
            *(RecordSet(f"{p}.{PARENT}", "NS", 172800, [f"{h}." for h in ZONE_NS[p]]) for p in PARTITIONS),
        ],
    )
    value = f"k=rsa;p={KEY}"
    dkim = f'"{value[:200]}" "{value[200:]}"'  # Route53 splits values over 255 bytes; 2 strings here
    children = [
        Zone(
            f"{p}.{PARENT}",
            [
                RecordSet(f"{p}.{PARENT}", "NS", 172800, [f"{h}." for h in ZONE_NS[p]]),
                RecordSet(f"{p}.{PARENT}", "TXT", 300, [f'"{SPF}"']),
                RecordSet(f"_dmarc.{p}.{PARENT}", "TXT", 300, [f'"{DMARC}"']),
                RecordSet(f"{SELECTOR}._domainkey.{p}.{PARENT}", "TXT", 300, [dkim]),
                RecordSet(f"pm-bounces.{p}.{PARENT}", "CNAME", 300, ["pm.mtasv.net"]),
            ],
        )
        for p in PARTITIONS
    ]
    return [parent, *children]


ZONES = _zones()


def _questions(partition: str) -> list[tuple[str, str]]:
    zone = f"{partition}.{PARENT}"
    return [
        (zone, "TXT"),
        (f"_dmarc.{zone}", "TXT"),
        (f"{SELECTOR}._domainkey.{zone}", "TXT"),
        (f"pm-bounces.{zone}", "CNAME"),
    ]


@pytest.fixture(scope="module")
def server() -> Iterator[DnsServer]:
    """The test zones' authoritative servers and the parent's on 127.0.x.y, one DNS server for all."""
    addresses = {h: f"127.0.2.{i + 1}" for i, h in enumerate(PARENT_NS)}
    for index, partition in enumerate(PARTITIONS):
        addresses |= {h: f"127.0.1.{index * 4 + i + 1}" for i, h in enumerate(ZONE_NS[partition])}
    with DnsServer(lambda: ZONES, addresses) as running:
        yield running


@pytest.fixture
def world(server: DnsServer) -> Iterator[DnsServer]:
    """The shared server, with every fault and packet loss cleared after the test."""
    yield server
    server.clear_faults()
    server.set_packet_loss(0.0)


def _observe(server: DnsServer, partition: str = "dev", **options: float) -> ZoneObservation:
    settings = {"timeout": 1.0, "retries": 2, **options}
    return asyncio.run(
        observe_zone(
            f"{partition}.{PARENT}",
            PARENT,
            _questions(partition),
            resolvers=[f"{server.resolver}:{server.port}"],
            port=server.port,
            timeout=settings["timeout"],
            retries=int(settings["retries"]),
        )
    )


def _only(answers: tuple[Answer, ...], server: str) -> Answer:
    (answer,) = [a for a in answers if a.server == server]
    return answer


def test_healthy_zone_is_observed_with_aa_from_all_four_servers(world: DnsServer) -> None:
    obs = _observe(world)
    zone = f"dev.{PARENT}"
    assert delegation_problem(obs) is None
    assert obs.delegation.ns_hosts == tuple(sorted(ZONE_NS["dev"]))
    assert sorted(obs.servers) == sorted(ZONE_NS["dev"])
    assert len(obs.answers) == 4 * 6  # 4 servers x (apex NS, SOA, SPF, DMARC, DKIM, Return-Path)
    assert all(a.usable and a.authoritative and a.transport == "udp" for a in obs.answers), obs.answers
    assert as_names(agreed(obs, zone, "NS").records) == as_names(ZONE_NS["dev"])
    assert agreed(obs, zone, "SOA").problem is None
    assert agreed(obs, zone, "TXT").txt == (SPF.encode(),)
    assert agreed(obs, f"_dmarc.{zone}", "TXT").txt == (DMARC.encode(),)
    assert agreed(obs, f"pm-bounces.{zone}", "CNAME").records == ("pm.mtasv.net.",)
    spf = read_spf(zone, agreed(obs, zone, "TXT").txt)
    assert (spf.problems, spf.includes) == ((), ("spf.mtasv.net",))
    assert read_dmarc(f"_dmarc.{zone}", agreed(obs, f"_dmarc.{zone}", "TXT").txt).policy == "quarantine"
    assert len(obs.resolver_answers) == 6
    assert all(a.server == "resolver" and a.rcode == "NOERROR" and not a.authoritative for a in obs.resolver_answers)


def test_names_compare_regardless_of_case_and_final_dot(world: DnsServer) -> None:
    obs = _observe(world)
    assert len(obs.answers_for("DEV.ArdaMails.COM.", "txt")) == 4
    assert agreed(obs, "Dev.ArdaMails.com", "TXT").txt == (SPF.encode(),)


def test_dkim_key_in_two_strings_is_joined_without_separator(world: DnsServer) -> None:
    obs = _observe(world)
    name = f"{SELECTOR}._domainkey.dev.{PARENT}"
    agreement = agreed(obs, name, "TXT")
    assert agreement.problem is None
    assert agreement.txt == (f"k=rsa;p={KEY}".encode(),)
    assert all(len(a.records) == 1 and a.records[0].count('" "') == 1 for a in agreement.answers)  # 2 strings
    dkim = read_dkim(name, agreement.txt)
    assert dkim.problems == ()
    assert dkim.public_key == KEY


def test_referral_delegation_comes_from_the_parent_servers(world: DnsServer) -> None:
    obs = _observe(world, "stage")
    delegation = obs.delegation
    assert sorted(delegation.parent_servers) == sorted(PARENT_NS)
    assert len(delegation.parent_answers) == 2
    for answer in delegation.parent_answers:
        assert answer.server in PARENT_NS
        assert answer.rcode == "NOERROR"
        assert not answer.authoritative  # a referral, not an answer
        assert answer.records == ()
        referral = [rdata for owner, rtype, rdata in answer.authority if rtype == "NS"]
        assert as_names(referral) == as_names(ZONE_NS["stage"])
        assert "referral NS" in evidence(answer)
    assert delegation.ns_hosts == tuple(sorted(ZONE_NS["stage"]))
    assert not set(delegation.ns_hosts) & set(PARENT_NS)


def test_undelegated_zone_is_explained_by_the_parent_answers(world: DnsServer) -> None:
    obs = asyncio.run(
        observe_zone(
            f"qa.{PARENT}",
            PARENT,
            [(f"qa.{PARENT}", "TXT")],
            resolvers=[f"{world.resolver}:{world.port}"],
            port=world.port,
            **FAST,
        )
    )
    assert obs.answers == ()
    problem = delegation_problem(obs)
    assert problem is not None
    assert problem.startswith(f"parent servers name no NS for qa.{PARENT}: ")
    assert "ns-p1.parent-dns.net (127.0.2.1:" in problem
    assert "answered NXDOMAIN" in problem
    txt = agreed(obs, f"qa.{PARENT}", "TXT")
    assert txt.problem == f"no authoritative server of qa.{PARENT} could be asked TXT qa.{PARENT}: {problem}"


@pytest.mark.parametrize(
    ("kind", "rcode", "aa", "verdict"),
    [
        ("servfail", "SERVFAIL", False, "answered SERVFAIL"),
        ("refused", "REFUSED", False, "answered REFUSED"),
        ("lame", "NOERROR", False, "without the AA flag"),
        ("timeout", None, False, "no reply: timeout after 0.4s (2 tries)"),
        ("nxdomain", "NXDOMAIN", True, "say NXDOMAIN (no records)"),
        ("noanswer", "NOERROR", True, "say NOERROR (no records)"),
    ],
)
def test_fault_on_one_server_is_seen_in_its_answer_and_named(
    world: DnsServer, kind: FaultKind, rcode: str | None, aa: bool, verdict: str
) -> None:
    zone = f"dev.{PARENT}"
    broken = ZONE_NS["dev"][1]
    world.inject(Fault(kind, name=f"_dmarc.{zone}", rtype="TXT", server=broken))
    obs = _observe(world, **FAST)
    answers = obs.answers_for(f"_dmarc.{zone}", "TXT")
    seen = _only(answers, broken)
    assert (seen.rcode, seen.authoritative, seen.txt) == (rcode, aa, ())
    assert (seen.transport == "") == (rcode is None)
    assert (seen.error is not None) == (rcode is None)
    assert all(a.usable and a.txt == (DMARC.encode(),) for a in answers if a.server != broken)
    problem = agreed(obs, f"_dmarc.{zone}", "TXT").problem
    assert problem is not None
    assert f"{broken} ({world.address_of(broken)}:{world.port})" in problem
    assert verdict in problem
    assert agreed(obs, zone, "TXT").problem is None  # other names are unaffected


def test_truncated_udp_falls_back_to_tcp_and_gets_the_whole_answer(world: DnsServer) -> None:
    truncating = ZONE_NS["dev"][0]
    world.inject(Fault("truncate", server=truncating))
    obs = _observe(world)
    from_it = [a for a in obs.answers if a.server == truncating]
    assert len(from_it) == 6
    assert all(a.transport == "tcp" and a.usable for a in from_it)
    assert all(a.transport == "udp" for a in obs.answers if a.server != truncating)
    name = f"{SELECTOR}._domainkey.dev.{PARENT}"
    assert _only(obs.answers_for(name, "TXT"), truncating).txt == (f"k=rsa;p={KEY}".encode(),)
    assert agreed(obs, name, "TXT").problem is None
    assert " aa tcp [" in evidence(from_it[0])
    tcp_queries = [q for q in world.queries if q.transport == "tcp" and q.server == world.address_of(truncating)]
    assert len(tcp_queries) >= 6


def test_one_server_down_is_named_while_the_others_answer(world: DnsServer) -> None:
    down = ZONE_NS["demo"][2]
    world.inject(Fault("down", server=down))
    obs = _observe(world, "demo", **FAST)
    assert delegation_problem(obs) is None
    assert all(a.error == "timeout after 0.4s (2 tries)" for a in obs.answers if a.server == down)
    assert all(a.usable for a in obs.answers if a.server != down)
    problem = agreed(obs, f"demo.{PARENT}", "TXT").problem
    assert problem == (
        f"1 of 4 authoritative servers gave no usable answer to TXT demo.{PARENT}: "
        f"{down} ({world.address_of(down)}:{world.port}) no reply: timeout after 0.4s (2 tries)"
    )


def test_twenty_percent_packet_loss_is_overcome_by_resending(world: DnsServer) -> None:
    world.set_packet_loss(0.2, seed=7)
    obs = _observe(world, "prod", timeout=1.0, retries=9)
    everything = (*obs.answers, *obs.resolver_answers, *obs.lookups, *obs.delegation.parent_answers)
    assert all(a.error is None for a in everything), [evidence(a) for a in everything if a.error]
    assert any(a.tries > 1 for a in everything), "no datagram was lost: the test did not exercise resending"
    assert delegation_problem(obs) is None
    assert len(obs.answers) == 24
    zone = f"prod.{PARENT}"
    assert agreed(obs, zone, "TXT").txt == (SPF.encode(),)
    assert agreed(obs, f"{SELECTOR}._domainkey.{zone}", "TXT").txt == (f"k=rsa;p={KEY}".encode(),)
    assert agreed(obs, f"pm-bounces.{zone}", "CNAME").records == ("pm.mtasv.net.",)


def test_all_partitions_queries_overlap(world: DnsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Observing four zones at once keeps more questions in flight than one zone has: they overlap.

    Measured as concurrency at the transport (how many exchanges are open at once), not as wall time,
    so a loaded machine cannot make it pass or fail by accident.
    """
    import probes.dns as probe_dns

    world.inject(Fault("delay", rtype="TXT", seconds=0.3))
    exchange = probe_dns._exchange
    in_flight = {"now": 0, "most": 0}

    async def counted(*args: object, **kwargs: object) -> object:
        in_flight["now"] += 1
        in_flight["most"] = max(in_flight["most"], in_flight["now"])
        try:
            return await exchange(*args, **kwargs)  # type: ignore[arg-type]  # a pass-through wrapper
        finally:
            in_flight["now"] -= 1

    monkeypatch.setattr(probe_dns, "_exchange", counted)
    resolvers = [f"{world.resolver}:{world.port}"]
    one = _observe(world, "dev")
    single, in_flight["most"] = in_flight["most"], 0

    async def every_zone_at_once() -> dict[str, ZoneObservation]:
        zones = [f"{p}.{PARENT}" for p in PARTITIONS]
        observed = await asyncio.gather(
            *(
                observe_zone(zone, PARENT, _questions(p), resolvers=resolvers, port=world.port, timeout=1.0)
                for zone, p in zip(zones, PARTITIONS, strict=True)
            )
        )
        return dict(zip(zones, observed, strict=True))

    four = asyncio.run(every_zone_at_once())  # as probes.observe gathers a run's partitions in one event loop
    assert all(a.usable for a in one.answers)
    assert list(four) == [f"{p}.{PARENT}" for p in PARTITIONS]
    assert all(a.usable for obs in four.values() for a in obs.answers)
    assert single >= 12, f"one zone had at most {single} questions in flight: its 12 delayed TXT did not overlap"
    assert in_flight["most"] > single, (
        f"four zones had at most {in_flight['most']} questions in flight, one zone {single}: the zones did not overlap"
    )


def test_evidence_line_names_server_question_outcome_and_time(world: DnsServer) -> None:
    obs = _observe(world)
    answer = obs.answers_for(f"_dmarc.dev.{PARENT}", "TXT")[0]
    line = evidence(answer)
    pattern = (
        rf"{re.escape(answer.server)} \({re.escape(answer.address)}\) TXT _dmarc\.dev\.ardamails\.com -> "
        rf"NOERROR aa \[{re.escape(repr(DMARC))}\] \d+ ms"
    )
    assert re.fullmatch(pattern, line), line


def test_query_reports_connection_refused(world: DnsServer) -> None:
    answer = asyncio.run(
        query(("127.0.3.1", world.port), f"dev.{PARENT}", "TXT", timeout=1.0, server_label="nobody.example.net")
    )
    assert (answer.rcode, answer.transport, answer.txt) == (None, "", ())
    assert answer.error == "connection refused (nothing listens there)"
    assert answer.elapsed < 0.5
    assert evidence(answer).startswith(f"nobody.example.net (127.0.3.1:{world.port}) TXT dev.{PARENT} -> no reply: ")


def test_addresses_come_from_the_first_resolver_that_knows_them(world: DnsServer) -> None:
    host = ZONE_NS["dev"][0]
    resolvers = [f"127.0.3.1:{world.port}", f"{world.resolver}:{world.port}"]
    obs = asyncio.run(observe_zone(f"dev.{PARENT}", PARENT, [], resolvers=resolvers, port=world.port, timeout=1.0))
    answers = [a for a in obs.lookups if a.rtype == "A" and a.qname.rstrip(".").lower() == host.lower()]
    assert obs.servers[host] == (world.address_of(host),)
    assert answers, f"no address lookup of {host} among {[(a.qname, a.rtype) for a in obs.lookups]}"
    assert answers[-1].address == f"{world.resolver}:{world.port}"
    assert all(a.server == "resolver" for a in answers)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("8.8.8.8", ("8.8.8.8", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:5353", ("::1", 5353)),
        ("[::1]", ("::1", 53)),
        ("::1", ("::1", 53)),
    ],
)
def test_resolver_specs(spec: str, expected: tuple[str, int]) -> None:
    assert parse_server(spec) == expected


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("world.google", "'world.google' is not an IP address; give it as IP or IP:port"),
        ("127.0.0.1:0", "port '0' is not a number from 1 to 65535"),
        ("127.0.0.1:dns", "port 'dns'"),
    ],
)
def test_bad_resolver_spec_is_a_clear_error(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        parse_server(spec)


# --- slots: questions outstanding per server ----------------------------------------------------------


async def _hold_briefly(slots: dns_probe._Slots, order: list[str], name: str, urgent: bool) -> None:
    async with slots.hold(urgent):
        order.append(name)


def test_an_urgent_question_takes_the_next_free_slot_before_earlier_ones() -> None:
    """The delegation lookups every zone waits on go before advisory questions queued earlier."""

    async def scenario() -> list[str]:
        slots, order = dns_probe._Slots(1), []
        held = slots.hold(False)
        await held.__aenter__()
        waiting = [
            asyncio.ensure_future(_hold_briefly(slots, order, name, urgent))
            for name, urgent in (("advisory-1", False), ("advisory-2", False), ("delegation", True))
        ]
        await asyncio.sleep(0)
        assert order == [], "the only slot is taken: everyone waits"
        await held.__aexit__(None, None, None)
        await asyncio.wait_for(asyncio.gather(*waiting), 1)
        return order

    assert asyncio.run(scenario()) == ["delegation", "advisory-1", "advisory-2"]


def test_a_cancelled_waiter_passes_on_the_slot_it_was_handed() -> None:
    async def scenario() -> list[str]:
        slots, order = dns_probe._Slots(1), []
        held = slots.hold(False)
        await held.__aenter__()
        cancelled = asyncio.ensure_future(_hold_briefly(slots, order, "cancelled", False))
        queued = asyncio.ensure_future(_hold_briefly(slots, order, "queued", False))
        await asyncio.sleep(0)
        await held.__aexit__(None, None, None)  # hands the slot to the first waiter...
        cancelled.cancel()  # ... which is cancelled before it runs
        await asyncio.wait_for(queued, 1)
        later = asyncio.ensure_future(_hold_briefly(slots, order, "later", False))
        await asyncio.wait_for(later, 1)  # the slot came back: none was lost
        assert cancelled.cancelled()
        return order

    assert asyncio.run(scenario()) == ["queued", "later"]
