"""probes.postmark: paging, verify-and-poll, every API fault, retries, rate limiting, and no token anywhere."""

from __future__ import annotations

import asyncio
import base64
import itertools
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest
import respx

from probes.postmark import (
    TOKEN_HEADER,
    Domain,
    PostmarkClient,
    PostmarkError,
    PostmarkObservation,
    RateLimiter,
    observe_domain,
)
from probes.secrets import Secret

T = TypeVar("T")
API = "https://api.postmark.test"
REF = "op://Arda-DevOAM/Postmark/credential"
CANARY = "canary-5e0c7d1a-postmark-account-token"
TOKEN = Secret(REF, CANARY)
NAME = "dev.ardamails.com"


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _client(**kwargs: Any) -> PostmarkClient:
    options: dict[str, Any] = {"account": "PostmarkNonProd", "limiter": RateLimiter(1000), "backoff": 0.01}
    return PostmarkClient(API, TOKEN, **(options | kwargs))


def _domain_json(domain_id: int, name: str = NAME, *, dkim: bool = False, rp: bool = False) -> dict[str, Any]:
    selector = "20260526234343pm"
    return {
        "ID": domain_id,
        "Name": name,
        "DKIMVerified": dkim,
        "DKIMHost": f"{selector}._domainkey.{name}" if dkim else "",
        "DKIMTextValue": "k=rsa; p=MIGfMA0GCSq" if dkim else "",
        "DKIMPendingHost": "" if dkim else f"{selector}._domainkey.{name}",
        "DKIMPendingTextValue": "" if dkim else "k=rsa; p=MIGfMA0GCSq",
        "DKIMUpdateStatus": "Verified" if dkim else "Pending",
        "ReturnPathDomain": f"pm-bounces.{name}",
        "ReturnPathDomainVerified": rp,
        "ReturnPathDomainCNAMEValue": "pm.mtasv.net",
        "SPFVerified": True,
    }


def _listing(*domains: dict[str, Any], total: int | None = None) -> httpx.Response:
    summary = [{k: d[k] for k in ("ID", "Name", "DKIMVerified", "ReturnPathDomainVerified")} for d in domains]
    return httpx.Response(200, json={"TotalCount": len(domains) if total is None else total, "Domains": summary})


def _error(status: int, code: int, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"ErrorCode": code, "Message": message}, headers=headers)


def _assert_no_token(*texts: str) -> None:
    for text in texts:
        assert CANARY not in text
        assert base64.b64encode(CANARY.encode()).decode().rstrip("=") not in text
        assert "****" not in text, f"something tried to print the token (and was masked): {text}"


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    """respx in front of the Postmark API URL: each test routes the answers it needs (transport faults)."""
    with respx.mock(base_url=API, assert_all_called=False, assert_all_mocked=True) as router:
        yield router


# --- reading -----------------------------------------------------------------------------------------


def test_find_domain_pages_through_three_pages_then_reads_it(mock: respx.MockRouter) -> None:
    everyone = [_domain_json(i, f"d{i}.example.com") for i in range(1, 1101)]
    everyone[1050] = _domain_json(1051, "DEV.ardamails.com")

    def pages(request: httpx.Request) -> httpx.Response:
        count, offset = int(request.url.params["count"]), int(request.url.params["offset"])
        assert request.headers[TOKEN_HEADER] == CANARY
        return _listing(*everyone[offset : offset + count], total=len(everyone))

    listing = mock.get("/domains").mock(side_effect=pages)
    detail = mock.get("/domains/1051").respond(json=_domain_json(1051, "DEV.ardamails.com", dkim=True, rp=True))

    async def scenario() -> Domain | None:
        async with _client() as client:
            return await client.find_domain("dev.ardamails.com.")

    domain = _run(scenario())
    assert [(c.request.url.params["count"], c.request.url.params["offset"]) for c in listing.calls] == [
        ("500", "0"),
        ("500", "500"),
        ("500", "1000"),
    ]
    assert detail.call_count == 1
    assert domain is not None
    assert (domain.id, domain.name, domain.dkim_verified, domain.return_path_verified) == (
        1051,
        "DEV.ardamails.com",
        True,
        True,
    )
    assert domain.dkim_host == "20260526234343pm._domainkey.DEV.ardamails.com"
    assert domain.selector == "20260526234343pm"
    assert domain.dkim_text_value == "k=rsa; p=MIGfMA0GCSq"
    assert domain.dkim_update_status == "Verified"
    assert domain.return_path_domain == "pm-bounces.DEV.ardamails.com"
    assert domain.return_path_cname_value == "pm.mtasv.net"
    assert domain.raw["SPFVerified"] is True


