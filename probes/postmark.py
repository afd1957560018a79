"""The Postmark Domains API: find a sending domain, read it, trigger verification and poll for the result.

Account endpoints authenticate with the header `X-Postmark-Account-Token`. Verification is asynchronous
(the first `verifyDkim` answer is often "not yet"), so `observe_domain` triggers it and polls with a bounded
deadline. A domain the account does not list is looked up among its Sender Signatures (`GET /senders`), a
separate collection. The token lives only in the HTTP client's headers: no observation, error, repr or attempt
record holds it, and every message passes through `secrets.redact`.

References: https://postmarkapp.com/developer/api/domains-api (fields, endpoints),
https://postmarkapp.com/developer/api/signatures-api (`GET /senders`),
https://postmarkapp.com/developer/api/overview (HTTP response codes, API error codes).
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import functools
import json
import random
import ssl
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Self, TypeVar, cast
from urllib.parse import urlencode

import httpx

from probes.problem import Problem
from probes.secrets import Secret, redact
from probes.text import clip

T = TypeVar("T")

TOKEN_HEADER = "X-Postmark-Account-Token"
PAGE_SIZE = 500  # the API's maximum `count`
MAX_PAGES = 200
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 30.0  # a longer Retry-After fails at once instead of stalling the run
MAX_BACKOFF = 8.0
MAX_POLL_INTERVAL = 5.0
DEFAULT_RATE = 10.0  # requests in any one second, shared by every client in the process unless given its own


@dataclass(frozen=True)
class Attempt:
    """One HTTP exchange: no headers, no body, never the token."""

    method: str
    path: str  # with its query string
    status: int | None  # None: no answer
    elapsed: float
    at: datetime
    note: str


@dataclass(frozen=True)
class Domain:
    """A Postmark sending domain as `GET /domains/{id}` describes it (the Domains API page; postmark.js
    `DomainDetails`, postmark-python `Domain`). `dkim_verified` is "whether DKIM has ever been verified": it stays
    true after the key leaves DNS and through a rotation, so it is never a verdict by itself."""

    id: int
    name: str
    dkim_verified: bool
    dkim_host: str
    dkim_text_value: str
    dkim_pending_host: str
    dkim_pending_text_value: str
    dkim_update_status: str
    return_path_domain: str
    return_path_verified: bool
    return_path_cname_value: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)
    weak_dkim: bool = False  # "DKIM is using a strength weaker than 1024 bit"
    dkim_revoked_host: str = ""  # the key a finished rotation replaced
    dkim_revoked_text_value: str = ""
    safe_to_remove_revoked_key: bool = False  # SafeToRemoveRevokedKeyFromDNS

    @classmethod
    def from_json(cls, data: Any) -> Domain:
        """Read a domain from the API's JSON; ValueError names what is missing or of the wrong type."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        domain_id = data.get("ID")
        if not isinstance(domain_id, int) or isinstance(domain_id, bool):
            raise ValueError(f"ID must be an integer, got {clip(repr(domain_id))}")
        return cls(
            id=domain_id,
            name=_field(data, "Name", str, required=True),
            dkim_verified=_field(data, "DKIMVerified", bool),
            dkim_host=_field(data, "DKIMHost", str),
            dkim_text_value=_field(data, "DKIMTextValue", str),
            dkim_pending_host=_field(data, "DKIMPendingHost", str),
            dkim_pending_text_value=_field(data, "DKIMPendingTextValue", str),
            dkim_update_status=_field(data, "DKIMUpdateStatus", str),
            return_path_domain=_field(data, "ReturnPathDomain", str),
            return_path_verified=_field(data, "ReturnPathDomainVerified", bool),
            return_path_cname_value=_field(data, "ReturnPathDomainCNAMEValue", str),
            raw=dict(data),
            weak_dkim=_field(data, "WeakDKIM", bool),
            dkim_revoked_host=_field(data, "DKIMRevokedHost", str),
            dkim_revoked_text_value=_field(data, "DKIMRevokedTextValue", str),
            safe_to_remove_revoked_key=_field(data, "SafeToRemoveRevokedKeyFromDNS", bool),
        )

    @property
    def rotating(self) -> bool:
        """A new key waits in the Pending fields for Postmark to see it in DNS (a rotation, or the first key)."""
        return bool(self.dkim_pending_host) or self.dkim_update_status == "Pending"

    @property
    def verified(self) -> bool:
        """Postmark has nothing left to confirm: DKIM verified with no key pending, and the Return-Path verified."""
        return self.dkim_verified and not self.rotating and self.return_path_verified

    @property
    def selector(self) -> str | None:
        """The DKIM selector of the current key (else of the pending one), like `20260526234343pm`."""
        host = self.dkim_host or self.dkim_pending_host
        return host.split("._domainkey.", 1)[0] if "._domainkey." in host else None


