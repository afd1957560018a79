"""moto's Route 53 data, watched: a generation number that every write to it moves.

The sandbox DNS server asks its zone provider for the served zones on every question. Walking every moto zone
each time made a question's cost grow with the number of zones (hundreds in a benchmark); with the generation,
the provider walks again only after a write.

Every write to what the DNS server serves lands in one of three kinds of moto object
(moto/route53/models.py): a `Route53Backend`'s `zones` dict (`create_hosted_zone` sets an item,
`delete_hosted_zone` pops one, `BaseBackend.reset` assigns `__dict__` and a fresh dict), a `FakeZone`'s `rrsets`
list (`add_rrset` and `upsert_rrset` append or set an item, `delete_rrset` and `delete_rrset_by_id` assign a new
list; ChangeResourceRecordSets, CloudFormation's RecordSet and RecordSetGroup and the scenarios' direct deletes
all go through these) and a `RecordSet`'s attributes (its `records` list included). Rather than trusting that
list of methods, the watch sits on the data: any attribute assignment on those classes, and any mutating call on
those containers, moves the generation after the write is done. A reader that notes the generation before it
reads therefore never keeps a view older than a write it could have seen.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

_lock = threading.Lock()
_generation = [0]

_LIST_WRITES = (
    "append",
    "extend",
    "insert",
    "remove",
    "pop",
    "clear",
    "sort",
    "reverse",
    "__setitem__",
    "__delitem__",
    "__iadd__",
    "__imul__",
)
_DICT_WRITES = ("__setitem__", "__delitem__", "pop", "popitem", "clear", "update", "setdefault", "__ior__")


def generation() -> int:
    """A number that differs after any write to moto's Route 53 zones or record sets since it was read."""
    return _generation[0]


def _bump() -> None:
    with _lock:
        _generation[0] += 1


def _watched(base: type, writes: Iterable[str]) -> type:
    """A subclass of list or dict whose every mutating method moves the generation once it has written."""

    def wrap(name: str) -> Any:
        original = getattr(base, name)

        def write(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return original(self, *args, **kwargs)
            finally:
                _bump()

        write.__name__ = name
        return write

    return type(f"Watched{base.__name__.title()}", (base,), {name: wrap(name) for name in writes})


WatchedList = _watched(list, _LIST_WRITES)
WatchedDict = _watched(dict, _DICT_WRITES)


def _watch_attributes(cls: type, containers: dict[str, type]) -> None:
    """Every assignment to an instance of cls moves the generation; the named attributes hold watched containers."""
    assign: Any = cls.__setattr__

    def __setattr__(self: Any, name: str, value: Any) -> None:
        watched = containers.get(name)
        if watched is not None and type(value) is watched.__bases__[0]:
            value = watched(value)
        assign(self, name, value)
        _bump()

    cls.__setattr__ = __setattr__  # type: ignore[assignment]


def watch_route53() -> None:
    """Install the watch (once per process) and bring the data moto already holds under it."""
    from moto.route53.models import FakeZone, RecordSet, Route53Backend, route53_backends

    if getattr(Route53Backend, "_sandbox_watched", False):
        return
    _watch_attributes(Route53Backend, {"zones": WatchedDict})
    _watch_attributes(FakeZone, {"rrsets": WatchedList})
    _watch_attributes(RecordSet, {"records": WatchedList})
    Route53Backend._sandbox_watched = True  # type: ignore[attr-defined]
    for account in list(route53_backends.values()):
        for backend in list(account.values()):
            backend.zones = backend.zones
            for zone in list(backend.zones.values()):
                zone.rrsets = zone.rrsets
                for rrset in zone.rrsets:
                    rrset.records = rrset.records
