"""The terminal of a failing run: mailgate's message and evidence, no pytest noise, a closing verdict."""

from __future__ import annotations

import pytest

PLUGINS = ("-p", "plugins.signoff", "-p", "no:hypothesispytest", "--reports-dir", "out")
CHECKS = """
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Observation:
    partition: str
    exports: tuple[str, ...]


def _observe(target):
    try:
        raise LookupError("the probe's own, handled error")
    except LookupError:
        missing = () if target.name == "dev" else ("Alpha002-stage-API-EmailEncryptionKeyFallbackRoleArn",)
        return Observation(target.name, missing)


@pytest.mark.postmerge
def test_exports(target, evidence):
    try:
        raise KeyError("noise")
    except KeyError:
        observed = _observe(target)
        evidence.add("describe-stacks Alpha002-stage-Email", ["status: CREATE_COMPLETE", "KeyA = 1"])
        problems = [f"missing export {name}" for name in observed.exports]
        assert not observed.exports, (
            f"exports of Alpha002-{target.name}-Email are wrong ({len(problems)}):\\n  "
            + "\\n  ".join(problems)
            + "\\nexpected the six exports; fix the stack and deploy again"
        )


@pytest.mark.postmerge
def test_dmarc(target):
    if target.name == "stage":
        pytest.fail("no DMARC record at _dmarc.stage.ardamails.com: publish it", pytrace=False)


@pytest.mark.postmerge
def test_bug(target):
    if target.name == "dev":
        {}["mailgate's own bug"]
"""
EXPORTS_REASON = "missing export Alpha002-stage-API-EmailEncryptionKeyFallbackRoleArn"


@pytest.fixture
def project(checks_project: pytest.Pytester) -> pytest.Pytester:
    """A checks project whose postmerge checks fail the way the terminal tests need."""
    (checks_project.path / "tests_postmerge").mkdir()
    (checks_project.path / "tests_postmerge" / "test_stack.py").write_text(CHECKS)
    return checks_project


def _run(project: pytest.Pytester, *args: str) -> list[str]:
    result = project.runpytest(*PLUGINS, "--partition", "dev,stage", *args)
    result.assert_outcomes(passed=3, failed=3)
    return result.stdout.lines


def _section(out: list[str], test: str) -> list[str]:
    """The lines of one test's entry in the FAILURES section (between its header and the next one)."""
    start = next(i for i, line in enumerate(out) if line.startswith("_") and f" {test} " in line) + 1
    end = next(i for i in range(start, len(out)) if out[i].startswith(("_", "=")))
    return out[start:end]


def test_a_verdict_shows_its_message_and_evidence_and_none_of_the_noise(project: pytest.Pytester) -> None:
    out = _run(project)
    block = _section(out, "test_exports[stage]")
    assert block[:3] == [
        "exports of Alpha002-stage-Email are wrong (1):",
        f"  {EXPORTS_REASON}",
        "expected the six exports; fix the stack and deploy again",
    ]
    assert block[3].startswith("-")
    assert " evidence: describe-stacks Alpha002-stage-Email " in block[3]
    assert block[4:] == ["status: CREATE_COMPLETE", "KeyA = 1"]
    assert _section(out, "test_dmarc[stage]") == ["no DMARC record at _dmarc.stage.ardamails.com: publish it"]
    failures = "\n".join(out[: next(i for i, line in enumerate(out) if "short test summary" in line)])
    for noise in ("Observation(", "During handling of the above exception", "assert not", "def test_exports"):
        assert noise not in failures, noise


def test_a_bug_in_mailgates_code_keeps_its_traceback(project: pytest.Pytester) -> None:
    text = "\n".join(_run(project))
    bug = text.split("test_bug[dev] _")[1]
    assert """>           {}["mailgate's own bug"]""" in bug
    assert "KeyError" in bug


def test_the_closing_section_has_a_line_per_partition_and_per_failing_check_uncut(project: pytest.Pytester) -> None:
    out = _run(project)
    start = next(i for i, line in enumerate(out) if "mailgate verdict" in line)
    assert out[start + 1 : -1] == [
        "❌ dev: 1 failed, 2 passed",
        "❌ stage: 2 failed, 1 passed",
        """❌ dev test_bug: failed: KeyError: "mailgate's own bug\"""",
        f"❌ stage test_exports: failed: exports of Alpha002-stage-Email are wrong (1): {EXPORTS_REASON}",
        "❌ stage test_dmarc: failed: no DMARC record at _dmarc.stage.ardamails.com: publish it",
    ]
    assert out[-1].startswith("=")
    assert "3 failed, 3 passed" in out[-1]


@pytest.mark.parametrize("option", ["--tb=long", "-vv"])
def test_long_tracebacks_are_still_there_when_asked_for(project: pytest.Pytester, option: str) -> None:
    text = "\n".join(_run(project, option))
    exports = text.split("test_exports[stage] _")[1].split("test_dmarc")[0]
    assert "def test_exports(target, evidence):" in exports
    assert "During handling of the above exception" in exports


def test_junit_failure_message_is_the_reasons_headline(project: pytest.Pytester) -> None:
    from xml.etree import ElementTree

    project.runpytest(*PLUGINS, "--partition", "dev,stage", "--junitxml", "out/junit.xml")
    suite = ElementTree.parse(project.path / "out" / "junit.xml").getroot()
    failures = {case.get("name"): case.find("failure") for case in suite.iter("testcase")}
    exports = failures["test_exports[stage]"]
    assert exports is not None
    assert exports.get("message") == f"exports of Alpha002-stage-Email are wrong (1): {EXPORTS_REASON}"
    assert failures["test_exports[dev]"] is None