@dataclass(frozen=True)
class SenderSignature:
    """One item of `GET /senders`: a confirmed (or not) From address, which is not a Domain (Sender Signatures API;
    postmark.js `Signature`, postmark-python `SenderSignatureListItem`)."""

    id: int
    domain: str
    email_address: str
    confirmed: bool


@dataclass(frozen=True)
class PostmarkObservation:
    """What the Domains API said about one domain of one account, with every exchange it took."""

    account: str
    api_url: str
    domain_name: str
    domain: Domain | None  # the last answer about the domain; None when it was not found
    attempts: tuple[Attempt, ...]
    verified_dkim: bool  # DKIM verified in the last answer
    verified_return_path: bool  # Return-Path verified in the last answer
    problem: Problem | None  # why the domain could not be read or found (kinds: PostmarkError's, not-found, signature)
    deadline_hit: bool  # the wait ended before both were verified
    senders: tuple[SenderSignature, ...] = ()  # the account's Sender Signatures of this domain, when it is no Domain

    @property
    def triggered(self) -> tuple[str, ...]:
        """The verification calls this observation made (PUT paths)."""
        return tuple(a.path for a in self.attempts if a.method == "PUT")

    def describe(self) -> str:
        """One line for a failure message."""
        where = f"{self.domain_name} in Postmark account {self.account}"
        if self.problem is not None:
            return f"{where}: {self.problem}"
        span = (self.attempts[-1].at - self.attempts[0].at).total_seconds() if self.attempts else 0.0
        return (
            f"{where}: DKIM {self._dkim_state()}, "
            f"Return-Path {'verified' if self.verified_return_path else 'NOT verified'} "
            f"({len(self.attempts)} requests over {span:.1f} s{', deadline hit' if self.deadline_hit else ''})"
        )

    def _dkim_state(self) -> str:
        if not self.verified_dkim:
            return "NOT verified"
        return "verified once, a new key pending" if self.domain is not None and self.domain.rotating else "verified"


class PostmarkError(Exception):
    """A failed API call as a Problem: what failed, naming the request (never the token) and the answer, and the
    next step. Its text is the problem's.

    Kinds: unreachable, token-rejected, throttled, gone (a listed domain's ID no longer exists), not-postmark (an
    answer that is not the Postmark API's), refused (an input error), unavailable (5xx).
    """

    def __init__(
        self, kind: str, message: str, next_step: str, *, status: int | None = None, error_code: int | None = None
    ) -> None:
        self.problem = Problem(kind, redact(message), redact(next_step))
        super().__init__(str(self.problem))
        self.status = status
        self.error_code = error_code


