"""The gated deploy: a session step per partition that runs only when it is safe, and says truthfully how it went.

Without `--deploy` nothing here changes anything. With it, a partition is deployed once per run, just
before its first postmerge check, and only when every preflight check of that partition and every
partition-independent preflight check passed in this same run, and (production) the operator
confirmed it by name. Postmerge checks of a partition that was not deployed error with the reason.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from plugins import progress
from plugins.observations import observer
from plugins.outcome import PASSED_OUTCOMES, merge
from plugins.partitions import SELECTION, item_partition, run_dir, selection, ungrouped
from plugins.report import reports_dir
from plugins.run_state import RunState
from plugins.signoff_log import NOT_DONE, TableProblem, cascade_row, cleared
from plugins.waivers import applying, waiver_of
from probes import aws, shell
from probes.cdk import CdkError, read_context_entry
from probes.config import Target
from probes.secrets import CredentialError

GATE_WAIT = 3600.0  # seconds to wait for partition-independent checks running on another xdist worker
OUTCOMES = "outcomes"  # the run directory's fact log, shared by the xdist workers
CLEARED = PASSED_OUTCOMES | {"waived"}  # a waived failure is accepted, on the record: it does not block


@dataclass(frozen=True)
class DeployOutcome:
    partition: str
    ran: bool
    ok: bool
    refused: str | None
    exit_code: int | None
    duration: float
    log: str | None
    confirmed_by: str | None
    interrupted: bool = False
    failure: str | None = None
    confirmed_user: str | None = None  # the login of the operator who confirmed a production deploy
    relied: tuple[str, ...] = ()  # how each `after:` predecessor counted as verified

    def reason(self) -> str:
        if self.refused:
            return f"not deployed: {self.refused}"
        if self.interrupted:
            return "not deployed: the deploy was interrupted"
        return f"deploy failed: {self.failure}"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mailgate")
    group.addoption("--deploy", action="store_true", help="deploy each partition whose preflight passed in this run")
    group.addoption(
        "--confirm-production",
        metavar="NAME",
        action="append",
        default=[],
        help="confirm the deploy of production partition NAME (repeatable)",
    )
    group.addoption("--deploy-timeout", metavar="SECONDS", type=float, default=1800.0, help="kill a deploy after this")


class Gate:
    """Preflight outcomes of this run, across xdist workers, and the deploys done by this process."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.required: dict[str, list[str]] = {}  # partition -> preflight node ids (before deselection)
        self.shared: list[str] = []  # partition-independent preflight node ids
        self.collected: set[str] = set()
        self.preflight: set[str] = set()  # shared and required, as a set (after collection)
        self.outcomes: dict[str, str] = {}
        self._state: dict[str, str] = {}
        self._waived: set[str] = set()
        self.deploys: dict[str, DeployOutcome] = {}
        self.verdicts: dict[str, list[str]] = {}  # partition -> its postmerge node ids in this run
        self.postmerge: set[str] = set()  # all of them
        self.lock = threading.Lock()

    @property
    def state(self) -> RunState:
        return RunState(run_dir(self.config))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """A check's outcome is known at its teardown (plugins.outcome); a failure its waiver covers is `waived`."""
        nodeid = ungrouped(report.nodeid)
        outcome = merge(self._state.get(nodeid), report)
        if outcome is not None:
            self._state[nodeid] = outcome
        if report.skipped and hasattr(report, "wasxfail"):
            waiver = waiver_of(report)
            if waiver and waiver["state"] == "waived":
                self._waived.add(nodeid)
        if report.when != "teardown":
            return
        merged = self._state.pop(nodeid, "did not run")
        waived = nodeid in self._waived and merged == "xfailed"
        self._waived.discard(nodeid)
        self.outcomes[nodeid] = "waived" if waived else merged
        if nodeid in self.preflight or nodeid in self.postmerge:
            self._publish({"nodeid": nodeid, "outcome": self.outcomes[nodeid]})

    def _publish(self, fact: dict[str, Any]) -> None:
        """Tell the run's other processes (xdist workers) a fact: check outcomes and deploy outcomes."""
        self.state.append(OUTCOMES, fact)

    def _facts(self) -> list[dict[str, Any]]:
        return self.state.facts(OUTCOMES)

    def blockers(self, target: Target) -> list[str]:
        """Why the partition may not be deployed yet: checks failed, skipped or missing (empty: go)."""
        wanted = self.shared + self.required.get(target.name, [])
        missing = [n for n in wanted if n not in self.collected]
        if missing:
            return [f"preflight check {_name(n)} did not run in this run (deselected?)" for n in missing]
        outcomes = self._wait_for(wanted)
        return [
            f"preflight check {_name(n)} {outcomes.get(n, 'did not finish')}"
            for n in wanted
            if outcomes.get(n) not in CLEARED
        ]

    def _wait_for(self, wanted: list[str], what: str = "preflight checks") -> dict[str, str]:
        deadline = time.monotonic() + GATE_WAIT
        told = time.monotonic()
        while True:
            known = dict(self.outcomes)
            for fact in self._facts():
                if "nodeid" in fact:
                    known.setdefault(fact["nodeid"], fact["outcome"])
            if all(n in known for n in wanted) or time.monotonic() > deadline:
                return known
            if time.monotonic() - told > 30:
                waiting = ", ".join(_name(n) for n in wanted if n not in known)
                _say(self.config, f"deploy gate: waiting for {what} on other workers: {waiting}")
                told = time.monotonic()
            time.sleep(0.5)

    def announce(self, outcome: DeployOutcome) -> None:
        """Publish a partition's deploy outcome, so a partition after it can say why it was not verified."""
        self.deploys[outcome.partition] = outcome
        self._publish(
            {"deploy": outcome.partition, "ok": outcome.ok, "reason": None if outcome.ok else outcome.reason()}
        )

    def predecessors(self, target: Target) -> tuple[list[str], list[str]]:
        """(why not yet, how each counted as verified) for the partitions `after:` names: this run's postmerge
        verdict when their postmerge checks are part of it (waited for until complete), else the execution log."""
        refused: list[str] = []
        relied: list[str] = []
        for name in target.after:
            ids = self.verdicts.get(name, [])
            if not ids:
                verified, said = _logged_verified(self.config, name)
                (relied if verified else refused).append(
                    said if verified else f"{target.name} needs {name} verified first; {said}"
                )
                continue
            outcomes = self._wait_for(ids, f"the postmerge verdict of {name}")
            open_ = [n for n in ids if outcomes.get(n) not in CLEARED]
            if not open_:
                waived = sum(outcomes.get(n) == "waived" for n in ids)
                extra = f", {waived} waived" if waived else ""
                relied.append(f"{name} verified in this run ({len(ids)} postmerge checks passed{extra})")
                continue
            deploy = next((f for f in reversed(self._facts()) if f.get("deploy") == name), None)
            if deploy is not None and not deploy["ok"]:
                why = f"{name} was not verified in this run: {deploy['reason']}"
            else:
                listed = ", ".join(f"{_name(n)} {outcomes.get(n, 'did not finish')}" for n in open_[:3])
                more = f" +{len(open_) - 3} more" if len(open_) > 3 else ""
                why = f"{name} was not verified in this run: {listed}{more}"
            refused.append(f"{target.name} needs {name} verified first; {why}")
        return refused, relied


