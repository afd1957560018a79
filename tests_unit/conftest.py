"""Fixtures for the suite's own tests: one sandbox world per test process, reset for each test that uses it."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings

from plugins.outcome import PASSED_OUTCOMES, merge
from sandbox.scenarios import Scenarios
from sandbox.suite import suite_args
from sandbox.world import UNSET_ENV, World

# The suite's tests by kind, so `make check` can run the pure ones in seconds (`-m pure`) and `make test` all:
# a test is `world` when it starts real components (moto, DNS servers, the Postmark fake, npm/CDK, a mailgate
# run against a world), `pytester` when it runs pytest in a temporary project, else `pure`. The kind follows from
# the fixtures a test uses; these modules start their components without a fixture.
WORLD_FIXTURES = frozenset(
    {"world", "session_scenarios", "scenarios", "run_checks", "canary_world", "moto_url", "node_modules", "repo"}
    | {"server", "dns_server", "tiny_dns", "fake", "zones", "aws_errors"}
)
WORLD_MODULES = frozenset({"test_trust_load.py", "test_bench.py", "test_sandbox_world.py", "test_infra_app.py"})
KINDS = {
    "pure": "no server, no subprocess, no pytest run: `make check` runs these",
    "pytester": "runs pytest in a temporary project (pytester)",
    "world": "starts real components: moto, DNS servers, the Postmark fake, npm and the CDK app",
}

# The property tests draw 150 examples each in `make test`; `make check`, the fast tier, sets
# MAILGATE_HYPOTHESIS_PROFILE=check and draws 20, to stay a one-minute loop.
settings.register_profile("suite", max_examples=150, deadline=None)
settings.register_profile("check", max_examples=20, deadline=None)
settings.load_profile(os.environ.get("MAILGATE_HYPOTHESIS_PROFILE", "suite"))


def pytest_configure(config: pytest.Config) -> None:
    for kind, meaning in KINDS.items():
        config.addinivalue_line("markers", f"{kind}: {meaning}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(_kind(item))


def _kind(item: pytest.Item) -> str:
    names = set(getattr(item, "fixturenames", ()))
    if names & WORLD_FIXTURES or item.path.name in WORLD_MODULES:
        return "world"
    return "pytester" if "pytester" in names or _runs_a_process(item) else "pure"


def _runs_a_process(item: pytest.Item) -> bool:
    """A test that starts pytest (or another program) in a subprocess costs what a pytester test costs."""
    function = getattr(item, "function", None)
    try:
        source = inspect.getsource(function) if function is not None else ""
    except (OSError, TypeError):
        return False
    return "subprocess" in source or "sys.executable" in source


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """This test process's sandbox world (moto, DNS servers, the Postmark fake), started once, stopped at the end."""
    with World(tmp_path_factory.mktemp("world"), verify_delay=0.3) as started:
        yield started


@pytest.fixture(scope="session")
def session_scenarios(world: World) -> Scenarios:
    """Scenarios over this process's world; `scenarios` resets it for each test."""
    return Scenarios(world)


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of synthesized assemblies for the whole session, shared by its xdist workers: the sandbox's
    `cdk-runner` (SANDBOX_SYNTH_CACHE) synthesizes inputs it has not seen and copies the assembly of inputs it
    has. Scenario tests synthesize the same four unchanged partitions dozens of times; tests_unit/test_infra_app.py
    runs the CDK app without it and proves a copy equals a synth."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = shared / "synth-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def scenarios(session_scenarios: Scenarios, synth_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Scenarios:
    """A fresh world (nothing deployed, no faults) and this process's environment pointed at it."""
    session_scenarios.reset()
    for name in UNSET_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in session_scenarios.world.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SANDBOX_SYNTH_CACHE", str(synth_cache))
    return session_scenarios


@dataclass
class Run:
    """One in-process mailgate run: outcome and failure text per check, keyed 'test_name[partition]'."""

    ret: int
    outcomes: dict[str, str]
    messages: dict[str, str]
    ended: dict[str, float]  # when each check's last phase ended (time.time())

    def failed(self) -> set[str]:
        return {name for name, outcome in self.outcomes.items() if outcome not in PASSED_OUTCOMES}


@pytest.fixture
def run_checks(pytester: pytest.Pytester, scenarios: Scenarios, tmp_path: Path) -> object:
    """Run the real suite (tests_preflight/tests_postmerge) against the world: `run_checks("-m", "postmerge")`."""

    def run(*args: str) -> Run:
        world = scenarios.world.info
        argv = suite_args(
            "-p",
            "no:hypothesispytest",  # re-imported by every in-process run otherwise (~1 s each)
            *args,
            partitions_file=world.partitions_file,
            reports_dir=tmp_path / "reports",
        )
        recorder = pytester.inline_run(*argv)
        outcomes: dict[str, str] = {}
        messages: dict[str, str] = {}
        ended: dict[str, float] = {}
        for report in recorder.getreports("pytest_runtest_logreport"):
            name = report.nodeid.rsplit("::", 1)[-1]
            ended[name] = max(ended.get(name, 0.0), report.stop)
            outcome = merge(outcomes.get(name), report)
            if outcome is not None:
                outcomes[name] = outcome
            if report.failed or report.skipped:
                messages[name] = str(report.longrepr)
        ret = int(recorder.ret)
        return Run(ret, outcomes, messages, ended)

    return run


@pytest.fixture
def checks_project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester project laid out like mailgate's: this repo's partitions.yaml, the check folders as
    testpaths and the markers the checks use; tests add their own check files."""
    pytester.makefile(".yaml", partitions=(Path(__file__).resolve().parents[1] / "partitions.yaml").read_text())
    pytester.makeini(
        "[pytest]\ntestpaths = tests_preflight tests_postmerge\n"
        "markers =\n    preflight: p\n    postmerge: p\n    code: c\n"
    )
    return pytester
