"""Postmerge checks against the sandbox: healthy passes everything; each defect fails exactly its check."""

from __future__ import annotations

import base64
from xml.etree import ElementTree

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from sandbox.scenarios import VARIATIONS
from sandbox.suite import POSTMERGE_CHECKS, suite_args


def test_healthy_partition_passes_every_check(scenarios, run_checks) -> None:
    seeded = scenarios.seed("dev")
    run = run_checks("-m", "postmerge", "--partition", "dev")
    assert run.outcomes == {f"{check}[dev]": "passed" for check in POSTMERGE_CHECKS}, run.messages
    key = load_der_public_key(base64.b64decode(seeded.dkim.public_key))
    assert isinstance(key, rsa.RSAPublicKey)
    assert key.key_size == 1024, "the sandbox issues 1024-bit keys, as Postmark does (dkim-2048-bit: several strings)"


DEFECTS = [
    ("missing-export", "test_exports", "missing export Alpha002-dev-API-EmailEncryptionKeyArn"),
    ("foreign-arn", "test_exports", "EmailDnsProvisioningRoleArn is in account 999988887777, expected 139852620346"),
    ("rollback", "test_stack_status", "stack Alpha002-dev-Email is ROLLBACK_COMPLETE"),
    ("one-ns", "test_ns_delegation", "delegates dev.ardamails.com to 1 name server(s); need at least 2"),
    ("lame-ns", "test_ns_delegation", "ns-2049.awsdns-65.net (127.0.0.3:"),
    ("ns-mismatch", "test_ns_delegation", "differs from the hosted zone's Route53 delegation set"),
    ("two-spf", "test_spf", "v=spf1"),
    (
        "spf-11-lookups",
        "test_spf",
        "SPF permerror: 11 DNS-lookup terms, more than the 10 RFC 7208 §4.6.4 allows; the limit is crossed at "
        "dev.ardamails.com → bulk.example.net → include:s9.example.net",
    ),
    (
        "spf-void-lookups",
        "test_spf",
        "SPF permerror: 3 void lookups (NXDOMAIN or no answer), more than the 2 RFC 7208 §4.6.4 allows; the last is "
        "dev.ardamails.com → a:mail.example.net (NXDOMAIN)",
    ),
    (
        "spf-include-without-record",
        "test_spf",
        "SPF permerror: dev.ardamails.com → include:spf.example.net: spf.example.net has no SPF record (NXDOMAIN); "
        "an include target must hold exactly one valid SPF record (RFC 7208 §5.2)",
    ),
    ("spf-include-two-records", "test_spf", "two.example.net has 2 SPF records (TXT 'v=spf1 ip4:192.0.2."),
    ("spf-include-loop", "test_spf", "loops back to loop.example.net"),
    ("spf-without-postmark", "test_spf", "include:spf.mtasv.net (configured for dev) is nowhere in the evaluated"),
    ("spf-no-all", "test_spf", "the record ends in neither an `all` mechanism nor redirect="),
    (
        "dmarc-parent-only",
        "test_dmarc",
        "no DMARC record at _dmarc.dev.ardamails.com itself (NXDOMAIN); receivers fall back to the organizational "
        "domain's record at _dmarc.ardamails.com (RFC 7489 §6.6.3), 'v=DMARC1; p=reject; "
        "rua=mailto:dmarc-reports@arda.cards', and apply its p=reject (it has no sp=, so p= governs subdomains)",
    ),
    ("dmarc-nowhere", "test_dmarc", "and there is none (NXDOMAIN, 0 TXT value(s)): no DMARC policy applies"),
    (
        "dmarc-report-unauthorized",
        "test_dmarc",
        "report destination mailto:dmarc-reports@arda.cards is outside ardamails.com and arda.cards does not "
        "authorize dev.ardamails.com (NXDOMAIN, 0 TXT value(s) none starting v=DMARC1), so receivers send it no "
        'reports (RFC 7489 §7.1): publish TXT dev.ardamails.com._report._dmarc.arda.cards "v=DMARC1"',
    ),
    ("dmarc-third-party-rua", "test_dmarc", 'publish TXT dev.ardamails.com._report._dmarc.example.net "v=DMARC1"'),
    ("dmarc-no-policy", "test_dmarc", "p="),
    ("dkim-one-char", "test_dkim", "differs from cdk.context.json's dkimPublicKey (first difference at character"),
    ("dkim-revoked", "test_dkim", "is revoked (empty p=)"),
    ("cname-target", "test_return_path", "points at bounces.example.net., expected pm.mtasv.net."),
    ("postmark-stuck", "test_postmark_verified", "DKIM NOT verified, Return-Path NOT verified"),
    ("postmark-401", "test_postmark_verified", "401"),
    ("dkim-weak-key", "test_dkim", "the RSA key has 512 bits; RFC 8301 §3.2 forbids verifiers to accept keys under"),
    ("dkim-testing", "test_dkim", "t=y marks the domain as testing DKIM; receivers treat its mail as unsigned"),
    ("dkim-version-not-first", "test_dkim", "v= must be the first tag and exactly DKIM1, seen v='DKIM1' after k="),
    ("dkim-sha1-only", "test_dkim", "h=sha1 allows no sha256; RFC 8301 §3.1 forbids verifiers to accept rsa-sha1"),
    ("dkim-not-for-email", "test_dkim", "s=tlsrpt does not include email or *, so the key may not be used for mail"),
    ("dkim-unknown-key-type", "test_dkim", "k='dsa' is not a known key type"),
]


