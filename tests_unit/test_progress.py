"""Progress lines: in front of the operator (not in a check's captured output), per step, quiet with -q."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
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

CHECKS_RUN = [
    sys.executable,
    "-m",
    "pytest",
    "-p",
    "no:hypothesispytest",
    "-p",
    "no:cacheprovider",
    "--reports-dir",
    "out",
]


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


def test_where_pytest_writes_to_the_same_place_a_progress_line_starts_a_line_of_its_own(
    project: pytest.Pytester,
) -> None:
    """A terminal or a CI log: pytest has written the check's file name and waits to add its result there."""
    merged = subprocess.run(
        CHECKS_RUN,
        cwd=project.path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,  # the check fails on purpose
    ).stdout.splitlines()
    assert "[build] started: npm run build" in merged, merged
    start = merged.index("[build] started: npm run build")
    assert merged[start - 1] == "tests_preflight/test_code.py ", "pytest's half line was ended first"
    assert merged[start + 1 : start + 3] == ["tests_preflight/test_code.py ", "deploy gate: waiting"], merged
    result = merged[start + 3]
    assert re.fullmatch(r"tests_preflight/test_code\.py F +\[100%\]", result), "pytest's line was given back whole"
    # pytest fills a result line to one column short of the width its session header fills
    assert len(result) == len(merged[0]) - 1, f"the percentage is not where pytest aligns it: {merged}"


def test_on_a_terminal_a_progress_line_goes_above_the_line_pytest_is_writing(project: pytest.Pytester) -> None:
    """The half line is erased and written again below the progress line: the screen shows whole lines only."""
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            CHECKS_RUN,
            cwd=project.path,
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=follower,
            env={**os.environ, "COLUMNS": "80"},
        )
        os.close(follower)
        raw = b""
        while chunk := _read(leader):
            raw += chunk
        process.wait(timeout=120)
    finally:
        os.close(leader)
    # what a terminal shows: ANSI colours dropped, a carriage return and erase-line replace the line so far
    text = re.sub(r"\x1b\[[0-9;]*m", "", raw.decode()).replace("\r\n", "\n")
    screen = [line.rsplit("\r\x1b[K", 1)[-1] for line in text.split("\n")]
    start = screen.index("[build] started: npm run build")
    assert screen[start + 1] == "deploy gate: waiting", screen
    assert re.fullmatch(r"tests_preflight/test_code\.py F +\[100%\]", screen[start + 2]), screen
    assert "tests_preflight/test_code.py " not in screen[:start], "the half line was left on the screen"


def _read(fd: int) -> bytes:
    """The next output of a pseudo-terminal; b"" once its last writer has closed it (Linux raises EIO)."""
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""
