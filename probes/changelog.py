"""A Keep-a-Changelog file read the way a PR closeout judges it: the newest section and its `### Added` bullets."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SECTION = re.compile(r"^##(?!#)\s*(.+?)\s*$")
_SUBSECTION = re.compile(r"^###(?!#)\s*(.+?)\s*$")
_BULLET = re.compile(r"^\s*[-*+]\s+\S")


@dataclass(frozen=True)
class NewestSection:
    """The first `## ` section of a changelog: its heading, whether it has `### Added`, and that list's bullets."""

    heading: str | None
    has_added: bool
    added: tuple[str, ...]


def newest_section(text: str) -> NewestSection:
    heading: str | None = None
    has_added = False
    added: list[str] = []
    current: str | None = None
    for line in text.splitlines():
        section = _SECTION.match(line)
        if section:
            if heading is not None:
                break
            heading = section.group(1)
            continue
        if heading is None:
            continue
        sub = _SUBSECTION.match(line)
        if sub:
            current = sub.group(1).strip().lower()
            has_added = has_added or current == "added"
        elif current == "added" and _BULLET.match(line):
            added.append(line.strip()[1:].strip())
    return NewestSection(heading, has_added, tuple(added))
