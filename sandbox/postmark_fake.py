"""A local Postmark Domains API: the subset mailgate uses, on 127.0.0.1, judged from the sandbox DNS.

Faithful to https://postmarkapp.com/developer/api/domains-api: account endpoints need the header
`X-Postmark-Account-Token`; `GET /domains?count=&offset=` (both required, count at most 500),
`POST /domains`, `GET /domains/{id}`, `PUT /domains/{id}/verifyDkim`, `PUT /domains/{id}/verifyReturnPath`,
`POST /domains/{id}/rotatedkim`; and `GET /senders?count=&offset=` of the Sender Signatures API
(https://postmarkapp.com/developer/api/signatures-api). Paths are case-insensitive; errors are
`{"ErrorCode": int, "Message": str}` with the codes of https://postmarkapp.com/developer/api/overview#error-codes
(10 bad token, 505 DKIM already being renewed, 510 domain not found, 512 domain exists, 514-516 bad name).
DKIM verification is asynchronous: `verifyDkim` looks the key up in DNS and, when DNS serves it, the domain
turns verified `verify_delay` seconds later (seen by the next call or GET). Tokens are never logged or recorded.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rdatatype
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

RETURN_PATH_TARGET = "pm.mtasv.net"
SPF_TEXT_VALUE = "v=spf1 a mx include:spf.mtasv.net ~all"
TOKEN_HEADER = "X-Postmark-Account-Token"
MAX_COUNT = 500
# Postmark issues 1024-bit RSA keys: the Domains API page and support article 1113 show
# `p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQ...`, the DER prefix of a 1024-bit SubjectPublicKeyInfo, and the blog post
# "Upgrading and Rotating DKIM Keys" says new signatures get 1024-bit keys (its first keys were 768-bit).
KEY_BITS = 1024
WEAK_BITS = 1024  # Domains API, WeakDKIM: "DKIM is using a strength weaker than 1024 bit"
MAX_BODY = 1_000_000
DNS_TIMEOUT = 1.0
HANG_LIMIT = 120.0
FAULT_STATUSES = frozenset({0, -1, 401, 403, 429, 500, 502, 503, 504})

_NO_TOKEN = (
    "No Account or Server API tokens were supplied in the HTTP headers. "
    "Please add a header for either X-Postmark-Server-Token or X-Postmark-Account-Token."
)
_NAME_RE = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$")
_FULL_FIELDS = (
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
)
_LIST_FIELDS = ("Name", "SPFVerified", "DKIMVerified", "WeakDKIM", "ReturnPathDomainVerified", "ID")
# GET /senders list items, as postmark.js src/client/models/senders/Signature.ts (`Signature`) and postmark-python
# postmark/models/signatures/schemas.py (`SenderSignatureListItem`) read them
_SENDER_FIELDS = ("Domain", "EmailAddress", "ReplyToEmailAddress", "Name", "Confirmed", "ID")


class FakeApiError(Exception):
    """A Postmark API error: HTTP status plus Postmark's ErrorCode and Message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(f"HTTP {status}, ErrorCode {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class PostmarkFault:
    """A failure to inject: which requests it hits and how the server answers them.

    status: 401, 429, 500, 502, 503, 504 (JSON error), 403 (non-JSON "<html>Forbidden</html>" as from a proxy),
    0 (hang until the client gives up), -1 (HTTP 200 with a malformed JSON body).
    path: regex searched in the lower-cased request path (None: every path); method: None for any.
    count: the next N matching requests (None: always); every: only every k-th matching request.
    retry_after: seconds sent as Retry-After (429); delay: seconds to wait before answering.
    """

    status: int
    path: str | None = None
    method: str | None = None
    count: int | None = None
    every: int | None = None
    retry_after: float | None = None
    delay: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in FAULT_STATUSES:
            raise ValueError(f"PostmarkFault.status {self.status} unsupported; use one of {sorted(FAULT_STATUSES)}")
        if self.count is not None and self.count < 1:
            raise ValueError(f"PostmarkFault.count must be >= 1 or None, got {self.count}")
        if self.every is not None and self.every < 1:
            raise ValueError(f"PostmarkFault.every must be >= 1 or None, got {self.every}")
        if self.path is not None:
            re.compile(self.path)