class RateLimiter:
    """At most `rate` request starts in any one second (at least one per 1/rate s when rate < 1): a burst of
    that many goes at once, the next waits until the oldest of them is a second old. Safe across tasks,
    threads and event loops."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 requests per second, got {rate}")
        self.rate = rate
        self._limit = max(1, int(rate))
        self._window = self._limit / rate if rate < 1 else 1.0
        self._lock = threading.Lock()
        self._released: deque[float] = deque()

    @classmethod
    def shared(cls) -> RateLimiter:
        """The process-wide limiter every client uses unless given its own."""
        return _SHARED

    async def acquire(self) -> float:
        """Wait for a free place in the window; return the time this caller was let through.

        The place is taken under the lock when the caller is let through, so releases (not just
        reservations) respect the limit, whatever the scheduling delays of the waiters.
        """
        while True:
            with self._lock:
                now = time.monotonic()
                while self._released and now - self._released[0] >= self._window:
                    self._released.popleft()
                if len(self._released) < self._limit:
                    self._released.append(now)
                    return now
                delay = self._released[0] + self._window - now
            await asyncio.sleep(delay)

    def __repr__(self) -> str:
        return f"RateLimiter({self.rate:g}/s)"


_SHARED = RateLimiter(DEFAULT_RATE)


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every client (httpx's default: SSL_CERT_FILE/DIR, else certifi); loading the roots
    costs ~25 ms of CPU per context."""
    return httpx.create_ssl_context()


_ATTEMPTS: contextvars.ContextVar[list[Attempt] | None] = contextvars.ContextVar("postmark_attempts", default=None)


