"""Each private pytest/xdist internal plugins/_compat.py relies on still exists in the installed versions: an
upgrade that moves one fails here, by name, instead of silently changing how a gate run picks its rootdir or
groups its work."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import pytest

from plugins._compat import TESTED_WITH


def _major_minor(dist: str) -> str:
    return ".".join(version(dist).split(".")[:2])


@pytest.mark.parametrize("dist", sorted(TESTED_WITH))
def test_the_installed_versions_are_the_tested_ones(dist: str) -> None:
    assert _major_minor(dist) == TESTED_WITH[dist], (
        f"{dist} {version(dist)} is installed, plugins/_compat.py is tested with {TESTED_WITH[dist]}: run "
        "tests_unit/test_compat.py and the path-option and xdist tests, then update TESTED_WITH"
    )


def test_rootdir_redecision_internals_exist(pytestconfig: pytest.Config) -> None:
    from _pytest.config import findpaths

    parameters = set(inspect.signature(findpaths.determine_setup).parameters)
    expected = {"inifile", "override_ini", "args", "rootdir_cmd_arg", "invocation_dir"}
    assert expected <= parameters, f"determine_setup's parameters changed: {sorted(parameters)}"
    for name in ("_rootpath", "_inipath", "_inicfg", "_ignored_config_files", "_inicache", "_validate_args"):
        assert hasattr(pytestconfig, name), f"pytest.Config has no {name} any more: redecide_rootdir needs it"
    found = findpaths.determine_setup(
        inifile=None, override_ini=None, args=[], rootdir_cmd_arg=None, invocation_dir=pytestconfig.rootpath
    )
    assert len(found) == 4, f"determine_setup returns {len(found)} values, redecide_rootdir unpacks 4"


def test_xdist_scheduler_internals_exist(pytestconfig: pytest.Config) -> None:
    from xdist.scheduler import LoadScopeScheduling

    for method in ("_split_scope", "_assign_work_unit", "_reschedule", "schedule"):
        assert callable(getattr(LoadScopeScheduling, method, None)), f"LoadScopeScheduling.{method} is gone"
    made = inspect.getsource(LoadScopeScheduling.__init__)
    assert isinstance(inspect.getattr_static(LoadScopeScheduling, "nodes", None), property), "nodes is gone"
    for attribute in ("self.collection", "self.workqueue", "self.assigned_work"):
        assert attribute in made, f"LoadScopeScheduling no longer sets {attribute}: grouping_scheduler reads it"
    assert hasattr(pytestconfig.option, "loadscopereorder"), "xdist's loadscopereorder option is gone"


def test_terminal_reporter_half_line_internals_exist(pytestconfig: pytest.Config) -> None:
    terminal = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    writer = getattr(terminal, "_tw", None)
    assert writer is not None, "TerminalReporter._tw is gone: half_line reads it"
    assert isinstance(getattr(writer, "_current_line", None), str), "TerminalWriter._current_line is gone"