@dataclass(frozen=True)
class Call:
    """One request as the server saw it: the account is the name the token belongs to, never the token."""

    method: str
    path: str
    query: str
    account: str | None
    status: int
    at: float
    elapsed: float


@dataclass
class _ArmedFault:
    fault: PostmarkFault
    pattern: re.Pattern[str] | None
    seen: int = 0
    fired: int = 0


@dataclass
class _Domain:
    account: str
    record: dict[str, Any]
    stuck: bool = False  # DKIM never verifies
    stuck_return_path: bool = False
    verify_at: float | None = None
    revoked_at: float | None = None  # when the revoked key was revoked, until it is safe to remove from DNS


class PostmarkFake:
    """The Postmark Domains API for some accounts, verifying against a DNS server at `dns` (address, port)."""

    def __init__(
        self,
        accounts: Mapping[str, str],
        dns: tuple[str, int],
        verify_delay: float = 1.0,
        *,
        revoke_grace: float = 600.0,
        key_bits: int = KEY_BITS,
    ) -> None:
        """`revoke_grace`: seconds from a rotation's end until its revoked key is safe to remove from DNS, longer than
        a run (Postmark's support article 1305 says to wait "a few days", for mail signed with the old key to
        arrive); `confirm_dkim(safe=True)` ends it at once. `key_bits`: the size of the RSA keys it issues."""
        tokens = list(accounts.values())
        if len(set(tokens)) != len(tokens) or not all(tokens):
            raise ValueError(f"accounts {sorted(accounts)}: each needs its own non-empty token")
        self._tokens = dict(accounts)
        self._dns = dns
        self.verify_delay = verify_delay
        self.revoke_grace = revoke_grace
        self.key_bits = key_bits
        # an unknown domain ID: 422 with ErrorCode 510 "This domain was not found." (API overview, its API error
        # codes, which 422 answers carry; support article "Troubleshooting 422 Unprocessable Entity Errors": a 404
        # means the endpoint does not exist). Set 404 to serve the "Entity doesn't exist" form a client must also
        # read as gone (the overview's HTTP response codes).
        self.not_found_status = 422
        self.latency = 0.0
        self.dns_timeout = DNS_TIMEOUT
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._domains: dict[int, _Domain] = {}
        self._senders: list[tuple[str, dict[str, Any]]] = []
        self._faults: list[_ArmedFault] = []
        self._ids = itertools.count(36737)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def __repr__(self) -> str:
        where = self.url if self._server else "stopped"
        return f"PostmarkFake({where}, accounts={sorted(self._tokens)})"

    # lifecycle

    def start(self) -> None:
        """Listen on a free port of 127.0.0.1 and serve in a thread (no-op when already serving)."""
        if self._server is not None:
            return
        self._stopping.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, name="postmark-fake", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, end every open connection and join every thread (no-op when stopped)."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join()
        self._server = self._thread = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("PostmarkFake is not serving; call start() first")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # scenario controls

    def create_domain(self, account: str, name: str, return_path_domain: str | None = None) -> dict[str, Any]:
        """Create a domain as `POST /domains` does; raises FakeApiError as the API would answer."""
        self._known_account(account)
        return self._create(account, {"Name": name, "ReturnPathDomain": return_path_domain})

    def domain(self, account: str, name: str) -> dict[str, Any] | None:
        """The full record of `name` in `account` (as `GET /domains/{id}` answers it), or None."""
        self._known_account(account)
        with self._lock:
            found = self._by_name(account, name)
            return self._full(found) if found else None

    def set_domain(self, account: str, name: str, **fields: Any) -> None:
        """Force fields of a domain's record (e.g. DKIMVerified=True); cancels a pending DKIM verification."""
        unknown = sorted(set(fields) - set(_FULL_FIELDS[:-1]))
        if unknown:
            raise ValueError(f"set_domain: unknown or fixed field(s) {unknown}; known: {', '.join(_FULL_FIELDS[:-1])}")
        with self._lock:
            found = self._require(account, name)
            found.record.update(fields)
            if any(key.startswith("DKIM") for key in fields):
                found.verify_at = None
            if "SafeToRemoveRevokedKeyFromDNS" in fields or "DKIMRevokedHost" in fields:
                found.revoked_at = None

    def create_sender(self, account: str, email: str, name: str = "Mail", *, confirmed: bool = True) -> dict[str, Any]:
        """Add a Sender Signature (an address, not a Domain: the two are separate collections of the account)."""
        self._known_account(account)
        with self._lock:
            record = {
                "Domain": email.rsplit("@", 1)[-1],
                "EmailAddress": email,
                "ReplyToEmailAddress": "",
                "Name": name,
                "Confirmed": confirmed,
                "ID": next(self._ids),
            }
            self._senders.append((account, record))
            return dict(record)

    def rotate(self, account: str, name: str) -> dict[str, Any]:
        """Rotate a domain's DKIM key as `POST /domains/{id}/rotatedkim` does; raises FakeApiError as the API would."""
        with self._lock:
            found = self._require(account, name)
            return self._rotate_record(found)

    def stuck(self, account: str, name: str, stuck: bool = True, *, dkim: bool = True) -> None:
        """A stuck domain never verifies, whatever DNS serves: the Return-Path, and DKIM unless `dkim` is false."""
        with self._lock:
            found = self._require(account, name)
            found.stuck = stuck and dkim
            found.stuck_return_path = stuck
            if found.stuck:
                found.verify_at = None

    def confirm_dkim(self, account: str, name: str, *, safe: bool = False) -> dict[str, Any]:
        """`PUT verifyDkim` (the key is looked up in DNS), then let time pass: the verification completes now if DNS
        served the key; with `safe`, a revoked key's grace ends too. Returns the record."""
        with self._lock:
            domain_id = str(self._require(account, name).record["ID"])
        self._verify_dkim(account, domain_id)
        with self._lock:
            found = self._by_id(account, domain_id)
            if found.verify_at is not None:
                found.verify_at = time.monotonic()
            self._settle(found)
            if safe and found.revoked_at is not None:
                found.revoked_at = -self.revoke_grace
            return self._full(found)

    def delete_domain(self, account: str, name: str) -> None:
        """Remove a domain, as `DELETE /domains/{id}` does (its Sender Signatures, if any, stay)."""
        with self._lock:
            found = self._require(account, name)
            del self._domains[found.record["ID"]]

    def inject(self, fault: PostmarkFault) -> None:
        with self._lock:
            pattern = re.compile(fault.path) if fault.path is not None else None
            self._faults.append(_ArmedFault(fault, pattern))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def writes(self) -> list[Call]:
        """The calls that were not GETs (creates and verifications)."""
        with self._lock:
            return [call for call in self.calls if call.method != "GET"]

    def reset(self) -> None:
        """Forget domains, senders, calls and faults (IDs stay unique for the server's life)."""
        with self._lock:
            self._domains.clear()
            self._senders.clear()
            self._faults.clear()
            self.calls.clear()
        self.not_found_status = 422

    # the API

    def _api(self, action: str, account: str, body: Any, query: Mapping[str, list[str]], domain_id: str) -> Any:
        match action:
            case "list":
                return self._list(account, query)
            case "create":
                return self._create(account, body)
            case "get":
                return self._get(account, domain_id)
            case "verify_dkim":
                return self._verify_dkim(account, domain_id)
            case "rotate_dkim":
                with self._lock:
                    return self._rotate_record(self._by_id(account, domain_id))
            case "senders":
                return self._list_senders(account, query)
            case _:
                return self._verify_return_path(account, domain_id)

    def _list(self, account: str, query: Mapping[str, list[str]]) -> dict[str, Any]:
        count = _int_param(query, "count", 1, MAX_COUNT)
        offset = _int_param(query, "offset", 0, None)
        with self._lock:
            mine = [d for _, d in sorted(self._domains.items()) if d.account == account]
            for found in mine:
                self._settle(found)
            page = [{key: found.record[key] for key in _LIST_FIELDS} for found in mine[offset : offset + count]]
        return {"TotalCount": len(mine), "Domains": page}

    def _list_senders(self, account: str, query: Mapping[str, list[str]]) -> dict[str, Any]:
        # count and offset are required and count is at most 500, as for GET /domains (Sender Signatures API page)
        count = _int_param(query, "count", 1, MAX_COUNT)
        offset = _int_param(query, "offset", 0, None)
        with self._lock:
            mine = [record for owner, record in self._senders if owner == account]
            page = [{key: record[key] for key in _SENDER_FIELDS} for record in mine[offset : offset + count]]
        return {"TotalCount": len(mine), "SenderSignatures": page}

    def _create(self, account: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise FakeApiError(422, 403, "Incompatible JSON: expected an object with Name and ReturnPathDomain.")
        name = body.get("Name")
        if not isinstance(name, str) or not name.strip():
            raise FakeApiError(422, 514, "Name is a required field to create a Domain.")
        if len(name) > 255:
            raise FakeApiError(422, 515, "Name field must be less than or equal to 255 characters.")
        if not _NAME_RE.match(name):
            raise FakeApiError(422, 516, "Name format is invalid.")
        return_path = body.get("ReturnPathDomain") or ""
        if not isinstance(return_path, str):
            raise FakeApiError(422, 511, "Invalid fields supplied: ReturnPathDomain must be a string.")
        key = _new_public_key(self.key_bits)
        selector = _selector(datetime.now(UTC))
        with self._lock:
            if self._by_name(account, name) is not None:
                raise FakeApiError(422, 512, "Domain already exists.")
            domain_id = next(self._ids)
            record = {
                "Name": name,
                "SPFVerified": True,
                "SPFHost": name,
                "SPFTextValue": SPF_TEXT_VALUE,
                "DKIMVerified": False,
                "WeakDKIM": self.key_bits < WEAK_BITS,
                "DKIMHost": "",
                "DKIMTextValue": "",
                "DKIMPendingHost": f"{selector}._domainkey.{name}",
                "DKIMPendingTextValue": f"k=rsa; p={key}",
                "DKIMRevokedHost": "",
                "DKIMRevokedTextValue": "",
                "SafeToRemoveRevokedKeyFromDNS": False,
                "DKIMUpdateStatus": "Pending",
                "ReturnPathDomain": return_path,
                "ReturnPathDomainVerified": False,
                "ReturnPathDomainCNAMEValue": RETURN_PATH_TARGET,
                "ID": domain_id,
            }
            self._domains[domain_id] = _Domain(account=account, record=record)
            return self._full(self._domains[domain_id])

    def _get(self, account: str, raw_id: str) -> dict[str, Any]:
        with self._lock:
            return self._full(self._by_id(account, raw_id))

    def _verify_dkim(self, account: str, raw_id: str) -> dict[str, Any]:
        """Look the pending key up in DNS (a new domain's first key, or a rotation's new one); with no key pending,
        the unverified current one. A verified domain stays verified whatever DNS serves now: the Domains API
        documents DKIMVerified as "whether DKIM has ever been verified ... this response will stay true, even if
        the record is later removed from DNS"."""
        with self._lock:
            found = self._by_id(account, raw_id)
            self._settle(found)
            record = found.record
            pending = bool(record["DKIMPendingHost"])
            if (record["DKIMVerified"] and not pending) or found.verify_at is not None:
                return self._full(found)
            host = record["DKIMPendingHost"] or record["DKIMHost"]
            expected = _p_value(record["DKIMPendingTextValue"] or record["DKIMTextValue"])
        served = self._dkim_keys(host) if host else []
        with self._lock:
            if not found.stuck and expected and expected in served and found.verify_at is None:
                found.verify_at = time.monotonic() + self.verify_delay
            return self._full(found)

    def _verify_return_path(self, account: str, raw_id: str) -> dict[str, Any]:
        with self._lock:
            host = self._by_id(account, raw_id).record["ReturnPathDomain"]
        target = self._cname(host) if host else None
        with self._lock:
            found = self._by_id(account, raw_id)
            expected = dns.name.from_text(found.record["ReturnPathDomainCNAMEValue"])
            found.record["ReturnPathDomainVerified"] = not found.stuck_return_path and target == expected
            return self._full(found)

    # helpers (callers hold the lock where they touch domains)

    def _known_account(self, account: str) -> None:
        if account not in self._tokens:
            raise ValueError(f"unknown Postmark account {account!r}; known: {', '.join(sorted(self._tokens))}")

    def _account_for(self, token: str | None) -> str | None:
        if not token:
            return None
        found = None
        for account, expected in self._tokens.items():
            if hmac.compare_digest(token.encode(), expected.encode()):
                found = account
        return found

    def _by_name(self, account: str, name: str) -> _Domain | None:
        wanted = name.strip().rstrip(".").lower()
        for found in self._domains.values():
            if found.account == account and found.record["Name"].lower() == wanted:
                return found
        return None

    def _require(self, account: str, name: str) -> _Domain:
        self._known_account(account)
        found = self._by_name(account, name)
        if found is None:
            names = [d.record["Name"] for d in self._domains.values() if d.account == account]
            raise ValueError(f"no domain {name!r} in Postmark account {account!r}; it has: {names or 'none'}")
        return found

    def _by_id(self, account: str, raw_id: str) -> _Domain:
        found = self._domains.get(int(raw_id)) if raw_id.isdigit() else None
        if found is None or found.account != account:
            raise FakeApiError(self.not_found_status, 510, "This domain was not found.")
        return found

    def _rotate_record(self, found: _Domain) -> dict[str, Any]:
        """A new key in the Pending fields (DKIMUpdateStatus Pending) until DNS serves it and verifyDkim sees it;
        the current key keeps signing meanwhile (support article 1305, "How often should I rotate a DKIM key").
        A key already pending cannot be rotated: postmark-gem's integration spec
        (spec/integration/account_api_client_spec.rb) expects 422 "This DKIM is already being renewed." for a
        new domain, and the API overview's error codes name 505 "DKIM already scheduled for renewal"."""
        self._settle(found)
        record = found.record
        if record["DKIMUpdateStatus"] == "Pending" or record["DKIMPendingHost"]:
            raise FakeApiError(422, 505, "This DKIM is already being renewed.")
        issued = datetime.now(UTC)
        current = record["DKIMHost"].split("._domainkey.", 1)[0]
        while _selector(issued) == current:  # a new selector, also when rotating within the second of the last one
            issued += timedelta(seconds=1)
        record.update(
            DKIMPendingHost=f"{_selector(issued)}._domainkey.{record['Name']}",
            DKIMPendingTextValue=f"k=rsa; p={_new_public_key(self.key_bits)}",
            DKIMUpdateStatus="Pending",
        )
        found.verify_at = None
        return self._full(found)

    def _settle(self, found: _Domain) -> None:
        """Finish a DKIM verification whose delay has passed: the pending key becomes the current one, and a key it
        replaces moves to the Revoked fields, safe to remove from DNS `revoke_grace` seconds later (support article
        1305: Postmark revokes the original key once the new one verifies; its TXT record can go a few days later)."""
        now = time.monotonic()
        record = found.record
        if found.verify_at is not None and now >= found.verify_at:
            if record["DKIMPendingHost"] and record["DKIMHost"]:
                record.update(
                    DKIMRevokedHost=record["DKIMHost"],
                    DKIMRevokedTextValue=record["DKIMTextValue"],
                    SafeToRemoveRevokedKeyFromDNS=False,
                )
                found.revoked_at = found.verify_at
            record.update(
                DKIMVerified=True,
                DKIMHost=record["DKIMPendingHost"] or record["DKIMHost"],
                DKIMTextValue=record["DKIMPendingTextValue"] or record["DKIMTextValue"],
                DKIMPendingHost="",
                DKIMPendingTextValue="",
                DKIMUpdateStatus="Verified",
            )
            record["WeakDKIM"] = _key_bits(_p_value(record["DKIMTextValue"])) < WEAK_BITS
            found.verify_at = None
        if found.revoked_at is not None and now >= found.revoked_at + self.revoke_grace:
            record["SafeToRemoveRevokedKeyFromDNS"] = True
            found.revoked_at = None

    def _full(self, found: _Domain) -> dict[str, Any]:
        self._settle(found)
        return {key: found.record[key] for key in _FULL_FIELDS}

    def _query(self, host: str, rdtype: dns.rdatatype.RdataType) -> dns.message.Message | None:
        try:
            query = dns.message.make_query(host, rdtype)
            response, _ = dns.query.udp_with_fallback(query, self._dns[0], timeout=self.dns_timeout, port=self._dns[1])
        except (dns.exception.DNSException, OSError, ValueError):
            return None
        return response

    def _dkim_keys(self, host: str) -> list[str]:
        """The `p=` values of the TXT records DNS serves at `host` (strings joined with no separator)."""
        response = self._query(host, dns.rdatatype.TXT)
        if response is None:
            return []
        return [
            _p_value(b"".join(rdata.strings).decode("ascii", "replace"))
            for rrset in response.answer
            if rrset.rdtype == dns.rdatatype.TXT
            for rdata in rrset
        ]

    def _cname(self, host: str) -> dns.name.Name | None:
        response = self._query(host, dns.rdatatype.CNAME)
        if response is None:
            return None
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.CNAME and rrset.name == dns.name.from_text(host):
                target: dns.name.Name = rrset[0].target
                return target
        return None

    def _pick_fault(self, method: str, path: str) -> PostmarkFault | None:
        chosen = None
        with self._lock:
            for armed in self._faults:
                fault = armed.fault
                if fault.method is not None and fault.method.upper() != method:
                    continue
                if armed.pattern is not None and not armed.pattern.search(path):
                    continue
                armed.seen += 1
                due = fault.every is None or armed.seen % fault.every == 0
                left = fault.count is None or armed.fired < fault.count
                if chosen is None and due and left:
                    armed.fired += 1
                    chosen = fault
        return chosen

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)


