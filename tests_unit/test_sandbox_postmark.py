"""The sandbox Postmark fake, driven with httpx over loopback, verifying against a real (tiny) DNS server."""

from __future__ import annotations

import base64
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from sandbox.postmark_fake import Call, FakeApiError, PostmarkFake, PostmarkFault

TOKENS = {"PostmarkNonProd": "nonprod-token-6f1c2a", "PostmarkProd": "prod-token-0e6d9b7b"}
HEADER = "X-Postmark-Account-Token"
DELAY = 0.2
FULL_KEYS = [
    "Name",
    "SPFVerified",
    "SPFHost",
    "SPFTextValue",
    "DKIMVerified",
    "WeakDKIM",
    "DKIMHost",
    "DKIMTextValue",
    "DKIMPendingHost",
    "DKIMPendingTextValue",
    "DKIMRevokedHost",
    "DKIMRevokedTextValue",
    "SafeToRemoveRevokedKeyFromDNS",
    "DKIMUpdateStatus",
    "ReturnPathDomain",
    "ReturnPathDomainVerified",
    "ReturnPathDomainCNAMEValue",
    "ID",
]


class TinyDns:
    """An authoritative DNS server on 127.0.0.1 (UDP and TCP, one port) answering from a dict; truncates over 512."""

    def __init__(self) -> None:
        self.records: dict[tuple[dns.name.Name, int], list[dns.rdata.Rdata]] = {}
        self.queries: list[tuple[str, str, str]] = []
        self._stop = threading.Event()
        self.udp, self.tcp = _bind_pair()
        self.port = self.udp.getsockname()[1]
        self._threads = [threading.Thread(target=loop, daemon=True) for loop in (self._serve_udp, self._serve_tcp)]
        for thread in self._threads:
            thread.start()

    def txt(self, host: str, *values: str) -> None:
        rdatas = [_txt(value) for value in values]
        self.records[(dns.name.from_text(host), dns.rdatatype.TXT)] = rdatas

    def cname(self, host: str, target: str) -> None:
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.CNAME, target.rstrip(".") + ".")
        self.records[(dns.name.from_text(host), dns.rdatatype.CNAME)] = [rdata]

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self.udp.close()
        self.tcp.close()

    def _answer(self, wire: bytes, proto: str) -> bytes:
        query = dns.message.from_wire(wire)
        question = query.question[0]
        self.queries.append((proto, question.name.to_text(), dns.rdatatype.to_text(question.rdtype)))
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        rdatas = self.records.get((question.name, question.rdtype))
        if rdatas:
            rrset = response.find_rrset(response.answer, question.name, question.rdclass, question.rdtype, create=True)
            for rdata in rdatas:
                rrset.add(rdata, ttl=60)
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        try:
            return response.to_wire(max_size=512 if proto == "udp" else 65535)
        except dns.exception.TooBig:
            response.answer = []
            response.flags |= dns.flags.TC
            return response.to_wire()

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self.udp.recvfrom(4096)
            except TimeoutError:
                continue
            self.udp.sendto(self._answer(wire, "udp"), peer)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                (length,) = struct.unpack("!H", _recv_exact(conn, 2))
                answer = self._answer(_recv_exact(conn, length), "tcp")
                conn.sendall(struct.pack("!H", len(answer)) + answer)


def _bind_pair() -> tuple[socket.socket, socket.socket]:
    for _ in range(20):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(8)
        udp.settimeout(0.05)
        tcp.settimeout(0.05)
        return udp, tcp
    raise RuntimeError("no free port for both UDP and TCP on 127.0.0.1")


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


def _txt(value: str) -> dns.rdata.Rdata:
    raw = value.encode()
    strings = [raw[i : i + 255] for i in range(0, len(raw), 255)]
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, strings)


@pytest.fixture(scope="module")
def tiny_dns() -> Iterator[TinyDns]:
    """A minimal DNS server whose records the tests set, shared by the module's tests."""
    server = TinyDns()
    yield server
    server.close()


@pytest.fixture
def dns_server(tiny_dns: TinyDns) -> TinyDns:
    """`tiny_dns` with no records and no queries seen."""
    tiny_dns.records.clear()
    tiny_dns.queries.clear()
    return tiny_dns


@pytest.fixture
def fake(dns_server: TinyDns) -> Iterator[PostmarkFake]:
    """The Postmark fake, judging verification from `dns_server`'s records."""
    server = PostmarkFake(TOKENS, ("127.0.0.1", dns_server.port), verify_delay=DELAY)
    server.start()
    yield server
    server.stop()


