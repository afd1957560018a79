"""Authoritative and resolver DNS queries: every server asked, every answer kept as evidence.

DNS is judged from a zone's authoritative servers, all of which must agree (resolvers are advisory:
caches lie for a TTL). Everything is asyncio, so one run overlaps every query of every zone.
TXT values are the `b"".join` of their strings; names compare as `dns.name.Name`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import ipaddress
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dns.asyncbackend
import dns.asyncquery
import dns.exception
import dns.flags
import dns.inet
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from probes.mailauth import decode_txt, show

DEFAULT_RETRIES = 2
EDNS_PAYLOAD = 1232
MAX_IN_FLIGHT = 16  # questions outstanding per server address: more wait their turn instead of flooding it
RESOLVER = "resolver"
_NAME_VALUED = frozenset({"NS", "CNAME", "PTR", "DNAME", "MX", "SRV", "SOA"})


@dataclass(frozen=True)
class Answer:
    """One question to one server: what came back (or why nothing did), when, and how long it took."""

    server: str  # name server host name, or "resolver"
    address: str  # "127.0.0.2:5353", "[::1]:53"
    qname: str
    rtype: str
    transport: str  # "udp", "tcp" (after a truncated UDP reply), "" when no reply
    rcode: str | None  # "NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", ...; None when no reply
    authoritative: bool  # AA flag
    records: tuple[str, ...]  # rdata text of the answer RRset at (qname, rtype); names absolute
    other: tuple[str, ...]  # the rest of the answer section as "owner TYPE rdata" (a CNAME, ...)
    txt: tuple[bytes, ...]  # TXT: one joined value per rdata, in answer order
    authority: tuple[tuple[str, str, str], ...]  # AUTHORITY section as (owner, TYPE, rdata)
    ttl: int | None  # of the answer RRset
    error: str | None  # "timeout after 3s (3 tries)", "connection refused", ...
    tries: int  # UDP datagrams sent
    elapsed: float  # seconds
    at: float  # wall-clock time the question was first sent

    @property
    def usable(self) -> bool:
        """A reply that states the data: NOERROR or NXDOMAIN, with the AA flag."""
        return self.error is None and self.authoritative and self.rcode in ("NOERROR", "NXDOMAIN")


@dataclass(frozen=True)
class Delegation:
    """What the parent zone's servers say about the zone's name servers."""

    zone: str
    parent: str
    parent_servers: dict[str, tuple[str, ...]]  # parent NS host -> addresses
    parent_answers: tuple[Answer, ...]  # every parent server's answer to NS <zone>
    ns_hosts: tuple[str, ...]  # every NS host any parent server named (lower case, no final dot), sorted


@dataclass(frozen=True)
class ZoneObservation:
    """A zone seen from its parent, its delegated servers and the configured resolvers."""

    zone: str
    delegation: Delegation
    servers: dict[str, tuple[str, ...]]  # delegated NS host -> addresses (via the resolvers)
    answers: tuple[Answer, ...]  # every (delegated server address x question), apex NS and SOA included
    resolver_answers: tuple[Answer, ...]  # the same questions asked of every resolver
    lookups: tuple[Answer, ...]  # resolver answers used to find the parent's NS and every server address
    # the resolvers' answers about names receivers look up beyond the zone (SPF include targets, report
    # authorizations, the organizational domain's DMARC record): see probes/outside.py
    outside: tuple[Answer, ...] = ()

    def outside_for(self, qname: str, rtype: str) -> Answer | None:
        """The resolvers' answer about a name outside the zone, or None when it was not looked up."""
        return next(iter(_matching(self.outside, qname, rtype)), None)

    def answers_for(self, qname: str, rtype: str) -> tuple[Answer, ...]:
        """The authoritative answers to one question (names compared as DNS names)."""
        return _matching(self.answers, qname, rtype)

    def resolver_answers_for(self, qname: str, rtype: str) -> tuple[Answer, ...]:
        """The resolvers' answers to one question (advisory: caches may be stale for a TTL)."""
        return _matching(self.resolver_answers, qname, rtype)