class PostmarkClient:
    """An async client of one Postmark account. Use it within one event loop; close it with `aclose`."""

    def __init__(
        self,
        api_url: str,
        token: Secret,
        *,
        account: str | None = None,
        timeout: float = 10,
        max_retries: int = 4,
        rate_limited_retries: int = 9,
        limiter: RateLimiter | None = None,
        backoff: float = 0.5,
    ) -> None:
        """`max_retries` bounds the retries of 5xx answers; `rate_limited_retries` those of 429, which says
        "come back later", not that the request failed (at 429 for a third of requests, 4 retries would give
        up on 1 request in 243: a false failure in most runs of 64 partitions)."""
        self.api_url = api_url.rstrip("/")
        self.account = account
        self._reference = token.reference
        self._timeout = timeout
        self._max_retries = max_retries
        self._rate_limited_retries = rate_limited_retries
        self._limiter = limiter or RateLimiter.shared()
        self._backoff = backoff
        self._listings: dict[str, asyncio.Future[tuple[object, tuple[Attempt, ...]]]] = {}
        self._http = httpx.AsyncClient(
            base_url=self.api_url,
            headers={TOKEN_HEADER: token.reveal(), "Accept": "application/json"},
            timeout=timeout,
            follow_redirects=False,
            verify=_tls(),
        )

    def __repr__(self) -> str:
        return f"PostmarkClient({self.api_url}, account={self.account}, token={self._reference}: ****)"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def find_domain(self, name: str) -> Domain | None:
        """The domain called `name` (case and trailing dot ignored), read in full; None when not listed.

        The account's listing is read once per client and shared by every domain looked up through it
        (concurrent callers wait for the same pages); each caller's attempts include those pages.
        """
        ids = await self._shared("domains", self._domain_ids)
        domain_id = ids.get(_norm(name))
        return None if domain_id is None else await self.get_domain(domain_id)

    async def sender_signatures(self, name: str) -> tuple[SenderSignature, ...]:
        """The account's Sender Signatures whose domain is `name` (case and trailing dot ignored); the account's
        listing is read once per client, as the domains' is."""
        signatures = await self._shared("senders", self._sender_signatures)
        return tuple(s for s in signatures if _norm(s.domain) == _norm(name))

    async def _shared(self, listing: str, read: Callable[[], Awaitable[T]]) -> T:
        """The result of `read`, started by the first caller and awaited by every other; raises what it raised.
        Each caller's attempts get the pages it took, noted as shared."""
        if listing not in self._listings:
            self._listings[listing] = asyncio.ensure_future(self._read_shared(read))
        found, pages = await asyncio.shield(self._listings[listing])
        attempts = _ATTEMPTS.get()
        if attempts is not None:
            attempts.extend(pages)
        if isinstance(found, PostmarkError):
            raise found
        return cast(T, found)

    async def _read_shared(self, read: Callable[[], Awaitable[object]]) -> tuple[object, tuple[Attempt, ...]]:
        pages: list[Attempt] = []
        _ATTEMPTS.set(pages)  # this task's own context: the pages are recorded here, then given to each caller
        try:
            found: object = await read()
        except PostmarkError as exc:
            found = exc
        return found, tuple(replace(a, note=f"{a.note}; the account's listing, shared") for a in pages)

    async def _domain_ids(self) -> dict[str, int]:
        ids: dict[str, int] = {}
        offset = 0
        for _ in range(MAX_PAGES):
            path = "/domains"
            page = await self._request("GET", path, {"count": PAGE_SIZE, "offset": offset})
            total, listed = self._page(page, path, offset)
            for item in listed:
                domain_id = item.get("ID")
                name = _norm(str(item.get("Name", "")))
                if not isinstance(domain_id, int) or isinstance(domain_id, bool):
                    raise self._shape_error("GET", path, f"domain {name} has ID {clip(repr(domain_id))}")
                ids.setdefault(name, domain_id)
            offset += len(listed)
            if not listed or offset >= total:
                return ids
        raise self._shape_error("GET", "/domains", f"more than {MAX_PAGES} pages of domains; the listing never ends")

    async def _sender_signatures(self) -> tuple[SenderSignature, ...]:
        found: list[SenderSignature] = []
        offset = 0
        for _ in range(MAX_PAGES):
            path = "/senders"
            page = await self._request("GET", path, {"count": PAGE_SIZE, "offset": offset})
            total, listed = self._page(page, path, offset, "SenderSignatures")
            found += (
                SenderSignature(
                    id=item["ID"] if isinstance(item.get("ID"), int) else -1,
                    domain=str(item.get("Domain", "")),
                    email_address=str(item.get("EmailAddress", "")),
                    confirmed=item.get("Confirmed") is True,
                )
                for item in listed
            )
            offset += len(listed)
            if not listed or offset >= total:
                return tuple(found)
        raise self._shape_error("GET", "/senders", f"more than {MAX_PAGES} pages of sender signatures")

    async def get_domain(self, domain_id: int) -> Domain:
        return self._domain("GET", f"/domains/{domain_id}", await self._request("GET", f"/domains/{domain_id}"))

    async def verify_dkim(self, domain_id: int) -> Domain:
        """Ask Postmark to look the DKIM key up in DNS; the answer may still say "not yet"."""
        path = f"/domains/{domain_id}/verifyDkim"
        return self._domain("PUT", path, await self._request("PUT", path))

    async def verify_return_path(self, domain_id: int) -> Domain:
        """Ask Postmark to check the Return-Path CNAME."""
        path = f"/domains/{domain_id}/verifyReturnPath"
        return self._domain("PUT", path, await self._request("PUT", path))

    async def _request(self, method: str, path: str, params: Mapping[str, int] | None = None) -> Any:
        shown = f"{path}?{urlencode(params)}" if params else path
        attempt = 0
        seen: dict[bool, int] = {True: 0, False: 0}  # retryable answers so far: rate limited or not
        while True:
            attempt += 1
            await self._limiter.acquire()
            at, started = datetime.now(UTC), time.monotonic()
            try:
                response = await self._http.request(method, path, params=params)
            except httpx.TimeoutException:
                _record(method, shown, None, started, at, note="no answer (timeout)")
                raise PostmarkError(
                    "unreachable",
                    f"Postmark {method} {self.api_url}{shown}: no answer within {self._timeout:g} s",
                    "check the network and postmark.api_url / POSTMARK_API_URL, then rerun",
                ) from None
            except httpx.TransportError as exc:
                _record(method, shown, None, started, at, note=f"no answer ({type(exc).__name__})")
                raise PostmarkError(
                    "unreachable",
                    f"Postmark {method} {self.api_url}{shown}: cannot reach the API ({type(exc).__name__})",
                    "check the network and postmark.api_url / POSTMARK_API_URL",
                ) from None
            status = response.status_code
            if 200 <= status < 300:
                try:
                    data = response.json()
                except ValueError:
                    _record(method, shown, status, started, at, note="malformed JSON")
                    raise PostmarkError(
                        "not-postmark",
                        f"Postmark {method} {self.api_url}{shown} answered {status} with malformed JSON "
                        f"({_snippet(response.content)})",
                        "is postmark.api_url really the Postmark API?",
                        status=status,
                    ) from None
                _record(method, shown, status, started, at, note="ok")
                return data
            code, message = _api_error(response)
            limited = status == 429
            seen[limited] += 1
            budget = self._rate_limited_retries if limited else self._max_retries
            if status in RETRY_STATUSES and seen[limited] <= budget:
                delay, why = self._retry_delay(response, seen[limited])
                if delay > MAX_RETRY_AFTER:
                    _record(method, shown, status, started, at, note=f"Retry-After {delay:g} s is too long")
                    raise PostmarkError(
                        "throttled",
                        f"Postmark {method} {self.api_url}{shown} answered {status}{_detail(code, message, response)}"
                        f" and asked to retry after {delay:g} s (more than {MAX_RETRY_AFTER:g} s)",
                        "rerun later",
                        status=status,
                        error_code=code,
                    )
                _record(method, shown, status, started, at, note=f"retrying in {delay:.2f} s ({why})")
                await asyncio.sleep(delay)
                continue
            note = f"ErrorCode {code}: {message}" if code is not None else "not JSON"
            _record(method, shown, status, started, at, note=note)
            kind, meaning, step = self._advice(status, code, attempt, path)
            raise PostmarkError(
                kind,
                f"Postmark {method} {self.api_url}{shown} answered {status}{_detail(code, message, response)}: "
                f"{meaning}",
                step,
                status=status,
                error_code=code,
            )

    def _retry_delay(self, response: httpx.Response, attempt: int) -> tuple[float, str]:
        after = _retry_after(response.headers.get("Retry-After"))
        if after is not None:
            return after, "Retry-After"
        ceiling = min(self._backoff * 2 ** (attempt - 1), MAX_BACKOFF)
        return ceiling * random.uniform(0.5, 1.0), "backoff"

    def _advice(self, status: int, code: int | None, attempts: int, path: str) -> tuple[str, str, str]:
        """The problem's kind, what the answer means and the next step, by the documented meaning of the answer (API
        overview, "HTTP response codes" and "API error codes"). postmark.js (src/client/errors/ErrorHandler.ts),
        postmark-gem (lib/postmark/error.rb) and postmark-python (postmark/exceptions.py) read them alike: 401 a bad
        token; 422 an input error whose meaning is its ErrorCode; 404 not an input error but "Entity doesn't exist ...
        ensure the endpoint and ID you are requesting are correct". Whether a domain exists is read from the
        account's listing, never from an error."""
        whose = f"account {self.account}" if self.account else "the account"
        if status == 401:
            return (
                "token-rejected",
                f"the token of {whose} ({self._reference}) was rejected",
                "check the credential reference",
            )
        domain_id = _domain_id(path)
        if domain_id is not None and code is not None and (status == 404 or (status == 422 and code == 510)):
            meaning = "404 Entity doesn't exist" if status == 404 else "ErrorCode 510 This domain was not found"
            return (
                "gone",
                f"{whose} has no domain with ID {domain_id} ({meaning}), though its listing named it: it was deleted "
                "meanwhile, or the listing is stale",
                "rerun, and check the domain in the Postmark console",
            )
        if status == 403 and code is None:
            return (
                "not-postmark",
                "a proxy or firewall answered 403 (not JSON)",
                "check HTTPS_PROXY and the network path to Postmark",
            )
        if status == 404:
            what = "Postmark's error JSON" if code is not None else "no Postmark error JSON"
            return (
                "not-postmark",
                f"no such endpoint (404 Entity doesn't exist, with {what})",
                "check postmark.api_url / POSTMARK_API_URL",
            )
        if status == 422:
            return (
                "refused",
                f"Postmark refused the request as invalid (422, ErrorCode {code})",
                "see the API overview's error codes",
            )
        if status == 429:
            return "throttled", f"still rate limited after {attempts} attempts", "wait a minute and rerun"
        if status >= 500:
            return (
                "unavailable",
                f"Postmark failed {attempts} times",
                "check https://status.postmarkapp.com and rerun later",
            )
        return "refused", "the request was refused", "see the ErrorCode in Postmark's API reference"

    def _page(self, page: Any, path: str, offset: int, items: str = "Domains") -> tuple[int, list[dict[str, Any]]]:
        total = page.get("TotalCount") if isinstance(page, dict) else None
        listed = page.get(items) if isinstance(page, dict) else None
        if not isinstance(total, int) or not isinstance(listed, list) or not all(isinstance(d, dict) for d in listed):
            shown = f"{path}?{urlencode({'count': PAGE_SIZE, 'offset': offset})}"
            raise self._shape_error("GET", shown, f"expected {{TotalCount: int, {items}: [...]}}")
        return total, listed

    def _domain(self, method: str, path: str, data: Any) -> Domain:
        try:
            return Domain.from_json(data)
        except ValueError as exc:
            raise self._shape_error(method, path, f"not a domain: {exc}") from None

    def _shape_error(self, method: str, path: str, what: str) -> PostmarkError:
        return PostmarkError(
            "not-postmark",
            f"Postmark {method} {self.api_url}{path} answered unexpected JSON ({what})",
            "is postmark.api_url really the Postmark API?",
        )