def client(fake: PostmarkFake, account: str | None = "PostmarkNonProd", timeout: float = 5.0) -> httpx.Client:
    headers = {HEADER: TOKENS[account]} if account else {}
    return httpx.Client(base_url=fake.url, headers={"Accept": "application/json", **headers}, timeout=timeout)


def create(api: httpx.Client, name: str, return_path: str | None = None) -> dict:
    response = api.post("/domains", json={"Name": name, "ReturnPathDomain": return_path or f"pm-bounces.{name}"})
    assert response.status_code == 200, response.text
    return response.json()


def key_of(record: dict) -> str:
    return record["DKIMPendingTextValue"].split("p=", 1)[1]


def error(response: httpx.Response) -> tuple[int, int, str]:
    body = response.json()
    assert set(body) == {"ErrorCode", "Message"}, body
    return response.status_code, body["ErrorCode"], body["Message"]


# auth, listing, routing


def test_account_token_selects_the_account_and_a_bad_or_missing_token_is_401(fake: PostmarkFake) -> None:
    with client(fake) as nonprod, client(fake, "PostmarkProd") as prod, client(fake, None) as anonymous:
        created = create(nonprod, "dev.ardamails.com")
        assert nonprod.get("/domains", params={"count": 10, "offset": 0}).json()["TotalCount"] == 1
        assert prod.get("/domains", params={"count": 10, "offset": 0}).json() == {"TotalCount": 0, "Domains": []}
        assert error(prod.get(f"/domains/{created['ID']}"))[:2] == (422, 510)
        missing = anonymous.get("/domains", params={"count": 10, "offset": 0})
        wrong = anonymous.get("/domains", params={"count": 10, "offset": 0}, headers={HEADER: "not-a-token"})
    for response in (missing, wrong):
        status, code, message = error(response)
        assert (status, code) == (401, 10)
        assert message.startswith("No Account or Server API tokens were supplied in the HTTP headers.")


def test_list_requires_count_and_offset_and_caps_count_at_500(fake: PostmarkFake) -> None:
    with client(fake) as api:
        cases = {
            "count": api.get("/domains", params={"offset": 0}),
            "offset": api.get("/domains", params={"count": 10}),
            "count ": api.get("/domains", params={"count": 501, "offset": 0}),
            "count  ": api.get("/domains", params={"count": 0, "offset": 0}),
            "offset ": api.get("/domains", params={"count": 1, "offset": -1}),
        }
        assert api.get("/domains", params={"count": 500, "offset": 0}).status_code == 200
    for param, response in cases.items():
        status, code, message = error(response)
        assert (status, code) == (422, 511), response.text
        assert f"'{param.strip()}'" in message


def test_three_domains_paged_two_at_a_time(fake: PostmarkFake) -> None:
    with client(fake) as api:
        ids = [create(api, f"{p}.ardamails.com")["ID"] for p in ("dev", "stage", "demo")]
        first = api.get("/domains", params={"count": 2, "offset": 0}).json()
        second = api.get("/domains", params={"count": 2, "offset": 2}).json()
    assert len(set(ids)) == 3
    assert all(isinstance(i, int) for i in ids)
    assert first["TotalCount"] == second["TotalCount"] == 3
    assert [d["Name"] for d in first["Domains"] + second["Domains"]] == [
        "dev.ardamails.com",
        "stage.ardamails.com",
        "demo.ardamails.com",
    ]
    assert [d["ID"] for d in first["Domains"] + second["Domains"]] == ids
    assert list(first["Domains"][0]) == [
        "Name",
        "SPFVerified",
        "DKIMVerified",
        "WeakDKIM",
        "ReturnPathDomainVerified",
        "ID",
    ]


def test_paths_are_case_insensitive(fake: PostmarkFake, dns_server: TinyDns) -> None:
    with client(fake) as api:
        created = api.post(
            "/Domains/", json={"Name": "dev.ardamails.com", "ReturnPathDomain": "pm-bounces.dev.ardamails.com"}
        ).json()
        dns_server.cname("pm-bounces.dev.ardamails.com", "pm.mtasv.net")
        listed = api.get("/DOMAINS", params={"Count": 5, "Offset": 0})
        got = api.get(f"/domains/{created['ID']}/")
        dkim = api.put(f"/Domains/{created['ID']}/VerifyDkim")
        return_path = api.put(f"/DOMAINS/{created['ID']}/VERIFYRETURNPATH")
    assert listed.json()["TotalCount"] == 1
    assert got.json()["ID"] == dkim.json()["ID"] == created["ID"]
    assert (dkim.status_code, return_path.status_code) == (200, 200)
    assert ("udp", "pm-bounces.dev.ardamails.com.", "CNAME") in dns_server.queries