def test_find_domain_returns_none_when_no_page_lists_it(mock: respx.MockRouter) -> None:
    listing = mock.get("/domains").mock(
        side_effect=[_listing(_domain_json(1, "a.example.com"), total=2), _listing(_domain_json(2, "b.example.com"))]
    )

    async def scenario() -> Domain | None:
        async with _client() as client:
            return await client.find_domain(NAME)

    assert _run(scenario()) is None
    assert listing.call_count == 2


def test_domains_of_one_account_share_one_listing_and_each_shows_it(mock: respx.MockRouter) -> None:
    listing = mock.get("/domains").respond(
        json={
            "TotalCount": 2,
            "Domains": [_domain_json(1, "dev.ardamails.com"), _domain_json(2, "stage.ardamails.com")],
        }
    )
    for i, name in ((1, "dev.ardamails.com"), (2, "stage.ardamails.com")):
        mock.get(f"/domains/{i}").respond(json=_domain_json(i, name, dkim=True, rp=True))
    senders = mock.get("/senders").respond(json={"TotalCount": 0, "SenderSignatures": []})
    names = ("dev.ardamails.com", "stage.ardamails.com", "demo.ardamails.com")

    async def scenario() -> list[PostmarkObservation]:
        async with _client() as client:
            return list(
                await asyncio.gather(
                    *(observe_domain(client, "PostmarkNonProd", n, wait=0, verify=False) for n in names)
                )
            )

    dev, stage, demo = _run(scenario())
    assert listing.call_count == 1
    for seen in (dev, stage, demo):
        assert (seen.attempts[0].method, seen.attempts[0].path) == ("GET", "/domains?count=500&offset=0")
        assert seen.attempts[0].note == "ok; the account's listing, shared"
    assert [a.path for a in dev.attempts[1:]] == ["/domains/1"]
    assert [a.path for a in stage.attempts[1:]] == ["/domains/2"]
    assert dev.verified_dkim
    assert stage.verified_return_path
    assert demo.domain is None
    assert demo.problem is not None
    assert demo.problem.kind == "not-found", demo.problem
    assert "demo.ardamails.com is not among the domains" in str(demo.problem)
    assert [a.path for a in demo.attempts[1:]] == ["/senders?count=500&offset=0"]
    assert senders.call_count == 1


def test_a_failed_listing_fails_every_domain_of_the_account_with_its_cause(mock: respx.MockRouter) -> None:
    listing = mock.get("/domains").respond(401, json={"ErrorCode": 10, "Message": "Bad or missing API token"})

    async def scenario() -> list[PostmarkObservation]:
        async with _client() as client:
            return list(
                await asyncio.gather(
                    *(observe_domain(client, "PostmarkNonProd", n, wait=0, verify=False) for n in ("a.x", "b.x"))
                )
            )

    observed = _run(scenario())
    assert listing.call_count == 1
    for seen in observed:
        assert seen.problem is not None
        assert seen.problem.kind == "token-rejected", seen.problem
        assert "answered 401 (ErrorCode 10: Bad or missing API token)" in str(seen.problem)
        assert [a.status for a in seen.attempts] == [401]