async def observe_domain(
    client: PostmarkClient, account: str, name: str, *, wait: float, verify: bool, interval: float = 0.5
) -> PostmarkObservation:
    """Find `name` and, until both DKIM and Return-Path are verified or `wait` seconds pass, poll it.

    With `verify`, first PUT verifyDkim (DKIM not verified, or a key pending) / verifyReturnPath for whichever
    is not done yet; without it, only read (never a PUT). Polls GET every `interval` seconds, growing by half up
    to 5 s. A domain the account does not list is looked for among its Sender Signatures. API failures become
    `problem`; the observation is returned either way.
    """
    attempts: list[Attempt] = []
    context = _ATTEMPTS.set(attempts)
    deadline = time.monotonic() + wait
    domain: Domain | None = None
    problem: Problem | None = None
    senders: tuple[SenderSignature, ...] = ()
    try:
        domain = await client.find_domain(name)
        if domain is None:
            senders = await client.sender_signatures(name)
            problem = _not_a_domain(name, account, client.api_url, senders)
        else:
            if verify and _dkim_to_confirm(domain):
                domain = await client.verify_dkim(domain.id)
            if verify and not domain.return_path_verified:
                domain = await client.verify_return_path(domain.id)
            while not domain.verified and (left := deadline - time.monotonic()) > 0:
                await asyncio.sleep(min(interval, left))
                domain = await _look_again(client, domain, verify)
                interval = min(interval * 1.5, MAX_POLL_INTERVAL)
    except PostmarkError as exc:
        problem = exc.problem
    finally:
        _ATTEMPTS.reset(context)
    return PostmarkObservation(
        account=account,
        api_url=client.api_url,
        domain_name=name,
        domain=domain,
        attempts=tuple(attempts),
        verified_dkim=domain is not None and domain.dkim_verified,
        verified_return_path=domain is not None and domain.return_path_verified,
        problem=problem,
        deadline_hit=problem is None and domain is not None and not domain.verified,
        senders=senders,
    )