@pytest.mark.parametrize("status", [404, 422])
def test_unknown_domain_id_is_the_documented_422_with_error_code_510_or_404(fake: PostmarkFake, status: int) -> None:
    """422 with the overview's ErrorCode 510 "This domain was not found." by default; 404 "Entity doesn't exist"
    on request (both forms a client must read as gone)."""
    if status == 404:
        fake.not_found_status = 404
    with client(fake) as api:
        responses = [
            api.get("/domains/999999"),
            api.get("/domains/abc"),
            api.put("/domains/999999/verifyDkim"),
            api.post("/domains/999999/rotatedkim"),
        ]
        unknown_route = api.get("/servers")
    for response in responses:
        assert error(response)[:2] == (status, 510)
    assert unknown_route.status_code == 404
    assert "/domains" in unknown_route.json()["Message"]
    fake.reset()
    assert fake.not_found_status == 422


def test_post_creates_the_full_record_and_get_returns_it(fake: PostmarkFake) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    with client(fake) as api:
        created = create(api, "dev.ardamails.com")
        got = api.get(f"/domains/{created['ID']}").json()
    assert list(created) == FULL_KEYS
    assert got == created
    selector = re.fullmatch(r"(\d{14})pm\._domainkey\.dev\.ardamails\.com", created["DKIMPendingHost"])
    assert selector, created["DKIMPendingHost"]
    issued = datetime.strptime(selector.group(1), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    assert before <= issued <= datetime.now(UTC)
    assert created["DKIMPendingTextValue"].startswith("k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQ")
    assert len(created["DKIMPendingTextValue"].encode()) <= 255, "a 1024-bit key fits one TXT string"
    public_key = load_der_public_key(base64.b64decode(key_of(created)))
    assert isinstance(public_key, rsa.RSAPublicKey)
    assert public_key.key_size == 1024
    assert created | {"DKIMPendingHost": "", "DKIMPendingTextValue": "", "ID": 0} == {
        "Name": "dev.ardamails.com",
        "SPFVerified": True,
        "SPFHost": "dev.ardamails.com",
        "SPFTextValue": "v=spf1 a mx include:spf.mtasv.net ~all",
        "DKIMVerified": False,
        "WeakDKIM": False,
        "DKIMHost": "",
        "DKIMTextValue": "",
        "DKIMPendingHost": "",
        "DKIMPendingTextValue": "",
        "DKIMRevokedHost": "",
        "DKIMRevokedTextValue": "",
        "SafeToRemoveRevokedKeyFromDNS": False,
        "DKIMUpdateStatus": "Pending",
        "ReturnPathDomain": "pm-bounces.dev.ardamails.com",
        "ReturnPathDomainVerified": False,
        "ReturnPathDomainCNAMEValue": "pm.mtasv.net",
        "ID": 0,
    }


def test_post_rejects_duplicates_missing_or_bad_names_and_invalid_json(fake: PostmarkFake) -> None:
    with client(fake) as api, client(fake, "PostmarkProd") as prod:
        first = create(api, "dev.ardamails.com")
        duplicate = api.post("/domains", json={"Name": "DEV.ardamails.com"})
        other_account = prod.post("/domains", json={"Name": "dev.ardamails.com"})
        missing = api.post("/domains", json={"ReturnPathDomain": "pm-bounces.x.com"})
        bad = api.post("/domains", json={"Name": "not a domain"})
        long_name = api.post("/domains", json={"Name": ("a" * 60 + ".") * 5 + "com"})
        broken = api.post("/domains", content=b"{not json", headers={"Content-Type": "application/json"})
    assert error(duplicate)[:2] == (422, 512)
    assert other_account.status_code == 200
    assert other_account.json()["ID"] != first["ID"]
    assert error(missing)[:2] == (422, 514)
    assert error(bad)[:2] == (422, 516)
    assert error(long_name)[:2] == (422, 515)
    assert error(broken)[:2] == (422, 402)


# asynchronous verification against DNS


def test_dkim_verifies_only_after_the_delay_when_dns_serves_the_key(fake: PostmarkFake, dns_server: TinyDns) -> None:
    with client(fake) as api:
        created = create(api, "dev.ardamails.com")
        host, value = created["DKIMPendingHost"], created["DKIMPendingTextValue"]
        dns_server.txt(host, "v=DKIM1; k=rsa; p=" + key_of(created))
        started = time.monotonic()
        first = api.put(f"/domains/{created['ID']}/verifyDkim").json()
        right_after = api.get(f"/domains/{created['ID']}").json()
        assert time.monotonic() - started < DELAY, "the machine is too slow for this timing test"
        time.sleep(DELAY + 0.05)
        later = api.get(f"/domains/{created['ID']}").json()
        listed = api.get("/domains", params={"count": 1, "offset": 0}).json()["Domains"][0]
    assert (first["DKIMVerified"], first["DKIMUpdateStatus"]) == (False, "Pending")
    assert right_after["DKIMVerified"] is False
    assert ("udp", host + ".", "TXT") in dns_server.queries
    assert later["DKIMVerified"] is True
    assert later["DKIMUpdateStatus"] == "Verified"
    assert (later["DKIMHost"], later["DKIMTextValue"]) == (host, value)
    assert (later["DKIMPendingHost"], later["DKIMPendingTextValue"]) == ("", "")
    assert listed["DKIMVerified"] is True


def _verified(api: httpx.Client, dns_server: TinyDns, name: str = "dev.ardamails.com") -> dict:
    created = create(api, name)
    dns_server.txt(created["DKIMPendingHost"], created["DKIMPendingTextValue"])
    api.put(f"/domains/{created['ID']}/verifyDkim")
    time.sleep(DELAY + 0.05)
    verified = api.get(f"/domains/{created['ID']}").json()
    assert verified["DKIMVerified"] is True, verified
    return verified


def test_dkim_verified_is_sticky_after_the_key_leaves_dns(fake: PostmarkFake, dns_server: TinyDns) -> None:
    """The Domains API: DKIMVerified "will stay true, even if the record is later removed from DNS"."""
    with client(fake) as api:
        verified = _verified(api, dns_server)
        dns_server.records.clear()
        again = api.put(f"/domains/{verified['ID']}/verifyDkim").json()
        listed = api.get("/domains", params={"count": 1, "offset": 0}).json()["Domains"][0]
    assert (again["DKIMVerified"], again["DKIMHost"], again["DKIMUpdateStatus"]) == (
        True,
        verified["DKIMHost"],
        "Verified",
    )
    assert listed["DKIMVerified"] is True


def test_rotation_pends_until_dns_serves_the_new_key_then_revokes_the_old_one(
    fake: PostmarkFake, dns_server: TinyDns
) -> None:
    with client(fake) as api:
        old = _verified(api, dns_server)
        rotated = api.post(f"/domains/{old['ID']}/rotateDKIM")
        pending = rotated.json()
        twice = api.post(f"/domains/{old['ID']}/rotatedkim")
        api.put(f"/domains/{old['ID']}/verifyDkim")  # the new key is not in DNS yet: nothing happens
        time.sleep(DELAY + 0.05)
        still = api.get(f"/domains/{old['ID']}").json()
        dns_server.txt(pending["DKIMPendingHost"], pending["DKIMPendingTextValue"])
        api.put(f"/domains/{old['ID']}/verifyDkim")
        time.sleep(DELAY + 0.05)
        done = api.get(f"/domains/{old['ID']}").json()
        fake.revoke_grace = 0.0  # the grace (default 600 s) runs from the confirmation: it has passed now
        safe = api.get(f"/domains/{old['ID']}").json()
    assert rotated.status_code == 200
    assert pending["DKIMUpdateStatus"] == "Pending"
    assert pending["DKIMVerified"] is True, "a rotation does not unverify the domain"
    assert (pending["DKIMHost"], pending["DKIMTextValue"]) == (old["DKIMHost"], old["DKIMTextValue"])
    assert re.fullmatch(r"\d{14}pm\._domainkey\.dev\.ardamails\.com", pending["DKIMPendingHost"])
    assert pending["DKIMPendingHost"] != old["DKIMHost"]
    assert pending["DKIMPendingTextValue"] not in ("", old["DKIMTextValue"])
    assert error(twice) == (422, 505, "This DKIM is already being renewed.")
    assert still == pending
    assert (done["DKIMHost"], done["DKIMTextValue"]) == (pending["DKIMPendingHost"], pending["DKIMPendingTextValue"])
    assert (done["DKIMPendingHost"], done["DKIMPendingTextValue"], done["DKIMUpdateStatus"]) == ("", "", "Verified")
    assert (done["DKIMRevokedHost"], done["DKIMRevokedTextValue"]) == (old["DKIMHost"], old["DKIMTextValue"])
    assert done["SafeToRemoveRevokedKeyFromDNS"] is False
    assert safe["SafeToRemoveRevokedKeyFromDNS"] is True
    assert safe["WeakDKIM"] is False


def test_a_new_domain_cannot_rotate_its_first_key(fake: PostmarkFake) -> None:
    """postmark-gem's integration spec: rotate_domain_dkim on a new domain is 422 "This DKIM is already being
    renewed."; the Python control answers the same."""
    with client(fake) as api:
        created = create(api, "dev.ardamails.com")
        answer = api.post(f"/domains/{created['ID']}/rotatedkim")
        put = api.put(f"/domains/{created['ID']}/rotatedkim")
    assert error(answer) == (422, 505, "This DKIM is already being renewed.")
    assert put.status_code == 404, "rotatedkim is a POST"
    with pytest.raises(FakeApiError, match="ErrorCode 505"):
        fake.rotate("PostmarkNonProd", "dev.ardamails.com")


def test_keys_are_1024_bit_unless_asked_and_weak_dkim_follows_the_current_key(dns_server: TinyDns) -> None:
    server = PostmarkFake(TOKENS, ("127.0.0.1", dns_server.port), verify_delay=DELAY, key_bits=2048)
    server.start()
    try:
        created = server.create_domain("PostmarkNonProd", "dev.ardamails.com")
    finally:
        server.stop()
    key = load_der_public_key(base64.b64decode(key_of(created)))
    assert isinstance(key, rsa.RSAPublicKey)
    assert key.key_size == 2048
    assert len(created["DKIMPendingTextValue"].encode()) > 255, "a 2048-bit key needs several TXT strings"
    assert created["WeakDKIM"] is False


def test_senders_list_sender_signatures_of_the_account_paged(fake: PostmarkFake) -> None:
    first = fake.create_sender("PostmarkNonProd", "mail@dev.ardamails.com", "Dev mail")
    fake.create_sender("PostmarkNonProd", "ops@stage.ardamails.com", confirmed=False)
    fake.create_sender("PostmarkProd", "mail@prod.ardamails.com")
    with client(fake) as api:
        page = api.get("/senders", params={"count": 1, "offset": 0}).json()
        rest = api.get("/senders", params={"count": 500, "offset": 1}).json()
        missing = api.get("/senders", params={"count": 1})
        domains = api.get("/domains", params={"count": 10, "offset": 0}).json()
    assert page == {
        "TotalCount": 2,
        "SenderSignatures": [
            {
                "Domain": "dev.ardamails.com",
                "EmailAddress": "mail@dev.ardamails.com",
                "ReplyToEmailAddress": "",
                "Name": "Dev mail",
                "Confirmed": True,
                "ID": first["ID"],
            }
        ],
    }
    assert [(s["EmailAddress"], s["Confirmed"]) for s in rest["SenderSignatures"]] == [
        ("ops@stage.ardamails.com", False)
    ]
    assert error(missing)[:2] == (422, 511)
    assert domains == {"TotalCount": 0, "Domains": []}, "a Sender Signature is not a Domain"
    fake.reset()
    with client(fake) as api:
        assert api.get("/senders", params={"count": 1, "offset": 0}).json()["TotalCount"] == 0


@pytest.mark.parametrize("published", ["other key", "nothing", "revoked"])
def test_dkim_never_verifies_without_the_right_key_in_dns(
    fake: PostmarkFake, dns_server: TinyDns, published: str
) -> None:
    with client(fake) as api:
        created = create(api, "dev.ardamails.com")
        other = create(api, "stage.ardamails.com")
        if published == "other key":
            dns_server.txt(created["DKIMPendingHost"], other["DKIMPendingTextValue"])
        elif published == "revoked":
            dns_server.txt(created["DKIMPendingHost"], "k=rsa; p=")
        api.put(f"/domains/{created['ID']}/verifyDkim")
        time.sleep(DELAY + 0.05)
        again = api.put(f"/domains/{created['ID']}/verifyDkim").json()
    assert (again["DKIMVerified"], again["DKIMHost"]) == (False, "")
    assert [q for q in dns_server.queries if q[2] == "TXT"] == [("udp", created["DKIMPendingHost"] + ".", "TXT")] * 2


def test_a_stuck_domain_never_verifies(fake: PostmarkFake, dns_server: TinyDns) -> None:
    with client(fake) as api:
        created = create(api, "dev.ardamails.com")
        dns_server.txt(created["DKIMPendingHost"], created["DKIMPendingTextValue"])
        dns_server.cname(created["ReturnPathDomain"], "pm.mtasv.net")
        fake.stuck("PostmarkNonProd", "dev.ardamails.com")
        api.put(f"/domains/{created['ID']}/verifyDkim")
        time.sleep(DELAY + 0.05)
        dkim = api.put(f"/domains/{created['ID']}/verifyDkim").json()
        return_path = api.put(f"/domains/{created['ID']}/verifyReturnPath").json()
        fake.stuck("PostmarkNonProd", "dev.ardamails.com", stuck=False)
        unstuck = api.put(f"/domains/{created['ID']}/verifyReturnPath").json()
    assert dkim["DKIMVerified"] is False
    assert return_path["ReturnPathDomainVerified"] is False
    assert unstuck["ReturnPathDomainVerified"] is True


def test_a_key_too_long_for_udp_is_read_over_tcp(fake: PostmarkFake, dns_server: TinyDns) -> None:
    with client(fake) as api:
        created = create(api, "dev.ardamails.com")
        decoy = create(api, "stage.ardamails.com")
        dns_server.txt(created["DKIMPendingHost"], decoy["DKIMPendingTextValue"], created["DKIMPendingTextValue"])
        api.put(f"/domains/{created['ID']}/verifyDkim")
        time.sleep(DELAY + 0.05)
        verified = api.get(f"/domains/{created['ID']}").json()
    assert ("tcp", created["DKIMPendingHost"] + ".", "TXT") in dns_server.queries
    assert verified["DKIMVerified"] is True


@pytest.mark.parametrize(
    ("cname", "verified"), [("pm.mtasv.net", True), ("PM.MTASV.NET.", True), ("x.mtasv.net", False)]
)
def test_verify_return_path_checks_the_cname(
    fake: PostmarkFake, dns_server: TinyDns, cname: str, verified: bool
) -> None:
    with client(fake) as api:
        created = create(api, "dev.ardamails.com")
        absent = api.put(f"/domains/{created['ID']}/verifyReturnPath").json()
        dns_server.cname("pm-bounces.dev.ardamails.com", cname)
        first = api.put(f"/domains/{created['ID']}/verifyReturnPath").json()
    assert absent["ReturnPathDomainVerified"] is False
    assert first["ReturnPathDomainVerified"] is verified
    assert list(first) == FULL_KEYS


def test_an_unreachable_dns_leaves_the_domain_unverified(dns_server: TinyDns) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    fake = PostmarkFake(TOKENS, ("127.0.0.1", dead_port), verify_delay=0.0)
    fake.dns_timeout = 0.2
    fake.start()
    try:
        with client(fake) as api:
            created = create(api, "dev.ardamails.com")
            answer = api.put(f"/domains/{created['ID']}/verifyDkim")
    finally:
        fake.stop()
    assert answer.status_code == 200
    assert answer.json()["DKIMVerified"] is False


# faults


@pytest.mark.parametrize(("status", "error_code"), [(401, 10), (429, 429), (500, 0), (502, 0), (503, 100), (504, 0)])
def test_json_faults_answer_postmark_errors(fake: PostmarkFake, status: int, error_code: int) -> None:
    fake.inject(PostmarkFault(status=status, count=1))
    with client(fake) as api:
        faulted = api.get("/domains", params={"count": 1, "offset": 0})
        after = api.get("/domains", params={"count": 1, "offset": 0})
    assert error(faulted)[:2] == (status, error_code)
    assert faulted.headers["content-type"].startswith("application/json")
    assert "retry-after" not in faulted.headers
    assert after.status_code == 200
    assert [(c.status, c.account) for c in fake.calls] == [(status, "PostmarkNonProd"), (200, "PostmarkNonProd")]


def test_429_sends_retry_after_and_the_first_matching_fault_wins(fake: PostmarkFake) -> None:
    fake.inject(PostmarkFault(status=429, retry_after=2))
    fake.inject(PostmarkFault(status=500))
    with client(fake) as api:
        response = api.get("/domains", params={"count": 1, "offset": 0})
    assert error(response)[:2] == (429, 429)
    assert response.headers["retry-after"] == "2"


def test_retry_after_fraction_and_path_method_filters(fake: PostmarkFake) -> None:
    fake.inject(PostmarkFault(status=429, retry_after=0.25, path=r"/verifydkim$", method="put"))
    with client(fake) as api:
        created = create(api, "dev.ardamails.com")
        listed = api.get("/domains", params={"count": 1, "offset": 0})
        dkim = api.put(f"/Domains/{created['ID']}/VerifyDKIM")
        return_path = api.put(f"/domains/{created['ID']}/verifyReturnPath")
    assert (listed.status_code, return_path.status_code) == (200, 200)
    assert (dkim.status_code, dkim.headers["retry-after"]) == (429, "0.25")


def test_a_proxy_403_is_html_not_json(fake: PostmarkFake) -> None:
    fake.inject(PostmarkFault(status=403))
    with client(fake) as api:
        response = api.get("/domains", params={"count": 1, "offset": 0})
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert response.text == "<html>Forbidden</html>"
    with pytest.raises(ValueError, match="Expecting value"):
        response.json()


def test_malformed_json_comes_with_200(fake: PostmarkFake) -> None:
    fake.inject(PostmarkFault(status=-1, count=1))
    with client(fake) as api:
        response = api.get("/domains", params={"count": 1, "offset": 0})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    with pytest.raises(ValueError, match=r"Unterminated string|Expecting"):
        response.json()


def test_a_hang_ends_in_a_client_timeout_and_the_next_request_works(fake: PostmarkFake) -> None:
    fake.inject(PostmarkFault(status=0, count=1))
    with client(fake, timeout=0.3) as api:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            api.get("/domains", params={"count": 1, "offset": 0})
        waited = time.monotonic() - started
        after = api.get("/domains", params={"count": 1, "offset": 0})
    assert 0.3 <= waited < 1.0
    assert after.status_code == 200
    assert [c.status for c in fake.calls] == [0, 200]


def test_every_third_matching_request_fails_and_count_limits_it(fake: PostmarkFake) -> None:
    fake.inject(PostmarkFault(status=503, every=3, path=r"^/domains$"))
    with client(fake) as api:
        statuses = [api.get("/domains", params={"count": 1, "offset": 0}).status_code for _ in range(9)]
        unmatched = api.get("/domains/1").status_code
        fake.clear_faults()
        fake.inject(PostmarkFault(status=500, every=2, count=2))
        limited = [api.get("/domains", params={"count": 1, "offset": 0}).status_code for _ in range(8)]
    assert statuses == [200, 200, 503] * 3
    assert unmatched == 422, "the fault's path does not match /domains/1: the unknown ID's own answer, not 503"
    assert limited == [200, 500, 200, 500, 200, 200, 200, 200]


def test_delay_and_latency_slow_the_answer(fake: PostmarkFake) -> None:
    fake.inject(PostmarkFault(status=500, delay=0.2, count=1))
    with client(fake) as api:
        delayed = api.get("/domains", params={"count": 1, "offset": 0})
        fake.latency = 0.15
        slow = api.get("/domains", params={"count": 1, "offset": 0})
        fake.latency = 0.0
        quick = api.get("/domains", params={"count": 1, "offset": 0})
    assert delayed.status_code == 500
    assert delayed.elapsed.total_seconds() >= 0.2
    assert slow.status_code == 200
    assert slow.elapsed.total_seconds() >= 0.15
    assert quick.elapsed.total_seconds() < 0.15


def test_fault_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="status 418 unsupported"):
        PostmarkFault(status=418)
    with pytest.raises(ValueError, match="every must be >= 1"):
        PostmarkFault(status=500, every=0)
    with pytest.raises(ValueError, match="count must be >= 1"):
        PostmarkFault(status=500, count=0)


