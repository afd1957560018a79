"""A run's folder under the reports root: claimed once, pointed at by `latest`, pruned only when asked.

`reports/<run>/` holds everything one run writes (HTML, JUnit, signoff.json and signoff.md, logs/, synth/,
diff-*.md); `reports/latest` is a relative symlink to the newest run's folder, so `reports/latest/signoff.json`
is a stable path for the tools that read the sign-off. Nothing of another run is ever written over: a folder
is claimed with an atomic mkdir (two runs in one second get `<run>-2`), and `latest` is replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

LATEST = "latest"
MARKER = ".mailgate-run"  # in every run folder: what pruning may remove (nothing else in the reports root)
MAX_PARTITIONS_IN_NAME = 100  # characters of the partitions part of a run folder's name
MAX_LABEL_IN_NAME = 80


def name(label: str, partitions: str, now: datetime) -> str:
    """`<label>-<partitions>-<UTC time>`, e.g. `postmerge-dev+prod-20260526T234343Z`: `partitions` (a comma list,
    or `all`) joined by `+`; a long one is cut to three names and a digest, as a file name has at most 255 bytes."""
    shown = re.sub(r"[^A-Za-z0-9_.+-]+", "-", partitions.replace(",", "+")).strip("-") or "all"
    if len(shown) > MAX_PARTITIONS_IN_NAME:
        names = shown.split("+")
        digest = hashlib.sha256(partitions.encode()).hexdigest()[:8]
        shown = f"{'+'.join(names[:3])}+{len(names) - 3}-more-{digest}"
    return f"{label[:MAX_LABEL_IN_NAME]}-{shown}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def claim(root: Path, name: str, started: datetime) -> Path:
    """Create `root/name` (or `name-2`, `name-3`… when taken) with its marker, and return it."""
    root.mkdir(parents=True, exist_ok=True)
    number = 1
    while True:
        folder = root / (name if number == 1 else f"{name}-{number}")
        try:
            folder.mkdir()
        except FileExistsError:
            number += 1
            continue
        (folder / MARKER).write_text(json.dumps({"started": started.astimezone(UTC).isoformat()}) + "\n")
        return folder


def point_latest(folder: Path) -> str | None:
    """Make `<root>/latest` point at `folder`; None, or why it was left alone (it is not a symlink)."""
    link = folder.parent / LATEST
    if link.exists() and not link.is_symlink():
        return f"{link} is not a symlink (left as it is); this run's reports are in {folder}"
    temporary = folder.parent / f".{LATEST}-{os.getpid()}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(folder.name, target_is_directory=True)
    temporary.replace(link)
    return None


def runs(root: Path) -> list[Path]:
    """The run folders under `root` (those with the marker), newest first."""
    found = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and (p / MARKER).is_file()]
    return sorted(found, key=_started, reverse=True)


def _started(folder: Path) -> str:
    try:
        return str(json.loads((folder / MARKER).read_text())["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return datetime.fromtimestamp((folder / MARKER).stat().st_mtime, UTC).isoformat()


def prune(root: Path, keep: int, current: Path) -> list[Path]:
    """Remove run folders beyond the `keep` newest (never `current`); return what was removed."""
    removed = []
    for folder in runs(root)[keep:]:
        if folder != current:
            shutil.rmtree(folder)
            removed.append(folder)
    return removed
