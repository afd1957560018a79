"""Route 53 pacing against the sandbox's buckets: the client keeps to the quota, the sandbox enforces it as Route 53
does, and throttling that persists is reported as throttling, never as a wrong record."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from probes.pacing import Pacer, Quota, TokenBucket
from sandbox.aws_quota import Bucket, Quotas
from sandbox.scenarios import Scenarios

RunChecks = Callable[..., Any]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_token_bucket_gives_its_burst_at_once_then_one_token_per_refill() -> None:
    clock = Clock()
    bucket = TokenBucket(Quota(burst=3, rate=10), clock)
    bucket.answered()  # refill starts with the first answer
    waits = [bucket.reserve() for _ in range(6)]
    assert waits == pytest.approx([0, 0, 0, 0.1, 0.2, 0.3]), "after the burst, reservations queue 1/rate apart"
    clock.now += 1.0  # 10 tokens refilled, 3 of them owed: the bucket holds min(burst, 7) = 3 again
    assert [bucket.reserve() for _ in range(4)] == pytest.approx([0, 0, 0, 0.1]), "refill is capped at the burst"


def test_pacer_waits_for_the_emptier_of_the_account_and_operation_buckets() -> None:
    clock = Clock()
    pacer = Pacer(Quota(burst=3, rate=4), clock, clock.sleep)  # one token kept in hand: 2 at once
    pacer.answered([("a",), ("a", "GetHostedZone")])
    for _ in range(2):
        pacer.wait([("a",), ("a", "GetHostedZone")])
    pacer.wait([("a",), ("a", "ListHostedZones")])  # its own operation bucket is full; the account's is empty
    assert clock.slept == pytest.approx([0.25]), "the account-wide bucket paces every operation"
    assert pacer.wait([("b",), ("b", "GetHostedZone")]) == 0, "another account has buckets of its own"


def test_pacer_keeps_one_token_in_hand_for_jitter_but_never_fewer_than_one() -> None:
    clock = Clock()
    for burst, at_once in ((50, 49), (2, 1), (1, 1)):
        pacer = Pacer(Quota(burst=burst, rate=10), clock, clock.sleep)
        pacer.answered([("a",)])
        waits = [pacer.wait([("a",)]) for _ in range(at_once + 1)]
        assert waits[:at_once] == [0] * at_once, (burst, waits)
        assert waits[-1] > 0, (burst, waits)


def test_quota_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="burst >= 1 and rate > 0"):
        Quota(burst=0, rate=10)


def test_sandbox_quotas_admit_the_burst_and_then_throttle_without_taking_a_token() -> None:
    quotas = Quotas(Bucket(2, 1), Bucket(50, 10))
    assert [quotas.admit("111122223333", "GetHostedZone", now=0.0) for _ in range(3)] == [True, True, False]
    assert quotas.admit("444455556666", "GetHostedZone", now=0.0), "buckets are per account"
    assert not quotas.admit("111122223333", "GetHostedZone", now=0.5), "half a token is not a token"
    assert quotas.admit("111122223333", "GetHostedZone", now=1.0), "a throttled request cost nothing"


def test_sandbox_answers_beyond_the_bucket_as_route53_does(scenarios: Scenarios) -> None:
    """HTTP 400, Code Throttling, Message "Rate exceeded" (Route 53 Developer Guide, throttling-api-requests)."""
    seeded = scenarios.seed("dev")
    scenarios.world.aws.set_route53_quota(Bucket(1, 0.001), Bucket(50, 10))
    seeding = len(scenarios.world.aws.calls)
    route53 = boto3.Session(profile_name=seeded.target.profile).client(
        "route53", config=Config(retries={"mode": "standard", "total_max_attempts": 1})
    )
    route53.get_hosted_zone(Id=seeded.zone_id)
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        route53.get_hosted_zone(Id=seeded.zone_id)
    response = raised.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400, response
    assert (response["Error"]["Code"], response["Error"]["Message"]) == ("Throttling", "Rate exceeded"), response
    calls = [c for c in scenarios.world.aws.calls[seeding:] if c.service == "route53"]
    assert [(c.action, c.account, c.throttled) for c in calls] == [
        ("GetHostedZone", seeded.target.account, False),
        ("GetHostedZone", seeded.target.account, True),
    ], calls


def _waits(reports: Path) -> dict[str, float]:
    """Seconds each partition's GetHostedZone waited for a Route 53 token, from its test_exports evidence."""
    signoff = json.loads((reports / "latest" / "signoff.json").read_text())
    found = {}
    for check in signoff["checks"]:
        if check["check"] == "test_exports":
            text = "\n".join(check["evidence"])
            waited = re.search(r"waited (\d+\.\d+) s for Route 53 tokens; throttled 0 time\(s\)", text)
            assert waited, f"no pacing evidence for {check['partition']}:\n{text}"
            found[check["partition"]] = float(waited[1])
    return found