# the record of calls, the Python controls, the lifecycle


def test_calls_record_account_names_never_tokens(fake: PostmarkFake, capfd: pytest.CaptureFixture[str]) -> None:
    with client(fake) as api, client(fake, None) as anonymous:
        created = create(api, "dev.ardamails.com")
        api.get("/domains", params={"count": 1, "offset": 0})
        api.put(f"/domains/{created['ID']}/verifyDkim")
        anonymous.get("/domains", params={"count": 1, "offset": 0}, headers={HEADER: "wrong-token"})
    calls = list(fake.calls)
    assert [(c.method, c.path, c.account, c.status) for c in calls] == [
        ("POST", "/domains", "PostmarkNonProd", 200),
        ("GET", "/domains", "PostmarkNonProd", 200),
        ("PUT", f"/domains/{created['ID']}/verifyDkim", "PostmarkNonProd", 200),
        ("GET", "/domains", None, 401),
    ]
    assert calls[1].query == "count=1&offset=0"
    assert all(isinstance(c, Call) and c.at > 0 and c.elapsed >= 0 for c in calls)
    assert [c.method for c in fake.writes()] == ["POST", "PUT"]
    out, err = capfd.readouterr()
    evidence = repr(calls) + repr(fake) + out + err
    for token in TOKENS.values():
        assert token not in evidence
    assert "PostmarkNonProd" in repr(fake)


