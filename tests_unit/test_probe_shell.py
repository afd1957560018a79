"""probes.shell: real exit codes, signals, timeouts that kill the whole group, logs, redaction, Ctrl-C."""

from __future__ import annotations

import _thread
import re
import threading
import time
from pathlib import Path

import pytest

from probes import shell
from probes.secrets import Secret
from probes.shell import CommandError, CommandInterrupted, CommandResult, run


@pytest.fixture(autouse=True)
def short_graces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shorter grace periods for SIGTERM and draining the output, so kill tests run in seconds."""
    monkeypatch.setattr(shell, "TERM_GRACE", 0.4)
    monkeypatch.setattr(shell, "DRAIN_GRACE", 0.4)


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def _pid(result: CommandResult, name: str) -> int:
    found = [int(m.group(1)) for line in result.tail if (m := re.fullmatch(rf"{name}=(\d+)", line))]
    assert found, f"no {name}=PID line in the tail {result.tail}"
    return found[0]


def test_real_exit_code_is_reported(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "deploy.log"
    result = run("echo deploying; (exit 255)", cwd=tmp_path, log_path=log, timeout=10)
    assert result.exit_code == 255
    assert result.signal is None
    assert not result.ok
    assert result.describe().startswith("`echo deploying; (exit 255)` exited 255 after ")
    assert f"(log: {log})" in result.describe()


def test_success_streams_lines_to_log_callback_and_tail(tmp_path: Path) -> None:
    log = tmp_path / "a" / "b" / "run.log"
    seen: list[str] = []
    command = "for i in 1 2 3 4 5; do echo out$i; done; echo err >&2; printf 'no newline'"
    result = run(command, cwd=tmp_path, log_path=log, timeout=10, on_line=seen.append, tail_lines=3)
    assert result.ok
    assert result.exit_code == 0
    assert seen == ["out1", "out2", "out3", "out4", "out5", "err", "no newline"]
    assert result.tail == ("out5", "err", "no newline")
    lines = log.read_text().splitlines()
    assert lines[0].startswith("===== ")
    assert lines[0].endswith(f"$ {command}  (cwd: {tmp_path})")
    assert lines[1:-1] == seen
    assert lines[-1] == f"===== {result.describe()}"


def test_log_is_appended_not_truncated(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    run("echo first", cwd=tmp_path, log_path=log, timeout=10)
    run("echo second", cwd=tmp_path, log_path=log, timeout=10)
    body = log.read_text().splitlines()
    assert [line for line in body if not line.startswith("=====")] == ["first", "second"]
    assert sum(line.startswith("===== ") and "$ echo" in line for line in body) == 2


def test_secrets_are_redacted_everywhere(tmp_path: Path) -> None:
    value = "tok-3c1f9e7a-shell-canary"
    Secret("env:SHELL_CANARY", value)
    seen: list[str] = []
    result = run(
        'echo "token=$SHELL_CANARY"; printf %s "$SHELL_CANARY" | base64',
        cwd=tmp_path,
        log_path=tmp_path / "run.log",
        timeout=10,
        env={"SHELL_CANARY": value},
        on_line=seen.append,
    )
    assert result.ok
    assert seen == ["token=****", "****"]
    text = (tmp_path / "run.log").read_text() + "\n".join(result.tail) + repr(result) + result.describe()
    assert value not in text
    assert "dG9rLTNjMWY5ZTdh" not in text  # start of the value's base64


def test_env_adds_to_the_environment(tmp_path: Path) -> None:
    result = run(
        'echo "$MAILGATE_X"; command -v ls', cwd=tmp_path, log_path=tmp_path / "l", timeout=10, env={"MAILGATE_X": "x1"}
    )
    assert result.tail[0] == "x1"
    assert result.tail[1].endswith("/ls")


def test_killed_by_signal_is_reported_as_such(tmp_path: Path) -> None:
    result = run("echo before; kill -KILL $$", cwd=tmp_path, log_path=tmp_path / "l", timeout=10)
    assert result.exit_code is None
    assert result.signal == 9
    assert not result.ok
    assert "was killed by SIGKILL (9)" in result.describe()


def test_timeout_kills_the_whole_group_even_children_ignoring_term(tmp_path: Path) -> None:
    command = "trap '' TERM; sleep 100 & echo child=$!; echo shell=$$; wait"
    started = time.monotonic()
    result = run(command, cwd=tmp_path, log_path=tmp_path / "l", timeout=0.5)
    elapsed = time.monotonic() - started
    assert result.timed_out
    assert not result.ok
    assert result.signal == 9  # the shell ignored SIGTERM too
    assert "timed out after" in result.describe()
    assert elapsed < 0.5 + shell.TERM_GRACE + 1.5
    for name in ("child", "shell"):
        assert not _alive(_pid(result, name)), f"{name} survived the timeout"


def test_timeout_of_a_well_behaved_command_needs_no_sigkill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shell, "TERM_GRACE", 5.0)
    result = run("sleep 30", cwd=tmp_path, log_path=tmp_path / "l", timeout=0.3)
    assert result.timed_out
    assert result.exit_code is None
    assert result.signal == 15
    assert result.duration < 2.5  # it did not wait out the grace


def test_processes_left_behind_are_killed(tmp_path: Path) -> None:
    log = tmp_path / "l"
    result = run("trap '' TERM; sleep 100 & echo child=$!; exit 0", cwd=tmp_path, log_path=log, timeout=10)
    assert result.exit_code == 0
    assert result.ok
    assert not _alive(_pid(result, "child"))
    assert "left processes holding its output; killing them" in log.read_text()


def test_the_shell_is_reaped(tmp_path: Path) -> None:
    result = run("echo shell=$$", cwd=tmp_path, log_path=tmp_path / "l", timeout=10)
    assert not Path(f"/proc/{_pid(result, 'shell')}").exists()


def test_missing_cwd_is_an_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(CommandError, match=re.escape(f"working directory {missing} does not exist")):
        run("true", cwd=missing, log_path=tmp_path / "l", timeout=10)
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(CommandError, match="is not a directory"):
        run("true", cwd=a_file, log_path=tmp_path / "l", timeout=10)


def test_command_not_found(tmp_path: Path) -> None:
    result = run("no-such-command-mailgate", cwd=tmp_path, log_path=tmp_path / "l", timeout=10)
    assert result.exit_code == 127
    assert "exited 127 (command not found)" in result.describe()
    assert any("no-such-command-mailgate" in line and "not found" in line for line in result.tail)


def test_keyboard_interrupt_kills_the_group_and_raises_with_the_result(tmp_path: Path) -> None:
    def interrupt_once_the_child_runs(line: str) -> None:
        if line.startswith("child="):  # run() is waiting by now: Ctrl-C lands inside it
            _thread.interrupt_main()

    command = "trap '' TERM; sleep 100 & echo child=$!; wait"
    with pytest.raises(CommandInterrupted) as caught:
        run(command, cwd=tmp_path, log_path=tmp_path / "l", timeout=30, on_line=interrupt_once_the_child_runs)
    result = caught.value.result
    assert isinstance(caught.value, KeyboardInterrupt)
    assert result.interrupted
    assert not result.ok
    assert result.duration < 5
    assert "was interrupted after" in result.describe()
    assert not _alive(_pid(result, "child"))


def test_on_line_error_is_raised_after_the_command_finished(tmp_path: Path) -> None:
    def boom(line: str) -> None:
        raise ValueError(f"bad line {line}")

    log = tmp_path / "l"
    with pytest.raises(ValueError, match="bad line one"):
        run("echo one; echo two", cwd=tmp_path, log_path=log, timeout=10, on_line=boom)
    assert "two" in log.read_text().splitlines()


def test_concurrent_runs_in_threads_keep_their_own_results(tmp_path: Path) -> None:
    results: dict[int, CommandResult] = {}

    def work(n: int) -> None:
        results[n] = run(f"sleep 0.3; echo n={n}; exit {n}", cwd=tmp_path, log_path=tmp_path / f"{n}.log", timeout=10)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(1, 5)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started < 1.2
    for n in range(1, 5):
        assert results[n].exit_code == n
        assert results[n].tail == (f"n={n}",)


def test_describe_format() -> None:
    result = CommandResult(
        command="npm run lint",
        cwd="/repo",
        exit_code=1,
        signal=None,
        timed_out=False,
        interrupted=False,
        duration=3.24,
        log_path=Path("reports/logs/lint.log"),
        tail=(),
    )
    assert result.describe() == "`npm run lint` exited 1 after 3.2 s (log: reports/logs/lint.log)"