GATE = pytest.StashKey[Gate]()


def _name(nodeid: str) -> str:
    return nodeid.rsplit("::", 1)[-1]


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """The gate exists only under --deploy (as xdist registers its session only when distributing)."""
    if not config.getoption("deploy"):
        return
    gate = Gate(config)
    config.stash[GATE] = gate
    config.pluginmanager.register(gate, "mailgate-deploy-gate")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Note every preflight check before -m/-k deselect any: a deselected one still blocks the deploy."""
    _in_deploy_order(config, items)
    gate = config.stash.get(GATE, None)
    if gate is None:
        return  # no --deploy: no gate
    for item in items:
        if not item.get_closest_marker("preflight"):
            continue
        partition = item_partition(item)
        if partition is None:
            gate.shared.append(ungrouped(item.nodeid))
        else:
            gate.required.setdefault(partition, []).append(ungrouped(item.nodeid))


def pytest_collection_finish(session: pytest.Session) -> None:
    gate = session.config.stash.get(GATE, None)
    if gate is None:
        return
    gate.collected = {ungrouped(item.nodeid) for item in session.items}
    gate.preflight = {*gate.shared, *(n for ids in gate.required.values() for n in ids)}
    for item in session.items:
        partition = item_partition(item)
        if partition is not None and item.get_closest_marker("postmerge"):
            gate.verdicts.setdefault(partition, []).append(ungrouped(item.nodeid))
            gate.postmerge.add(ungrouped(item.nodeid))


def _in_deploy_order(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With --deploy, each partition's postmerge checks together, partitions in deploy order (the selection's):
    in one process a partition's verdict is then complete before any partition after it is deployed; under xdist
    the work units (a partition each) are handed out in that order, so a worker only ever waits for a partition
    that an earlier unit holds (no wait can be circular)."""
    if not config.getoption("deploy") or SELECTION not in config.stash:
        return
    order = {t.name: i for i, t in enumerate(config.stash[SELECTION].targets)}

    def rank(indexed: tuple[int, pytest.Item]) -> tuple[int, int]:
        index, item = indexed
        partition = item_partition(item)
        if item.get_closest_marker("postmerge") and partition is not None:
            return order.get(partition, len(order)), index
        return -1, index

    items[:] = [item for _, item in sorted(enumerate(items), key=rank)]