@dataclass(frozen=True)
class Agreement:
    """Whether every authoritative server gave the same authoritative answer to one question."""

    qname: str
    rtype: str
    answers: tuple[Answer, ...]
    rcode: str | None  # the common rcode when they agree
    records: tuple[str, ...]  # the agreed records, sorted (names lower case); () when they do not agree
    txt: tuple[bytes, ...]  # the agreed TXT values, sorted; () when they do not agree
    problem: str | None  # one line naming the servers at fault; None when they agree


def parse_server(spec: str, default_port: int = 53) -> tuple[str, int]:
    """'host', 'host:port', '[v6]:port' or a bare IPv6 address -> (address, port); must be an IP address."""
    host, port = spec, default_port
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        if rest:
            port = _port(spec, rest.removeprefix(":"))
    elif spec.count(":") == 1:
        host, text = spec.split(":")
        port = _port(spec, text)
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        raise ValueError(
            f"DNS server {spec!r} is not an IP address; give it as IP or IP:port (8.8.8.8, 127.0.0.1:5353, [::1]:53)"
        ) from None


@functools.lru_cache(maxsize=16384)
def name_of(text: str) -> dns.name.Name:
    """`text` as a DNS name, parsed once (judging compares the same few names thousands of times)."""
    return dns.name.from_text(text)


