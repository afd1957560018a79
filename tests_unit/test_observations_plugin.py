"""The postmerge observations: gathered together, handed to each check as its own partition completes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from plugins.observations import _Gathering
from probes.config import load
from probes.observe import PartitionObservation
from sandbox.dns_server import Fault

ROOT = Path(__file__).resolve().parents[1]
Arrived = Callable[[PartitionObservation], None]


def _observation(name: str) -> PartitionObservation:
    target = load(ROOT / "partitions.yaml").targets[name]
    fields: dict[str, Any] = dict.fromkeys(PartitionObservation.__dataclass_fields__)
    return PartitionObservation(**(fields | {"target": target, "started": 0.0, "finished": 0.0}))


def test_a_partition_is_handed_over_while_the_others_are_still_being_gathered() -> None:
    release = threading.Event()

    def gather(arrived: Arrived) -> None:
        arrived(_observation("dev"))
        assert release.wait(timeout=10), "the test never released the gathering"
        arrived(_observation("stage"))

    gathering = _Gathering(["dev", "stage"], gather)
    try:
        assert gathering.wait("dev").target.name == "dev", "dev waited for stage"
        assert not gathering.succeeded, "the gathering ended before stage arrived"
    finally:
        release.set()
    assert gathering.wait("stage").target.name == "stage"
    gathering.join(timeout=5)
    assert gathering.succeeded


def test_a_gathering_that_fails_fails_every_check_still_waiting_with_its_error() -> None:
    def gather(arrived: Arrived) -> None:
        arrived(_observation("dev"))
        raise OSError("the event loop could not start")

    gathering = _Gathering(["dev", "stage"], gather)
    with pytest.raises(OSError, match="the event loop could not start"):
        gathering.wait("stage")
    assert gathering.wait("dev").target.name == "dev", "what arrived before the failure is still handed over"
    assert not gathering.succeeded


def test_a_gathering_that_ends_without_a_partition_says_which() -> None:
    gathering = _Gathering(["dev", "stage"], lambda arrived: arrived(_observation("dev")))
    with pytest.raises(RuntimeError, match="the gathering ended without observing partition stage"):
        gathering.wait("stage")


def test_a_partition_is_judged_while_a_slower_one_is_still_observed(scenarios, run_checks) -> None:
    """Each check waits for its own partition: dev's verdicts are in while stage's DNS answers are still held back
    (the 256-partition run: the first partitions are judged while Route 53's pacing holds the last ones)."""
    for name in ("dev", "stage"):
        scenarios.seed(name)
    held = 2.0  # below the DNS timeout (3 s): stage is slow, not broken
    scenarios.world.dns.inject(Fault("delay", name="stage.ardamails.com.", rtype="TXT", seconds=held))
    run = run_checks("-m", "postmerge", "--partition", "dev,stage")
    assert not run.failed(), run.messages
    dev = max(at for check, at in run.ended.items() if check.endswith("[dev]"))
    stage = min(at for check, at in run.ended.items() if check.endswith("[stage]"))
    assert stage - dev > held / 2, f"dev's checks ended {stage - dev:.2f} s before stage's: they waited for stage"
