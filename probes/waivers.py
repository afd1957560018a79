"""Waivers: recorded, explained, expiring exceptions to a check, read from a YAML list.

InSpec's waivers (a control id, a justification, an expiry date) are the model: a waiver names the check it
covers (all partitions, or one), why the failure is accepted, who accepted it and until when. A waiver is valid
through its `expires` day and no longer from the next day on.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from probes.config import ConfigError, Name, parse_yaml, read_file

FIELDS = ("check", "partition", "reason", "expires", "by")


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    check: Name
    partition: Name | None = None
    reason: Annotated[str, Field(max_length=1000)]
    expires: Annotated[date, Field(strict=False)]
    by: Annotated[str, Field(max_length=200)]

    @field_validator("reason", "by")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty: say why the failure is accepted and who accepted it")
        return " ".join(value.split())


_ENTRIES = TypeAdapter(list[_Entry])


@dataclass(frozen=True)
class Waiver:
    """One accepted failure: `check` (a check name like test_dmarc) on `partition` (None: every partition)."""

    check: str
    partition: str | None
    reason: str
    expires: date
    by: str
    file: Path
    line: int

    def covers(self, check: str, partition: str | None) -> bool:
        return check == self.check and self.partition in (None, partition)

    def expired(self, today: date) -> bool:
        return today > self.expires

    def describe(self) -> str:
        """`test_dmarc (reason; until 2026-12-31, by Jane)`: how the sign-off cell and the prompt name it."""
        return f"{self.check} ({self.reason}; until {self.expires.isoformat()}, by {self.by})"

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


class _Loader(yaml.SafeLoader):
    """Dates stay text here, so pydantic judges them (PyYAML raises a bare ValueError on 2026-13-01)."""


def _timestamp_as_text(loader: _Loader, node: yaml.Node) -> str:
    return loader.construct_yaml_str(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


def load(path: Path, partitions: Collection[str]) -> tuple[Waiver, ...]:
    """Read and validate a waivers file; any problem raises ConfigError: one line with file, line and field."""
    raw = read_file(path, "waivers file", "create it, or fix waivers: / --waivers PATH")
    data, lines = parse_yaml(path, raw, loader=_Loader, what="")
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ConfigError(
            f"{path}:1: expected a YAML list of waivers (- check: …, reason: …, expires: …, by: …); "
            f"got a {type(data).__name__}"
        )
    try:
        entries = _ENTRIES.validate_python(data)
    except ValidationError as exc:
        raise ConfigError(_first_error(path, lines, exc)) from None
    waivers = tuple(
        Waiver(e.check, e.partition, e.reason, e.expires, e.by, path, lines.get((str(i),), 1))
        for i, e in enumerate(entries)
    )
    for index, waiver in enumerate(waivers):
        if waiver.partition is not None and waiver.partition not in partitions:
            line = lines.get((str(index), "partition"), waiver.line)
            known = ", ".join(partitions)
            raise ConfigError(
                f"{path}:{line}: waiver {index + 1}, partition: unknown partition {waiver.partition!r}; known: {known}"
            )
    return waivers


def check_names(waivers: Iterable[Waiver], known: Collection[str]) -> None:
    """Raise ConfigError for the first waiver naming a check that does not exist (a typo would waive nothing)."""
    for index, waiver in enumerate(waivers):
        if waiver.check not in known:
            close = difflib.get_close_matches(waiver.check, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{waiver.where}: waiver {index + 1}, check: unknown check {waiver.check!r}{hint}; "
                "name a check function such as test_dmarc"
            )


def _first_error(path: Path, lines: dict[tuple[str, ...], int], exc: ValidationError) -> str:
    error = sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")[0]
    loc = tuple(str(part) for part in error["loc"])
    index = int(loc[0]) if loc and loc[0].isdigit() else 0
    field = loc[1] if len(loc) > 1 else ""
    line = lines.get(loc[:2]) or lines.get(loc[:1]) or 1
    kind = error["type"]
    if kind == "missing":
        message = f"missing; every waiver needs {', '.join(f for f in FIELDS if f != 'partition')}"
    elif kind == "extra_forbidden":
        close = difflib.get_close_matches(field, FIELDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        message = f"unknown field{hint}; allowed: {', '.join(FIELDS)}"
    elif field == "expires":
        message = f"not a date: {_short(error.get('input'))}; write it as YYYY-MM-DD"
    elif kind in ("model_type", "model_attributes_type"):
        field = "(entry)"
        message = f"expected a mapping with {', '.join(FIELDS)}; got {_short(error.get('input'))}"
    else:
        message = str(error["msg"]).removeprefix("Value error, ")
        if "input" in error and not isinstance(error["input"], dict | list) and "must not be empty" not in message:
            message += f"; got {_short(error['input'])}"
    return f"{path}:{line}: waiver {index + 1}, {field}: {message}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
