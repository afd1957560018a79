"""PR closeout through pytester: the real tests_closeout checks against real files, no cloud access."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox.suite import ROOT, suite_args

LOG = (Path(__file__).parent / "data" / "execution-log.md").read_text(encoding="utf-8")
CHANGELOG = (
    "# Changelog\n\n## [Unreleased]\n\n### Added\n\n- Partition mail for dev, stage, demo and prod.\n\n## [1.0.0]\n"
)
INFRAS = {"dev": "Alpha002", "stage": "Alpha002", "demo": "Alpha001", "prod": "Alpha001"}


def _block(partition: str) -> dict[str, str]:
    return {"dkimSelector": "20260526234343pm", "dkimPublicKey": f"MIGf{partition}", "returnPathTarget": "pm.mtasv.net"}


@pytest.fixture
def infra(tmp_path: Path) -> Path:
    repo = tmp_path / "infra"
    repo.mkdir()
    (repo / "CHANGELOG.md").write_text(CHANGELOG)
    blocks = {f"partitionMail:{i}:{p}": _block(p) for p, i in INFRAS.items()}
    (repo / "cdk.context.json").write_text(json.dumps({"cli-telemetry": False, **blocks}))
    (tmp_path / "log.md").write_text(LOG, encoding="utf-8")
    return repo


def _closeout(pytester: pytest.Pytester, infra: Path, *args: str) -> pytest.HookRecorder:
    argv = suite_args(
        "-p", "no:hypothesispytest", "-m", "closeout", "--infra-repo", str(infra),
        "--signoff-log", str(infra.parent / "log.md"), *args, str(ROOT / "tests_closeout"),
        partitions_file=str(ROOT / "partitions.yaml"), reports_dir=infra.parent / "reports",
    )  # fmt: skip
    return pytester.inline_run(*argv)


def _failures(recorder: pytest.HookRecorder) -> dict[str, str]:
    return {r.nodeid.rsplit("::", 1)[-1]: str(r.longrepr) for r in recorder.getreports() if r.failed}


def test_a_finished_cascade_closes_out_green(pytester: pytest.Pytester, infra: Path) -> None:
    recorder = _closeout(pytester, infra)
    assert _failures(recorder) == {}
    passed, _, _ = recorder.listoutcomes()
    assert len(passed) == 1 + 4 + 4 + 1
    assert recorder.ret == 0


def test_each_gap_names_the_file_the_partition_and_what_to_add(pytester: pytest.Pytester, infra: Path) -> None:
    (infra / "CHANGELOG.md").write_text(
        "# Changelog\n\n## [Unreleased]\n\n### Fixed\n\n- a typo\n\n## [1.0.0]\n\n### Added\n\n- x\n"
    )
    context = json.loads((infra / "cdk.context.json").read_text())
    del context["partitionMail:Alpha001:prod"]["dkimPublicKey"]
    del context["partitionMail:Alpha002:stage"]
    (infra / "cdk.context.json").write_text(json.dumps(context))
    log = infra.parent / "log.md"
    red = "| demo | Alpha001 | PostmarkProd | ✅ 2026-11-30 | ✅ 2026-11-30 | ❌ 2026-11-30 1 failed: test_dkim | — |"
    log.write_text(LOG.replace(next(l for l in LOG.splitlines() if l.startswith("| demo |")), red), encoding="utf-8")  # noqa: E741
    waivers = infra.parent / "waivers.yaml"
    waivers.write_text(
        "- {check: test_dmarc, partition: prod, reason: mailbox moving, expires: 2000-01-31, by: Jane}\n"
    )
    failures = _failures(_closeout(pytester, infra, "--waivers", str(waivers)))
    assert set(failures) == {
        "test_changelog_has_an_added_entry",
        "test_context_block_complete[stage]",
        "test_context_block_complete[prod]",
        "test_partition_signed_off[demo]",
        "test_no_waiver_expired",
    }
    assert (
        f"{infra / 'CHANGELOG.md'}: the newest section '## [Unreleased]' has no '### Added' heading: add one with a "
        "bullet" in failures["test_changelog_has_an_added_entry"]
    )
    assert (
        f"{infra / 'cdk.context.json'} has no partitionMail:Alpha002:stage (partition stage): add a "
        "partitionMail:Alpha002:stage block {dkimSelector, dkimPublicKey, returnPathTarget}"
        in failures["test_context_block_complete[stage]"]
    )
    assert (
        f"{infra / 'cdk.context.json'}: partitionMail:Alpha001:prod.dkimPublicKey must be a non-empty string, got "
        "nothing (partition prod): complete a partitionMail:Alpha001:prod block"
        in failures["test_context_block_complete[prod]"]
    )
    assert (
        f"execution log {log}: partition demo is not signed off (Pre-flight ✅ 2026-11-30, Deploy ✅ 2026-11-30, "
        "Verified ❌ 2026-11-30 1 failed: test_dkim): get Pre-flight, Deploy and Verified to ✅"
        in failures["test_partition_signed_off[demo]"]
    )
    assert (
        "1 waiver(s) expired: test_dmarc (mailbox moving; until 2000-01-31, by Jane) for prod expired on 2000-01-31 "
        f"({waivers}:1)" in failures["test_no_waiver_expired"]
    )


def test_closeout_checks_run_only_when_asked_for(pytester: pytest.Pytester, infra: Path) -> None:
    argv = suite_args(
        "-p", "no:hypothesispytest", "--collect-only", "-q", str(ROOT / "tests_closeout"),
        partitions_file=str(ROOT / "partitions.yaml"), reports_dir=infra.parent / "reports",
    )  # fmt: skip
    recorder = pytester.inline_run(*argv)
    assert recorder.getcalls("pytest_deselected")[0].items, "the closeout checks should be deselected"
    assert [i for i in recorder.getcalls("pytest_collection_finish")[0].session.items] == []
