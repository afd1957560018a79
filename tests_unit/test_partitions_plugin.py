"""The partitions plugin through pytester: ids, selection, path options, usage errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECKS = """
import pytest

@pytest.mark.preflight
def test_synth(target):
    assert target.stack_name

@pytest.mark.preflight
def test_build():
    pass

@pytest.mark.postmerge
def test_exports(target):
    pass

def test_where(selection):
    print("REPO=" + str(selection.infra_repo))
    print("LOG=" + str(selection.signoff_log))
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester project with this repo's partitions file and a few partition and shared checks."""
    pytester.makefile(".yaml", partitions=(ROOT / "partitions.yaml").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    preflight: p\n    postmerge: p\n")
    pytester.makepyfile(test_checks=CHECKS)
    return pytester


def _ids(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if "::" in line]


def test_one_partition_ids_and_independent_checks_once(project: pytest.Pytester) -> None:
    result = project.runpytest("--collect-only", "-q", "-m", "preflight", "--partition", "prod")
    assert result.ret == 0
    assert _ids(result) == ["test_checks.py::test_synth[prod]", "test_checks.py::test_build"]


def test_comma_list_and_default_all(project: pytest.Pytester) -> None:
    two = project.runpytest("--collect-only", "-q", "-m", "preflight", "--partition", "dev,stage")
    assert _ids(two) == [
        "test_checks.py::test_synth[dev]",
        "test_checks.py::test_synth[stage]",
        "test_checks.py::test_build",
    ]
    every = project.runpytest("--collect-only", "-q", "-m", "postmerge")
    assert _ids(every) == [f"test_checks.py::test_exports[{p}]" for p in ("dev", "stage", "demo", "prod")]


@pytest.mark.parametrize("form", ["separate", "equals"])
def test_path_options_in_both_forms(
    project: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory, form: str
) -> None:
    """Existing paths outside the project, run from its root: pytest must not take them for test paths."""
    outside = tmp_path_factory.mktemp("outside")
    (outside / "infrastructure").mkdir()
    (outside / "partitions.yaml").write_text((project.path / "partitions.yaml").read_text())
    (outside / "log.md").write_text("# log\n")
    values = {
        "--partitions-file": str(outside / "partitions.yaml"),
        "--infra-repo": str(outside / "infrastructure"),
        "--signoff-log": str(outside / "log.md"),
    }
    args = [part for k, v in values.items() for part in ([k, v] if form == "separate" else [f"{k}={v}"])]
    result = project.runpytest_subprocess("-s", "-q", "-k", "where", *args)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines([f"REPO={outside / 'infrastructure'}", f"LOG={outside / 'log.md'}", "*1 passed*"])
    assert "PytestUnknownMarkWarning" not in result.stdout.str()


SHOW_PLUGINS = """
import pytest

@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    manager = config.pluginmanager
    plugins = manager.get_plugins()
    names = {getattr(p, "__name__", "") for p in plugins} | {manager.get_name(p) for p in plugins}
    print("MODULES=" + ",".join(sorted(n for n in names if n and not n.startswith(("_pytest", "1", "2")))))
"""


@pytest.mark.parametrize("form", ["none", "separate", "equals"])
def test_a_gate_run_has_exactly_the_projects_plugins(tmp_path: Path, form: str) -> None:
    """Test tools installed beside mailgate (hypothesis, respx, anyio) never join a gate run, even when a path
    option in the separate form made pytest find the project's configuration only after plugins loaded."""
    (tmp_path / "show_plugins.py").write_text(SHOW_PLUGINS)
    outside = tmp_path / "partitions.yaml"
    outside.write_text((ROOT / "partitions.yaml").read_text())
    args = {"none": [], "separate": ["--partitions-file", str(outside)], "equals": [f"--partitions-file={outside}"]}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "postmerge", "-p", "show_plugins", *args[form]],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    [line] = [line for line in result.stdout.splitlines() if line.startswith("MODULES=")]
    modules = set(line.removeprefix("MODULES=").split(","))
    ours = ("partitions", "sandbox", "report", "preflight", "observations", "deploy", "signoff", "waivers")
    named = {"xdist.plugin", "pytest_metadata.plugin", "pytest_html.plugin", "show_plugins"}
    named |= {f"plugins.{p}" for p in ours}
    assert named <= modules
    assert not {m for m in modules if m.split(".")[0] in ("_hypothesis_pytestplugin", "respx", "anyio")}
    assert "xdist.looponfail" not in modules
    assert not {"pytester", "_pytest.pytester"} & modules, "pytester is for the suite's own tests, never a gate run"
    assert "conftest" not in modules, "the plugins are registered once, by entry points and addopts"


