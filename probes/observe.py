"""Gather everything postmerge judges, for many partitions at once, in one event loop.

Per partition three chains start together: AWS (stack → hosted zone), DNS (parent → delegation →
every authoritative server, and the resolvers; beside it, the names receivers look up beyond the zone:
SPF include targets, DMARC report authorizations), Postmark (credential → find → verify and poll). All
partitions' chains overlap, so a run costs about the longest chain, not one request per assertion.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from probes import aws, cdk, dns, outside, postmark, sending_domain
from probes.config import Target
from probes.pacing import Quota
from probes.problem import Problem
from probes.secrets import CredentialError, Secret, resolve

AWS_THREADS = 64
# `op read` starts a process per credential: a few at once, in a pool of their own, so that no Postmark read waits
# behind AWS reads that Route 53's pacing holds (256 partitions: the Postmark reads began as the pacing ended)
CREDENTIAL_THREADS = 8


@dataclass(frozen=True)
class Settings:
    """How to observe: where to ask and how long to wait."""

    infra_repo: Path
    parent_domain: str
    resolvers: tuple[str, ...]
    nameserver_port: int
    dns_timeout: float
    postmark_url: str
    postmark_wait: float
    postmark_verify: bool
    postmark_rate: float
    route53: Quota = field(default_factory=Quota)
    dmarc_mailbox: str = ""  # the configured rua mailbox: its domain's report authorization is looked up


@dataclass(frozen=True)
class PartitionObservation:
    """One partition as the world shows it now: the raw evidence every postmerge check judges."""

    target: Target
    context: cdk.ContextEntry | None
    context_problem: Problem | None
    stack: aws.Stack
    zone: aws.HostedZone | None
    dns: dns.ZoneObservation | None
    dns_problem: Problem | None
    postmark: postmark.PostmarkObservation | None
    postmark_problem: Problem | None
    started: float
    finished: float


class Credentials:
    """Each credential reference resolved once per process (`op read` once, before the checks need it), thread-safe."""

    def __init__(self, resolver: Callable[[str], Secret] = resolve) -> None:
        self._resolve = resolver
        self._found: dict[str, Secret | CredentialError] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, reference: str) -> Secret:
        with self._lock:
            lock = self._locks.setdefault(reference, threading.Lock())
        with lock:
            if reference not in self._found:
                try:
                    self._found[reference] = self._resolve(reference)
                except CredentialError as exc:
                    self._found[reference] = exc
        found = self._found[reference]
        if isinstance(found, CredentialError):
            raise found
        return found


def observe_all(
    targets: Sequence[Target],
    settings: Settings,
    credentials: Credentials,
    on_done: Callable[[PartitionObservation], None] | None = None,
) -> dict[str, PartitionObservation]:
    """Observe every target concurrently; returns partition name -> observation, in target order.
    `on_done` is told of each partition as its observation completes (on the thread that called this)."""
    aws.set_route53_quota(settings.route53)
    return asyncio.run(_observe_all(targets, settings, credentials, on_done))


class _Accounts:
    """One Postmark client per account (name and token) for the gathering: its connections, its
    domain listing (read once for all its partitions) and its rate limit (Postmark limits per token)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._clients: dict[tuple[str, str], postmark.PostmarkClient] = {}

    def client(self, account: str, token: Secret) -> postmark.PostmarkClient:
        key = (account, hashlib.sha256(token.reveal().encode()).hexdigest())
        if key not in self._clients:
            limiter = postmark.RateLimiter(self._settings.postmark_rate)
            self._clients[key] = postmark.PostmarkClient(
                self._settings.postmark_url, token, account=account, limiter=limiter
            )
        return self._clients[key]

    async def aclose(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self._clients.values()))


async def _observe_all(
    targets: Sequence[Target],
    settings: Settings,
    credentials: Credentials,
    on_done: Callable[[PartitionObservation], None] | None,
) -> dict[str, PartitionObservation]:
    accounts = _Accounts(settings)

    async def observe(target: Target, pools: _Pools) -> PartitionObservation:
        observation = await _observe(target, settings, credentials, pools, accounts)
        if on_done is not None:
            on_done(observation)
        return observation

    references = len({t.credential for t in targets})
    try:
        with (
            _started_pool(min(AWS_THREADS, 4 * len(targets) + 4)) as aws_pool,
            _started_pool(min(CREDENTIAL_THREADS, max(references, 1))) as credential_pool,
        ):
            pools = _Pools(aws_pool, credential_pool)
            found = await asyncio.gather(*(observe(t, pools) for t in targets))
    finally:
        await accounts.aclose()
    return {o.target.name: o for o in found}


@dataclass(frozen=True)
class _Pools:
    """The gathering's threads: AWS reads (paced, so they may wait) and credential reads, kept apart."""

    aws: ThreadPoolExecutor
    credentials: ThreadPoolExecutor


def _started_pool(size: int) -> ThreadPoolExecutor:
    """A pool whose threads are all started before any works: a thread started while others compute waits for
    the GIL (5 ms per switch), and 64 of them started on demand kept the event loop from its first DNS question
    for 0.3 s."""
    pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="observe")
    gate = threading.Event()
    waiting = [pool.submit(gate.wait) for _ in range(size)]
    gate.set()
    concurrent.futures.wait(waiting)
    return pool


