"""SPF evaluated as a receiver evaluates it (RFC 7208): the record and every include and redirect behind it.

Pure: the answers come from a lookup function (the resolvers' answers gathered by `probes.outside`). The
walk follows the terms in evaluation order, counting every term that costs a DNS lookup (RFC 7208 §4.6.4:
include, a, mx, ptr, exists, redirect; at most 10) and every void lookup (NXDOMAIN or no answer; at most 2),
and stops where a receiver stops: at the first permerror. checkdmarc (`checkdmarc/spf.py`) counts the same
way; an include's own term counts before the terms of the record it names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from probes.dns import Answer
from probes.mailauth import SPF_LOOKUP_LIMIT, SpfRecord, decode_txt, is_spf, parse_spf, read_spf, show

VOID_LOOKUP_LIMIT = 2  # RFC 7208 §4.6.4
MX_LIMIT = 10  # RFC 7208 §4.6.4: an mx term yielding more than 10 MX records is a permerror
# the question each term makes a receiver ask: a and mx take A or AAAA by the connecting IP's family (RFC 7208
# §5.3, §5.4), and the walk counts as a receiver taking mail over IPv4 (A); exists is always A (§5.7)
_QUERY = {"include": "TXT", "redirect": "TXT", "a": "A", "mx": "MX", "exists": "A"}

Lookup = Callable[[str, str], Answer | None]


@dataclass(frozen=True)
class SpfBranch:
    """One term that costs a lookup, and for include/redirect the record it names, with its own branches."""

    term: str  # "include:spf.mtasv.net", "redirect=_spf.example.com", "a", "mx:mail.example.com"; root: the zone
    domain: str  # the name looked up (lower case, no final dot)
    record: str | None  # the SPF record at an include/redirect target (or the root's), when there is one
    lookups: int  # the DNS-lookup terms of this branch: its own term and everything below it
    voids: int
    branches: tuple[SpfBranch, ...]
    note: str = ""  # what the lookup found: "NXDOMAIN", "no A records", "not looked up: macro", ...


@dataclass(frozen=True)
class SpfEvaluation:
    """The evaluated tree: totals, the first permerror (or temperror) met, the targets seen, what is missing."""

    root: SpfBranch
    lookups: int
    voids: int
    problems: tuple[str, ...]
    targets: frozenset[str]  # every include/redirect target evaluated (lower case, no final dot)
    missing: tuple[tuple[str, str], ...]  # questions the walk needed and the lookup did not have
    ends_in_redirect: bool  # the root's last word is redirect= (it then needs no all, RFC 7208 §6.1)

    def tree(self) -> list[str]:
        """The include tree as evidence lines, with lookups per branch and the headroom left."""
        lines = [f"{self.root.domain}: {self.lookups} of {SPF_LOOKUP_LIMIT} lookups, {self.voids} void"]
        lines += _lines(self.root.branches, "  ")
        return lines


@dataclass
class _Walk:
    lookup: Lookup
    lookups: int = 0
    voids: int = 0
    problems: list[str] = field(default_factory=list)
    targets: set[str] = field(default_factory=set)
    missing: list[tuple[str, str]] = field(default_factory=list)

    @property
    def stopped(self) -> bool:
        return bool(self.problems or self.missing)


def evaluate(zone: str, values: tuple[bytes, ...], lookup: Lookup) -> SpfEvaluation:
    """The SPF record among `values` (the zone apex's TXT) evaluated through its includes and redirects."""
    record = read_spf(zone, values)
    walk = _Walk(lookup)
    branches = _record(walk, record, (zone.lower().rstrip("."),))
    root = SpfBranch(zone, zone, record.text, walk.lookups, walk.voids, branches)
    last = record.terms[-1] if record.terms else None
    return SpfEvaluation(
        root=root,
        lookups=walk.lookups,
        voids=walk.voids,
        problems=tuple(walk.problems),
        targets=frozenset(walk.targets),
        missing=tuple(dict.fromkeys(walk.missing)),
        ends_in_redirect=last is not None and last.name == "redirect",
    )


def _record(walk: _Walk, record: SpfRecord, path: tuple[str, ...]) -> tuple[SpfBranch, ...]:
    """The branches of one record's lookup terms, mechanisms in order, then redirect (RFC 7208 §6.1: only when
    no mechanism matched; a record with `all` never reaches it, so its redirect costs nothing)."""
    terms = [t for t in record.terms if t.name in _QUERY or t.name == "ptr"]
    mechanisms = [t for t in terms if t.name != "redirect"]
    has_all = any(t.name == "all" for t in record.terms)
    redirect = [t for t in terms if t.name == "redirect" and not has_all][:1]
    branches: list[SpfBranch] = []
    for term in [*mechanisms, *redirect]:
        if walk.stopped:
            break
        branches.append(_term(walk, term.text, term.name, term.value, path))
    return tuple(branches)


def _term(walk: _Walk, text: str, kind: str, value: str, path: tuple[str, ...]) -> SpfBranch:
    before_lookups, before_voids = walk.lookups, walk.voids
    walk.lookups += 1
    domain = _target(kind, value, path[-1])
    where = " → ".join([*path, text])
    if walk.lookups > SPF_LOOKUP_LIMIT:
        walk.problems.append(
            f"SPF permerror: {walk.lookups} DNS-lookup terms, more than the {SPF_LOOKUP_LIMIT} RFC 7208 §4.6.4 "
            f"allows; the limit is crossed at {where}: remove includes or flatten them into ip4/ip6 terms"
        )
        return SpfBranch(text, domain, None, 1, 0, (), "over the limit: receivers stop here")
    if kind == "ptr" or "%" in value:
        note = "not looked up: needs the sender's address" if kind == "ptr" else "not looked up: a macro"
        return SpfBranch(text, domain, None, 1, 0, (), note)
    answer = walk.lookup(domain, _QUERY[kind])
    if answer is None:
        walk.missing.append((domain, _QUERY[kind]))
        return SpfBranch(text, domain, None, 1, 0, (), "not looked up")
    void, note = _void(answer)
    if answer.error is not None or answer.rcode not in ("NOERROR", "NXDOMAIN"):
        walk.problems.append(
            f"SPF temperror: {where}: the resolvers gave no usable answer to {_QUERY[kind]} {domain} ({note}); "
            "receivers defer or treat the mail as unauthenticated (RFC 7208 §2.6.6): check that name's DNS"
        )
        return SpfBranch(text, domain, None, 1, 0, (), note)
    if void:
        walk.voids += 1
        if walk.voids > VOID_LOOKUP_LIMIT:
            walk.problems.append(
                f"SPF permerror: {walk.voids} void lookups (NXDOMAIN or no answer), more than the "
                f"{VOID_LOOKUP_LIMIT} RFC 7208 §4.6.4 allows; the last is {where} ({note}): remove the terms "
                "that name nothing"
            )
    if kind == "mx" and len(answer.records) > MX_LIMIT:
        walk.problems.append(
            f"SPF permerror: {where}: {len(answer.records)} MX records, more than the {MX_LIMIT} RFC 7208 §4.6.4 "
            "allows for one mx term: name fewer hosts or use ip4/ip6"
        )
    if kind not in ("include", "redirect"):
        return SpfBranch(text, domain, None, walk.lookups - before_lookups, walk.voids - before_voids, (), note)
    return _target_record(
        walk, answer, text=text, kind=kind, domain=domain, path=path, before=(before_lookups, before_voids)
    )


def _target_record(
    walk: _Walk, answer: Answer, *, text: str, kind: str, domain: str, path: tuple[str, ...], before: tuple[int, int]
) -> SpfBranch:
    """An include or redirect target: exactly one SPF record there (RFC 7208 §4.5), then its own terms."""
    where = " → ".join([*path, text])
    walk.targets.add(domain)
    found = read_spf(domain, answer.txt)
    record = found.text
    branches: tuple[SpfBranch, ...] = ()
    rule = "RFC 7208 §5.2" if kind == "include" else "RFC 7208 §6.1"
    if domain in path:
        walk.problems.append(
            f"SPF permerror: {where} loops back to {domain} ({' → '.join([*path, domain])}); a loop never "
            f"ends within the lookup limit: remove the {kind}"
        )
    elif found.text is None or found.problems:
        if found.text is None:
            count = _spf_count(answer)
            why = f"{count} SPF records" if count else "no SPF record"
            values = ", ".join(show(decode_txt(v)[0]) for v in answer.txt)
            what = f"{why} ({f'TXT {values}' if values else answer.rcode})"
        else:
            what = "; ".join(found.problems)
        walk.problems.append(
            f"SPF permerror: {where}: {domain} has {what}; {'an include' if kind == 'include' else 'a redirect'} "
            f"target must hold exactly one valid SPF record ({rule}): fix {domain} or remove the {kind}"
        )
    else:
        branches = _record(walk, parse_spf(found.text, domain), (*path, domain))
    note = "" if record else f"{answer.rcode}, {len(answer.txt)} TXT value(s)"
    return SpfBranch(text, domain, record, walk.lookups - before[0], walk.voids - before[1], branches, note)


def _target(kind: str, value: str, current: str) -> str:
    """The name a term looks up: its domain-spec, else the current domain (a, mx); CIDR suffixes removed."""
    name = value.split("/", 1)[0] if kind in ("a", "mx") else value
    return (name or current).lower().rstrip(".")


def _void(answer: Answer) -> tuple[bool, str]:
    """Whether an answer is a void lookup (RFC 7208 §4.6.4: NXDOMAIN, or NOERROR with no answer), and a note."""
    if answer.error is not None:
        return False, f"no reply: {answer.error}"
    if answer.rcode == "NXDOMAIN":
        return True, "NXDOMAIN"
    if answer.rcode != "NOERROR":
        return False, str(answer.rcode)
    if not answer.records:
        return True, f"no {answer.rtype} records"
    return False, f"{len(answer.records)} {answer.rtype} record(s)"


def _spf_count(answer: Answer) -> int:
    return sum(is_spf(decode_txt(v)[0]) for v in answer.txt)


def _lines(branches: tuple[SpfBranch, ...], indent: str) -> list[str]:
    lines: list[str] = []
    for branch in branches:
        detail = f" {show(branch.record)}" if branch.record else f" ({branch.note})" if branch.note else ""
        voids = f", {branch.voids} void" if branch.voids else ""
        lines.append(f"{indent}{branch.term}: {branch.lookups} lookup(s){voids}{detail}")
        lines += _lines(branch.branches, indent + "  ")
    return lines
