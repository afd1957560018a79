"""`--sandbox`: start the local world once per run (on the xdist controller) and point every probe at it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

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
    from sandbox.world import World, apply_env

    source = config.getoption("partitions_file")
    source_path = Path(config.invocation_params.dir, source) if source else config.rootpath / "partitions.yaml"
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
    config.option.partitions_file = info.partitions_file
    config.option.infra_repo = None


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
