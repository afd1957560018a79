"""Postmark, as its API documents it, against the sandbox: each rule's defect fails exactly the Postmark check with
a message naming the record, the rule and the fix; the healthy variations stay green. In process (-n 0) and under
xdist (-n 4, four partitions at once)."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import pytest

from sandbox.suite import POSTMERGE_CHECKS, suite_args

CHECK = "test_postmark_verified"

# defect -> fragments its message must contain (the record, the rule, the fix)
DEFECTS: dict[str, tuple[str, ...]] = {
    "postmark-weak-dkim": (
        "as WeakDKIM (weaker than 1024 bits, Domains API)",
        "rotate it: POST /domains/",
    ),
    "postmark-return-path-unverified": (
        "Return-Path pm-bounces.{zone} NOT verified (ReturnPathDomainVerified false; Postmark expects a CNAME to "
        "pm.mtasv.net)",
        "see the Return-Path CNAME check (test_return_path); if it passes, Postmark did not recheck in 1 s",
    ),
    "rotation-pending": (
        "a DKIM key rotation is in progress (DKIMUpdateStatus Pending): Postmark's pending key ",
        "is served by 0 of 4 authoritative servers (",
        "NXDOMAIN, no TXT",
        "next: publish the pending key at ",
        "deploy the partition (the pre-deploy step writes DKIMPendingHost/DKIMPendingTextValue into cdk.context.json)",
    ),
    "rotation-context-old-key": (
        "cdk.context.json's partitionMail:{infra}:{partition} names selector ",
        ", the key Postmark revoked in a rotation (DKIMRevokedHost); Postmark signs with ",
        "that key is served by 4 of 4 authoritative servers",
        "next: rerun the deploy's pre-deploy step so cdk.context.json's partitionMail:",
    ),
    "rotation-key-left-dns": (
        "that key is served by 0 of 4 authoritative servers (",
        "DKIMVerified is true, but it means 'DKIM has ever been verified' and stays true after the key leaves DNS",
        "next: publish Postmark's current key at ",
    ),
    "rotation-revoked-in-dns-safe": (
        "the revoked DKIM key at ",
        "(DKIMRevokedHost) is still served by 4 of 4 authoritative servers, and Postmark says "
        "SafeToRemoveRevokedKeyFromDNS: it is safe to remove",
        "next: remove TXT ",
    ),
    "postmark-sender-signature-only": (
        "{zone} exists in Postmark account {account} at ",
        "only as Sender Signature mail@{zone} (ID ",
        "not as a Domain (GET /domains does not list it); add it as a Domain (POST /domains with Name {zone}",
    ),
}


def _fragments(defect: str, target) -> list[str]:
    names = {
        "zone": target.zone,
        "infra": target.infrastructure,
        "partition": target.name,
        "account": target.postmark_account,
    }
    return [f.format(**names) for f in DEFECTS[defect]]


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_each_postmark_defect_fails_exactly_the_postmark_check(scenarios, run_checks, defect: str) -> None:
    seeded = scenarios.seed("dev", defects=[defect])
    run = run_checks("-m", "postmerge", "--partition", "dev", "--postmark-wait", "1")
    assert run.failed() == {f"{CHECK}[dev]"}, run.messages
    message = run.messages[f"{CHECK}[dev]"]
    for fragment in _fragments(defect, seeded.target):
        assert fragment in message, f"{fragment!r} not in:\n{message}"


@pytest.mark.parametrize("workers", ["0", "4"])
def test_a_rotation_whose_key_dns_serves_is_completed_by_verifying(scenarios, run_checks, workers: str) -> None:
    """The pending key is on every authoritative server: mailgate's verifyDkim lets Postmark confirm it, and the
    partition is green (the old key is revoked, and no longer in DNS)."""
    scenarios.seed("dev", defects=["rotation-pending-in-dns"])
    run = run_checks("-n", workers, "-m", "postmerge", "--partition", "dev", "--postmark-wait", "10")
    assert run.outcomes == {f"{check}[dev]": "passed" for check in POSTMERGE_CHECKS}, run.messages
    assert any(c.path.lower().endswith("/verifydkim") for c in scenarios.world.postmark.writes())


@pytest.mark.parametrize("workers", ["0", "4"])
def test_a_read_only_run_says_the_pending_key_is_already_in_dns(scenarios, run_checks, workers: str) -> None:
    seeded = scenarios.seed("dev", defects=["rotation-pending-in-dns"])
    old_host = (scenarios.world.postmark.domain(seeded.target.postmark_account, seeded.target.zone) or {})["DKIMHost"]
    run = run_checks(
        "-n", workers, "-m", "postmerge", "--partition", "dev", "--postmark-wait", "1", "--no-postmark-verify"
    )
    assert run.failed() == {f"{CHECK}[dev]"}, run.messages
    message = run.messages[f"{CHECK}[dev]"]
    for fragment in (
        "DKIM verified once, a new key pending, Return-Path verified",
        "a DKIM key rotation is in progress (DKIMUpdateStatus Pending)",
        "is served by 4 of 4 authoritative servers; Postmark signs with "
        f"{old_host} until it confirms it; that current key is served by 0 of 4 authoritative servers (",
        ": mail signed meanwhile fails DKIM",
        "next: have Postmark check it: rerun without --no-postmark-verify (mailgate calls PUT /domains/",
    ):
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert scenarios.world.postmark.writes() == []


# -n 4: four partitions at once, each with its own Postmark defect (or healthy variation), judged by xdist workers
# (healthy variations ride along; each of them is also run alone by test_postmerge_checks at -n 0)
ROUNDS: list[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = [
    {
        "dev": (("postmark-weak-dkim",), ("rotation-revoked-in-dns-not-yet-safe",)),
        "stage": (("rotation-pending",), ()),
        "demo": (("rotation-revoked-in-dns-safe",), ()),
        "prod": (("postmark-sender-signature-only",), ()),
    },
    {
        "dev": (("postmark-return-path-unverified",), ("dkim-2048-bit",)),
        "stage": (("rotation-context-old-key",), ()),
        "demo": (("rotation-key-left-dns",), ()),
        "prod": ((), ("rotation-done",)),
    },
]


@pytest.mark.parametrize("round_", ROUNDS, ids=["round1", "round2"])
def test_the_same_verdicts_under_xdist(
    scenarios, pytester: pytest.Pytester, tmp_path: Path, round_: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]
) -> None:
    seeded = {name: scenarios.seed(name, defects=d, variations=v) for name, (d, v) in round_.items()}
    junit = tmp_path / "junit.xml"
    result = pytester.runpytest_subprocess(
        *suite_args(
            "-n",
            "4",
            "-m",
            "postmerge",
            "--postmark-wait",
            "1",
            f"--junitxml={junit}",
            partitions_file=scenarios.world.info.partitions_file,
            reports_dir=tmp_path / "reports",
        )
    )
    failures = _junit_failures(junit)
    expected = {f"{CHECK}[{name}]" for name, (defects, _) in round_.items() if defects}
    assert set(failures) == expected, result.stdout.str()[-3000:]
    for name, (defects, _) in round_.items():
        for fragment in (f for defect in defects for f in _fragments(defect, seeded[name].target)):
            assert fragment in failures[f"{CHECK}[{name}]"], f"{name}: {fragment!r} not in {failures}"


def _junit_failures(junit: Path) -> dict[str, str]:
    """Check id -> failure text, from the run's JUnit XML (every check of every partition is one testcase)."""
    failed: dict[str, str] = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        for problem in (*case.iter("failure"), *case.iter("error")):
            failed[case.attrib["name"]] = (problem.attrib.get("message") or "") + (problem.text or "")
    return failed
