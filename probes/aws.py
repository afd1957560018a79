"""AWS observations per profile: identity, the partition stack and its exports, a hosted zone's delegation set.

Everything goes through boto3's own resolution (AWS_CONFIG_FILE, a profile's endpoint_url, role_arn,
SSO) with the profile named explicitly: a derived profile name is never guessed.

Quotas: Route 53 requests are paced per account with the token buckets its Developer Guide publishes
(probes.pacing), so a run of hundreds of partitions waits for tokens instead of being throttled.
CloudFormation publishes no number: its clients use botocore's adaptive retry mode, which slows the client
down once it sees throttling. Every throttled attempt a call saw is counted on its observation.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

import boto3
import botocore.exceptions as bx
import botocore.loaders
import botocore.session
from botocore.config import Config as BotoConfig

from probes.pacing import Pacer, Quota
from probes.problem import Problem

if TYPE_CHECKING:  # the typed stubs (boto3-stubs[sts,cloudformation,route53]) are a test extra, not a dependency
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_route53 import Route53Client
    from mypy_boto3_sts import STSClient

Service = Literal["sts", "cloudformation", "route53"]

HEALTHY_STACK = ("CREATE_COMPLETE", "UPDATE_COMPLETE")
_CLIENTS: dict[tuple[str, str, str], Any] = {}
_SESSIONS: dict[str, boto3.Session] = {}
_PROFILE_LOCKS: dict[str, threading.Lock] = {}
_LOCK = threading.Lock()
# total_max_attempts counts the first request; a Config's max_attempts would count retries only (5 requests)
_BOTO = BotoConfig(retries={"mode": "standard", "total_max_attempts": 4}, connect_timeout=5, read_timeout=20)
# adaptive = standard's retries plus a client-side rate that drops when throttled (botocore docs, "Retries")
_ADAPTIVE = _BOTO.merge(BotoConfig(retries={"mode": "adaptive", "total_max_attempts": 4}))
_SERVICE_CONFIG = {"cloudformation": _ADAPTIVE}
THROTTLE_CODES = frozenset(
    {"Throttling", "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded", "PriorRequestNotComplete"}
)
_ROUTE53 = Pacer(Quota())
_LOCAL = threading.local()


@dataclass
class Tally:
    """What one call met on the way: throttled attempts (retried by botocore) and seconds waited for Route 53
    tokens."""

    throttled: int = 0
    paced: float = 0.0


def set_route53_quota(quota: Quota) -> None:
    """Pace Route 53 requests to `quota` per account and per operation (a new quota starts with full buckets)."""
    _ROUTE53.use(quota)


@contextlib.contextmanager
def _tally() -> Iterator[Tally]:
    """Count what the AWS calls made in this block, on this thread, met (botocore calls block their thread)."""
    tally = Tally()
    _LOCAL.tally = tally
    try:
        yield tally
    finally:
        _LOCAL.tally = None


def _current() -> Tally | None:
    return getattr(_LOCAL, "tally", None)


def _count_throttle(parsed_response: dict[str, Any] | None = None, **_: Any) -> None:
    code = ((parsed_response or {}).get("Error") or {}).get("Code")
    tally = _current()
    if tally is not None and code in THROTTLE_CODES:
        tally.throttled += 1


def _route53_pacing(account: str) -> Any:
    """A before-send handler: every attempt (retries too) takes a token of the account's bucket and of the
    operation's bucket in that account before it leaves."""

    def pace(event_name: str = "", **_: Any) -> None:
        waited = _ROUTE53.wait(_route53_keys(account, event_name))
        tally = _current()
        if tally is not None:
            tally.paced += waited

    return pace


def _route53_answered(account: str) -> Any:
    """A response-received handler: an answer (a throttle too) means Route 53's buckets have started counting."""

    def answered(event_name: str = "", **_: Any) -> None:
        _ROUTE53.answered(_route53_keys(account, event_name))

    return answered