def address_text(host: str, port: int) -> str:
    """'127.0.0.2:53' or '[::1]:53'."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def host_text(name: str | dns.name.Name) -> str:
    """A host name as shown and compared in observations: lower case, no final dot."""
    value = name if isinstance(name, dns.name.Name) else name_of(name)
    return value.to_text(omit_final_dot=True).lower()


def as_names(values: Iterable[str]) -> frozenset[dns.name.Name]:
    """Names as a set of DNS names, for comparing regardless of case and final dot."""
    return frozenset(name_of(v) for v in values)


async def query(
    where: tuple[str, int],
    qname: str,
    rtype: str,
    *,
    timeout: float,
    server_label: str,
    retries: int = DEFAULT_RETRIES,
    recursion: bool = False,
    urgent: bool = False,
) -> Answer:
    """Ask one server one question over UDP, resending on silence and falling back to TCP on TC.

    The whole exchange, resends and TCP included, stays within `timeout` seconds. Resends go out on
    the same socket every `timeout / (retries + 1)` seconds, so a late reply to an earlier datagram
    still counts. At most MAX_IN_FLIGHT questions per server are outstanding at once (per event loop);
    the others wait for a slot, `urgent` ones (lookups others wait on) first, and their clock starts
    when they are sent. Never raises for network trouble: the Answer says what happened.
    """
    async with _slots(where).hold(urgent):
        return await _exchange(
            where, qname, rtype, timeout=timeout, server_label=server_label, retries=retries, recursion=recursion
        )


async def _exchange(
    where: tuple[str, int], qname: str, rtype: str, *, timeout: float, server_label: str, retries: int, recursion: bool
) -> Answer:
    host, port = where
    name = name_of(qname)
    rdtype = dns.rdatatype.from_text(rtype)
    request = dns.message.make_query(name, rdtype, use_edns=0, payload=EDNS_PAYLOAD)
    if not recursion:
        request.flags &= ~dns.flags.RD
    at, started = time.time(), time.monotonic()
    deadline = started + timeout
    response: dns.message.Message | None = None
    transport, error, tries = "", None, 0
    try:
        response, tries, truncated = await _udp(request, where, deadline, retries)
        transport = "udp"
        if truncated:
            transport = "tcp"
            response = await dns.asyncquery.tcp(request, host, max(deadline - time.monotonic(), 0.001), port)
    except (dns.exception.DNSException, OSError, EOFError) as exc:
        error = ("UDP reply truncated, then TCP: " if transport == "tcp" else "") + _failure(exc, timeout)
        response, tries = None, max(tries, 1)
    if response is None and error is None:
        error = f"timeout after {timeout:g}s ({tries} {'try' if tries == 1 else 'tries'})"
    records, other, txt, ttl = _answer_section(response, name, rdtype) if response else ((), (), (), None)
    return Answer(
        server=server_label,
        address=address_text(host, port),
        qname=qname,
        rtype=rtype.upper(),
        transport=transport if response else "",
        rcode=dns.rcode.to_text(response.rcode()) if response else None,
        authoritative=bool(response and response.flags & dns.flags.AA),
        records=records,
        other=other,
        txt=txt,
        authority=tuple(
            (rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rdata.to_text())
            for rrset in (response.authority if response else ())
            for rdata in rrset
        ),
        ttl=ttl,
        error=error,
        tries=tries,
        elapsed=time.monotonic() - started,
        at=at,
    )


async def resolve(
    qname: str, rtype: str, *, resolvers: Sequence[str], timeout: float = 3.0, retries: int = DEFAULT_RETRIES
) -> Answer:
    """One question to every resolver at once: the first answer that states the data (NOERROR or NXDOMAIN)
    wins and the others are cancelled; when none does, the last answer that came in (it says why)."""
    return await _Asker.of(resolvers, 53, timeout, retries).first_answer(qname, rtype)


async def parent_lookups(
    parent: str,
    *,
    resolvers: Sequence[str],
    port: int = 53,
    timeout: float = 3.0,
    retries: int = DEFAULT_RETRIES,
) -> None:
    """Wait for the resolver lookups every zone's delegation starts with (the parent's NS and their addresses,
    asked once per event loop and shared with `observe_zone` called with the same settings): work that may wait
    waits for them, so it never delays the one path every zone is on."""
    asker = _Asker.of(resolvers, port, timeout, retries)
    parent_ns, _ = await asker.first_records(parent, "NS")
    await asker.addresses(sorted({host_text(n) for n in parent_ns}))


async def observe_zone(
    zone: str,
    parent: str,
    queries: Sequence[tuple[str, str]],
    *,
    resolvers: Sequence[str],
    port: int = 53,
    timeout: float = 3.0,
    retries: int = DEFAULT_RETRIES,
) -> ZoneObservation:
    """Observe `zone`: its delegation at `parent`, and `queries` asked of every server and resolver.

    The parent's NS come from the resolvers; each parent server (on `port`) is asked for NS of `zone`
    (a referral: NS in AUTHORITY, no AA); each delegated server is asked, on `port`, for the apex NS
    and SOA and every (qname, rtype) in `queries`; every resolver is asked the same, meanwhile (once
    the delegation's lookups are done: they go first).
    Raises ValueError only for a resolver that is not an IP address (a configuration error).
    """
    asker = _Asker.of(resolvers, port, timeout, retries)
    questions = list(dict.fromkeys([(zone, "NS"), (zone, "SOA"), *((q, t.upper()) for q, t in queries)]))
    delegation, parent_lookups = await asker.delegation(zone, parent)
    servers, zone_lookups = await asker.addresses(delegation.ns_hosts)
    # the resolvers' own answers are advisory: asked once the zone's path no longer needs the resolvers, so
    # they never hold the slots its lookups (and those of the other zones) wait for
    answers, resolver_answers = await asyncio.gather(
        asyncio.gather(
            *(
                asker.ask((address, port), q, t, host)
                for host, addresses in servers.items()
                for address in addresses
                for q, t in questions
            )
        ),
        asyncio.gather(*(asker.ask(r, q, t, RESOLVER) for r in asker.resolvers for q, t in questions)),
    )
    return ZoneObservation(
        zone=zone,
        delegation=delegation,
        servers=servers,
        answers=tuple(answers),
        resolver_answers=tuple(resolver_answers),
        lookups=parent_lookups + zone_lookups,
    )


async def ask_more(
    obs: ZoneObservation,
    queries: Sequence[tuple[str, str]],
    *,
    port: int = 53,
    timeout: float = 3.0,
    retries: int = DEFAULT_RETRIES,
) -> ZoneObservation:
    """`obs` with `queries` also asked of every delegated server (not the resolvers): for names learnt only after
    the zone was observed, such as the DKIM hosts Postmark names. Questions already answered are not asked again."""
    asked = {(name_of(a.qname), a.rtype) for a in obs.answers}
    new = [(q, t.upper()) for q, t in dict.fromkeys(queries) if (name_of(q), t.upper()) not in asked]
    if not new:
        return obs
    asker = _Asker((), port, timeout, retries)
    answers = await asyncio.gather(
        *(
            asker.ask((address, port), q, t, host)
            for host, addresses in obs.servers.items()
            for address in addresses
            for q, t in new
        )
    )
    return dataclasses.replace(obs, answers=obs.answers + tuple(answers))


def agreed(obs: ZoneObservation, qname: str, rtype: str) -> Agreement:
    """The answer every authoritative server gave to (qname, rtype), or a problem naming who differs."""
    rtype = rtype.upper()
    answers = obs.answers_for(qname, rtype)
    no = Agreement(qname, rtype, answers, None, (), (), None)
    if not answers:
        why = delegation_problem(obs) or "no delegated server has an address"
        return _with_problem(no, f"no authoritative server of {obs.zone} could be asked {rtype} {qname}: {why}")
    unusable = [a for a in answers if not a.usable]
    if unusable:
        return _with_problem(
            no,
            f"{len(unusable)} of {len(answers)} authoritative servers gave no usable answer to {rtype} {qname}: "
            + "; ".join(f"{a.server} ({a.address}) {_status(a)}" for a in unusable),
        )
    groups: dict[tuple[str | None, tuple[str, ...], tuple[bytes, ...]], list[Answer]] = {}
    for answer in answers:
        groups.setdefault(_key(answer), []).append(answer)
    if len(groups) > 1:
        sides = "; ".join(
            f"{', '.join(f'{a.server} ({a.address})' for a in group)} say {_said(group[0])}"
            for group in groups.values()
        )
        return _with_problem(no, f"authoritative servers disagree on {rtype} {qname}: {sides}")
    rcode, records, txt = next(iter(groups))
    return Agreement(qname, rtype, answers, rcode, records, txt, None)


def content(obs: ZoneObservation, qname: str, rtype: str) -> Agreement:
    """What the servers that answer authoritatively agree on; a lame or silent server is the NS check's to
    judge (when no server answered usably, the agreement over all of them says why)."""
    usable = tuple(a for a in obs.answers if a.usable)
    if not any(a in usable for a in obs.answers_for(qname, rtype)):
        return agreed(obs, qname, rtype)
    return agreed(dataclasses.replace(obs, answers=usable), qname, rtype)


def resolver_disagreement(obs: ZoneObservation, agreement: Agreement) -> str | None:
    """The resolvers' answers that differ from what the authoritative servers agree on, one evidence line each;
    None when they all say the same (or the servers do not agree, so there is nothing to differ from)."""
    if agreement.problem is not None:
        return None
    expected = _said_key(agreement.rcode, agreement.records, agreement.txt, agreement.rtype)
    differing = [
        evidence(answer)
        for answer in obs.resolver_answers_for(agreement.qname, agreement.rtype)
        if _said_key(answer.rcode, answer.records, answer.txt, agreement.rtype) != expected
    ]
    return "\n".join(differing) or None


def _said_key(rcode: str | None, records: tuple[str, ...], txt: tuple[bytes, ...], rtype: str) -> tuple[object, ...]:
    """What an answer says, comparable across servers: TXT by its bytes, names case-insensitively."""
    if rtype == "TXT":
        return rcode, tuple(sorted(txt))
    return rcode, tuple(sorted(r.lower() for r in records))


def delegation_problem(obs: ZoneObservation) -> str | None:
    """Why the zone's delegation cannot be trusted, naming the servers; None when it is sound.

    Sound: the parent's servers were found, every one of them answered NS <zone> with the same
    NS set (a referral or an answer), and every delegated NS host has an address.
    """
    d = obs.delegation
    if not d.parent_servers:
        parent_ns = [a for a in obs.lookups if a.rtype == "NS"]
        seen = "; ".join(f"{a.address} {_status(a, resolver=True)}" for a in parent_ns) or "no resolver answered"
        return f"the name servers of the parent zone {d.parent} could not be found via the resolvers ({seen})"
    missing = [h for h, addresses in d.parent_servers.items() if not addresses]
    if missing:
        return f"no address was found for the parent's name servers {', '.join(missing)} via the resolvers"
    named: dict[frozenset[str], list[Answer]] = {}
    for answer in d.parent_answers:
        named.setdefault(frozenset(_delegated_hosts(answer, d.zone)), []).append(answer)
    if frozenset() in named:
        return f"parent servers name no NS for {d.zone}: " + "; ".join(
            f"{a.server} ({a.address}) {_status(a, resolver=True)}" for a in named[frozenset()]
        )
    if len(named) > 1:
        return f"parent servers of {d.parent} disagree on the NS of {d.zone}: " + "; ".join(
            f"{', '.join(a.server for a in group)} say {', '.join(sorted(hosts))}" for hosts, group in named.items()
        )
    lost = [h for h in d.ns_hosts if not obs.servers.get(h)]
    if lost:
        return f"no address was found via the resolvers for the delegated name servers {', '.join(lost)}"
    return None


def evidence(answer: Answer) -> str:
    """One line: 'ns-1.example.net (127.0.0.2:53) TXT _dmarc.dev.example.com -> NOERROR aa ['v=DMARC1; …'] 3 ms'."""
    head = f"{answer.server} ({answer.address}) {answer.rtype} {answer.qname} ->"
    millis = f"{answer.elapsed * 1000:.0f} ms"
    return " ".join(p for p in (head, answer.rcode, answer_text(answer), millis) if p)


def answer_text(answer: Answer) -> str:
    """What a reply said beside its rcode: flags, values, the rest of the answer, a referral, resends."""
    if answer.rcode is None:
        return f"no reply: {answer.error}"
    flags = " ".join(f for f, on in (("aa", answer.authoritative), ("tcp", answer.transport == "tcp")) if on)
    parts = [flags, _values(answer)]
    if answer.other:
        parts.append("also " + ", ".join(answer.other))
    if not answer.records and not answer.other:
        referral = [rdata for _, rtype, rdata in answer.authority if rtype == "NS"]
        if referral:
            parts.append("referral NS " + ", ".join(referral))
    if answer.tries > 1:
        parts.append(f"after {answer.tries} tries")
    return " ".join(p for p in parts if p)


_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, int], _Slots]] = (
    weakref.WeakKeyDictionary()
)
_LOOKUPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[object, asyncio.Future[Any]]] = (
    weakref.WeakKeyDictionary()
)
_SLOTS_LOCK = threading.Lock()


class _Slots:
    """At most `size` questions outstanding at one server (a flooded server drops them all); when all are
    taken, urgent questions (the delegation path every zone waits on) get the next free slot first."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiting: tuple[deque[asyncio.Future[None]], deque[asyncio.Future[None]]] = (deque(), deque())

    @contextlib.asynccontextmanager
    async def hold(self, urgent: bool) -> AsyncIterator[None]:
        if self._free > 0 and not any(self._waiting):
            self._free -= 1
        else:
            turn = asyncio.get_running_loop().create_future()
            queue = self._waiting[0 if urgent else 1]
            queue.append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._release()  # the slot was handed over as we were cancelled: pass it on
                else:
                    queue.remove(turn)
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        for queue in self._waiting:
            while queue:
                turn = queue.popleft()
                if not turn.done():
                    turn.set_result(None)
                    return
        self._free += 1


def _slots(where: tuple[str, int]) -> _Slots:
    """This event loop's slots at one server."""
    loop = asyncio.get_running_loop()
    with _SLOTS_LOCK:
        return _SLOTS.setdefault(loop, {}).setdefault(where, _Slots(MAX_IN_FLIGHT))


async def _udp(
    request: dns.message.Message, where: tuple[str, int], deadline: float, retries: int
) -> tuple[dns.message.Message | None, int, bool]:
    """Send on one connected socket, resending on silence: (reply or None on timeout, datagrams sent, truncated)."""
    host, port = where
    family = dns.inet.af_for_address(host)
    destination = dns.inet.low_level_address_tuple((host, port), family)
    wire = request.to_wire()
    interval = max(deadline - time.monotonic(), 0.0) / (retries + 1)
    backend = dns.asyncbackend.get_backend("asyncio")
    # dnspython's Backend.make_socket has no annotations (dns/asyncbackend.py, dns/_asyncbackend.py)
    socket_made = backend.make_socket(family, socket.SOCK_DGRAM, 0, None, (host, port))  # type: ignore[no-untyped-call]
    async with await socket_made as sock:
        for attempt in range(retries + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                return None, attempt, False
            await sock.sendto(wire, None, None)  # connected: ICMP "port unreachable" surfaces as refused
            wait = left if attempt == retries else min(interval, left)
            try:
                reply, _, _ = await dns.asyncquery.receive_udp(
                    sock,
                    destination,
                    time.time() + wait,
                    ignore_unexpected=True,
                    raise_on_truncation=True,
                    ignore_errors=True,
                    query=request,
                )
            except dns.message.Truncated:
                return None, attempt + 1, True
            except dns.exception.Timeout:
                continue
            return reply, attempt + 1, False
    return None, retries + 1, False


def _failure(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return f"timeout after {timeout:g}s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens there)"
    if isinstance(exc, EOFError):
        return "connection closed before a reply"
    if isinstance(exc, OSError):
        return f"network error: {exc.strerror or exc}"
    return f"malformed reply: {exc}"


def _answer_section(
    response: dns.message.Message, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[bytes, ...], int | None]:
    records: list[str] = []
    other: list[str] = []
    txt: list[bytes] = []
    ttl = None
    for rrset in response.answer:
        if rrset.name == name and rrset.rdtype == rdtype:
            ttl = rrset.ttl
            records.extend(rdata.to_text() for rdata in rrset)
            if rdtype == dns.rdatatype.TXT:
                txt.extend(b"".join(rdata.strings) for rdata in rrset)
        else:
            kind = dns.rdatatype.to_text(rrset.rdtype)
            other.extend(f"{rrset.name} {kind} {rdata.to_text()}" for rdata in rrset)
    return tuple(records), tuple(other), tuple(txt), ttl


@dataclass(frozen=True)
class _Asker:
    """How this run asks: the resolvers, the name servers' port, the per-query budget and resends."""

    resolvers: tuple[tuple[str, int], ...]
    port: int
    timeout: float
    retries: int

    @classmethod
    def of(cls, resolvers: Sequence[str], port: int, timeout: float, retries: int) -> _Asker:
        return cls(tuple(parse_server(spec) for spec in resolvers), port, timeout, retries)

    async def ask(self, where: tuple[str, int], qname: str, rtype: str, label: str, *, urgent: bool = False) -> Answer:
        recursion = label == RESOLVER
        return await query(
            where,
            qname,
            rtype,
            timeout=self.timeout,
            server_label=label,
            retries=self.retries,
            recursion=recursion,
            urgent=urgent,
        )

    async def first_records(self, qname: str, rtype: str) -> tuple[tuple[str, ...], tuple[Answer, ...]]:
        """Ask every resolver at once: the records of the first NOERROR answer with some, and the answers in.

        Within one event loop the same lookup is asked once and shared (64 zones need the parent's NS once).
        """
        key = (self, name_of(qname), rtype.upper())
        loop = asyncio.get_running_loop()
        with _SLOTS_LOCK:
            shared = _LOOKUPS.setdefault(loop, {})
            if key not in shared:
                shared[key] = asyncio.ensure_future(self._first_records(qname, rtype))
            found = shared[key]
        return await asyncio.shield(found)

    async def _first_records(self, qname: str, rtype: str) -> tuple[tuple[str, ...], tuple[Answer, ...]]:
        tasks = [asyncio.ensure_future(self.ask(r, qname, rtype, RESOLVER, urgent=True)) for r in self.resolvers]
        answers: list[Answer] = []
        try:
            for next_answer in asyncio.as_completed(tasks):
                answer = await next_answer
                answers.append(answer)
                if answer.rcode == "NOERROR" and answer.records:
                    return answer.records, tuple(answers)
            return (), tuple(answers)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def first_answer(self, qname: str, rtype: str) -> Answer:
        tasks = [asyncio.ensure_future(self.ask(r, qname, rtype, RESOLVER)) for r in self.resolvers]
        last: Answer | None = None
        try:
            for next_answer in asyncio.as_completed(tasks):
                last = await next_answer
                if last.error is None and last.rcode in ("NOERROR", "NXDOMAIN"):
                    return last
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if last is None:
            raise ValueError("no DNS resolver configured: set dns.resolvers or pass --resolver HOST[:PORT]")
        return last

    async def addresses(self, hosts: Iterable[str]) -> tuple[dict[str, tuple[str, ...]], tuple[Answer, ...]]:
        """Each host's IPv4 addresses via the resolvers, all hosts at once; and the answers used."""
        hosts = list(hosts)
        found = await asyncio.gather(*(self.first_records(h, "A") for h in hosts))
        lookups = tuple(a for _, answers in found for a in answers)
        return {h: addresses for h, (addresses, _) in zip(hosts, found, strict=True)}, lookups

    async def delegation(self, zone: str, parent: str) -> tuple[Delegation, tuple[Answer, ...]]:
        """Every server of the parent zone asked for NS of zone; and the resolver answers used to find them."""
        parent_ns, ns_lookups = await self.first_records(parent, "NS")
        parent_servers, address_lookups = await self.addresses(sorted({host_text(n) for n in parent_ns}))
        parent_answers = await asyncio.gather(
            *(
                self.ask((address, self.port), zone, "NS", host, urgent=True)
                for host, addresses in parent_servers.items()
                for address in addresses
            )
        )
        named = {host for answer in parent_answers for host in _delegated_hosts(answer, zone)}
        delegation = Delegation(
            zone=zone,
            parent=parent,
            parent_servers=parent_servers,
            parent_answers=tuple(parent_answers),
            ns_hosts=tuple(sorted(named)),
        )
        return delegation, ns_lookups + address_lookups


def _delegated_hosts(answer: Answer, zone: str) -> list[str]:
    """The NS hosts a parent server named for zone: in a referral's AUTHORITY, or in the answer."""
    zone_name = name_of(zone)
    referral = [r for owner, t, r in answer.authority if t == "NS" and name_of(owner) == zone_name]
    return [host_text(r) for r in (*answer.records, *referral)] if answer.rcode == "NOERROR" else []


def _matching(answers: Iterable[Answer], qname: str, rtype: str) -> tuple[Answer, ...]:
    name, rtype = name_of(qname), rtype.upper()
    return tuple(a for a in answers if a.rtype == rtype and name_of(a.qname) == name)


def comparable(
    rcode: str | None, rtype: str, records: Sequence[str], txt: Sequence[bytes]
) -> tuple[str | None, tuple[str, ...], tuple[bytes, ...]]:
    """What an answer says, comparable across servers and resolvers: TXT by its bytes, the names in name-valued
    records case-insensitively (RFC 4343), other record text as given."""
    values = (r.lower() for r in records) if rtype in _NAME_VALUED else records
    return rcode, tuple(sorted(values)), tuple(sorted(txt))


def _key(answer: Answer) -> tuple[str | None, tuple[str, ...], tuple[bytes, ...]]:
    return comparable(answer.rcode, answer.rtype, answer.records, answer.txt)


def _values(answer: Answer) -> str:
    if answer.txt:
        return "[" + ", ".join(show(decode_txt(v)[0]) for v in answer.txt) + "]"
    return "[" + ", ".join(answer.records) + "]" if answer.records else ""


def _said(answer: Answer) -> str:
    return f"{answer.rcode} {_values(answer) or '(no records)'}"


def _status(answer: Answer, *, resolver: bool = False) -> str:
    if answer.error is not None:
        return f"no reply: {answer.error}"
    if answer.rcode not in ("NOERROR", "NXDOMAIN") or resolver:
        return f"answered {_said(answer)}"
    return f"answered {answer.rcode} without the AA flag (not authoritative: a lame delegation?)"


def _with_problem(agreement: Agreement, problem: str) -> Agreement:
    return Agreement(agreement.qname, agreement.rtype, agreement.answers, None, (), (), problem)


def _port(spec: str, text: str) -> int:
    if text.isdigit() and 0 < int(text) < 65536:
        return int(text)
    raise ValueError(f"DNS server {spec!r}: port {text!r} is not a number from 1 to 65535")
