"""The partitions model: every derived name, and a clear one-line error for each bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from probes.config import EXPORT_NAMES, ConfigError, load

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / "partitions.yaml"

EXPECTED = {
    "dev": ("Alpha002", "139852620346", "Alpha002-Admin", "PostmarkNonProd", "op://Arda-DevOAM/Postmark/credential"),
    "stage": (
        "Alpha002",
        "139852620346",
        "Alpha002-Admin",
        "PostmarkNonProd",
        "op://Arda-StageOAM/Postmark/credential",
    ),
    "demo": ("Alpha001", "009765408297", "Admin-Alpha1", "PostmarkProd", "op://Arda-DemoOAM/Postmark/credential"),
    "prod": ("Alpha001", "009765408297", "Admin-Alpha1", "PostmarkProd", "op://Arda-ProdOAM/Postmark/credential"),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_derived_names_of_the_real_matrix(name: str) -> None:
    infra, account, profile, postmark, credential = EXPECTED[name]
    target = load(REAL).targets[name]
    assert (target.infrastructure, target.account, target.profile) == (infra, account, profile)
    assert (target.postmark_account, target.credential) == (postmark, credential)
    assert target.production is (name == "prod")
    assert target.stack_name == f"{infra}-{name}-Email"
    assert target.export_names == tuple(f"{infra}-{name}-API-{export}" for export in EXPORT_NAMES)
    assert len(target.export_names) == 6
    assert target.zone == f"{name}.ardamails.com"
    assert target.dmarc_host == f"_dmarc.{name}.ardamails.com"
    assert target.return_path_host == f"pm-bounces.{name}.ardamails.com"
    assert target.context_key == f"partitionMail:{infra}:{name}"
    assert target.dkim_host("20260526234343pm") == f"20260526234343pm._domainkey.{name}.ardamails.com"
    assert target.region == "us-east-1"
    assert target.return_path_target == "pm.mtasv.net"
    assert target.spf_includes == ("spf.mtasv.net",)


def test_real_matrix_settings() -> None:
    config = load(REAL)
    assert list(config.targets) == ["dev", "stage", "demo", "prod"]
    assert config.file.dns.resolvers == ["8.8.8.8", "1.1.1.1"]
    assert config.file.dmarc.report_mailbox == "dmarc-reports@arda.cards"
    assert config.file.deploy.command == "./amm.sh --profile {profile} {infrastructure} {partition}"
    assert config.infra_repo == (ROOT.parent / "infrastructure").resolve()


def test_select_resolves_lists_and_all() -> None:
    config = load(REAL)
    assert [t.name for t in config.select("all")] == ["dev", "stage", "demo", "prod"]
    assert [t.name for t in config.select("stage,dev")] == ["stage", "dev"]
    with pytest.raises(ConfigError, match=r"unknown partition nosuch; known: dev, stage, demo, prod"):
        config.select("dev,nosuch")


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    text = REAL.read_text()
    assert old in text, f"fixture text {old!r} is not in partitions.yaml any more"
    path = tmp_path / "partitions.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


BAD = [
    pytest.param(
        "    infrastructure: Alpha002\n    postmark_account: PostmarkNonProd\n    credential: op://Arda-DevOAM",
        "    infrastucture: Alpha002\n    postmark_account: PostmarkNonProd\n    credential: op://Arda-DevOAM",
        r"partitions\.dev\.infrastucture: unknown key \(did you mean 'infrastructure'\?\); allowed here: infra",
        "infrastucture",
        id="unknown-key",
    ),
    pytest.param(
        "    profile: Admin-Alpha1\n",
        "\n",
        r"infrastructures\.Alpha001\.profile: missing; add it",
        "Alpha001:",
        id="missing-field",
    ),
    pytest.param(
        "    production: true",
        "    production: [yes]",
        r"partitions\.prod\.production: Input should be a valid boolean",
        "production: [yes]",
        id="wrong-type",
    ),
    pytest.param(
        "    infrastructure: Alpha001\n    postmark_account: PostmarkProd\n    credential: op://Arda-ProdOAM",
        "    infrastructure: Alpha003\n    postmark_account: PostmarkProd\n    credential: op://Arda-ProdOAM",
        r"partitions\.prod\.infrastructure: names unknown 'Alpha003'; known: Alpha002, Alpha001",
        "Alpha003",
        id="unknown-infrastructure",
    ),
    pytest.param(
        "postmark_account: PostmarkProd\n    credential: op://Arda-DemoOAM",
        "postmark_account: PostmarkStaging\n    credential: op://Arda-DemoOAM",
        r"partitions\.demo\.postmark_account: names unknown 'PostmarkStaging'; known: PostmarkNonProd, PostmarkProd",
        "PostmarkStaging",
        id="unknown-postmark-account",
    ),
    pytest.param(
        'account: "009765408297"',
        'account: "97654082"',
        r"infrastructures\.Alpha001\.account: must be a 12-digit AWS account id as a quoted string",
        'account: "97654082"',
        id="account-not-12-digits",
    ),
    pytest.param(
        "production_policies: [quarantine, reject]",
        "production_policies: [quarantine, strict]",
        r"dmarc\.production_policies: .*must be a non-empty list of none, quarantine, reject; got \['quarantine',"
        r" 'strict'\]",
        "production_policies",
        id="unknown-production-policy",
    ),
    pytest.param(
        "report_mailbox: dmarc-reports@arda.cards",
        "report_mailbox: dmarc-reports@arda..cards",
        r"dmarc\.report_mailbox: .*must be a mailbox whose domain is a DNS name \(reports@example\.com\); got "
        r"'dmarc-reports@arda\.\.cards'",
        "report_mailbox",
        id="mailbox-domain-not-a-name",
    ),
    pytest.param(
        "  stage:\n",
        "  dev:\n",
        r"partitions\.dev: duplicate key; keep one",
        None,
        id="duplicate-partition",
    ),
    pytest.param(
        "domain: ardamails.com",
        "domain: [ardamails.com",
        r"YAML syntax error: .*; fix the YAML at that line",
        None,
        id="yaml-syntax",
    ),
]


@pytest.mark.parametrize(("old", "new", "message", "line_needle"), BAD)
def test_bad_input_is_one_clear_line(tmp_path: Path, old: str, new: str, message: str, line_needle: str | None) -> None:
    path = _variant(tmp_path, old, new)
    with pytest.raises(ConfigError) as caught:
        load(path)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(f"{path}:")
    assert caught.match(message)
    if line_needle is not None:
        assert text.startswith(f"{path}:{_line_of(path, line_needle)}:"), text


def test_production_policies_default_to_every_allowed_policy(tmp_path: Path) -> None:
    assert load(REAL).file.dmarc.production_policies == ["quarantine", "reject"]
    unset = load(_variant(tmp_path, "  production_policies: [quarantine, reject]", "")).file.dmarc
    assert unset.production_policies is None, "unset: the checks use dmarc.allowed_policies"


def test_empty_partition_list(tmp_path: Path) -> None:
    text = REAL.read_text()
    path = tmp_path / "partitions.yaml"
    path.write_text(text[: text.index("partitions:\n  dev:")] + "partitions: {}\n")
    with pytest.raises(ConfigError, match=r"partitions: Dictionary should have at least 1 item"):
        load(path)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError, match=rf"^{path}: partitions file not found; create it or pass --partitions-file"):
        load(path)


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "partitions.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"YAML nodes \(an alias bomb\?\)"):
        load(path)


def test_shipped_deploy_order() -> None:
    config = load(REAL)
    assert {name: t.after for name, t in config.targets.items()} == {
        "dev": (),
        "stage": ("dev",),
        "demo": ("dev",),
        "prod": ("stage", "demo"),
    }
    targets = config.targets
    assert [t.name for t in config.in_deploy_order([targets[n] for n in ("prod", "demo", "stage", "dev")])] == [
        "dev",
        "demo",
        "stage",
        "prod",
    ]
    assert [t.name for t in config.in_deploy_order([targets["prod"], targets["demo"]])] == ["demo", "prod"]


@pytest.mark.parametrize(
    ("old", "new", "message", "line_needle"),
    [
        pytest.param(
            "    after: [stage, demo]",
            "    after:\n      - stage\n      - qa",
            r"partitions\.prod\.after\.1: names unknown 'qa'; known: dev, stage, demo, prod$",
            "- qa",
            id="unknown-name",
        ),
        pytest.param(
            "    credential: op://Arda-DevOAM/Postmark/credential\n",
            "    credential: op://Arda-DevOAM/Postmark/credential\n    after: [prod]\n",
            r"partitions\.dev\.after: the deploy order has a cycle: dev → prod → stage → dev \(each needs the next",
            "after: [prod]",
            id="cycle",
        ),
        pytest.param(
            "    after: [stage, demo]",
            "    after: [prod]",
            r"partitions\.prod\.after: the deploy order has a cycle: prod → prod",
            "after: [prod]",
            id="self",
        ),
    ],
)
def test_bad_deploy_order_is_one_clear_line(tmp_path: Path, old: str, new: str, message: str, line_needle: str) -> None:
    path = _variant(tmp_path, old, new)
    with pytest.raises(ConfigError) as caught:
        load(path)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(f"{path}:{_line_of(path, line_needle)}: "), text
    assert caught.match(message)


def test_verification_row_ids_take_only_the_partition_placeholder(tmp_path: Path) -> None:
    path = _variant(tmp_path, "V-PART-DNS-{partition}:", "V-PART-DNS-{zone}:")
    expected = r"row id 'V-PART-DNS-\{zone\}': one word, and \{partition\} is the only placeholder$"
    with pytest.raises(ConfigError, match=r":\d+: signoff\.verification\.rows\.V-PART-DNS-\{zone\}: " + expected):
        load(path)