@pytest.fixture
def deployed(target: Target, request: pytest.FixtureRequest) -> DeployOutcome | None:
    """This run's deploy of the partition (None without --deploy); errors the check when it was not deployed."""
    config = request.config
    if not config.getoption("deploy"):
        return None
    gate = config.stash[GATE]
    with gate.lock:
        outcome = gate.deploys.get(target.name)
        if outcome is None:
            outcome = _deploy(config, gate, target)
            if outcome.confirmed_by:
                outcome = replace(outcome, confirmed_user=_login())
            gate.announce(outcome)
            request.node.user_properties.append(("mailgate_deploy", json.dumps(asdict(outcome))))
    if outcome.interrupted:  # report it (the sign-off's Deploy cell says so), then stop the run as Ctrl-C would
        request.session.shouldstop = f"Ctrl-C during the deploy of {target.name}"
    if not outcome.ok:
        pytest.fail(outcome.reason(), pytrace=False)
    return outcome


def _deploy(config: pytest.Config, gate: Gate, target: Target) -> DeployOutcome:
    blockers = gate.blockers(target)
    if blockers:
        return _refused(target, "; ".join(blockers))
    before, relied = gate.predecessors(target)
    if before:
        return _refused(target, "; ".join(before))
    for note in relied:
        _say(config, f"[{target.name}] deploy order: {note}")
    return replace(_deploy_now(config, target), relied=tuple(relied))


def _refused(target: Target, reason: str) -> DeployOutcome:
    return DeployOutcome(target.name, False, False, reason, None, 0.0, None, None)