async def _observe(
    target: Target,
    settings: Settings,
    credentials: Credentials,
    pools: _Pools,
    accounts: _Accounts,
) -> PartitionObservation:
    started = time.time()
    loop = asyncio.get_running_loop()
    context, context_problem = _context(settings.infra_repo, target)
    stack_and_zone = loop.run_in_executor(pools.aws, _stack_and_zone, target)
    dns_task = asyncio.ensure_future(_dns(target, settings, context))
    postmark_task = asyncio.ensure_future(_postmark(target, settings, credentials, pools.credentials, accounts))
    stack, zone = await stack_and_zone
    zone_observation, dns_problem = await dns_task
    postmark_observation, postmark_problem = await postmark_task
    if zone_observation is not None and postmark_observation is not None and postmark_observation.domain:
        zone_observation = await _postmark_keys(zone_observation, postmark_observation.domain, target, settings)
    return PartitionObservation(
        target=target,
        context=context,
        context_problem=context_problem,
        stack=stack,
        zone=zone,
        dns=zone_observation,
        dns_problem=dns_problem,
        postmark=postmark_observation,
        postmark_problem=postmark_problem,
        started=started,
        finished=time.time(),
    )


def _context(infra_repo: Path, target: Target) -> tuple[cdk.ContextEntry | None, Problem | None]:
    path = infra_repo / "cdk.context.json"
    try:
        entry = cdk.read_context_entry(path, target.context_key)
    except cdk.CdkError as exc:
        return None, Problem("context", str(exc))
    if entry is None:
        return None, Problem(
            "context",
            f"{path} has no entry {target.context_key}",
            "the deploy's pre-deploy step writes it; was it run?",
        )
    return entry, None


def _stack_and_zone(target: Target) -> tuple[aws.Stack, aws.HostedZone | None]:
    stack = aws.stack(target.profile, target.region, target.stack_name)
    zone_id = stack.exports().get(target.export_name("PartitionMailZoneId"))
    if not zone_id:
        return stack, None
    return stack, aws.hosted_zone(target.profile, target.region, zone_id, account=target.account)


async def _dns(
    target: Target, settings: Settings, context: cdk.ContextEntry | None
) -> tuple[dns.ZoneObservation | None, Problem | None]:
    queries = [(target.zone, "TXT"), (target.dmarc_host, "TXT"), (target.return_path_host, "CNAME")]
    if context is not None:
        queries.append((target.dkim_host(context.selector), "TXT"))
    try:
        return await observe_dns(target, settings, queries), None
    except ValueError as exc:
        return None, Problem("dns-settings", f"DNS settings: {exc}")


async def observe_dns(target: Target, settings: Settings, queries: Sequence[tuple[str, str]]) -> dns.ZoneObservation:
    """The zone from its delegation and every server, and meanwhile what receivers look up beyond it (SPF
    include targets, report authorizations) from the resolvers, once the delegation's first lookups (the parent's
    servers, shared by every zone) no longer need them; completed from the authoritative records.
    Raises ValueError for a resolver that is not an IP address."""

    async def ask(qname: str, rtype: str) -> dns.Answer:
        return await dns.resolve(qname, rtype, resolvers=settings.resolvers, timeout=settings.dns_timeout)

    async def beyond() -> tuple[dns.Answer, ...]:
        await dns.parent_lookups(
            settings.parent_domain,
            resolvers=settings.resolvers,
            port=settings.nameserver_port,
            timeout=settings.dns_timeout,
        )
        return await outside.from_resolvers(scope, ask)

    scope = outside.Scope(target.zone, settings.parent_domain, settings.dmarc_mailbox)
    observed, found = await asyncio.gather(
        dns.observe_zone(
            target.zone,
            settings.parent_domain,
            queries,
            resolvers=settings.resolvers,
            port=settings.nameserver_port,
            timeout=settings.dns_timeout,
        ),
        beyond(),
    )
    return await outside.from_authoritative(scope, ask, dataclasses.replace(observed, outside=found))


async def _postmark_keys(
    zone: dns.ZoneObservation, domain: postmark.Domain, target: Target, settings: Settings
) -> dns.ZoneObservation:
    """The zone, also asked for the DKIM keys Postmark names (a rotation's pending or revoked key, a current key the
    context does not name): known only once Postmark has answered, so a second round, and only when there are."""
    hosts = sending_domain.dkim_hosts(domain, target.zone)
    return await dns.ask_more(
        zone, [(h, "TXT") for h in hosts], port=settings.nameserver_port, timeout=settings.dns_timeout
    )


async def _postmark(
    target: Target,
    settings: Settings,
    credentials: Credentials,
    pool: ThreadPoolExecutor,
    accounts: _Accounts,
) -> tuple[postmark.PostmarkObservation | None, Problem | None]:
    loop = asyncio.get_running_loop()
    try:
        token = await loop.run_in_executor(pool, credentials.get, target.credential)
    except CredentialError as exc:
        return None, Problem("credential", f"the Postmark token of {target.postmark_account} could not be read: {exc}")
    observed = await postmark.observe_domain(
        accounts.client(target.postmark_account, token),
        target.postmark_account,
        target.zone,
        wait=settings.postmark_wait,
        verify=settings.postmark_verify,
    )
    return observed, None
