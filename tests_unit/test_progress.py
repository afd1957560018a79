"""Progress lines: in front of the operator (not in a check's captured output), per step, quiet with -q."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

CHECK = """
import pytest

from plugins import progress


@pytest.mark.preflight
@pytest.mark.code
def test_build(request):
    print("the check's own output")
    progress.say(request.config, "[build] started: npm run build")
    progress.say(request.config, "deploy gate: waiting", even_quiet=True)
    assert False, "fails, so pytest shows what it captured"
"""


@pytest.fixture
def project(checks_project: pytest.Pytester) -> pytest.Pytester:
    (checks_project.path / "tests_preflight").mkdir()
    (checks_project.path / "tests_preflight" / "test_code.py").write_text(CHECK)
    return checks_project


def test_a_progress_line_reaches_the_terminal_and_not_the_captured_output(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("-p", "no:hypothesispytest", "--reports-dir", "out", timeout=120)
    assert result.stderr.lines[:2] == ["[build] started: npm run build", "deploy gate: waiting"]
    captured = result.stdout.str()
    assert "the check's own output" in captured  # pytest did capture the check, and shows it
    assert "[build] started" not in captured


def test_quiet_keeps_only_what_must_be_seen(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("-p", "no:hypothesispytest", "--reports-dir", "out", "-q", timeout=120)
    assert result.stderr.lines[:1] == ["deploy gate: waiting"]
    assert "[build] started" not in result.stderr.str()


def test_a_deploy_run_says_each_step_as_it_starts_and_ends(
    scenarios, run_checks, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    data = yaml.safe_load(Path(scenarios.world.info.partitions_file).read_text())
    data["infra"].update(build="true", lint="true", test="true")
    partitions = tmp_path / "partitions.yaml"
    partitions.write_text(yaml.safe_dump(data))
    run = run_checks("--partition", "dev", "--deploy", "--postmark-wait", "5", "--partitions-file", str(partitions))
    assert run.failed() == set(), run.messages
    said = capfd.readouterr().err.splitlines()
    for step in ("build", "lint", "test", "dev synth", "dev diff"):
        started = next(i for i, line in enumerate(said) if line.startswith(f"[{step}] started: "))
        assert re.fullmatch(rf"\[{step}\] done: `.*` exited 0 after \d+\.\d s \(log: .*\.log\)", said[started + 1 :][0])
    deploy = [line for line in said if line.startswith("[dev deploy] ")]
    assert deploy[0].startswith("[dev deploy] started: ")
    assert re.fullmatch(r"\[dev deploy\] `.*` exited 0 after \d+\.\d s \(log: (.*)\)", deploy[-1]), deploy[-1]
    log = Path(re.fullmatch(r".*\(log: (.*)\)", deploy[-1]).group(1)).read_text()  # type: ignore[union-attr]
    streamed = deploy[1:-1]
    assert streamed, "the deploy's own output was streamed"
    assert all(line.removeprefix("[dev deploy] ") in log for line in streamed)
    assert any(
        re.fullmatch(r"\[dev\] observed in \d+\.\d s: stack CREATE_COMPLETE; \d+ DNS answers; Postmark read", line)
        for line in said
    ), said