def _route53_keys(account: str, event_name: str) -> list[tuple[str, ...]]:
    """The buckets of a Route 53 request: the account's, and its operation's in that account."""
    return [("route53", account), ("route53", account, event_name.rsplit(".", 1)[-1])]


@dataclass(frozen=True)
class Identity:
    profile: str
    account: str | None
    arn: str | None
    problem: Problem | None
    elapsed: float


@dataclass(frozen=True)
class Output:
    key: str
    value: str
    export_name: str | None


@dataclass(frozen=True)
class Stack:
    """describe-stacks of one stack (never list-exports, which paginates), plus its last failure."""

    profile: str
    region: str
    name: str
    status: str | None
    status_reason: str | None
    outputs: tuple[Output, ...]
    last_failure: str | None
    problem: Problem | None
    elapsed: float
    throttled: int = 0

    def exports(self) -> dict[str, str]:
        return {o.export_name: o.value for o in self.outputs if o.export_name}


@dataclass(frozen=True)
class HostedZone:
    profile: str
    zone_id: str
    name: str | None
    name_servers: tuple[str, ...]
    problem: Problem | None
    throttled: int = 0
    paced: float = 0.0


def available_profiles() -> list[str]:
    return sorted(boto3.Session().available_profiles)


@overload
def client(profile: str, service: Literal["sts"], region: str, *, account: str | None = None) -> STSClient: ...
@overload
def client(
    profile: str, service: Literal["cloudformation"], region: str, *, account: str | None = None
) -> CloudFormationClient: ...
@overload
def client(profile: str, service: Literal["route53"], region: str, *, account: str | None = None) -> Route53Client: ...
def client(profile: str, service: Service, region: str, *, account: str | None = None) -> Any:
    """One cached client per profile, service and region. A profile's clients share one session, so its
    credentials (an assumed role) are fetched once, not once per service; clients are thread-safe,
    sessions are not, so each profile's clients are made under that profile's lock. A Route 53 client paces
    its requests in the buckets of `account` (the profile's, when not given)."""
    key = (profile, service, region)
    with _LOCK:
        if key in _CLIENTS:
            return _CLIENTS[key]
        profile_lock = _PROFILE_LOCKS.setdefault(profile, threading.Lock())
    with profile_lock:
        with _LOCK:
            if key in _CLIENTS:
                return _CLIENTS[key]
        made = _session(profile).client(service, region_name=region, config=_SERVICE_CONFIG.get(service, _BOTO))
        made.meta.events.register("response-received", _count_throttle)
        if service == "route53":
            made.meta.events.register("before-send", _route53_pacing(account or profile))
            made.meta.events.register("response-received", _route53_answered(account or profile))
        with _LOCK:
            _CLIENTS[key] = made
        return made


def _session(profile: str) -> boto3.Session:
    """The profile's session (call under the profile's lock); every session reads models through one loader."""
    if profile not in _SESSIONS:
        core = botocore.session.Session()
        with _LOCK:
            loader = _loader(core.get_config_variable("data_path"))
        core.register_component("data_loader", loader)
        _SESSIONS[profile] = boto3.Session(botocore_session=core, profile_name=profile)
    return _SESSIONS[profile]


@functools.cache
def _loader(data_path: str | None) -> botocore.loaders.Loader:
    """One loader per data path: botocore's service models parsed once per process (call under _LOCK)."""
    return botocore.loaders.create_loader(data_path)


def forget_clients() -> None:
    """Drop cached clients and sessions (a new world, a changed config file, credentials that died)."""
    with _LOCK:
        _CLIENTS.clear()
        _SESSIONS.clear()


def identity(profile: str, region: str) -> Identity:
    started = time.monotonic()
    try:
        answer = client(profile, "sts", region).get_caller_identity()
    except Exception as exc:
        return Identity(profile, None, None, classify(exc, profile), time.monotonic() - started)
    return Identity(profile, answer["Account"], answer["Arn"], None, time.monotonic() - started)


