"""`--sandbox`: start the local world once per run (on the xdist controller) and point every probe at it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from plugins.partitions import PARTITIONS_FILE, partitions_file

WORLD = pytest.StashKey[object]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("mailgate").addoption(
        "--sandbox",
        action="store_true",
        help="run against a local world (moto, DNS, Postmark, the sandbox CDK app) started for this run",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("sandbox") or hasattr(config, "workerinput"):
        return  # workers inherit the controller's environment and options
    if config.getoption("infra_repo"):
        # the world's stacks, exports and context entries are made from the sandbox's own CDK app
        raise pytest.UsageError(
            "--sandbox deploys the sandbox's own infra app (sandbox/infra) into its world; "
            "--infra-repo cannot be combined with it: drop one of the two"
        )
    from sandbox.world import World, apply_env

    source_path = partitions_file(config)
    state = Path(tempfile.mkdtemp(prefix="mailgate-sandbox-"))
    world = World(state, source=source_path)
    try:
        info = world.start()
    except Exception:
        world.stop()
        shutil.rmtree(state, ignore_errors=True)
        raise
    config.stash[WORLD] = world
    saved = dict(os.environ)
    apply_env(info.env())
    config.add_cleanup(lambda: _stop(world, state, saved))
    config.stash[PARTITIONS_FILE] = Path(info.partitions_file)


def _stop(world: object, state: Path, saved: dict[str, str]) -> None:
    from sandbox.world import World

    assert isinstance(world, World)
    world.stop()
    os.environ.clear()
    os.environ.update(saved)
    shutil.rmtree(state, ignore_errors=True)


def pytest_report_header(config: pytest.Config) -> str | None:
    world = config.stash.get(WORLD, None)
    if world is None:
        return None
    from sandbox.world import World

    assert isinstance(world, World)
    info = world.info
    where = f"AWS {info.aws_url}, DNS {info.resolver}, Postmark {info.postmark_url}"
    return f"mailgate sandbox: {where} (started in {world.started_in:.2f} s)"