def test_domain_json_of_the_wrong_shape_is_reported(mock: respx.MockRouter) -> None:
    mock.get("/domains/7").respond(json={"ID": "7", "Name": NAME})

    async def scenario() -> None:
        async with _client() as client:
            await client.get_domain(7)

    with pytest.raises(PostmarkError, match=r"answered unexpected JSON \(not a domain: ID must be an integer"):
        _run(scenario())


# --- faults ------------------------------------------------------------------------------------------

FAULTS: dict[str, tuple[list[Any], list[str], int, str]] = {
    # name: (answers to GET /domains/7 in order, fragments of the message, calls made, the problem's kind)
    "401": (
        [_error(401, 10, "Bad or missing API token")],
        [
            f"Postmark GET {API}/domains/7 answered 401 (ErrorCode 10: Bad or missing API token)",
            f"the token of account PostmarkNonProd ({REF}) was rejected; check the credential reference",
        ],
        1,
        "token-rejected",
    ),
    # 404 is "Entity doesn't exist ... ensure the endpoint and ID you are requesting are correct" (API overview);
    # without Postmark's error JSON it is not Postmark saying so, and the URL is the suspect
    "404": (
        [httpx.Response(404, text="Not Found")],
        [
            "answered 404 (not JSON: 'Not Found')",
            "no such endpoint (404 Entity doesn't exist, with no Postmark error JSON); "
            "check postmark.api_url / POSTMARK_API_URL",
        ],
        1,
        "not-postmark",
    ),
    "404-domain-id": (
        [_error(404, 510, "This domain was not found.")],
        [
            "answered 404 (ErrorCode 510: This domain was not found.)",
            "account PostmarkNonProd has no domain with ID 7 (404 Entity doesn't exist), though its listing named it",
        ],
        1,
        "gone",
    ),
    # 510 is "This domain was not found" in the overview's API error codes, which come with 422
    "422-510": (
        [_error(422, 510, "This domain was not found.")],
        [
            "answered 422 (ErrorCode 510: This domain was not found.)",
            "account PostmarkNonProd has no domain with ID 7 (ErrorCode 510 This domain was not found), though its "
            "listing named it: it was deleted meanwhile, or the listing is stale; rerun",
        ],
        1,
        "gone",
    ),
    "422-other": (
        [_error(422, 511, "Invalid fields supplied.")],
        [
            "answered 422 (ErrorCode 511: Invalid fields supplied.)",
            "Postmark refused the request as invalid (422, ErrorCode 511); see the API overview's error codes",
        ],
        1,
        "refused",
    ),
    "403-proxy": (
        [httpx.Response(403, text="<html><body>Access denied by policy</body></html>")],
        ["answered 403 (not JSON: '<html><body>Access denied", "a proxy or firewall answered 403 (not JSON)"],
        1,
        "not-postmark",
    ),
    "429-forever": (  # 429 has its own, larger retry budget (9 retries): throttling is expected under load
        [_error(429, 429, "Rate Limit Exceeded")] * 10,
        ["answered 429 (ErrorCode 429: Rate Limit Exceeded)", "still rate limited after 10 attempts"],
        10,
        "throttled",
    ),
    "429-retry-after-too-long": (
        [_error(429, 429, "Rate Limit Exceeded", **{"Retry-After": "120"})],
        ["asked to retry after 120 s (more than 30 s); rerun later"],
        1,
        "throttled",
    ),
    "503-forever": (
        [_error(503, 100, "Maintenance")] * 5,
        ["answered 503 (ErrorCode 100: Maintenance)", "Postmark failed 5 times; check https://status.postmarkapp.com"],
        5,
        "unavailable",
    ),
    "502-not-json": (
        [httpx.Response(502, text="")] * 5,
        ["answered 502 (empty body)"],
        5,
        "unavailable",
    ),
    "timeout": (
        [httpx.ReadTimeout("timed out")],
        [f"Postmark GET {API}/domains/7: no answer within 10 s; check the network and postmark.api_url"],
        1,
        "unreachable",
    ),
    "connect-error": (
        [httpx.ConnectError("refused")],
        ["cannot reach the API (ConnectError)"],
        1,
        "unreachable",
    ),
    "malformed-json": (
        [httpx.Response(200, text='{"ID": 7, "Name": "dev.ard')],
        ['answered 200 with malformed JSON (\'{"ID": 7, "Name": "dev.ard\')'],
        1,
        "not-postmark",
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_fault_gives_one_clear_line_without_the_token(mock: respx.MockRouter, fault: str) -> None:
    answers, fragments, calls, kind = FAULTS[fault]
    route = mock.get("/domains/7").mock(side_effect=answers)

    async def scenario() -> PostmarkError:
        async with _client() as client:
            with pytest.raises(PostmarkError) as caught:
                await client.get_domain(7)
            return caught.value

    error = _run(scenario())
    message = str(error)
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message
    assert route.call_count == calls
    assert error.problem.kind == kind, error.problem
    _assert_no_token(message, repr(error))


@pytest.mark.parametrize("fault", ["401", "404-domain-id", "422-510", "403-proxy", "timeout", "malformed-json"])
def test_a_fault_during_observation_is_its_error(mock: respx.MockRouter, fault: str) -> None:
    answers, fragments, _, kind = FAULTS[fault]
    mock.get("/domains").mock(return_value=_listing(_domain_json(7)))
    mock.get("/domains/7").mock(side_effect=answers)

    async def scenario() -> PostmarkObservation:
        async with _client() as client:
            return await observe_domain(client, "PostmarkNonProd", NAME, wait=0, verify=True)

    observation = _run(scenario())
    assert observation.problem is not None
    assert observation.problem.kind == kind, observation.problem
    assert fragments[-1] in str(observation.problem)
    assert not observation.verified_dkim
    assert not observation.deadline_hit
    assert observation.attempts[-1].path == "/domains/7"
    _assert_no_token(repr(observation), str(observation), observation.describe())


def test_429_honours_retry_after_then_succeeds(mock: respx.MockRouter) -> None:
    route = mock.get("/domains/7").mock(
        side_effect=[
            _error(429, 429, "Rate Limit Exceeded", **{"Retry-After": "0.4"}),
            httpx.Response(200, json=_domain_json(7)),
        ]
    )
    times: list[float] = []
    route.side_effect = _timed(route.side_effect, times)

    async def scenario() -> Domain:
        async with _client(backoff=5) as client:  # a backoff would take seconds: Retry-After must win
            return await client.get_domain(7)

    assert _run(scenario()).id == 7
    assert route.call_count == 2
    assert 0.38 <= times[1] - times[0] < 1.5


def test_429_without_retry_after_backs_off_exponentially_then_succeeds(mock: respx.MockRouter) -> None:
    answers = [_error(429, 429, "Rate Limit Exceeded")] * 3 + [httpx.Response(200, json=_domain_json(7))]
    route = mock.get("/domains/7").mock(side_effect=answers)
    times: list[float] = []
    route.side_effect = _timed(route.side_effect, times)

    async def scenario() -> PostmarkObservation:
        async with _client(backoff=0.1) as client:
            return await observe_domain(client, "PostmarkNonProd", NAME, wait=0, verify=False)

    mock.get("/domains").mock(return_value=_listing(_domain_json(7)))
    observation = _run(scenario())
    assert observation.problem is None, str(observation.problem)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # jittered within [50 %, 100 %] of 0.1, 0.2, 0.4 s
    for gap, ceiling in zip(gaps, (0.1, 0.2, 0.4), strict=True):
        assert ceiling * 0.5 - 0.02 <= gap <= ceiling + 0.3
    notes = [a.note for a in observation.attempts if a.path == "/domains/7"]
    assert [n.split(" (")[-1] for n in notes[:3]] == ["backoff)"] * 3
    assert notes[3] == "ok"


def test_500_and_503_are_retried_then_succeed(mock: respx.MockRouter) -> None:
    route = mock.get("/domains/7").mock(
        side_effect=[
            _error(500, 0, "Internal"),
            _error(503, 100, "Maintenance"),
            httpx.Response(200, json=_domain_json(7)),
        ]
    )

    async def scenario() -> Domain:
        async with _client() as client:
            return await client.get_domain(7)

    assert _run(scenario()).id == 7
    assert route.call_count == 3


def test_retries_are_bounded_by_max_retries(mock: respx.MockRouter) -> None:
    route = mock.get("/domains/7").mock(return_value=_error(500, 0, "Internal"))

    async def scenario() -> None:
        async with _client(max_retries=2) as client:
            await client.get_domain(7)

    with pytest.raises(PostmarkError, match="Postmark failed 3 times"):
        _run(scenario())
    assert route.call_count == 3


def _timed(inner: Any, times: list[float]) -> Callable[[httpx.Request], Any]:
    answers = iter(inner)

    def answer(request: httpx.Request) -> Any:
        times.append(time.monotonic())
        return next(answers)

    return answer


# --- verify and poll ---------------------------------------------------------------------------------


def test_verify_then_poll_until_both_verified(mock: respx.MockRouter) -> None:
    mock.get("/domains").mock(return_value=_listing(_domain_json(7)))
    reads = mock.get("/domains/7").mock(return_value=httpx.Response(200, json=_domain_json(7)))
    dkim = mock.put("/domains/7/verifyDkim").mock(  # as in practice: "not yet", then verified on the second call
        side_effect=[
            httpx.Response(200, json=_domain_json(7, rp=True)),
            httpx.Response(200, json=_domain_json(7, dkim=True, rp=True)),
        ]
    )
    return_path = mock.put("/domains/7/verifyReturnPath").respond(json=_domain_json(7, rp=True))

    async def scenario() -> PostmarkObservation:
        async with _client() as client:
            return await observe_domain(client, "PostmarkNonProd", NAME, wait=10, verify=True, interval=0.05)

    observation = _run(scenario())
    assert observation.problem is None, str(observation.problem)
    assert observation.verified_dkim
    assert observation.verified_return_path
    assert not observation.deadline_hit
    assert (dkim.call_count, return_path.call_count, reads.call_count) == (2, 0, 1)
    assert observation.triggered == ("/domains/7/verifyDkim", "/domains/7/verifyDkim")
    assert [(a.method, a.path, a.status) for a in observation.attempts] == [
        ("GET", "/domains?count=500&offset=0", 200),
        ("GET", "/domains/7", 200),
        ("PUT", "/domains/7/verifyDkim", 200),
        ("PUT", "/domains/7/verifyDkim", 200),
    ]
    assert observation.domain is not None
    assert observation.domain.dkim_host.startswith("20260526234343pm._domainkey.")
    assert "DKIM verified, Return-Path verified (4 requests over" in observation.describe()
    _assert_no_token(repr(observation), observation.describe())


def test_only_the_unverified_part_is_triggered(mock: respx.MockRouter) -> None:
    mock.get("/domains").mock(return_value=_listing(_domain_json(7, rp=True)))
    mock.get("/domains/7").mock(return_value=httpx.Response(200, json=_domain_json(7, rp=True)))
    dkim = mock.put("/domains/7/verifyDkim").respond(json=_domain_json(7, dkim=True, rp=True))
    return_path = mock.put("/domains/7/verifyReturnPath").respond(json=_domain_json(7, dkim=True, rp=True))

    async def scenario() -> PostmarkObservation:
        async with _client() as client:
            return await observe_domain(client, "PostmarkNonProd", NAME, wait=5, verify=True)

    observation = _run(scenario())
    assert observation.verified_dkim
    assert observation.verified_return_path
    assert (dkim.call_count, return_path.call_count) == (1, 0)


def test_verify_false_never_writes(mock: respx.MockRouter) -> None:
    mock.get("/domains").mock(return_value=_listing(_domain_json(7)))
    reads = mock.get("/domains/7").mock(
        side_effect=[httpx.Response(200, json=_domain_json(7))] * 2
        + [httpx.Response(200, json=_domain_json(7, dkim=True, rp=True))]
    )
    writes = mock.put(path__regex=r"/domains/7/verify.*").respond(json=_domain_json(7, dkim=True, rp=True))

    async def scenario() -> PostmarkObservation:
        async with _client() as client:
            return await observe_domain(client, "PostmarkNonProd", NAME, wait=10, verify=False, interval=0.05)

    observation = _run(scenario())
    assert writes.call_count == 0
    assert observation.triggered == ()
    assert reads.call_count == 3
    assert observation.verified_dkim
    assert observation.verified_return_path


def test_wait_deadline_hit(mock: respx.MockRouter) -> None:
    mock.get("/domains").mock(return_value=_listing(_domain_json(7)))
    reads = mock.get("/domains/7").mock(return_value=httpx.Response(200, json=_domain_json(7, rp=True)))
    dkim = mock.put("/domains/7/verifyDkim").respond(json=_domain_json(7, rp=True))

    async def scenario() -> PostmarkObservation:
        async with _client() as client:
            return await observe_domain(client, "PostmarkNonProd", NAME, wait=0.8, verify=True)

    started = time.monotonic()
    observation = _run(scenario())
    elapsed = time.monotonic() - started
    assert observation.deadline_hit
    assert observation.problem is None, str(observation.problem)
    assert not observation.verified_dkim
    assert observation.verified_return_path
    assert 0.8 <= elapsed < 1.8
    assert reads.call_count == 1  # the read of find_domain; polls re-trigger verification instead of reading
    assert dkim.call_count == 3  # the trigger, then polls at 0.5 s and at the deadline (0.8 s)
    assert "DKIM NOT verified, Return-Path verified" in observation.describe()
    assert "deadline hit" in observation.describe()


def test_domain_not_found_is_an_explained_error(mock: respx.MockRouter) -> None:
    mock.get("/domains").mock(return_value=_listing(_domain_json(8, "stage.ardamails.com")))
    other = {"ID": 3, "Domain": "stage.ardamails.com", "EmailAddress": "mail@stage.ardamails.com", "Confirmed": True}
    mock.get("/senders").respond(json={"TotalCount": 1, "SenderSignatures": [other]})

    async def scenario() -> PostmarkObservation:
        async with _client() as client:
            return await observe_domain(client, "PostmarkNonProd", NAME, wait=5, verify=True)

    observation = _run(scenario())
    assert observation.domain is None
    assert observation.senders == ()
    assert observation.problem is not None
    assert observation.problem.kind == "not-found", observation.problem
    assert str(observation.problem) == (
        f"domain {NAME} is not among the domains (nor the Sender Signatures) of Postmark account PostmarkNonProd at "
        f"{API}; was the partition deployed?"
    )
    assert not observation.deadline_hit


def test_a_listing_404_means_no_such_endpoint_even_with_postmark_json(mock: respx.MockRouter) -> None:
    mock.get("/domains").respond(404, json={"ErrorCode": 0, "Message": "Not found"})

    async def scenario() -> PostmarkObservation:
        async with _client() as client:
            return await observe_domain(client, "PostmarkNonProd", NAME, wait=0, verify=False)

    observation = _run(scenario())
    assert observation.problem is not None
    assert observation.problem.kind == "not-postmark", observation.problem
    assert str(observation.problem).endswith(
        "answered 404 (ErrorCode 0: Not found): no such endpoint (404 Entity doesn't exist, with Postmark's error "
        "JSON); check postmark.api_url / POSTMARK_API_URL"
    )


# --- rate limiting and secrets -----------------------------------------------------------------------


def test_rate_limiter_never_exceeds_its_rate_in_any_second_across_tasks_and_threads() -> None:
    limiter = RateLimiter(10)
    releases: list[float] = []
    lock = threading.Lock()

    async def burst(n: int) -> None:
        async def one() -> None:
            released = await limiter.acquire()
            assert time.monotonic() >= released
            with lock:
                releases.append(released)

        await asyncio.gather(*(one() for _ in range(n)))

    threads = [threading.Thread(target=lambda: asyncio.run(burst(8))) for _ in range(2)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    asyncio.run(burst(8))
    for thread in threads:
        thread.join()
    releases.sort()
    assert len(releases) == 24
    busiest = max(sum(1 for t in releases[i:] if t < start + 1.0) for i, start in enumerate(releases))
    assert busiest == 10, f"{busiest} releases within one second at 10/s"
    assert releases[9] - started < 0.1  # the first ten go at once
    assert releases[10] - releases[0] >= 1.0 - 1e-9  # the eleventh when the first is a second old
    assert releases[-1] - started < 2.0 + 0.5  # and the rest are not starved


def test_a_rate_below_one_spaces_single_requests() -> None:
    limiter = RateLimiter(4 / 3)  # 4/3 per second: one at a time, 0.75 s apart

    async def three() -> list[float]:
        return [await limiter.acquire() for _ in range(3)]

    first, second, third = asyncio.run(three())
    assert second - first >= 0.75 - 1e-9
    assert third - second >= 0.75 - 1e-9


def test_clients_share_the_process_limiter_by_default(mock: respx.MockRouter) -> None:
    route = mock.get("/domains/7").respond(json=_domain_json(7))
    shared = RateLimiter.shared()
    assert RateLimiter.shared() is shared
    limit = int(shared.rate)

    async def scenario() -> None:
        async with PostmarkClient(API, TOKEN) as first, PostmarkClient(API, TOKEN) as second:
            await asyncio.gather(*(c.get_domain(7) for c in [first, second] * (limit // 2 + 1)))

    started = time.monotonic()
    _run(scenario())
    assert time.monotonic() - started >= 1.0 - 0.01, "one more than the shared limit must wait for the next second"
    assert route.call_count == 2 * (limit // 2 + 1)


def test_rate_limiter_rejects_a_nonsense_rate() -> None:
    with pytest.raises(ValueError, match="rate must be > 0"):
        RateLimiter(0)


def test_client_repr_names_the_reference_not_the_token() -> None:
    async def scenario() -> str:
        async with _client() as client:
            return repr(client)

    shown = _run(scenario())
    assert CANARY not in shown
    assert REF in shown


# --- against the sandbox's Postmark fake (real HTTP on loopback) and DNS server ----------------------

NS_HOST = "ns-1.sandbox.test"


class _World:
    """The sandbox DNS server serving one partition zone, and the Postmark fake verifying against it."""

    def __init__(self) -> None:
        fake_module = pytest.importorskip("sandbox.postmark_fake")
        self.dns_module = pytest.importorskip("sandbox.dns_server")
        self.records: list[Any] = [self.dns_module.RecordSet(NAME, "NS", 300, (f"{NS_HOST}.",))]
        zone = self.dns_module.Zone
        self.dns = self.dns_module.DnsServer(lambda: [zone(NAME, tuple(self.records))], {NS_HOST: "127.0.0.2"})
        self.dns.start()
        address = (self.dns.address_of(NS_HOST), self.dns.port)
        self.fake = fake_module.PostmarkFake({"PostmarkNonProd": CANARY}, dns=address, verify_delay=0.3)
        self.fault = fake_module.PostmarkFault
        self.fake.start()

    def publish(self, name: str) -> None:
        """Create the domain in the fake and serve its DKIM key and Return-Path CNAME from DNS."""
        created = self.fake.create_domain("PostmarkNonProd", name, f"pm-bounces.{name}")
        value = created["DKIMPendingTextValue"]
        strings = " ".join(f'"{value[i : i + 200]}"' for i in range(0, len(value), 200))
        record_set = self.dns_module.RecordSet
        self.records += [
            record_set(created["DKIMPendingHost"], "TXT", 300, (strings,)),
            record_set(f"pm-bounces.{name}", "CNAME", 300, ("pm.mtasv.net.",)),
        ]

    def close(self) -> None:
        self.fake.stop()
        self.dns.stop()


@pytest.fixture
def world() -> Iterator[_World]:
    """The Postmark fake and a DNS server for it, as real servers on loopback."""
    built = _World()
    try:
        yield built
    finally:
        built.close()


def _observe(world: _World, *, verify: bool, wait: float, token: Secret = TOKEN, **kwargs: Any) -> PostmarkObservation:
    async def scenario() -> PostmarkObservation:
        options = {"account": "PostmarkNonProd", "limiter": RateLimiter(200), "backoff": 0.01} | kwargs
        async with PostmarkClient(world.fake.url, token, **options) as client:
            return await observe_domain(client, "PostmarkNonProd", NAME, wait=wait, verify=verify, interval=0.1)

    return _run(scenario())


def test_fake_verify_and_poll_until_verified(world: _World) -> None:
    world.publish(NAME)
    observation = _observe(world, verify=True, wait=5)
    assert observation.problem is None, str(observation.problem)
    assert observation.verified_dkim
    assert observation.verified_return_path
    assert not observation.deadline_hit
    assert observation.domain is not None
    assert observation.domain.dkim_update_status == "Verified"
    assert observation.domain.dkim_text_value == world.fake.domain("PostmarkNonProd", NAME)["DKIMTextValue"]
    dkim, return_path = (
        f"/domains/{observation.domain.id}/verifyDkim",
        f"/domains/{observation.domain.id}/verifyReturnPath",
    )
    assert observation.triggered[:2] == (dkim, return_path)
    assert set(observation.triggered[2:]) == {dkim}, "only DKIM was asked again (a second verifyDkim)"
    assert len(observation.triggered) > 2, "DKIM turns verified only on a later verifyDkim"
    assert all(call.account == "PostmarkNonProd" for call in world.fake.calls)
    _assert_no_token(repr(observation), observation.describe())


def test_fake_read_only_observation_never_writes(world: _World) -> None:
    world.publish(NAME)
    observation = _observe(world, verify=False, wait=0.3)
    assert world.fake.writes() == []
    assert observation.deadline_hit
    assert not observation.verified_dkim


def test_fake_dkim_not_in_dns_hits_the_deadline(world: _World) -> None:
    world.fake.create_domain("PostmarkNonProd", NAME, f"pm-bounces.{NAME}")
    observation = _observe(world, verify=True, wait=0.5)
    assert observation.deadline_hit
    assert not observation.verified_dkim
    assert not observation.verified_return_path


def test_fake_rejects_a_wrong_token(world: _World) -> None:
    world.publish(NAME)
    observation = _observe(world, verify=True, wait=1, token=Secret("env:WRONG", "wrong-token-4d1f"))
    assert observation.problem is not None
    assert "answered 401 (ErrorCode 10" in str(observation.problem)
    assert "the token of account PostmarkNonProd (env:WRONG) was rejected" in str(observation.problem)


def test_fake_faults_rate_limit_then_hang(world: _World) -> None:
    world.publish(NAME)
    world.fake.inject(world.fault(429, path="/domains$", count=1, retry_after=0.2))
    world.fake.inject(world.fault(0, path="verifydkim"))
    observation = _observe(world, verify=True, wait=5, timeout=0.5)
    assert [a.status for a in observation.attempts[:2]] == [429, 200]
    assert observation.attempts[0].note == "retrying in 0.20 s (Retry-After); the account's listing, shared"
    assert observation.problem is not None
    assert "verifyDkim: no answer within 0.5 s" in str(observation.problem)