def test_unknown_partition_is_a_usage_error(project: pytest.Pytester) -> None:
    result = project.runpytest("--collect-only", "--partition", "nosuch")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --partition: unknown partition nosuch; known: dev, stage, demo, prod (or 'all')"]
    )


def test_broken_file_stops_before_any_test(project: pytest.Pytester) -> None:
    project.makefile(
        ".yaml", partitions=(ROOT / "partitions.yaml").read_text().replace("profile: Admin", "profil: Admin")
    )
    result = project.runpytest("-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *partitions.yaml:*: infrastructures.Alpha001.profil: unknown key*"])
    assert "passed" not in result.stdout.str()
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_deploy_order_cycle_stops_before_any_test(project: pytest.Pytester) -> None:
    text = (ROOT / "partitions.yaml").read_text().replace("after: [dev]", "after: [prod]", 1)
    project.makefile(".yaml", partitions=text)
    result = project.runpytest("-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "after: [prod]" in row)
    result.stderr.fnmatch_lines(
        [
            f"ERROR: *partitions.yaml:{line}: partitions.stage.after: "
            "the deploy order has a cycle: stage → prod → stage *"
        ]
    )
    assert "passed" not in result.stdout.str()


def test_partitions_run_in_deploy_order(project: pytest.Pytester) -> None:
    result = project.runpytest("--collect-only", "-q", "-m", "postmerge", "--partition", "prod,stage,dev")
    assert _ids(result) == [f"test_checks.py::test_exports[{name}]" for name in ("dev", "stage", "prod")]


def test_missing_explicit_file_names_the_path(project: pytest.Pytester) -> None:
    result = project.runpytest("--partitions-file", "nosuch.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {project.path / 'nosuch.yaml'}: partitions file not found*"])


def test_partition_tests_without_a_partitions_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_checks="def test_synth(target):\n    pass\n")
    result = pytester.runpytest("-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {pytester.path / 'partitions.yaml'}: partitions file not found*"])


def test_project_collects_prod_checks_once() -> None:
    """The operators' command in this repo: partition checks end in [prod]; the rest appear once."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "preflight", "--partition", "prod"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    ids = [line for line in result.stdout.splitlines() if "::" in line]
    assert result.returncode == 0, result.stdout + result.stderr
    assert ids, "no preflight checks collected"
    assert all(i.startswith("tests_preflight/") for i in ids)
    per_partition = [i for i in ids if i.endswith("]")]
    assert per_partition
    assert all(i.endswith("[prod]") for i in per_partition)
    once = [i for i in ids if not i.endswith("]")]
    assert len(once) == len(set(once))


@pytest.mark.parametrize(
    ("nodeid", "group"),
    [
        ("tests_postmerge/test_dns.py::test_spf[prod]", "prod"),
        ("tests_postmerge/test_dns.py::test_spf[prod]@prod", "prod"),
        ("tests_preflight/test_code.py::test_build", "mailgate-shared"),
        ("tests_preflight/test_code.py::test_build@mailgate-shared", "mailgate-shared"),
        ("tests_unit/test_x.py::test_y[not-a-partition]", "tests_unit/test_x.py::test_y[not-a-partition]"),
        ("tests_unit/test_x.py::test_z", "tests_unit/test_x.py::test_z"),
        ("tests_unit/test_x.py::test_y[a@b]", "tests_unit/test_x.py::test_y[a@b]"),
        ("tests_unit/at@dir/test_x.py::test_z", "tests_unit/at@dir/test_x.py::test_z"),
    ],
)
def test_xdist_work_units(nodeid: str, group: str) -> None:
    from plugins.partitions import group_of

    assert group_of(nodeid, {"dev", "prod"}) == group
