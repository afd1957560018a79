"""A real DNS server on loopback: Route53-like authoritative servers, one public resolver, and faults.

Every NS host name in ``servers`` gets its own loopback address; all addresses listen on one port, UDP and TCP.
An authoritative address serves the zones whose apex NS lists a host mapped to it. The resolver address
answers recursively (RA set, AA clear) by iterating over the same authoritative logic, and also knows the
A records of the NS host names. Faults shape what clients see on the wire. The resolver hears the
authoritative servers' faults too (delays and truncation aside): it skips a silent, failing or lame server
for the next one of the delegation and answers SERVFAIL when none is left.

A "lame" fault answers NOERROR with AA clear and every section empty: a server that is not authoritative.
"timeout" and "down" both never answer (UDP: no datagram; TCP: the connection stays open and silent).
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import itertools
import random
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, get_args

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

FaultKind = Literal["servfail", "refused", "nxdomain", "noanswer", "timeout", "truncate", "delay", "lame", "down"]
Transport = Literal["udp", "tcp"]
TRANSPORTS: tuple[tuple[int, Transport], ...] = ((socket.SOCK_DGRAM, "udp"), (socket.SOCK_STREAM, "tcp"))

EDNS_PAYLOAD = 1232  # what the server advertises (DNS flag day 2020)
MAX_CHAIN = 8  # CNAME links followed
MAX_REFERRALS = 8  # delegations followed by the resolver
TCP_IDLE = 10.0  # seconds a silent TCP connection is kept
BIND_ATTEMPTS = 8

_SILENT = ("timeout", "down")
_FIXED = {"servfail": dns.rcode.SERVFAIL, "refused": dns.rcode.REFUSED, "lame": dns.rcode.NOERROR}
_IN = dns.rdataclass.IN
_T = dns.rdatatype.RdataType
_ROOT_SOA = dns.rrset.from_text(
    ".", 86400, "IN", "SOA", "a.root-servers.net. nstld.verisign-grs.com. 2026052600 1800 900 604800 86400"
)


@dataclass(frozen=True)
class RecordSet:
    """One record set as Route53 stores it; values in Route53 text form."""

    name: str
    rtype: str
    ttl: int
    values: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))


@dataclass(frozen=True)
class Zone:
    """A hosted zone: its apex name and every record set, apex NS (and SOA if any) included."""

    name: str
    records: tuple[RecordSet, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "records", tuple(self.records))


@dataclass(frozen=True)
class Fault:
    """What to break: a kind, optionally narrowed to a query name, a query type and a server."""

    kind: FaultKind
    name: str | None = None
    rtype: str | None = None
    server: str | None = None
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in get_args(FaultKind):
            raise ValueError(f"Fault kind {self.kind!r} is unknown; use one of {', '.join(get_args(FaultKind))}")
        if self.kind == "delay" and self.seconds <= 0:
            raise ValueError(f"a 'delay' fault needs seconds > 0, got {self.seconds}")
        if self.kind != "delay" and self.seconds:
            raise ValueError(f"seconds={self.seconds} only applies to 'delay', not {self.kind!r}")
        if self.kind == "down" and (self.name or self.rtype):
            raise ValueError("a 'down' fault takes a whole server down; give server=, not name= or rtype=")
        if self.name is not None:
            dns.name.from_text(self.name)
        if self.rtype is not None:
            dns.rdatatype.from_text(self.rtype)


class QueryRecord(NamedTuple):
    """One query the server received (lost UDP packets never arrive, so they are not recorded)."""

    server: str
    qname: str
    qtype: str
    transport: Transport


@dataclass(frozen=True)
class _Armed:
    kind: FaultKind
    name: dns.name.Name | None
    rdtype: _T | None
    address: str | None
    seconds: float

    def matches(self, qname: dns.name.Name, rdtype: _T) -> bool:
        return (self.name is None or self.name == qname) and (self.rdtype is None or self.rdtype == rdtype)


@dataclass(frozen=True)
class _Result:
    """An answer before it becomes a message."""

    rcode: dns.rcode.Rcode
    aa: bool = False
    answer: tuple[dns.rrset.RRset, ...] = ()
    authority: tuple[dns.rrset.RRset, ...] = ()
    additional: tuple[dns.rrset.RRset, ...] = ()
    soa: dns.rrset.RRset | None = None  # negative-answer SOA of the zone consulted
    referral: bool = False
    chase: dns.name.Name | None = None  # a CNAME target this zone cannot answer for


@dataclass(frozen=True)
class _ZoneIndex:
    origin: dns.name.Name
    nodes: dict[dns.name.Name, dict[_T, dns.rrset.RRset]]
    existing: frozenset[dns.name.Name]  # names with data and their ancestors (empty non-terminals)
    cuts: frozenset[dns.name.Name]  # delegation points below the apex
    soa: dns.rrset.RRset  # with the negative-caching TTL
    ns_hosts: tuple[dns.name.Name, ...]
    problems: tuple[str, ...]

    def cut_above(self, qname: dns.name.Name, rdtype: _T) -> dns.name.Name | None:
        """The topmost delegation at or above qname (DS at the cut itself belongs to the parent)."""
        for depth in range(len(self.origin) + 1, len(qname) + 1):
            ancestor = qname.split(depth)[1]
            if ancestor in self.cuts and not (ancestor == qname and rdtype == _T.DS):
                return ancestor
        return None


_Key = tuple[bytes, ...]


def _key(name: dns.name.Name) -> _Key:
    """A name as a dict key: its labels lowercased (names compare case-insensitively, RFC 4343). dnspython's own
    Name hash is linear in the label bytes, so p009 and p010 collide: hundreds of partition zones keyed by Name
    would make a lookup compare names again and again."""
    return tuple(label.lower() for label in name.labels)


@dataclass(frozen=True)
class _Served:
    """The served zones' indexes, found by name: a question's cost does not grow with the number of zones."""

    zones: Sequence[Zone]  # as the provider handed them
    by_origin: dict[_Key, tuple[_ZoneIndex, ...]]  # every zone of an apex name, in the provider's order
    by_address: dict[str, dict[_Key, _ZoneIndex]]  # per server address: the first zone of each apex it hosts

    def containing(self, qname: dns.name.Name) -> tuple[_ZoneIndex, ...]:
        """The topmost zones that contain qname (the resolver's starting point), or none."""
        key = _key(qname)
        for start in range(len(key) - 1, -1, -1):
            found = self.by_origin.get(key[start:])
            if found:
                return found
        return ()

    def hosted(self, address: str, qname: dns.name.Name) -> _ZoneIndex | None:
        """The most specific zone containing qname that the server at address hosts."""
        hosted = self.by_address.get(address, {})
        key = _key(qname)
        for start in range(len(key)):
            found = hosted.get(key[start:])
            if found is not None:
                return found
        return None


def _index(zone: Zone) -> _ZoneIndex:
    origin = dns.name.from_text(zone.name)
    nodes: dict[dns.name.Name, dict[_T, dns.rrset.RRset]] = {}
    problems: list[str] = []
    for rs in zone.records:
        try:
            name = dns.name.from_text(rs.name)
            rdtype = dns.rdatatype.from_text(rs.rtype)
            if not name.is_subdomain(origin):
                raise ValueError(f"the name is not inside zone {origin}")
            if not rs.values:
                raise ValueError("it has no values")
            rdatas = [dns.rdata.from_text(_IN, rdtype, v, origin=dns.name.root, relativize=False) for v in rs.values]
        except (dns.exception.DNSException, ValueError) as exc:
            problems.append(f"zone {zone.name}: record {rs.name} {rs.rtype} {rs.values!r} skipped: {exc}")
            continue
        rrset = nodes.setdefault(name, {}).setdefault(rdtype, dns.rrset.RRset(name, _IN, rdtype))
        for rdata in rdatas:
            rrset.add(rdata, rs.ttl)
    apex = nodes.setdefault(origin, {})
    ns_hosts = tuple(rd.target for rd in apex.get(_T.NS, ()))
    if _T.SOA not in apex:
        mname = ns_hosts[0] if ns_hosts else origin
        apex[_T.SOA] = dns.rrset.from_text(
            origin, 900, "IN", "SOA", f"{mname} awsdns-hostmaster.amazon.com. 1 7200 900 1209600 86400"
        )
    soa = apex[_T.SOA]
    existing = {ancestor for name in nodes for ancestor in _ancestors(name, origin)}
    return _ZoneIndex(
        origin=origin,
        nodes=nodes,
        existing=frozenset(existing),
        cuts=frozenset(n for n, node in nodes.items() if _T.NS in node and n != origin),
        soa=dns.rrset.from_rdata_list(soa.name, min(soa.ttl, soa[0].minimum), list(soa)),
        ns_hosts=ns_hosts,
        problems=tuple(problems),
    )


def _ancestors(name: dns.name.Name, origin: dns.name.Name) -> Iterator[dns.name.Name]:
    for depth in range(len(origin), len(name) + 1):
        yield name.split(depth)[1]


def _address_rrset(host: dns.name.Name, ttl: int, address: str) -> dns.rrset.RRset:
    rdtype = "AAAA" if ipaddress.ip_address(address).version == 6 else "A"
    return dns.rrset.from_text(host, ttl, "IN", rdtype, address)


def _loopback(address: str, what: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"{what}: {address!r} is not an IP address; give a loopback address like 127.0.0.2") from None
    if not ip.is_loopback:
        raise ValueError(f"{what}: {address} is not a loopback address; the sandbox only listens on 127.0.0.0/8 or ::1")
    return str(ip)


class _HeldReplies:
    """UDP replies held for their latency (and fault delays), sent by one thread when due: a datagram costs no
    thread of its own. stop() drops whatever is still held."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, socket.socket, bytes, tuple[Any, ...]]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self, name: str) -> None:
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def hold(self, seconds: float, sock: socket.socket, reply: bytes, peer: tuple[Any, ...]) -> None:
        with self._changed:
            heapq.heappush(self._due, (time.monotonic() + seconds, next(self._order), sock, reply, peer))
            self._changed.notify()

    def stop(self) -> None:
        with self._changed:
            self._closed = True
            self._due.clear()
            self._changed.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._closed and (not self._due or self._due[0][0] > time.monotonic()):
                    self._changed.wait(self._due[0][0] - time.monotonic() if self._due else None)
                if self._closed:
                    return
                now, ready = time.monotonic(), []
                while self._due and self._due[0][0] <= now:
                    ready.append(heapq.heappop(self._due))
            for _, _, sock, reply, peer in ready:
                with contextlib.suppress(OSError):  # the client went away or the server is stopping
                    sock.sendto(reply, peer)


class DnsServer:
    """Authoritative servers and a resolver on loopback, one port for all, UDP and TCP, with injectable faults."""

    def __init__(
        self,
        zones: Callable[[], Sequence[Zone]],
        servers: Mapping[str, str],
        resolver: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._zones = zones
        self._servers = {dns.name.from_text(h): _loopback(a, f"servers[{h!r}]") for h, a in servers.items()}
        self._resolver = _loopback(resolver, "resolver")
        clash = [h.to_text() for h, a in self._servers.items() if a == self._resolver]
        if clash:
            raise ValueError(f"resolver {self._resolver} is also the address of {', '.join(clash)}; use distinct ones")
        self._addresses = [self._resolver, *dict.fromkeys(self._servers.values())]
        self._requested_port = port
        self._port = 0
        self.latency = 0.0
        self.queries: deque[QueryRecord] = deque(maxlen=10_000)
        self.errors: deque[str] = deque(maxlen=100)
        self._faults: tuple[_Armed, ...] = ()
        self._loss = 0.0
        self._rng = random.Random(0)
        self._cache: dict[Zone, _ZoneIndex] = {}
        self._seen: dict[int, tuple[Zone, _ZoneIndex]] = {}  # id(zone) -> (zone, its index)
        self._last: _Served | None = None
        self._host_rrsets: dict[tuple[dns.name.Name, int], dns.rrset.RRset] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listeners: list[tuple[socket.socket, str, Transport]] = []
        self._threads: set[threading.Thread] = set()
        self._conns: set[socket.socket] = set()
        self._loop: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._held = _HeldReplies()

    # -- public surface ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The one port every address listens on (UDP and TCP)."""
        if not self._port:
            raise RuntimeError("DnsServer.port: the server is not started; call start() first")
        return self._port

    @property
    def resolver(self) -> str:
        """The address of the public resolver."""
        return self._resolver

    def address_of(self, ns_host: str) -> str:
        """The loopback address of an NS host name (case and trailing dot do not matter)."""
        try:
            return self._servers[dns.name.from_text(ns_host)]
        except KeyError:
            known = ", ".join(h.to_text() for h in self._servers)
            raise KeyError(f"NS host {ns_host!r} has no sandbox address; known hosts: {known}") from None

    def inject(self, fault: Fault) -> None:
        """Add a fault; its server may be an NS host name (standing for its address) or an address."""
        armed = _Armed(
            kind=fault.kind,
            name=dns.name.from_text(fault.name) if fault.name is not None else None,
            rdtype=dns.rdatatype.from_text(fault.rtype) if fault.rtype is not None else None,
            address=self._fault_address(fault.server),
            seconds=fault.seconds,
        )
        with self._lock:
            self._faults = (*self._faults, armed)

    def clear_faults(self) -> None:
        """Remove every fault (packet loss and latency stay as set)."""
        with self._lock:
            self._faults = ()

    def set_packet_loss(self, ratio: float, seed: int = 0) -> None:
        """Drop that share of incoming UDP queries, drawn from a RNG seeded with seed (in arrival order)."""
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"packet loss ratio must be within 0..1, got {ratio}")
        with self._lock:
            self._loss = ratio
            self._rng = random.Random(seed)

    def start(self) -> None:
        """Bind UDP and TCP on the resolver and every server address, one port for all, and serve."""
        if self._loop is not None:
            raise RuntimeError("DnsServer.start: already started")
        self._stopping.clear()
        self._port, self._listeners = self._bind()
        self._wake = socket.socketpair()
        self._held.start(f"dns-replies:{self._port}")
        self._loop = threading.Thread(target=self._serve, name=f"dns-server:{self._port}", daemon=True)
        self._loop.start()

    def stop(self) -> None:
        """Stop serving: drop held answers, close connections and sockets, join threads. Idempotent."""
        if self._loop is None:
            return
        self._stopping.set()
        assert self._wake is not None
        self._wake[1].send(b"\0")
        self._loop.join()
        self._held.stop()
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(timeout=5)
        for sock in (*(s for s, _, _ in self._listeners), *self._wake):
            sock.close()
        self._listeners, self._wake, self._loop, self._port = [], None, None, 0

    def __enter__(self) -> DnsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- sockets ----------------------------------------------------------------------------------------

    def _fault_address(self, server: str | None) -> str | None:
        if server is None:
            return None
        try:
            address = str(ipaddress.ip_address(server))
        except ValueError:
            return self.address_of(server)
        if address not in self._addresses:
            raise ValueError(f"fault server {server} is not a sandbox address; known: {', '.join(self._addresses)}")
        return address

    def _bind(self) -> tuple[int, list[tuple[socket.socket, str, Transport]]]:
        attempts = 1 if self._requested_port else BIND_ATTEMPTS
        error: OSError | None = None
        for _ in range(attempts):
            port = self._requested_port
            bound: list[tuple[socket.socket, str, Transport]] = []
            try:
                for address in self._addresses:
                    family = socket.AF_INET6 if ":" in address else socket.AF_INET
                    for kind, transport in TRANSPORTS:
                        sock = socket.socket(family, kind)
                        bound.append((sock, address, transport))
                        if kind == socket.SOCK_STREAM:
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                        sock.bind((address, port))
                        port = port or sock.getsockname()[1]
                        if kind == socket.SOCK_STREAM:
                            sock.listen(64)
                        sock.setblocking(False)
                return port, bound
            except OSError as exc:
                error = exc
                for sock, _, _ in bound:
                    sock.close()
        raise OSError(
            f"DnsServer could not bind one port (asked {self._requested_port or 'any'}) on UDP and TCP of "
            f"{', '.join(self._addresses)}: {error}; pick another port or free it"
        )

    def _serve(self) -> None:
        assert self._wake is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._wake[0], selectors.EVENT_READ, None)
            for listener in self._listeners:
                selector.register(listener[0], selectors.EVENT_READ, listener)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.data is None:
                        return
                    sock, address, transport = key.data
                    if transport == "udp":
                        self._receive_datagrams(sock, address)
                    else:
                        self._accept(sock, address)

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        def run() -> None:
            try:
                target(*args)
            finally:
                with self._lock:
                    self._threads.discard(thread)

        thread = threading.Thread(target=run, name=f"dns-query:{self._port}", daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _receive_datagrams(self, sock: socket.socket, address: str) -> None:
        while True:
            try:
                wire, peer = sock.recvfrom(65535)
            except OSError:  # drained (EAGAIN), or closed by stop()
                return
            with self._lock:
                lost = self._loss > 0 and self._rng.random() < self._loss
            if lost:
                continue
            reply, hold = self._handle(wire, address, "udp")
            if reply is not None:
                self._held.hold(hold, sock, reply, peer)

    def _accept(self, sock: socket.socket, address: str) -> None:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(True)
        conn.settimeout(TCP_IDLE)
        with self._lock:
            self._conns.add(conn)
        self._spawn(self._serve_connection, conn, address)

    def _serve_connection(self, conn: socket.socket, address: str) -> None:
        try:
            while (head := _recv_exact(conn, 2)) is not None:
                wire = _recv_exact(conn, struct.unpack("!H", head)[0])
                if wire is None:
                    return
                reply, hold = self._handle(wire, address, "tcp")
                if hold > 0 and self._stopping.wait(hold):
                    return
                if reply is not None:
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            pass  # reset by the client, idle, or shut down by stop()
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    # -- answering --------------------------------------------------------------------------------------

    def _handle(self, wire: bytes, address: str, transport: Transport) -> tuple[bytes | None, float]:
        """The reply to one query as bytes (None: stay silent), and how long to hold it (latency, delays)."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return _formerr(wire), 0.0
        if query.flags & dns.flags.QR:
            return None, 0.0
        response = dns.message.make_response(
            query, recursion_available=address == self._resolver, our_payload=EDNS_PAYLOAD
        )
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return self._wire(response, query, transport), 0.0
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return self._wire(response, query, transport), 0.0
        question = query.question[0]
        qname, rdtype = question.name, question.rdtype
        self.queries.append(QueryRecord(address, qname.to_text(), dns.rdatatype.to_text(rdtype), transport))
        fault, delay = self._fault_for(address, qname, rdtype)
        kind = fault.kind if fault else None
        if kind in _SILENT:
            return None, 0.0
        hold = self.latency + delay
        if kind == "truncate" and transport == "udp":
            response.flags |= dns.flags.TC
            return self._wire(response, query, transport), hold
        try:
            if question.rdclass != _IN or rdtype in (_T.AXFR, _T.IXFR):
                result = _Result(dns.rcode.REFUSED)
            else:
                result = self._answer(self._served(), kind, address, qname, rdtype)
        except Exception as exc:
            self.errors.append(f"{address} {transport} {qname} {dns.rdatatype.to_text(rdtype)}: {exc!r}")
            result = _Result(dns.rcode.SERVFAIL)
        response.set_rcode(result.rcode)
        if result.aa:
            response.flags |= dns.flags.AA
        response.answer = list(result.answer)
        response.authority = list(result.authority)
        response.additional = list(result.additional)
        return self._wire(response, query, transport), hold

    def _answer(
        self, served: _Served, kind: FaultKind | None, address: str, qname: dns.name.Name, rdtype: _T
    ) -> _Result:
        """The answer of the server at address, shaped by the fault kind that matched."""
        if kind in _FIXED:
            return _Result(_FIXED[kind])
        if address == self._resolver:
            result = self._recursive(served, qname, rdtype)
        else:
            result = self._authoritative(served, address, qname, rdtype)
        if kind in ("nxdomain", "noanswer"):
            rcode = dns.rcode.NXDOMAIN if kind == "nxdomain" else dns.rcode.NOERROR
            soa = result.soa
            return _Result(rcode, aa=result.aa or result.referral, authority=(soa,) if soa else (), soa=soa)
        return result

    @staticmethod
    def _wire(response: dns.message.Message, query: dns.message.Message, transport: Transport) -> bytes:
        """UDP replies larger than the client's payload size go out truncated: TC set, sections empty."""
        limit = 65535 if transport == "tcp" else max(512, query.payload) if query.edns >= 0 else 512
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response.answer, response.authority, response.additional = [], [], []
            response.flags |= dns.flags.TC
            return response.to_wire(max_size=limit)

    def _fault_for(self, address: str, qname: dns.name.Name, rdtype: _T) -> tuple[_Armed | None, float]:
        """The first matching fault that shapes the answer ("down" wins), and the sum of matching delays."""
        outcome: _Armed | None = None
        delay = 0.0
        for fault in self._faults:
            if fault.address is not None and fault.address != address:
                continue
            if fault.kind == "down":
                return fault, 0.0
            if not fault.matches(qname, rdtype):
                continue
            if fault.kind == "delay":
                delay += fault.seconds
            elif outcome is None:
                outcome = fault
        return outcome, delay

    def _served(self) -> _Served:
        """The served zones, looked up by name. A provider that hands back the same tuple as last time (the world
        does until moto's Route 53 data changes) costs nothing more; a tuple of frozen Zones cannot have changed."""
        zones = self._zones()
        last = self._last
        if last is not None and isinstance(zones, tuple) and zones is last.zones:
            return last
        indexes = self._indexes(zones)
        by_origin: dict[_Key, list[_ZoneIndex]] = {}
        by_address: dict[str, dict[_Key, _ZoneIndex]] = {}
        for index in indexes:
            origin = _key(index.origin)
            by_origin.setdefault(origin, []).append(index)
            for address in dict.fromkeys(self._servers[h] for h in index.ns_hosts if h in self._servers):
                by_address.setdefault(address, {}).setdefault(origin, index)
        served = _Served(zones, {origin: tuple(found) for origin, found in by_origin.items()}, by_address)
        self._last = served
        return served

    def _indexes(self, zones: Sequence[Zone]) -> list[_ZoneIndex]:
        """Each zone's index: found by identity when the provider hands back the same Zone object (no hashing of
        every record), else by value, else built."""
        indexes = []
        # every zone served now stays cached, and the versions of zones since changed are dropped now and then:
        # a fixed bound below the number of zones rebuilt some index on every question (hundreds of partitions)
        limit = 2 * len(zones) + 64
        for zone in zones:
            seen = self._seen.get(id(zone))
            if seen is not None and seen[0] is zone:
                indexes.append(seen[1])
                continue
            index = self._cache.get(zone)
            if index is None:
                index = _index(zone)
                self.errors.extend(index.problems)
                if len(self._cache) > limit:
                    self._cache.clear()
                self._cache[zone] = index
            if len(self._seen) > limit:
                self._seen.clear()
            self._seen[id(zone)] = (zone, index)
            indexes.append(index)
        return indexes

    def _authoritative(self, served: _Served, address: str, qname: dns.name.Name, rdtype: _T) -> _Result:
        """What the server at address answers: the most specific zone it hosts that contains qname."""
        hosted = served.hosted(address, qname)
        if hosted is None:
            return _Result(dns.rcode.REFUSED)
        return self._from_zone(hosted, qname, rdtype)

    def _from_zone(self, index: _ZoneIndex, qname: dns.name.Name, rdtype: _T) -> _Result:
        cut = index.cut_above(qname, rdtype)
        if cut is not None:
            ns = index.nodes[cut][_T.NS]
            return _Result(
                dns.rcode.NOERROR, authority=(ns,), additional=self._glue(index, ns), soa=index.soa, referral=True
            )
        answer: list[dns.rrset.RRset] = []
        name, seen = qname, {qname}
        while True:
            node = index.nodes.get(name)
            if node is None:
                rcode = dns.rcode.NOERROR if name in index.existing else dns.rcode.NXDOMAIN
                return _Result(rcode, aa=True, answer=tuple(answer), authority=(index.soa,), soa=index.soa)
            if rdtype == _T.ANY:
                return _Result(dns.rcode.NOERROR, aa=True, answer=(*answer, *node.values()), soa=index.soa)
            if rdtype in node:
                return _Result(dns.rcode.NOERROR, aa=True, answer=(*answer, node[rdtype]), soa=index.soa)
            cname = node.get(_T.CNAME)
            if cname is None or rdtype == _T.CNAME:
                return _Result(dns.rcode.NOERROR, aa=True, answer=tuple(answer), authority=(index.soa,), soa=index.soa)
            answer.append(cname)
            target = cname[0].target
            inside = target.is_subdomain(index.origin) and index.cut_above(target, rdtype) is None
            if not inside or target in seen or len(seen) > MAX_CHAIN:
                chase = target if not inside else None
                return _Result(dns.rcode.NOERROR, aa=True, answer=tuple(answer), soa=index.soa, chase=chase)
            name = target
            seen.add(name)

    def _glue(self, index: _ZoneIndex, ns: dns.rrset.RRset) -> tuple[dns.rrset.RRset, ...]:
        """Address records for the NS hosts: from the zone's own data, else the sandbox's address map."""
        glue: list[dns.rrset.RRset] = []
        for rdata in ns:
            node = index.nodes.get(rdata.target, {}) if rdata.target.is_subdomain(index.origin) else {}
            found = [node[t] for t in (_T.A, _T.AAAA) if t in node]
            if not found and rdata.target in self._servers:
                found = [self._host_rrset(rdata.target, ns.ttl)]
            glue.extend(found)
        return tuple(glue)

    def _host_rrset(self, host: dns.name.Name, ttl: int) -> dns.rrset.RRset:
        """The address record of a sandbox NS host, made once: the same few hosts are in every referral and
        resolver answer, and an answer never alters its rrsets."""
        rrset = self._host_rrsets.get((host, ttl))
        if rrset is None:
            rrset = self._host_rrsets.setdefault((host, ttl), _address_rrset(host, ttl, self._servers[host]))
        return rrset

    def _recursive(self, served: _Served, qname: dns.name.Name, rdtype: _T) -> _Result:
        """A public resolver's answer: iterate from the top zone, follow referrals and CNAMEs across zones."""
        answer: list[dns.rrset.RRset] = []
        name, seen = qname, {qname}
        for _ in range(MAX_CHAIN):
            result = self._iterate(served, name, rdtype)
            answer.extend(result.answer)
            if result.chase is None or result.rcode != dns.rcode.NOERROR:
                return _Result(result.rcode, answer=tuple(answer), authority=result.authority, soa=result.soa)
            if result.chase in seen:
                break
            name = result.chase
            seen.add(name)
        return _Result(dns.rcode.SERVFAIL)

    def _hear(self, served: _Served, address: str, qname: dns.name.Name, rdtype: _T) -> _Result | None:
        """What the resolver hears from one authoritative address, its faults applied (delays aside); None: silence."""
        fault, _ = self._fault_for(address, qname, rdtype)
        if fault is not None and fault.kind in _SILENT:
            return None
        return self._answer(served, fault.kind if fault else None, address, qname, rdtype)

    def _iterate(self, served: _Served, qname: dns.name.Name, rdtype: _T) -> _Result:
        if qname in self._servers:
            rrset = self._host_rrset(qname, 172800)
            answer = (rrset,) if rrset.rdtype == rdtype else ()
            return _Result(dns.rcode.NOERROR, answer=answer)
        containing = served.containing(qname)
        if not containing:
            return _Result(dns.rcode.NXDOMAIN, authority=(_ROOT_SOA,), soa=_ROOT_SOA)
        hosts = [h for i in containing for h in i.ns_hosts]
        for _ in range(MAX_REFERRALS):
            addresses = dict.fromkeys(self._servers[h] for h in hosts if h in self._servers)
            heard = (self._hear(served, a, qname, rdtype) for a in addresses)
            result = next((r for r in heard if r is not None and (r.aa or r.referral)), None)
            if result is None:
                break  # every server of the delegation is silent, failing, lame or unknown
            if not result.referral:
                return result
            hosts = [rd.target for rd in result.authority[0]]
        return _Result(dns.rcode.SERVFAIL)


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _formerr(wire: bytes) -> bytes | None:
    """FORMERR for a message that does not parse, if it at least has a query header; else silence."""
    if len(wire) < 12 or wire[2] & 0x80:
        return None
    reply = dns.message.Message(id=int.from_bytes(wire[:2], "big"))
    reply.flags = dns.flags.QR
    reply.set_rcode(dns.rcode.FORMERR)
    return reply.to_wire()
