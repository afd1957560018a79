"""Token buckets that pace requests to a published quota, so a run waits for a token instead of being throttled.

Route 53 throttles API requests per AWS account with token buckets (Route 53 Developer Guide, "Throttling for
Amazon Route 53 API requests", https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/throttling-api-requests.html):
one bucket for all operations of the account combined and one per operation, each holding at most `burst`
tokens and refilled at `rate` tokens per second; a request takes a token from both and is throttled when either
is empty. The defaults are the page's: 50 and 10/s for the account and for any operation it does not list
(GetHostedZone is not listed). Older guidance said five requests per second; both numbers are settings.

The client keeps one token of each bucket in hand (HEADROOM): Route 53 counts a request when it arrives, the
client when it leaves, and arrivals are not spaced exactly as departures were (a new connection, the network, a
busy machine). One token absorbs 1/rate seconds of that jitter (100 ms at 10/s) for the price of one request's
worth of burst.

Route 53's buckets start with the first request that arrives, the client's with the first that leaves: with h
tokens in hand request k is admitted only while d_0 - d_k <= h / rate (d: a request's time from leaving to
arriving), so a slow first request (a new connection, 64 threads starting) used up all of the headroom at 256
partitions. So a bucket refills from the first answer instead (Route 53 has surely counted the first request by
then); until it comes, only the tokens in hand go out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

ROUTE53_BURST = 50.0
ROUTE53_RATE = 10.0
HEADROOM = 1.0
FIRST_ANSWER_WAIT = 10.0  # seconds a caller beyond the tokens in hand waits for a first answer before counting anyway


@dataclass(frozen=True)
class Quota:
    """A token bucket's size: at most `burst` requests at once, `rate` per second sustained."""

    burst: float = ROUTE53_BURST
    rate: float = ROUTE53_RATE

    def __post_init__(self) -> None:
        if self.burst < 1 or self.rate <= 0:
            raise ValueError(f"a quota needs burst >= 1 and rate > 0, got burst {self.burst}, rate {self.rate}")


class TokenBucket:
    """A bucket that hands out tokens in order of asking: a caller reserves its token at once and is told how long
    to wait for it, so concurrent callers queue fairly and the bucket never goes faster than its refill."""

    def __init__(self, quota: Quota, clock: Callable[[], float] = time.monotonic) -> None:
        self.quota = quota
        self._clock = clock
        self._tokens = quota.burst
        self._at: float | None = None  # when refill started: the first answer (None: not yet)
        self._started = threading.Condition()

    def reserve(self, now: float | None = None) -> float:
        """Take one token; the seconds until it exists (0: now). Call under no lock of the caller's. Beyond the
        tokens in hand of a bucket not yet started, it first waits for `answered` (FIRST_ANSWER_WAIT at most)."""
        with self._started:
            if self._at is None and self._tokens < 1:
                if not self._started.wait_for(lambda: self._at is not None, timeout=FIRST_ANSWER_WAIT):
                    self._at = self._clock()
                now = self._clock()
            now = self._clock() if now is None else now
            if self._at is not None:
                self._tokens = min(self.quota.burst, self._tokens + max(0.0, now - self._at) * self.quota.rate)
                self._at = max(now, self._at)
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.quota.rate

    def answered(self) -> None:
        """A request of this bucket was answered: start refilling now, if not started yet."""
        with self._started:
            if self._at is None:
                self._at = self._clock()
                self._started.notify_all()


class Pacer:
    """Buckets per key (an account, an account's operation), made on first use, each HEADROOM tokens short of the
    quota's burst (never below one); `wait` takes a token from each of the given keys' buckets and sleeps until
    the last of them exists."""

    def __init__(
        self,
        quota: Quota,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.quota = quota
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[tuple[str, ...], TokenBucket] = {}
        self._lock = threading.Lock()

    def use(self, quota: Quota) -> None:
        """Pace to `quota` from now on; a changed quota starts with full buckets."""
        with self._lock:
            if quota != self.quota:
                self.quota = quota
                self._buckets.clear()

    def wait(self, keys: Sequence[tuple[str, ...]]) -> float:
        """Block until a token of every bucket in `keys` is this caller's; returns the seconds waited."""
        now = self._clock()
        delay = max(self._bucket(key).reserve(now) for key in keys)
        if delay > 0:
            self._sleep(delay)
        return delay

    def _bucket(self, key: tuple[str, ...]) -> TokenBucket:
        with self._lock:
            if key not in self._buckets:
                kept = Quota(max(1.0, self.quota.burst - HEADROOM), self.quota.rate)
                self._buckets[key] = TokenBucket(kept, self._clock)
            return self._buckets[key]

    def answered(self, keys: Sequence[tuple[str, ...]]) -> None:
        """A request paced by `keys` was answered: their buckets start refilling, if not started yet."""
        for key in keys:
            self._bucket(key).answered()