def _int_param(query: Mapping[str, list[str]], name: str, low: int, high: int | None) -> int:
    values = query.get(name)
    span = f"{low} to {high}" if high is not None else f"at least {low}"
    if not values:
        raise FakeApiError(422, 511, f"The '{name}' query parameter is required ({span}).")
    value = values[0].strip()
    if not value.isdigit() or int(value) < low or (high is not None and int(value) > high):
        raise FakeApiError(422, 511, f"The '{name}' query parameter must be an integer, {span}; got '{value[:20]}'.")
    return int(value)


def _p_value(text: str) -> str:
    """The `p=` tag of a DKIM key record with whitespace removed ("" when absent or revoked)."""
    for part in text.split(";"):
        tag, sep, value = part.partition("=")
        if sep and tag.strip() == "p":
            return "".join(value.split())
    return ""


def _new_public_key(bits: int) -> str:
    """Base64 of a fresh RSA SubjectPublicKeyInfo of `bits` bits, as Postmark publishes after `p=`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def _key_bits(key: str) -> int:
    """The size of an RSA public key given as base64 DER (0 when it is not one)."""
    try:
        public = serialization.load_der_public_key(base64.b64decode(key, validate=True))
    except ValueError:
        return 0
    return public.key_size if isinstance(public, rsa.RSAPublicKey) else 0


def _selector(issued: datetime) -> str:
    """A selector as Postmark issues them: the UTC time of issue and `pm` (`20260526234343pm`)."""
    return issued.strftime("%Y%m%d%H%M%S") + "pm"


def _fault_answer(fault: PostmarkFault) -> tuple[int, bytes, str, dict[str, str]]:
    """Status, body, content type and extra headers for an injected failure."""
    if fault.status == 403:
        return 403, b"<html>Forbidden</html>", "text/html", {}
    if fault.status == -1:
        return 200, b'{"TotalCount": 1, "Domains": [{"Name": "', "application/json", {}
    code, message = {
        401: (10, _NO_TOKEN),
        429: (429, "Rate Limit Exceeded: too many requests; slow down and retry later."),
        503: (100, "Maintenance: the Postmark API is offline for maintenance."),
    }.get(fault.status, (0, f"Internal Server Error (HTTP {fault.status}) injected by the sandbox."))
    headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.status == 429 and fault.retry_after is not None else {}
    return fault.status, _json({"ErrorCode": code, "Message": message}), "application/json", headers


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


_ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("GET", re.compile(r"/domains"), "list"),
    ("POST", re.compile(r"/domains"), "create"),
    ("GET", re.compile(r"/domains/([^/]+)"), "get"),
    ("PUT", re.compile(r"/domains/([^/]+)/verifydkim"), "verify_dkim"),
    ("PUT", re.compile(r"/domains/([^/]+)/verifyreturnpath"), "verify_return_path"),
    # POST, as postmark-gem (lib/postmark/account_api_client.rb, rotate_domain_dkim), postmark.js
    # (AccountClient.rotateDomainDKIM) and postmark-python (DomainManager.rotate_dkim) send it
    ("POST", re.compile(r"/domains/([^/]+)/rotatedkim"), "rotate_dkim"),
    ("GET", re.compile(r"/senders"), "senders"),
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes; Nagle would add 40 ms per answer
    server: _Server

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the calls list is the record
        return

    def _handle(self) -> None:
        fake, started, at = self.server.fake, time.monotonic(), time.time()
        parts = urlsplit(self.path)
        path = unquote(parts.path).lower().rstrip("/") or "/"
        raw = self._read_body()
        account = fake._account_for(self.headers.get(TOKEN_HEADER))
        fault = fake._pick_fault(self.command, path)
        if fake._stopping.wait(fake.latency + (fault.delay if fault else 0.0)):
            self.close_connection = True
            return

        def record(status: int) -> None:
            elapsed = time.monotonic() - started
            fake._record(Call(self.command, parts.path, parts.query, account, status, at, elapsed))

        if fault is not None and fault.status == 0:
            record(0)
            fake._stopping.wait(HANG_LIMIT)
            self.close_connection = True
            return
        if fault is not None:
            status, body, content_type, headers = _fault_answer(fault)
        else:
            query = {key.lower(): values for key, values in parse_qs(parts.query).items()}
            status, payload = self._dispatch(fake, account, path, raw, query)
            body, content_type, headers = _json(payload), "application/json", {}
        record(status)
        self._send(status, body, content_type, headers)

    def _dispatch(
        self, fake: PostmarkFake, account: str | None, path: str, raw: bytes | None, query: Mapping[str, list[str]]
    ) -> tuple[int, Any]:
        if raw is None:
            return 413, {"ErrorCode": 0, "Message": f"Request body larger than {MAX_BODY} bytes."}
        if account is None:
            return 401, {"ErrorCode": 10, "Message": _NO_TOKEN}
        for method, pattern, action in _ROUTES:
            match = pattern.fullmatch(path)
            if match and method == self.command:
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    return 422, {"ErrorCode": 402, "Message": "Invalid JSON: the request body is not valid JSON."}
                try:
                    return 200, fake._api(action, account, body, query, match.group(1) if match.groups() else "")
                except FakeApiError as exc:
                    return exc.status, {"ErrorCode": exc.code, "Message": exc.message}
        served = (
            "GET|POST /domains, GET /domains/{id}, PUT /domains/{id}/verifyDkim|verifyReturnPath, "
            "POST /domains/{id}/rotatedkim, GET /senders"
        )
        return 404, {"ErrorCode": 0, "Message": f"No such endpoint: {self.command} {path}; the fake serves {served}."}

    def _read_body(self) -> bytes | None:
        declared = self.headers.get("Content-Length") or "0"
        length = int(declared) if declared.isdigit() else MAX_BODY + 1
        if length > MAX_BODY:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: bytes, content_type: str, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    """Request threads are joined on close; open connections are shut down so none outlives stop()."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, fake: PostmarkFake) -> None:
        self.fake = fake
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)

    def close_connections(self) -> None:
        with self._open_lock:
            for request in self._open:
                with contextlib.suppress(OSError):
                    request.shutdown(socket.SHUT_RDWR)
