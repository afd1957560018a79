"""Options, the loaded partitions file, and parametrisation over the selected partitions."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from plugins._compat import grouping_scheduler, redecide_rootdir
from probes.config import Config, ConfigError, Target, load


@dataclass(frozen=True)
class Selection:
    """What this run covers: the loaded partitions file, the chosen partitions and overrides."""

    config: Config
    targets: tuple[Target, ...]
    infra_repo: Path
    resolvers: tuple[str, ...]
    signoff_log: Path | None
    postmark_api_url: str


SELECTION = pytest.StashKey[Selection]()
# the partitions file a mode chose (--sandbox: its world's; a worker: the controller's), before the option
PARTITIONS_FILE = pytest.StashKey[Path]()
RUN_DIR = pytest.StashKey[Path]()
SHARED_GROUP = "mailgate-shared"
WORKER_KEY = "mailgate"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mailgate", "mailgate: partition rollout gate")
    group.addoption(
        "--partitions-file", metavar="PATH", help="partitions file (default: partitions.yaml in the rootdir)"
    )
    group.addoption(
        "--partition", metavar="NAMES", default="all", help="partitions to check: a comma list, or all (default)"
    )
    group.addoption(
        "--resolver",
        metavar="HOST[:PORT]",
        action="append",
        default=[],
        help="DNS resolver to ask instead of dns.resolvers (repeatable)",
    )
    group.addoption(
        "--infra-repo", metavar="PATH", help="infrastructure repo (default: infra.repo of the partitions file)"
    )
    group.addoption("--signoff-log", metavar="PATH", help="execution log whose cascade table to update")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """Undo pytest's misreading of `--partitions-file PATH` (separate form) as a test path.

    pytest chooses rootdir and ini file before plugins add their options, so the value of a path
    option in the separate form counts as a test path and can move the rootdir (losing the project's
    configuration). Now that our options are known, choose again from the real test paths and, if
    that differs, apply it with the ini's addopts, as pytest would have done.
    """
    redecide_rootdir(early_config, parser, args)


def partitions_file(config: pytest.Config) -> Path:
    """The partitions file this run uses: the one a mode chose, the option (relative to the invocation dir), or
    the rootdir's."""
    chosen = config.stash.get(PARTITIONS_FILE, None)
    if chosen is not None:
        return chosen
    option = config.getoption("partitions_file")
    if option:
        return Path(config.invocation_params.dir, option).resolve()
    return config.rootpath / "partitions.yaml"


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    shared = getattr(config, "workerinput", {}).get(WORKER_KEY)
    if shared is not None:  # an xdist worker: the controller's run directory and partitions file
        config.stash[RUN_DIR] = Path(shared["run_dir"])
        if shared["partitions_file"] is not None:
            config.stash[PARTITIONS_FILE] = Path(shared["partitions_file"])
    else:
        made = Path(tempfile.mkdtemp(prefix="mailgate-run-"))
        config.stash[RUN_DIR] = made
        config.add_cleanup(lambda: shutil.rmtree(made, ignore_errors=True))
    path = partitions_file(config)
    chosen = PARTITIONS_FILE in config.stash or config.getoption("partitions_file")
    if not chosen and not path.exists():
        return  # not a mailgate directory; a test that needs a partition says so at collection
    config.stash[SELECTION] = _select(config, path)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: object) -> None:
    """xdist: hand each worker what the controller decided at configure time (it does not forward options)."""
    config = node.config  # type: ignore[attr-defined]  # xdist's WorkerController (untyped) carries the config
    node.workerinput[WORKER_KEY] = {  # type: ignore[attr-defined]  # and the worker's input
        "run_dir": str(run_dir(config)),
        "partitions_file": str(partitions_file(config)) if SELECTION in config.stash else None,
    }


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """`--dist loadgroup` as mailgate needs it: every check of a partition on one worker (its synth, deploy and
    observations stay together), the partition-independent preflight checks together on one worker.

    xdist's own loadgroup ignores its groups under pytest 9.2 (plugins/_compat.py); this groups by node id.
    """
    if config.getvalue("dist") != "loadgroup" or SELECTION not in config.stash:
        return None
    partitions = {t.name for t in config.stash[SELECTION].config.targets.values()}
    deploying = bool(config.getoption("deploy", False))
    return grouping_scheduler(config, log, lambda nodeid: group_of(nodeid, partitions), deal_all=deploying)