def test_python_controls_create_read_force_and_reset(fake: PostmarkFake) -> None:
    created = fake.create_domain("PostmarkProd", "prod.ardamails.com", "pm-bounces.prod.ardamails.com")
    assert fake.domain("PostmarkProd", "PROD.ardamails.com.") == created
    assert fake.domain("PostmarkNonProd", "prod.ardamails.com") is None
    with pytest.raises(FakeApiError, match="ErrorCode 512"):
        fake.create_domain("PostmarkProd", "prod.ardamails.com")
    fake.set_domain("PostmarkProd", "prod.ardamails.com", DKIMVerified=True, ReturnPathDomainVerified=True)
    with client(fake, "PostmarkProd") as api:
        got = api.get(f"/domains/{created['ID']}").json()
    assert (got["DKIMVerified"], got["ReturnPathDomainVerified"]) == (True, True)
    with pytest.raises(ValueError, match=r"unknown or fixed field\(s\) \['DKIMVerifed'\]"):
        fake.set_domain("PostmarkProd", "prod.ardamails.com", DKIMVerifed=True)
    with pytest.raises(ValueError, match="unknown Postmark account 'Nope'; known: PostmarkNonProd, PostmarkProd"):
        fake.domain("Nope", "prod.ardamails.com")
    with pytest.raises(ValueError, match=r"no domain 'dev.ardamails.com' .*it has: \['prod.ardamails.com'\]"):
        fake.stuck("PostmarkProd", "dev.ardamails.com")
    fake.inject(PostmarkFault(status=500))
    fake.reset()
    assert fake.calls == []
    assert fake.domain("PostmarkProd", "prod.ardamails.com") is None
    again = fake.create_domain("PostmarkProd", "prod.ardamails.com")
    assert again["ID"] != created["ID"]
    with client(fake, "PostmarkProd") as api:
        assert api.get(f"/domains/{again['ID']}").status_code == 200