@pytest.mark.parametrize(("defect", "check", "message"), DEFECTS, ids=[d[0] for d in DEFECTS])
def test_defect_fails_exactly_its_check(scenarios, run_checks, defect: str, check: str, message: str) -> None:
    scenarios.seed("dev", defects=[defect], verified=defect != "postmark-stuck")
    run = run_checks("-m", "postmerge", "--partition", "dev", "--postmark-wait", "1")
    assert run.failed() == {f"{check}[dev]"}, run.messages
    assert message in run.messages[f"{check}[dev]"], run.messages[f"{check}[dev]"]


@pytest.mark.parametrize("variation", sorted(VARIATIONS))
def test_healthy_variation_passes_every_check(scenarios, run_checks, variation: str) -> None:
    scenarios.seed("dev", variations=[variation])
    run = run_checks("-m", "postmerge", "--partition", "dev", "--postmark-wait", "1")
    assert run.outcomes == {f"{check}[dev]": "passed" for check in POSTMERGE_CHECKS}, run.messages


def test_production_policies_bind_production_partitions_only(scenarios, run_checks) -> None:
    for name in ("dev", "prod"):
        scenarios.seed(name, defects=["dmarc-policy-none"])
    run = run_checks("-m", "dns", "--partition", "dev,prod")
    assert run.failed() == {"test_dmarc[prod]"}, run.messages
    assert (
        "policy p=none is not one of quarantine, reject (dmarc.production_policies)" in run.messages["test_dmarc[prod]"]
    ), run.messages["test_dmarc[prod]"]


def test_unverified_postmark_turns_verified_within_the_wait(scenarios, run_checks) -> None:
    scenarios.seed("dev", verified=False)
    run = run_checks("-m", "postmark", "--partition", "dev", "--postmark-wait", "10")
    assert run.outcomes == {"test_postmark_verified[dev]": "passed"}, run.messages
    puts = [c.path.lower() for c in scenarios.world.postmark.writes()]
    assert any(p.endswith("/verifydkim") for p in puts)


def test_no_postmark_verify_only_reads(scenarios, run_checks) -> None:
    scenarios.seed("dev", verified=False)
    run = run_checks("-m", "postmark", "--partition", "dev", "--postmark-wait", "1", "--no-postmark-verify")
    assert run.failed() == {"test_postmark_verified[dev]"}
    assert "only read (--no-postmark-verify)" in run.messages["test_postmark_verified[dev]"]
    assert scenarios.world.postmark.writes() == []


def test_undeployed_partition_fails_every_check_with_its_cause(scenarios, run_checks) -> None:
    run = run_checks("-m", "postmerge", "--partition", "dev", "--postmark-wait", "0")
    assert run.failed() == {f"{check}[dev]" for check in POSTMERGE_CHECKS}
    assert "stack Alpha002-dev-Email does not exist" in run.messages["test_stack_status[dev]"]
    assert "has no entry partitionMail:Alpha002:dev" in run.messages["test_dkim[dev]"]


def test_four_partitions_under_xdist_match_the_single_process_verdicts(
    scenarios, pytester: pytest.Pytester, tmp_path
) -> None:
    """-n 4 across four partitions: the same verdicts; each question asked once, by the controller while the
    workers start, not once per worker: one role per AWS profile, one listing per Postmark account, one read
    per domain."""
    for name in ("dev", "stage", "demo", "prod"):
        scenarios.seed(name, defects=["two-spf"] if name == "demo" else ())
    scenarios.world.aws.calls.clear()  # the seeding's own requests; the run's are counted below
    scenarios.world.postmark.calls.clear()
    result = pytester.runpytest_subprocess(
        *suite_args(
            "-n",
            "4",
            "-m",
            "postmerge",
            "-rA",
            partitions_file=scenarios.world.info.partitions_file,
            reports_dir=tmp_path / "reports",
        )
    )
    out = result.stdout.str()
    passed = {line.split("::")[-1] for line in out.splitlines() if line.startswith("PASSED")}
    failed = {line.split("::")[-1].split(" ")[0] for line in out.splitlines() if line.startswith("FAILED")}
    assert failed == {"test_spf[demo]"}, out[-3000:]
    assert passed == {f"{c}[{p}]" for c in POSTMERGE_CHECKS for p in ("dev", "stage", "demo", "prod")} - failed
    assert "mailgate: observed 4 partition(s) in " in out, "the controller gathers while the workers start"
    asked = [f"{c.method} {c.path.lower()}" for c in scenarios.world.postmark.calls]
    assert asked.count("GET /domains") == 2, f"expected one domain listing per account, saw {asked}"
    assert len([a for a in asked if a.startswith("GET /domains/")]) == 4, asked
    actions = [c.action or f"{c.method} {c.path.split('/')[2]}" for c in scenarios.world.aws.calls]
    assert actions.count("AssumeRole") == 2, f"expected one role per profile (two profiles), saw {actions}"
    assert (actions.count("DescribeStacks"), actions.count("GetHostedZone")) == (4, 4), actions