def test_pacing_holds_against_the_sandbox_buckets(scenarios: Scenarios, run_checks: RunChecks, tmp_path: Path) -> None:
    """Two partitions per account against buckets of 2 refilled 1/s: mailgate keeps a token in hand, so the second
    GetHostedZone of each account waits for a refill (at most 1 s); the sandbox throttles nothing."""
    for name in ("dev", "stage", "demo", "prod"):
        scenarios.seed(name)
    scenarios.world.aws.set_route53_quota(Bucket(2, 1), Bucket(2, 1))
    run = run_checks("-m", "aws", "--route53-burst", "2", "--route53-rate", "1")
    assert not run.failed(), run.messages
    assert run.ret == 0, run.messages
    assert scenarios.world.aws.throttled() == [], "mailgate outran the sandbox's Route 53 bucket"
    reads = [c for c in scenarios.world.aws.calls if c.action == "GetHostedZone" and c.metered]
    assert sorted(c.account for c in reads) == ["009765408297"] * 2 + ["139852620346"] * 2, reads
    waits = _waits(tmp_path / "reports")
    for first, second in (("dev", "stage"), ("demo", "prod")):
        pair = sorted((waits[first], waits[second]))
        assert pair[0] == 0, f"{first}/{second}: the first read of an account needs no wait: {waits}"
        assert 0 < pair[1] <= 1, f"{first}/{second}: the second read waits for the refill (<= 1 s): {waits}"


def test_throttling_that_persists_is_reported_as_throttling_not_as_a_wrong_zone(
    scenarios: Scenarios, run_checks: RunChecks
) -> None:
    for name in ("dev", "stage"):
        scenarios.seed(name)
    scenarios.world.aws.set_route53_quota(Bucket(1, 0.001), Bucket(50, 10))  # someone else spent the account's quota
    run = run_checks("-m", "aws", "--partition", "dev,stage")
    failed = run.failed()
    assert len(failed) == 1, run.messages
    assert failed <= {"test_exports[dev]", "test_exports[stage]"}, run.messages
    message = run.messages[failed.pop()]
    assert "could not be read from Route53: AWS throttled profile Alpha002-Admin after retries" in message, message
    assert "(Rate exceeded); retry later" in message, message
    assert "is not a Route53 hosted zone" not in message, message
    throttled = [c.action for c in scenarios.world.aws.throttled()]
    assert throttled == ["GetHostedZone"] * 4, f"standard retry mode: 4 attempts, then the report: {throttled}"


def test_cloudformation_throttles_are_retried_and_recorded_in_the_evidence(
    scenarios: Scenarios, run_checks: RunChecks, tmp_path: Path
) -> None:
    """Two stacks of one account read at once against a CloudFormation bucket of one token a second: one read is
    throttled, botocore's adaptive mode retries it, both checks pass and the evidence counts the throttles."""
    for name in ("dev", "stage"):
        scenarios.seed(name)
    scenarios.world.aws.set_cloudformation_quota(Bucket(1, 1))
    run = run_checks("-m", "aws", "--partition", "dev,stage")
    assert not run.failed(), run.messages
    throttled = [c.action for c in scenarios.world.aws.throttled()]
    assert throttled, "two DescribeStacks at once against a bucket of one: none throttled"
    assert set(throttled) == {"DescribeStacks"}, throttled
    signoff = json.loads((tmp_path / "reports" / "latest" / "signoff.json").read_text())
    evidence = "\n".join(e for c in signoff["checks"] if c["check"] == "test_stack_status" for e in c["evidence"])
    counts = re.findall(r"throttled (\d+) time\(s\), retried \(botocore adaptive mode\)", evidence)
    recorded = sum(int(n) for n in counts)
    assert recorded == len(throttled), f"{len(throttled)} throttled answers, evidence records {recorded}:\n{evidence}"


def test_a_bucket_started_from_the_first_answer_refills_from_it_not_from_the_first_send() -> None:
    """Route 53 counts from the first arrival: refill earned while the first request is still on its way would let
    later requests arrive early (the 256-partition throttle)."""
    clock = Clock()
    bucket = TokenBucket(Quota(burst=2, rate=10), clock)
    assert [bucket.reserve(), bucket.reserve()] == [0, 0], "the tokens in hand go out at once"
    clock.now += 5.0  # the first request still unanswered: no refill earned
    bucket.answered()
    assert bucket.reserve() == pytest.approx(0.1), "refill counts from the answer"
    clock.now += 1.0
    assert bucket.reserve() == 0, "then the bucket refills as usual"


def test_a_caller_beyond_the_tokens_in_hand_waits_for_the_first_answer() -> None:
    clock = Clock()
    bucket = TokenBucket(Quota(burst=1, rate=10), clock)
    assert bucket.reserve() == 0
    waits: list[float] = []
    caller = threading.Thread(target=lambda: waits.append(bucket.reserve()))
    caller.start()
    caller.join(timeout=0.5)
    assert caller.is_alive(), "a token beyond the burst was handed out before any answer"
    assert waits == []
    bucket.answered()
    caller.join(timeout=5)
    assert waits == [pytest.approx(0.1)], waits