def ungrouped(nodeid: str) -> str:
    """A node id without the `@group` suffix xdist's loadgroup adds on workers (an `@` inside a path or a
    parameter is not one)."""
    head, at, group = nodeid.rpartition("@")
    return head if at and not any(c in group for c in ":[]/") else nodeid


def group_of(nodeid: str, partitions: set[str]) -> str:
    """The xdist work unit of a node id: its partition, the shared preflight group, or the node itself."""
    head = ungrouped(nodeid)
    if head.endswith("]") and "[" in head:
        param = head[head.rindex("[") + 1 : -1]
        if param in partitions:
            return param
        return head
    return SHARED_GROUP if "tests_preflight/" in head else head


def _select(config: pytest.Config, path: Path) -> Selection:
    try:
        loaded = load(path)
        targets = tuple(loaded.in_deploy_order(loaded.select(config.getoption("partition"))))
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    invocation = config.invocation_params.dir
    repo_option = config.getoption("infra_repo")
    log_option = config.getoption("signoff_log")
    return Selection(
        config=loaded,
        targets=targets,
        infra_repo=Path(invocation, repo_option).resolve() if repo_option else loaded.infra_repo,
        resolvers=tuple(config.getoption("resolver") or loaded.file.dns.resolvers),
        signoff_log=Path(invocation, log_option).resolve() if log_option else loaded.signoff_log,
        postmark_api_url=os.environ.get("POSTMARK_API_URL") or loaded.file.postmark.api_url,
    )


def selection(config: pytest.Config) -> Selection:
    """This run's selection; a usage error naming the file when there is none."""
    try:
        return config.stash[SELECTION]
    except KeyError:
        raise pytest.UsageError(
            f"{partitions_file(config)}: partitions file not found; create it or pass --partitions-file PATH"
        ) from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" not in metafunc.fixturenames:
        return
    targets = metafunc.config.stash.get(SELECTION, None)
    if targets is None:
        return  # reported as a usage error in pytest_collection_modifyitems
    chosen = targets.targets
    metafunc.parametrize("target", chosen, ids=[t.name for t in chosen], scope="session")


@pytest.hookimpl(tryfirst=True)  # before xdist's worker turns xdist_group markers into node-id suffixes
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        target = _item_target(item)
        if target is not None:
            item.add_marker(pytest.mark.xdist_group(target.name))
        elif "target" in getattr(item, "fixturenames", ()):
            selection(config)  # raises the usage error: partition tests but no partitions file
        elif item.get_closest_marker("preflight"):
            # one worker runs every partition-independent check first, so no deploy waits on itself
            item.add_marker(pytest.mark.xdist_group(SHARED_GROUP))


def _item_target(item: pytest.Item) -> Target | None:
    callspec = getattr(item, "callspec", None)
    value = callspec.params.get("target") if callspec is not None else None
    return value if isinstance(value, Target) else None


def run_dir(config: pytest.Config) -> Path:
    """A directory this run's processes (xdist controller and workers) share, removed at the end."""
    return config.stash[RUN_DIR]


def item_partition(item: pytest.Item) -> str | None:
    """The partition an item checks, or None for a partition-independent check."""
    target = _item_target(item)
    return target.name if target else None


@pytest.fixture(scope="session", name="selection")
def selection_fixture(request: pytest.FixtureRequest) -> Selection:
    """This run's selection: partitions file, chosen partitions, infra repo, resolvers."""
    return selection(request.config)
