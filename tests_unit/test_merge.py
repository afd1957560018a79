"""mailgate-merge: four shard runs against the sandbox merged into what one run over the same partitions writes
(execution log byte for byte, JUnit, sign-off), whatever the shards' order; and every refusal."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from plugins.merge import main as merge_main
from plugins.merge import run_folder
from plugins.shards import main as partitions_main
from sandbox.scenarios import Scenarios

RunChecks = Callable[..., Any]
LOG = Path(__file__).parent / "data" / "execution-log.md"
PARTITIONS = ("dev", "stage", "demo", "prod")


def _cases(folder: Path) -> list[tuple[str, str, str, str]]:
    """(classname, name, outcome, message) of every testcase in the folder's one JUnit file."""
    (junit,) = run_folder(folder).glob("*.xml")
    found = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        detail = case.find(kind)
        found.append(
            (
                case.get("classname", ""),
                case.get("name", ""),
                kind,
                detail.get("message", "") if detail is not None else "",
            )
        )
    return found


def _signoff(folder: Path) -> dict[str, Any]:
    return json.loads((run_folder(folder) / "signoff.json").read_text(encoding="utf-8"))


def _checks(folder: Path) -> list[tuple[str, str, str | None]]:
    return [(c["nodeid"], c["outcome"], c["message"]) for c in _signoff(folder)["checks"]]


def _shard_runs(scenarios: Scenarios, run_checks: RunChecks, tmp_path: Path, names: tuple[str, ...]) -> dict[str, Path]:
    """The partitions deployed (stage with a second SPF record: one failing check) and one shard run of
    `-m postmerge --partition P` each, into its own reports folder."""
    for name in names:
        scenarios.seed(name, defects=["two-spf"] if name == "stage" else [])
    folders = {"partitions": Path(scenarios.world.info.partitions_file)}
    for name in names:
        folders[name] = tmp_path / f"shard-{name}"
        run = run_checks("-m", "postmerge", "--partition", name, f"--reports-dir={folders[name]}", "--postmark-wait=5")
        assert run.ret == (1 if name == "stage" else 0), run.messages
    return folders


@pytest.fixture
def world_runs(scenarios: Scenarios, run_checks: RunChecks, tmp_path: Path) -> dict[str, Path]:
    """Four shard runs, and one run over all four partitions updating its own copy of the log."""
    folders = _shard_runs(scenarios, run_checks, tmp_path, PARTITIONS)
    single_log = tmp_path / "single" / "log.md"
    single_log.parent.mkdir()
    shutil.copy(LOG, single_log)
    folders["single"] = tmp_path / "single" / "reports"
    run = run_checks(
        "-m", "postmerge", f"--reports-dir={folders['single']}", f"--signoff-log={single_log}", "--postmark-wait=5"
    )
    assert run.failed() == {"test_spf[stage]"}, run.messages
    return folders


def test_four_shards_merge_into_what_one_run_writes_in_any_order(world_runs: dict[str, Path], tmp_path: Path) -> None:
    single = world_runs["single"] / "latest"  # that run's folder in its reports folder
    single_log = world_runs["single"].parent / "log.md"
    for order in (PARTITIONS, ("prod", "stage", "dev", "demo")):
        out = tmp_path / f"merged-{'-'.join(order)}"
        log = out.with_suffix(".log.md")
        shutil.copy(LOG, log)
        status = merge_main([f"--reports-dir={out}", f"--signoff-log={log}", *(str(world_runs[n]) for n in order)])
        assert status == 1, "a failed check makes the merge exit 1, as the run did"
        assert log.read_bytes() == single_log.read_bytes(), f"{order}: the log differs from one run's"
        assert _cases(out) == _cases(single), f"{order}: JUnit testcases differ from one run's"
        assert _checks(out) == _checks(single), f"{order}: sign-off checks differ from one run's"
        assert _signoff(out)["rows"] == _signoff(single)["rows"], f"{order}: sign-off rows differ"
        table = (run_folder(single) / "signoff.md").read_text().split("## Verdict matrix")[1].split("##")[0]
        assert table in (run_folder(out) / "signoff.md").read_text(), f"{order}: the merged verdict matrix differs"
        html = (run_folder(out) / "report.html").read_text()
        assert 'id="mailgate-matrix"' in html, "the HTML summary carries the verdict matrix"
        assert "test_spf" in html, html[:500]
    first, second = (tmp_path / f"merged-{'-'.join(o)}" for o in (PARTITIONS, ("prod", "stage", "dev", "demo")))
    junits = [(run_folder(out) / "junit.xml").read_bytes() for out in (first, second)]
    assert junits[0] == junits[1], "JUnit depends on order"
    for name in PARTITIONS:
        assert len(list((world_runs[name] / "latest").glob("*.xml"))) == 1, "a shard's folder gained or lost a file"