def _deploy_now(config: pytest.Config, target: Target) -> DeployOutcome:
    confirmed_by = None
    if target.production:
        confirmed_by = _confirm(config, target)
        if confirmed_by is None:
            return _refused(
                target, f"{target.name} is a production partition: confirm with --confirm-production {target.name}"
            )
    chosen = selection(config)
    try:
        observer(config).credentials.get(target.credential)  # `op read` before the deploy, not during it
    except CredentialError as exc:
        return DeployOutcome(target.name, False, False, None, None, 0.0, None, confirmed_by, failure=str(exc))
    command = chosen.config.file.deploy.command.format(**target.command_vars())
    log = reports_dir(config) / "logs" / f"deploy-{target.infrastructure}-{target.name}.log"
    progress.say(config, f"[{target.name} deploy] started: {command}")
    try:
        result = shell.run(
            command,
            cwd=chosen.infra_repo,
            log_path=log,
            timeout=config.getoption("deploy_timeout"),
            on_line=lambda line: progress.say(config, f"[{target.name} deploy] {line}"),
        )
    except shell.CommandInterrupted as stop:
        result = stop.result
    except shell.CommandError as exc:
        return DeployOutcome(target.name, False, False, None, None, 0.0, str(log), confirmed_by, failure=str(exc))
    outcome = DeployOutcome(
        target.name,
        True,
        result.ok,
        None,
        result.exit_code,
        result.duration,
        str(log),
        confirmed_by,
        interrupted=result.interrupted,
        failure=None if result.ok else result.describe(),
    )
    progress.say(config, f"[{target.name} deploy] {result.describe()}")
    if outcome.ok:
        missing = _landed(chosen.infra_repo, target)
        if missing:
            return DeployOutcome(**{**asdict(outcome), "ok": False, "failure": f"{result.describe()}, but {missing}"})
    return outcome


def _landed(infra_repo: Path, target: Target) -> str | None:
    """What a successful deploy should have left and did not: the context entry, a healthy stack."""
    try:
        entry = read_context_entry(infra_repo / "cdk.context.json", target.context_key)
    except CdkError as exc:
        return str(exc)
    if entry is None:
        return f"cdk.context.json has no {target.context_key} entry"
    stack = aws.stack(target.profile, target.region, target.stack_name)
    if stack.problem is not None:
        return str(stack.problem)
    if stack.status not in aws.HEALTHY_STACK:
        return f"stack {target.stack_name} is {stack.status}"
    return None


def _confirm(config: pytest.Config, target: Target) -> str | None:
    """`--confirm-production NAME`, or the partition's name typed at a prompt on a real terminal; either way the
    operator is shown the waivers that apply to the partition, so what is accepted is confirmed with it."""
    waived = [f"  {w.describe()} [{w.where}]" for w in applying(config, target.name)]
    accepted = (
        [f"waivers that apply to {target.name} ({len(waived)}):", *waived]
        if waived
        else [f"no waiver applies to {target.name}"]
    )
    if target.name in config.getoption("confirm_production"):
        for line in accepted:
            _say(config, f"[{target.name}] {line}")
        return "--confirm-production"
    interactive = sys.stdin is not None and sys.stdin.isatty() and not os.environ.get("CI")
    if not interactive or hasattr(config, "workerinput"):
        return None
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        prompt = "\n".join(["", *accepted, f"Deploy production partition {target.name}? Type its name to confirm: "])
        typed = input(prompt).strip()
    return "prompt" if typed == target.name else None


def _logged_verified(config: pytest.Config, name: str) -> tuple[bool, str]:
    """Whether the execution log's cascade row says the partition is verified (✅, or ⚠️ waived), and what it says."""
    log = selection(config).signoff_log
    if log is None:
        return False, (
            f"{name}'s postmerge checks are not part of this run and no execution log is configured "
            "(signoff.log / --signoff-log) to say it was verified"
        )
    try:
        row = cascade_row(log.read_text(encoding="utf-8"), name)
    except (OSError, UnicodeDecodeError) as exc:
        return False, f"the execution log {log} cannot be read: {getattr(exc, 'strerror', None) or exc}"
    except TableProblem as exc:
        return False, f"the execution log {log} has no usable cascade table: {exc}"
    if row is None:
        return False, f"the execution log {log} has no row for {name}"
    verified = row["Verified"] or NOT_DONE
    if cleared(verified):
        return True, f"{name} counted as verified from the execution log {log}: Verified {verified}"
    return False, f"the execution log says {verified}"


def _login() -> str:
    """Who is running the deploy, as the execution log's gate note names them."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return f"uid {os.getuid()}"


def _say(config: pytest.Config, line: str) -> None:
    """To the operator's terminal, never into captured output, also under -q (plugins.progress)."""
    progress.say(config, line, even_quiet=True)