def _not_a_domain(name: str, account: str, api_url: str, senders: tuple[SenderSignature, ...]) -> Problem:
    """Sender Signatures and Domains are separate collections (Signatures API, Domains API): a signature of the
    domain is named as such, not as a domain that was never deployed."""
    where = f"Postmark account {account} at {api_url}"
    if not senders:
        return Problem(
            "not-found",
            f"domain {name} is not among the domains (nor the Sender Signatures) of {where}",
            "was the partition deployed?",
        )
    shown = ", ".join(f"{s.email_address} (ID {s.id}, {'' if s.confirmed else 'NOT '}confirmed)" for s in senders)
    return Problem(
        "signature",
        f"{name} exists in {where} only as Sender Signature {shown}, not as a Domain (GET /domains does not list it)",
        f"add it as a Domain (POST /domains with Name {name}; the deploy's pre-deploy step does), then deploy",
    )


def _dkim_to_confirm(domain: Domain) -> bool:
    """DKIM has something for Postmark to check in DNS: never verified, or a new key pending."""
    return not domain.dkim_verified or domain.rotating


async def _look_again(client: PostmarkClient, domain: Domain, verify: bool) -> Domain:
    """Poll once. Verifying, ask Postmark to check again (the second verifyDkim often comes back verified, while
    the Console waits for its next scheduled check); read-only, just read."""
    if not verify:
        return await client.get_domain(domain.id)
    if _dkim_to_confirm(domain):
        domain = await client.verify_dkim(domain.id)
    if not domain.return_path_verified:
        domain = await client.verify_return_path(domain.id)
    return domain