def test_refusals_name_the_folder_and_exit_4(
    scenarios: Scenarios, run_checks: RunChecks, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = _shard_runs(scenarios, run_checks, tmp_path, ("dev", "stage"))
    dev, stage = runs["dev"], runs["stage"]

    def refused(*args: str, out: Path = tmp_path / "out") -> str:
        before = _files(out)
        assert merge_main([f"--reports-dir={out}", *args]) == 4, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert _files(out) == before, "a refused merge wrote into OUT"
        return err

    assert "partition dev is in two shards" in refused(str(dev), str(dev))
    assert "is not a mailgate run: no signoff.json" in refused(str(dev), str(tmp_path))
    assert "is not a mailgate run: no such folder" in refused(str(dev), str(tmp_path / "nowhere"))

    def variant(name: str, change: Callable[[dict[str, Any]], None]) -> Path:
        copy = tmp_path / name
        shutil.copytree(stage / "latest", copy)  # the run's folder
        document = _signoff(copy)
        change(document)
        (run_folder(copy) / "signoff.json").write_text(json.dumps(document))
        return copy

    interrupted = variant("interrupted", lambda d: d.update(complete=False))
    assert f"{interrupted} is an interrupted run (INCOMPLETE)" in refused(str(dev), str(interrupted))
    other_file = variant("other-file", lambda d: d["run"].update(partitions_digest="sha256:0000"))
    assert "shards made from different partitions files" in refused(str(dev), str(other_file))
    other_version = variant("other-version", lambda d: d["run"].update(mailgate_version="0.0.1"))
    assert "shards made from different mailgate versions" in refused(str(dev), str(other_version))
    edited = tmp_path / "partitions-edited.yaml"
    edited.write_text(runs["partitions"].read_text() + "\n# edited\n")
    assert "is not the partitions file the shards were made from" in refused(
        f"--partitions-file={edited}", str(dev), str(stage)
    )
    shard = run_folder(stage)
    assert "already holds a sign-off" in refused(str(dev), out=shard), "a shard's run folder is never OUT"
    assert f"{stage} is the reports folder of shard {shard}" in refused(str(dev), str(stage), out=stage), (
        "a shard's reports folder is never OUT: its latest would name the merge"
    )


def test_a_second_merge_into_one_out_keeps_the_first(
    scenarios: Scenarios, run_checks: RunChecks, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = _shard_runs(scenarios, run_checks, tmp_path, ("dev", "stage"))
    out = tmp_path / "merged"
    assert merge_main([f"--reports-dir={out}", str(runs["dev"]), str(runs["stage"])]) == 1
    first = run_folder(out)
    assert first.parent == out, first
    assert first.name.startswith("merge-dev+stage-"), "named as a run's folder: label, partitions, UTC time"
    kept = _files(first)
    assert merge_main([f"--reports-dir={out}", str(runs["stage"]), str(runs["dev"])]) == 1
    second = run_folder(out)
    assert second.parent == out, second
    assert second != first, "the second merge wrote into the first's folder"
    assert _files(first) == kept, "the first merge's files changed"
    assert sorted(p.name for p in out.iterdir()) == sorted(["latest", first.name, second.name])
    assert sorted(p.name for p in second.iterdir()) == sorted(
        [".mailgate-run", "junit.xml", "report.html", "signoff.json", "signoff.md"]
    )
    assert f"sign-off in {second} ({out / 'latest'} points here)" in capsys.readouterr().out


def _files(folder: Path) -> dict[Path, bytes]:
    """Every file under `folder` (not through `latest`, a link), by its path inside it, with its bytes."""
    if not folder.exists():
        return {}
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_console_scripts_are_installed(tmp_path: Path) -> None:
    bindir = Path(sys.executable).parent
    done = subprocess.run(
        [bindir / "mailgate-merge", str(tmp_path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 4, done
    expected = f"mailgate-merge: {tmp_path} is not a mailgate run: no signoff.json (pass the --reports-dir of a"
    assert done.stderr == expected + " finished run)\n", "one line on stderr"
    listed = subprocess.run(
        [bindir / "mailgate-partitions", "--partitions-file", str(Path(__file__).parents[1] / "partitions.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    shards = json.loads(listed.stdout)["include"]
    assert [s["partitions"] for s in shards] == ["dev", "stage", "demo", "prod"], "the deploy order of the file"
    assert shards[3]["production"] is True
    assert shards[0]["token_secrets"] == "MAILGATE_POSTMARK_TOKEN_DEV"


def test_partitions_by_infrastructure_and_a_bad_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    file = str(Path(__file__).parents[1] / "partitions.yaml")
    assert partitions_main(["--partitions-file", file, "--by", "infrastructure"]) == 0
    shards = json.loads(capsys.readouterr().out)["include"]
    assert [(s["shard"], s["partitions"]) for s in shards] == [("Alpha002", "dev,stage"), ("Alpha001", "demo,prod")]
    assert partitions_main(["--partitions-file", str(tmp_path / "none.yaml")]) == 4
    assert "partitions file not found" in capsys.readouterr().err
