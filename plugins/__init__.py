"""How pytest runs mailgate: options, parametrisation, deploy gate, sign-off, reports, sandbox.

The plugins are registered once: `pytest11` entry points (so their options are known before pytest picks
test paths) and `-p` in `addopts`, each before the plugins that import it (a module imported before its own
`-p` cannot have its asserts rewritten). A feature's object is registered only when the feature is on: the
deploy gate under `--deploy`, the sign-off recorder on the controller of a mailgate run. State lives in
`config.stash`.

Hook order the plugins rely on (pluggy runs `tryfirst` impls first, `trylast` ones last):

- `pytest_load_initial_conftests`, tryfirst (partitions): re-decide rootdir and ini before the conftests
  load, once a path option's value has been mistaken for a test path (plugins/_compat.py).
- `pytest_configure`: tryfirst sandbox (start the world, choose its partitions file) and report (default
  report paths, before pytest-html and junitxml read them); then the others; trylast partitions (load the
  partitions file the sandbox chose) and deploy (the gate, after the selection exists).
- `pytest_collection_modifyitems`: tryfirst partitions (xdist groups before xdist's worker turns
  `xdist_group` markers into node-id suffixes) and the deploy gate (every preflight check noted before
  `-m`/`-k` deselect any); trylast observations (the items left after deselection).
- `pytest_collection_finish`, trylast (signoff): the checks this process will run, after every plugin
  changed the items.
- `pytest_sessionstart` (waivers): load the waivers after every `pytest_configure` and before xdist starts
  its workers (its own session start runs last).
- `pytest_terminal_summary`: the verdict section (a tryfirst wrapper) frames pytest's own summary.
"""