def test_accounts_need_distinct_tokens_and_the_error_does_not_show_them() -> None:
    with pytest.raises(ValueError, match="each needs its own non-empty token") as raised:
        PostmarkFake({"A": "same-secret", "B": "same-secret"}, ("127.0.0.1", 53))
    assert "same-secret" not in str(raised.value)


def test_start_and_stop_are_fast_idempotent_and_leave_no_thread(dns_server: TinyDns) -> None:
    threads_before = set(threading.enumerate())
    fake = PostmarkFake(TOKENS, ("127.0.0.1", dns_server.port))
    with pytest.raises(RuntimeError, match="call start"):
        _ = fake.url
    started = time.monotonic()
    fake.start()
    fake.start()
    first_url = fake.url
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", first_url)
    fake.inject(PostmarkFault(status=0, path="verify"))
    hung: list[BaseException] = []

    def hang() -> None:
        with client(fake, timeout=30) as api:
            try:
                api.put("/domains/1/verifyDkim")
            except httpx.HTTPError as exc:
                hung.append(exc)

    with client(fake) as api:
        assert api.get("/domains", params={"count": 1, "offset": 0}).status_code == 200
        hanging = threading.Thread(target=hang)
        hanging.start()
        while len(fake.calls) < 2:
            time.sleep(0.01)
        fake.stop()
    fake.stop()
    hanging.join(timeout=2)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0
    assert len(hung) == 1
    assert isinstance(hung[0], httpx.RemoteProtocolError | httpx.ReadError)
    assert set(threading.enumerate()) == threads_before
    fake.start()
    try:
        with client(fake) as api:
            assert api.get("/domains", params={"count": 1, "offset": 0}).status_code == 200
    finally:
        fake.stop()
    assert set(threading.enumerate()) == threads_before
