"""Where a run's reports go, and the evidence each check records for them."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from probes.secrets import redact


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("mailgate").addoption(
        "--reports-dir",
        metavar="PATH",
        help="where reports, logs and sign-off files go (default: reports/ in the rootdir)",
    )


def reports_dir(config: pytest.Config) -> Path:
    option = config.getoption("reports_dir")
    return Path(config.invocation_params.dir, option).resolve() if option else config.rootpath / "reports"


class Evidence:
    """What a check saw, attached to its report (redacted): `evidence.add("TXT at _dmarc…", lines)`."""

    def __init__(self, node: pytest.Item) -> None:
        self._node = node

    def add(self, title: str, lines: str | Iterable[str] = ()) -> None:
        body = lines if isinstance(lines, str) else "\n".join(lines)
        self._node.user_properties.append(("evidence", redact(f"{title}\n{body}".rstrip())))


@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> Evidence:
    """Record what this check observed, for the HTML report and signoff.json."""
    assert isinstance(request.node, pytest.Item)
    return Evidence(request.node)
