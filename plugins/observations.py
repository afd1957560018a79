"""Postmerge observations: gathered once per partition, all ready partitions together, shared by the checks."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from plugins import progress
from plugins.partitions import SELECTION, Selection, group_of, item_partition, run_dir, selection
from plugins.run_state import RunState
from probes import dns
from probes.config import Target
from probes.observe import Credentials, PartitionObservation, Settings, observe_all, observe_dns
from probes.pacing import ROUTE53_BURST, ROUTE53_RATE, Quota


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mailgate")
    group.addoption(
        "--dns-wait", metavar="SECONDS", type=float, default=0.0, help="retry DNS checks until this deadline"
    )
    group.addoption(
        "--postmark-wait", metavar="SECONDS", type=float, default=60.0, help="poll Postmark verification this long"
    )
    group.addoption(
        "--no-postmark-verify",
        action="store_true",
        help="only read Postmark; never trigger verifyDkim/verifyReturnPath",
    )
    group.addoption(
        "--strict-resolvers", action="store_true", help="fail DNS checks when the public resolvers disagree"
    )
    group.addoption(
        "--postmark-rate",
        metavar="PER_SECOND",
        type=float,
        default=10.0,
        help="most Postmark requests in any one second, per account (default 10)",
    )
    # Route 53's published token buckets (probes.pacing): per account, and per operation within it
    group.addoption(
        "--route53-burst",
        metavar="REQUESTS",
        type=float,
        default=ROUTE53_BURST,
        help=f"Route 53 requests at once, per account and operation (default {ROUTE53_BURST:g})",
    )
    group.addoption(
        "--route53-rate",
        metavar="PER_SECOND",
        type=float,
        default=ROUTE53_RATE,
        help=f"Route 53 requests per second sustained, per account and operation (default {ROUTE53_RATE:g})",
    )


OBSERVATIONS = "observations"  # the run directory's shared dictionary: partition name -> its observation


def _quota(config: pytest.Config) -> Quota:
    try:
        return Quota(config.getoption("route53_burst"), config.getoption("route53_rate"))
    except ValueError as exc:
        raise pytest.UsageError(f"--route53-burst/--route53-rate: {exc}") from None


class Observer:
    """This process's observations: the first request gathers every partition that is ready to be seen."""

    def __init__(self, config: pytest.Config, chosen: Selection) -> None:
        file = chosen.config.file
        self.settings = Settings(
            infra_repo=chosen.infra_repo,
            parent_domain=file.domain,
            resolvers=chosen.resolvers,
            nameserver_port=file.dns.nameserver_port,
            dns_timeout=file.dns.timeout,
            postmark_url=chosen.postmark_api_url,
            postmark_wait=config.getoption("postmark_wait"),
            postmark_verify=not config.getoption("no_postmark_verify"),
            postmark_rate=config.getoption("postmark_rate"),
            route53=_quota(config),
            dmarc_mailbox=file.dmarc.report_mailbox,
        )
        self.dns_wait: float = config.getoption("dns_wait")
        self.strict_resolvers: bool = config.getoption("strict_resolvers")
        self.dmarc_mailbox = file.dmarc.report_mailbox
        self.dmarc_policies = tuple(file.dmarc.allowed_policies)
        self.dmarc_production_policies = tuple(file.dmarc.production_policies or file.dmarc.allowed_policies)
        self.credentials = Credentials()
        self._config = config
        self._chosen = chosen
        self._seen: dict[str, PartitionObservation] = {}
        self._lock = threading.Lock()
        self._gathering: _Gathering | None = None
        self._early = False  # the xdist controller gathers before the workers ask

    def get(self, target: Target, batch: bool) -> PartitionObservation:
        """The partition's observation; with `batch`, every partition of this run is gathered once, together,
        by whichever process (xdist worker) asks first, and shared with the others through the run directory.
        That process waits only for this partition: the others are still being gathered while it is judged."""
        with self._lock:
            if target.name not in self._seen:
                if not batch:
                    self._seen.update(observe_all([target], self.settings, self.credentials, self._told))
                    gc.freeze()  # see _Gathering: the observations live until the run ends
                elif self._gathering is None or target.name not in self._gathering.names:
                    self._gather_for(target)
            gathering = None if target.name in self._seen else self._gathering
        return self._seen[target.name] if gathering is None else gathering.wait(target.name)

    def _gather_for(self, target: Target) -> None:
        """Read what the run's other processes published; when the target is not among it, start gathering it
        and every other partition still unobserved, holding the run directory's lock until all are published."""
        state, held = self._locked()
        found: dict[str, PartitionObservation] = state.read(OBSERVATIONS, {})
        self._seen.update(found)
        if target.name in found:
            held.close()
            return
        self._gathering = self._start(self._pending(target, found), state, found, held)

    def gather_early(self, nodeids: Sequence[str]) -> None:
        """xdist controller: gather the partitions these collected checks will ask for, in a thread, holding the
        run directory's lock (taken before any worker runs a check), while the other workers finish starting
        and the scheduler hands out work. The workers then find the observations ready instead of gathering."""
        if self._gathering is not None or self._config.getoption("deploy", False):
            return  # a deploy run observes each partition after its deploy
        chosen = {t.name for t in self._chosen.targets}
        names = {group_of(i, chosen) for i in nodeids if "tests_postmerge/" in i.split("::", 1)[0]}
        targets = [t for t in self._chosen.targets if t.name in names]
        if not targets:
            return
        state, held = self._locked()
        self._gathering = self._start(targets, state, {}, held)
        self._early = True

    def _locked(self) -> tuple[RunState, contextlib.ExitStack]:
        """The run directory's state with the observations' lock held: the gathering releases it once published."""
        state = RunState(run_dir(self._config))
        held = contextlib.ExitStack()
        held.enter_context(state.locked(OBSERVATIONS))
        return state, held

    def _start(
        self,
        targets: Sequence[Target],
        state: RunState,
        found: dict[str, PartitionObservation],
        held: contextlib.ExitStack,
    ) -> _Gathering:
        def gather(arrived: Callable[[PartitionObservation], None]) -> None:
            def done(observation: PartitionObservation) -> None:
                self._told(observation)
                arrived(observation)

            try:
                new = observe_all(targets, self.settings, self.credentials, done)
                with contextlib.suppress(OSError):  # the run ended (Ctrl-C) and its directory is gone
                    state.publish(OBSERVATIONS, found | new)
            finally:
                held.close()  # releases the lock: the others read what was published, or gather themselves

        return _Gathering([t.name for t in targets], gather)

    def join(self, timeout: float) -> None:
        """Wait for a gathering still under way before the run directory is removed (every check has waited for
        its partition already, unless the run was interrupted: then not for long)."""
        if self._gathering is not None:
            self._gathering.join(timeout)

    @property
    def early_note(self) -> str | None:
        """The xdist controller's line on its early gathering, once it has ended."""
        gathering = self._gathering
        if not self._early or gathering is None or not gathering.succeeded:
            return None
        return (
            f"mailgate: observed {len(gathering.names)} partition(s) in {gathering.took:.1f} s "
            "while the xdist workers started"
        )

    def _told(self, observation: PartitionObservation) -> None:
        """A progress line as each partition's observation completes."""
        stack = observation.stack.status or "no stack"
        answers = f"{len(observation.dns.answers)} DNS answers" if observation.dns else "DNS not observed"
        postmark = "Postmark read" if observation.postmark else "Postmark not read"
        took = observation.finished - observation.started
        progress.say(
            self._config,
            f"[{observation.target.name}] observed in {took:.1f} s: stack {stack}; {answers}; {postmark}",
        )

    def _pending(self, target: Target, found: dict[str, PartitionObservation]) -> list[Target]:
        """The target plus every selected partition this run has postmerge checks for and nobody observed yet."""
        session_items = self._config.stash.get(ITEMS, ())
        names = {item_partition(item) for item in session_items if item.get_closest_marker("postmerge")}
        return [t for t in self._chosen.targets if t == target or (t.name in names and t.name not in found)]

    def settle_dns(
        self, observation: PartitionObservation, judge: Callable[[dns.ZoneObservation], list[str]]
    ) -> tuple[dns.ZoneObservation | None, list[str], int]:
        """Judge the partition's DNS; with --dns-wait, look again until it passes or the deadline comes."""
        zone = observation.dns
        if zone is None:
            return None, [str(observation.dns_problem or "DNS was not observed")], 1
        problems = judge(zone)
        deadline = time.monotonic() + self.dns_wait
        looks = 1
        while problems and time.monotonic() < deadline:
            time.sleep(min(1.0 * looks, max(0.0, deadline - time.monotonic())))
            questions = [(a.qname, a.rtype) for a in zone.answers]
            zone = asyncio.run(observe_dns(observation.target, self.settings, questions))
            problems = judge(zone)
            looks += 1
        return zone, problems, looks


