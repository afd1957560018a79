"""The sandbox AWS's request quotas: Route 53's token buckets per account, enforced as Route 53 enforces them.

Route 53 Developer Guide, "Throttling for Amazon Route 53 API requests"
(https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/throttling-api-requests.html): per account, one
bucket for all operations combined (50 tokens, refilled 10/s) and one per operation (50 and 10/s for every
operation the page does not list; GetHostedZone and ChangeResourceRecordSets are not listed); a request takes a
token from both and is throttled when either is empty, answered HTTP 400 with Code `Throttling` and Message
`Rate exceeded`. The answer's XML is Route 53's REST-XML error document, as Route 53 sends it
(`<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Error><Type>Sender</Type>
<Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>…`, quoted in
pcorliss/ruby_route_53 issue 13); botocore's route53 model names the error `ThrottlingException` with HTTP 400,
and botocore's parser reads the `Code` element. CloudFormation publishes no number: its bucket is off unless
a test sets one, and it answers in the query protocol's error document (same elements, its own namespace).

Independent of probes.pacing on purpose: the sandbox checks the client, it must not share its arithmetic.
"""

from __future__ import annotations

import functools
import re
import threading
import time
import uuid
from dataclasses import dataclass

ROUTE53_NAMESPACE = "https://route53.amazonaws.com/doc/2013-04-01/"
CLOUDFORMATION_NAMESPACE = "http://cloudformation.amazonaws.com/doc/2010-05-15/"


@dataclass(frozen=True)
class Bucket:
    """A bucket's size: `burst` tokens at most, `rate` tokens added per second."""

    burst: float
    rate: float


ROUTE53_ACCOUNT = Bucket(50, 10)
ROUTE53_OPERATION = Bucket(50, 10)


class _Level:
    """One bucket's current tokens, refilled continuously ("you can use refill tokens as they're added")."""

    def __init__(self, size: Bucket, now: float) -> None:
        self.size = size
        self.tokens = size.burst
        self.at = now

    def refill(self, now: float) -> None:
        self.tokens = min(self.size.burst, self.tokens + (now - self.at) * self.size.rate)
        self.at = now


class Quotas:
    """Buckets per account for one service: an account-wide bucket and one per operation; `admit` takes a token
    from both or, when either is empty, none (the request is throttled and costs nothing)."""

    def __init__(self, account: Bucket, operation: Bucket) -> None:
        self.account = account
        self.operation = operation
        self._levels: dict[tuple[str, str], _Level] = {}
        self._lock = threading.Lock()

    def admit(self, account: str, operation: str, now: float | None = None) -> bool:
        with self._lock:
            now = time.monotonic() if now is None else now
            levels = [self._level(account, "", self.account, now), self._level(account, operation, self.operation, now)]
            for level in levels:
                level.refill(now)
            if any(level.tokens < 1 for level in levels):
                return False
            for level in levels:
                level.tokens -= 1
            return True

    def refill_all(self) -> None:
        """Every bucket full again, as after a quiet spell longer than burst / rate seconds."""
        with self._lock:
            self._levels.clear()

    def _level(self, account: str, operation: str, size: Bucket, now: float) -> _Level:
        key = (account, operation)
        if key not in self._levels:
            self._levels[key] = _Level(size, now)
        return self._levels[key]


def throttling_body(namespace: str) -> bytes:
    """The error document Route 53 (REST-XML) and CloudFormation (query) send with a throttled request's 400."""
    return (
        f'<?xml version="1.0"?>\n<ErrorResponse xmlns="{namespace}"><Error><Type>Sender</Type>'
        f"<Code>Throttling</Code><Message>Rate exceeded</Message></Error>"
        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    ).encode()


@functools.cache
def _route53_routes() -> tuple[tuple[str, re.Pattern[str], int, str], ...]:
    """(method, path pattern, literal length, operation) for every Route 53 operation, from botocore's model."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("route53")
    routes = []
    for name in model.operation_names:
        http = model.operation_model(name).http
        uri = http["requestUri"].split("?", 1)[0]
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(uri))
        routes.append((http["method"], re.compile(f"^{pattern}$"), len(re.sub(r"\{[^}]+\}", "", uri)), name))
    return tuple(routes)


def route53_operation(method: str, path: str) -> str:
    """The Route 53 operation a REST request calls (the most literal route that matches), or ''."""
    routes = _route53_routes()
    matches = [(size, name) for verb, pattern, size, name in routes if verb == method and pattern.match(path)]
    return max(matches)[1] if matches else ""
