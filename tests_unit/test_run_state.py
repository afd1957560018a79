"""The run directory's shared state: atomic writes, one computation per run, complete facts only."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from plugins.run_state import RunState, locked, write_atomic


def test_a_write_that_fails_part_way_leaves_the_old_content_and_no_stray_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.pickle"
    path.write_bytes(b"old")
    os.chmod(path, 0o640)

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, b"new content", durable=False)
    assert path.read_bytes() == b"old", "a failed write must leave what was there"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pickle"], "the temporary file must be removed"
    monkeypatch.undo()
    write_atomic(path, b"new content")
    assert path.read_bytes() == b"new content"
    assert path.stat().st_mode & 0o777 == 0o640, "the file keeps its mode"


def _once_in_a_process(folder: str, log: str) -> None:
    RunState(Path(folder)).once("value", lambda: _computed(Path(log)))


def _computed(log: Path) -> str:
    with log.open("a") as out:
        out.write("computed\n")
    time.sleep(0.2)  # long enough that the other process asks while this one computes
    return "the value"


def test_once_computes_once_across_processes_and_threads(tmp_path: Path) -> None:
    log = tmp_path / "computed.log"
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=_once_in_a_process, args=(str(tmp_path), str(log))) for _ in range(2)]
    got: list[str] = []
    threads = [
        threading.Thread(target=lambda: got.append(RunState(tmp_path).once("value", lambda: _computed(log))))
        for _ in range(2)
    ]
    for worker in (*processes, *threads):
        worker.start()
    for process in processes:
        process.join(10)
        assert process.exitcode == 0, f"a process that asked for the value exited {process.exitcode}"
    for thread in threads:
        thread.join(10)
    assert log.read_text() == "computed\n", "four processes and threads asked; exactly one computes"
    assert got == ["the value", "the value"], "every asker reads the one computed value"


def test_facts_are_read_up_to_the_last_complete_line(tmp_path: Path) -> None:
    state = RunState(tmp_path)
    assert state.facts("outcomes") == []
    state.append("outcomes", {"nodeid": "t::a", "outcome": "passed"})
    with (tmp_path / "outcomes.jsonl").open("a") as out:
        out.write('{"nodeid": "t::b", "out')  # another process is part way through its line
    assert state.facts("outcomes") == [{"nodeid": "t::a", "outcome": "passed"}]


def test_a_folder_is_locked_itself_and_nothing_is_left_beside_its_files(tmp_path: Path) -> None:
    entered = threading.Event()
    order: list[str] = []

    def second() -> None:
        entered.wait(5)
        with locked(tmp_path):
            order.append("second")

    thread = threading.Thread(target=second)
    thread.start()
    with locked(tmp_path):
        entered.set()
        time.sleep(0.1)
        order.append("first")
    thread.join(5)
    assert order == ["first", "second"], "the second holder waits for the first"
    assert list(tmp_path.iterdir()) == [], "locking a folder creates nothing in it"
