"""`-m closeout`: the PR closeout checks (tests_closeout/) run only in a run that asks for them by marker.

They judge what a finished cascade leaves behind (the execution log signed off, every partition's cdk.context.json
block, the CHANGELOG entry, no expired waiver), which the run that deploys and verifies is still writing: in any
other run they are deselected.
"""

from __future__ import annotations

import re

import pytest

MARKER = "closeout"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if MARKER in re.findall(r"\w+", config.getoption("markexpr") or ""):
        return
    closeout = [item for item in items if item.get_closest_marker(MARKER)]
    if closeout:
        items[:] = [item for item in items if not item.get_closest_marker(MARKER)]
        config.hook.pytest_deselected(items=closeout)