class _Gathering:
    """Partitions being observed on a thread of their own, each handed over as it completes: a check waits for its
    own partition only, so the first partitions are judged while Route 53's pacing still holds back the last."""

    def __init__(self, names: Sequence[str], gather: Callable[[Callable[[PartitionObservation], None]], None]) -> None:
        self.names = frozenset(names)
        self._gather = gather
        self._ready: dict[str, PartitionObservation] = {}
        self._failed: BaseException | None = None
        self._finished = False
        self._changed = threading.Condition()
        self.took = 0.0
        self._thread = threading.Thread(target=self._run, name="mailgate-observe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        try:
            self._gather(self._arrived)
        except BaseException as exc:  # handed to every check still waiting, which fails with it
            self._failed = exc
        finally:
            # the observations, and the AWS models and clients loaded to make them, live until the run ends: no
            # later garbage collection (pytest runs two at exit) needs to walk them again
            gc.freeze()
            with self._changed:
                self.took = time.monotonic() - started
                self._finished = True
                self._changed.notify_all()

    def _arrived(self, observation: PartitionObservation) -> None:
        with self._changed:
            self._ready[observation.target.name] = observation
            self._changed.notify_all()

    @property
    def succeeded(self) -> bool:
        with self._changed:
            return self._finished and self._failed is None

    def wait(self, name: str) -> PartitionObservation:
        """Partition `name`'s observation, once it has completed; the gathering's error if it failed first."""
        with self._changed:
            self._changed.wait_for(lambda: name in self._ready or self._finished)
            if name in self._ready:
                return self._ready[name]
        if self._failed is not None:
            raise self._failed
        raise RuntimeError(f"mailgate: the gathering ended without observing partition {name}")

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


OBSERVER = pytest.StashKey[Observer]()
ITEMS = pytest.StashKey[tuple[pytest.Item, ...]]()  # this process's collected items (after deselection)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """xdist controller, as each worker finishes collecting: the first one starts the early gathering."""
    if SELECTION in node.config.stash:
        observer(node.config).gather_early(ids)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    note = config.stash[OBSERVER].early_note if OBSERVER in config.stash else None
    if note:
        terminalreporter.write_line(note)


def pytest_unconfigure(config: pytest.Config) -> None:
    if OBSERVER in config.stash:
        config.stash[OBSERVER].join(timeout=5.0)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    config.stash[ITEMS] = tuple(items)


def observer(config: pytest.Config) -> Observer:
    if OBSERVER not in config.stash:
        config.stash[OBSERVER] = Observer(config, selection(config))
    return config.stash[OBSERVER]


@pytest.fixture
def observed(target: Target, deployed: object, request: pytest.FixtureRequest) -> PartitionObservation:
    """The partition as the world shows it now (after this run's deploy, when there was one)."""
    batch = not request.config.getoption("deploy", False)
    return observer(request.config).get(target, batch)


@pytest.fixture
def mailgate_observer(request: pytest.FixtureRequest) -> Observer:
    """This process's Observer: settings, credentials and DNS settling shared by the postmerge checks."""
    return observer(request.config)