def stack(profile: str, region: str, name: str) -> Stack:
    started = time.monotonic()
    with _tally() as tally:
        try:
            cfn = client(profile, "cloudformation", region)
            found = cfn.describe_stacks(StackName=name)["Stacks"][0]
            status = found["StackStatus"]
            failure = None if status in HEALTHY_STACK else _last_failure(cfn, name)
        except Exception as exc:
            missing = Problem(
                "not-found",
                f"stack {name} does not exist in {region} for profile {profile}",
                "deploy the partition (or check the profile's account and the region)",
            )
            problem = classify(exc, profile, missing=missing)
            elapsed = time.monotonic() - started
            return Stack(profile, region, name, None, None, (), None, problem, elapsed, tally.throttled)
    outputs = tuple(
        Output(o["OutputKey"], o.get("OutputValue", ""), o.get("ExportName")) for o in found.get("Outputs", [])
    )
    return Stack(
        profile,
        region,
        name,
        status,
        found.get("StackStatusReason"),
        outputs,
        failure,
        None,
        time.monotonic() - started,
        tally.throttled,
    )


def _last_failure(cfn: Any, name: str) -> str | None:
    events = cfn.describe_stack_events(StackName=name).get("StackEvents", [])
    for event in events:
        if event.get("ResourceStatus", "").endswith("_FAILED"):
            reason = event.get("ResourceStatusReason", "no reason given")
            return f"{event.get('LogicalResourceId')} {event['ResourceStatus']}: {reason}"
    return None


def hosted_zone(profile: str, region: str, zone_id: str, *, account: str | None = None) -> HostedZone:
    """GetHostedZone, paced in the Route 53 buckets of `account` (the profile's account)."""
    with _tally() as tally:
        try:
            found = client(profile, "route53", region, account=account).get_hosted_zone(Id=zone_id)
        except Exception as exc:
            problem = classify(
                exc,
                profile,
                missing=Problem("not-found", f"hosted zone {zone_id} does not exist for profile {profile}"),
            )
            return HostedZone(profile, zone_id, None, (), problem, tally.throttled, tally.paced)
    servers = tuple(found.get("DelegationSet", {}).get("NameServers", []))
    return HostedZone(profile, zone_id, found["HostedZone"]["Name"], servers, None, tally.throttled, tally.paced)


def classify(exc: BaseException, profile: str, *, missing: Problem | None = None) -> Problem:
    """Turn a boto3/botocore failure into what failed and what to do next (`missing`: when the thing is absent).

    Kinds: profile-missing, login, access-denied, throttled, unreachable, not-found, error.
    """
    login = f"run `aws sso login --profile {profile}` (or refresh the profile's credentials) and retry"
    if isinstance(exc, bx.ProfileNotFound):
        profiles = ", ".join(available_profiles()) or "none"
        return Problem(
            "profile-missing",
            f"AWS profile {profile} is not in the AWS config; profiles that exist: {profiles}.",
            "Name the right one in partitions.yaml (profile names are irregular: never derive them)",
        )
    if isinstance(exc, (bx.SSOTokenLoadError, bx.UnauthorizedSSOTokenError, bx.TokenRetrievalError)):
        return Problem("login", f"the SSO login of profile {profile} is missing or expired", login)
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError, bx.CredentialRetrievalError)):
        return Problem("login", f"profile {profile} has no usable credentials", login)
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError)):
        return Problem("unreachable", f"AWS endpoint unreachable for profile {profile}: {exc}", "check the network")
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        if code in ("ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "UnrecognizedClientException"):
            return Problem("login", f"profile {profile}: {code}: {message}", login)
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            return Problem(
                "access-denied",
                f"profile {profile} is not allowed: {message}",
                "use the infrastructure's admin profile",
            )
        if code in THROTTLE_CODES:
            return Problem("throttled", f"AWS throttled profile {profile} after retries ({message})", "retry later")
        if missing is not None and (code in ("NoSuchHostedZone",) or "does not exist" in message):
            return missing
        return Problem("error", f"profile {profile}: {code}: {message}")
    return Problem("error", f"profile {profile}: {type(exc).__name__}: {exc}")