# Mail-authentication rules under -n 4: each partition carries at most one defect per check (so each failure
# is still that defect's) and every healthy variation rides along on some partition.
XDIST_ROUNDS: list[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = [
    {
        "dev": (("dkim-weak-key", "dmarc-report-unauthorized", "spf-11-lookups"), ("dkim-no-spaces",)),
        "stage": (("dkim-testing", "dmarc-nowhere", "spf-void-lookups"), ("dkim-dotted-selector",)),
        "demo": (("dkim-version-not-first", "spf-include-without-record"), ("dmarc-partial-pct",)),
        "prod": (("spf-include-two-records",), ("dkim-1024-bit",)),
    },
    {
        "dev": (("dkim-sha1-only", "spf-include-loop"), ("dmarc-several-rua",)),
        "stage": (("dkim-not-for-email", "dmarc-parent-only", "spf-without-postmark"), ()),
        "demo": (("dkim-unknown-key-type", "dmarc-third-party-rua", "spf-no-all"), ()),
        "prod": (("dmarc-policy-none",), ("spf-redirect",)),
    },
    {
        "dev": (("dkim-one-char",), ("spf-extra-txt",)),
        "stage": (("dkim-revoked", "dmarc-no-policy"), ("spf-postmark-suggested",)),
        "demo": (("two-spf", "cname-target"), ()),
        "prod": ((), ()),
    },
]


@pytest.mark.parametrize("plan", XDIST_ROUNDS, ids=[f"round{i}" for i in range(len(XDIST_ROUNDS))])
def test_mail_authentication_defects_under_xdist_fail_exactly_their_checks(
    scenarios, pytester: pytest.Pytester, tmp_path, plan: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]
) -> None:
    owner = {defect: (check, message) for defect, check, message in DEFECTS}
    owner["dmarc-policy-none"] = ("test_dmarc", "policy p=none is not one of quarantine, reject")
    for name, (defects, variations) in plan.items():
        scenarios.seed(name, defects=defects, variations=variations)
    junit = tmp_path / "junit.xml"
    args = ("-n", "4", "-m", "postmerge", "--postmark-wait", "1", f"--junitxml={junit}")
    pytester.runpytest_subprocess(
        *suite_args(*args, partitions_file=scenarios.world.info.partitions_file, reports_dir=tmp_path / "reports")
    )
    failures = {
        str(case.get("name")): f"{bad.get('message', '')}\n{bad.text or ''}"
        for case in ElementTree.parse(junit).iter("testcase")
        for bad in [*case.iter("failure"), *case.iter("error")]
    }
    expected: dict[str, list[str]] = {}
    for name, (defects, _) in plan.items():
        for defect in defects:
            check, message = owner[defect]
            for_name = message.replace("dev.ardamails", f"{name}.ardamails").replace("for dev)", f"for {name})")
            expected.setdefault(f"{check}[{name}]", []).append(for_name)
    assert set(failures) == set(expected), failures
    for test, messages in expected.items():
        for message in messages:
            assert message in failures[test], f"{test}: expected {message!r} in\n{failures[test]}"


def test_public_resolver_disagreement_is_advisory_unless_strict(scenarios, run_checks) -> None:
    from sandbox.dns_server import Fault

    scenarios.seed("dev")
    scenarios.world.dns.inject(Fault("servfail", name="dev.ardamails.com", rtype="TXT", server="127.0.0.1"))
    relaxed = run_checks("-m", "dns", "--partition", "dev")
    assert relaxed.failed() == set(), relaxed.messages
    strict = run_checks("-m", "dns", "--partition", "dev", "--strict-resolvers")
    assert strict.failed() == {"test_spf[dev]"}
    assert (
        "public resolvers disagree with the authoritative servers (--strict-resolvers)"
        in strict.messages["test_spf[dev]"]
    )
    assert "SERVFAIL" in strict.messages["test_spf[dev]"]