def _record(method: str, path: str, status: int | None, started: float, at: datetime, *, note: str) -> None:
    attempts = _ATTEMPTS.get()
    if attempts is not None:
        attempts.append(Attempt(method, path, status, time.monotonic() - started, at, redact(clip(note))))


def _api_error(response: httpx.Response) -> tuple[int | None, str | None]:
    """Postmark's (ErrorCode, Message), or (None, None) when the body is not Postmark's error JSON."""
    try:
        data = json.loads(response.content)
    except ValueError:
        return None, None
    if not isinstance(data, dict) or not isinstance(data.get("ErrorCode"), int):
        return None, None
    return data["ErrorCode"], clip(str(data.get("Message", "")))


def _detail(code: int | None, message: str | None, response: httpx.Response) -> str:
    if code is not None:
        return f" (ErrorCode {code}: {message})"
    return f" (not JSON: {_snippet(response.content)})" if response.content else " (empty body)"


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), or None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _field(data: dict[str, Any], key: str, kind: type, *, required: bool = False) -> Any:
    value = data.get(key)
    if value is None and not required:
        return kind()
    if not isinstance(value, kind):
        raise ValueError(f"{key} must be {kind.__name__}, got {clip(repr(value))}")
    return value


def _domain_id(path: str) -> str | None:
    """The ID in `/domains/{id}` and `/domains/{id}/...`; None for any other path."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    return parts[1] if len(parts) >= 2 and parts[0].lower() == "domains" and parts[1].isdigit() else None


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _snippet(body: bytes) -> str:
    text = " ".join(body.decode("utf-8", "replace").split())
    return repr(clip(text, 80))


def authenticate(api_url: str, token: Secret, account: str, zone: str, *, max_retries: int = 2) -> Domain | None:
    """Prove the account token works: list the account's domains and find `zone` (None: not registered yet).

    Raises PostmarkError when the token is refused or the API cannot be asked (the message says which).
    """

    async def find() -> Domain | None:
        async with PostmarkClient(api_url, token, account=account, max_retries=max_retries) as client:
            return await client.find_domain(zone)

    return asyncio.run(find())
