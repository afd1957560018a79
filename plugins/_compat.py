"""The private internals of pytest and pytest-xdist mailgate relies on, in one place.

Tested with pytest 9.2 and pytest-xdist 3.8; tests_unit/test_compat.py fails by name when an upgrade moves any of
them. Each part says the upstream issue it works around; drop it when a public API covers it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

TESTED_WITH = {"pytest": "9.2", "pytest-xdist": "3.8"}


def redecide_rootdir(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """Choose rootdir and ini again from the real test paths, now that the plugins' options are known.

    pytest picks them before plugins add options, so the value of a path option in the separate form
    (`--partitions-file PATH`) counts as a test path and can move the rootdir, losing the project's
    configuration (pytest issue 8846, "a known issue"). If the choice differs, apply it with the ini's
    addopts, as pytest would have done. Private: `determine_setup`, `Config._rootpath`, `_inipath`,
    `_inicfg`, `_ignored_config_files`, `_inicache`, `_validate_args`.
    """
    from _pytest.config.findpaths import determine_setup

    ns = early_config.known_args_namespace
    rootpath, inipath, inicfg, ignored = determine_setup(
        inifile=ns.inifilename,
        override_ini=ns.override_ini,
        args=ns.file_or_dir,
        rootdir_cmd_arg=ns.rootdir or None,
        invocation_dir=early_config.invocation_params.dir,
    )
    if (rootpath, inipath) == (early_config.rootpath, early_config.inipath):
        return
    early_config._rootpath, early_config._inipath = rootpath, inipath
    early_config._inicfg, early_config._ignored_config_files = inicfg, ignored
    early_config._inicache.clear()
    parser.extra_info.update(rootdir=str(rootpath), inifile=str(inipath))
    addopts = early_config._validate_args(early_config.getini("addopts"), "via addopts config")
    args[:] = addopts + args
    early_config.known_args_namespace = parser.parse_known_args(args, namespace=copy.copy(early_config.option))
    early_config.known_args_namespace.confcutdir = str(inipath.parent if inipath else rootpath)
    if early_config.known_args_namespace.disable_plugin_autoload:
        _drop_autoloaded(early_config.pluginmanager, early_config.known_args_namespace.plugins)


def _drop_autoloaded(manager: pytest.PytestPluginManager, named: list[str]) -> None:
    """The ini found late disables plugin autoload: unregister what autoload brought and `-p` does not name,
    so the run has the same plugins whichever form its path options took."""
    for plugin, _dist in manager.list_plugin_distinfo():
        if manager.get_name(plugin) not in named and getattr(plugin, "__name__", None) not in named:
            manager.unregister(plugin)


def grouping_scheduler(
    config: pytest.Config, log: object, group_of: Callable[[str], str], *, deal_all: bool = False
) -> object:
    """xdist's LoadScopeScheduling with work units chosen by `group_of(nodeid)`, handed out in collection order.

    xdist's own loadgroup reads an `@group` suffix it writes into node ids, which pytest 9.2 no longer lets it
    do (pytest-xdist issue 1386): the groups were silently ignored. Private: `LoadScopeScheduling._split_scope`
    (the unit of a node id) and the `loadscopereorder` option (xdist would hand out the largest groups first,
    and a partition's deploy waiting for the shared checks queued behind it would never start them). With
    `deal_all` (a deploy run), also `collection`, `workqueue`, `assigned_work`, `_assign_work_unit` and
    `_reschedule`, to hand out every unit at once (see `schedule`).
    """
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):  # type: ignore[misc]  # xdist ships no types: its base is Any
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

        def schedule(self) -> None:
            """With `deal_all`, hand out every work unit at once, in collection (deploy) order, to the least
            loaded worker, then tell every worker no more work follows.

            A worker runs an item only once it knows the next one or is told to stop (pytest's teardown needs
            `nextitem`), so the last check of a partition waits for more work; a partition after it waits for
            that partition's whole verdict. Handed out dynamically, that last check could wait forever. Handed
            out in deploy order, each worker's queue follows the cascade, so no wait can be circular.
            """
            deal = deal_all and self.collection is None
            super().schedule()
            if not deal or self.collection is None:
                return
            while self.workqueue:
                node = min(self.nodes, key=lambda n: sum(len(unit) for unit in self.assigned_work[n].values()))
                self._assign_work_unit(node)
            for node in self.nodes:
                self._reschedule(node)  # the queue is empty: each worker is told to finish what it holds

    config.option.loadscopereorder = False
    return GroupScheduling(config, log)


def half_line(terminal: pytest.TerminalReporter) -> str:
    """What pytest has written of its current terminal line so far (a check file's name and its results; under -v
    a node id waiting for its outcome), without colours; "" at the start of a line.

    A progress line from another thread must not land in the middle of it, and pytest, which goes on appending
    to it, must find it as it left it. pytest's public `ensure_newline` ends the line through pytest's own writer,
    which during a check is captured (fd 1), and forgets the line (its right-aligned `[ 31%]` then lands in the
    wrong column); live logging suspends capturing around each record instead (`global_and_fixture_disabled`),
    which a thread other than the check's cannot do safely. Private: `TerminalReporter._tw`,
    `TerminalWriter._current_line`.
    """
    return str(terminal._tw._current_line)
