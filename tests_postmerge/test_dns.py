"""DNS of the partition zone, judged from every authoritative server (public resolvers are advisory)."""

from __future__ import annotations

from collections.abc import Callable

import dns.name
import pytest

from plugins.observations import Observer
from plugins.report import Evidence
from probes import dns as probe
from probes import mailauth, outside, spf
from probes.config import Target
from probes.observe import PartitionObservation

pytestmark = [pytest.mark.postmerge, pytest.mark.dns]

Judge = Callable[[probe.ZoneObservation], list[str]]


def _judge_dns(
    observer: Observer,
    observed: PartitionObservation,
    evidence: Evidence,
    questions: list[tuple[str, str]],
    judge: Judge,
) -> tuple[list[str], list[str]]:
    """Judge (retrying until --dns-wait), record the answers, add resolver disagreements; also return the
    servers that gave no usable answer to these questions (their next step is reaching them, not the record)."""
    zone, problems, looks = observer.settle_dns(observed, judge)
    if zone is None:
        return problems, []
    silent: list[str] = []
    for qname, rtype in questions:
        agreement = probe.agreed(zone, qname, rtype)
        evidence.dns(f"{rtype} {qname} (authoritative, {looks} look(s))", agreement.answers)
        silent += [f"{a.server} ({a.address})" for a in agreement.answers if not a.usable]
        advisory = probe.resolver_disagreement(zone, agreement)
        if advisory:
            evidence.add(f"{rtype} {qname} (public resolvers, advisory)", advisory)
            if observer.strict_resolvers:
                problems.append(
                    f"public resolvers disagree with the authoritative servers (--strict-resolvers): {advisory}"
                )
    return problems, sorted(set(silent)) if problems else []


def _fail_text(what: str, problems: list[str], next_step: str, silent: list[str]) -> str:
    if silent:
        next_step = (
            f"check {', '.join(silent)}: the network path to it, and whether it serves the zone; rerun with "
            f"--dns-wait SECONDS if it is only slow (then, if a record is still wrong: {next_step})"
        )
    return f"{what}:\n  " + "\n  ".join(problems) + f"\n{next_step}"


def test_ns_delegation(
    target: Target, observed: PartitionObservation, mailgate_observer: Observer, evidence: Evidence
) -> None:
    route53 = observed.zone

    def judge(zone: probe.ZoneObservation) -> list[str]:
        problem = probe.delegation_problem(zone)
        if problem:
            return [problem]
        delegated = probe.as_names(zone.delegation.ns_hosts)
        problems = []
        if len(delegated) < 2:
            problems.append(f"the parent delegates {target.zone} to {len(delegated)} name server(s); need at least 2")
        if route53 is None or route53.problem is not None:
            why = str(route53.problem) if route53 and route53.problem else "the zone id export is missing"
            problems.append(f"Route53's delegation set is unknown: {why}")
        else:
            expected = probe.as_names(route53.name_servers)
            if delegated != expected:
                problems.append(
                    f"the parent's NS set {_name_set(delegated)} differs from the hosted zone's Route53 delegation set "
                    f"{_name_set(expected)}"
                )
        for answer in zone.answers_for(target.zone, "NS"):
            if not answer.usable or answer.rcode != "NOERROR":
                problems.append(f"{answer.server} ({answer.address}) is lame for {target.zone}: {_status(answer)}")
            elif probe.as_names(answer.records) != delegated:
                problems.append(
                    f"{answer.server} ({answer.address}) says NS {_name_set(probe.as_names(answer.records))}, "
                    f"the parent says {_name_set(delegated)}"
                )
        return problems

    evidence.add("Route53 delegation set", route53.name_servers if route53 else ["unknown"])
    problems, silent = _judge_dns(mailgate_observer, observed, evidence, [(target.zone, "NS")], judge)
    assert not problems, _fail_text(
        f"NS delegation of {target.zone} is wrong",
        problems,
        "set the parent's NS records for the zone to the hosted zone's four Route53 name servers",
        silent,
    )


def test_spf(target: Target, observed: PartitionObservation, mailgate_observer: Observer, evidence: Evidence) -> None:
    trees: list[spf.SpfEvaluation] = []  # the tree of the last look, for the evidence

    def judge(zone: probe.ZoneObservation) -> list[str]:
        agreement = probe.content(zone, target.zone, "TXT")
        if agreement.problem:
            return [agreement.problem]
        record = mailauth.read_spf(target.zone, agreement.txt)
        problems = list(record.problems)
        if record.text is None:
            return problems or [f"no v=spf1 TXT record at {target.zone}"]
        if not problems:  # a record receivers already reject (permerror) is not evaluated further
            tree = spf.evaluate(target.zone, agreement.txt, zone.outside_for)
            trees[:] = [tree]
            problems += tree.problems
            problems += [
                f"{rtype} {name} was not looked up (mailgate's own fault: report it)" for name, rtype in tree.missing
            ]
            if not record.ends_with_all and not tree.ends_in_redirect:
                problems.append("the record ends in neither an `all` mechanism nor redirect= (RFC 7208 §4.7, §6.1)")
            found = tree.targets
            missing = [i for i in target.spf_includes if i.lower().rstrip(".") not in found]
            if missing and not tree.problems:
                problems.append(
                    f"include:{', include:'.join(missing)} (configured for {target.name}) is nowhere in the "
                    f"evaluated tree (targets: {', '.join(sorted(found)) or 'none'})"
                )
        return [f"SPF {mailauth.show(record.text)}: {p}" for p in problems] if problems else []

    problems, silent = _judge_dns(mailgate_observer, observed, evidence, [(target.zone, "TXT")], judge)
    for tree in trees:
        evidence.add(f"SPF of {target.zone} as receivers evaluate it (RFC 7208)", tree.tree())
    assert not problems, _fail_text(
        f"SPF of {target.zone} is wrong",
        problems,
        f"publish exactly one valid v=spf1 record at {target.zone} ending in ~all, -all or redirect=, whose "
        f"include tree stays within {mailauth.SPF_LOOKUP_LIMIT} lookups and {spf.VOID_LOOKUP_LIMIT} void lookups",
        silent,
    )


def test_dmarc(target: Target, observed: PartitionObservation, mailgate_observer: Observer, evidence: Evidence) -> None:
    settings = mailgate_observer.settings
    mailbox = mailgate_observer.dmarc_mailbox
    allowed = mailgate_observer.dmarc_production_policies if target.production else mailgate_observer.dmarc_policies
    which = "dmarc.production_policies" if target.production else "dmarc.allowed_policies"
    scope = outside.Scope(target.zone, settings.parent_domain, mailbox)
    reports: list[str] = []  # the destinations of the last look, for the evidence

    def judge(zone: probe.ZoneObservation) -> list[str]:
        agreement = probe.content(zone, target.dmarc_host, "TXT")
        if agreement.problem:
            return [agreement.problem]
        if agreement.rcode == "NXDOMAIN" or not agreement.txt:
            return [
                f"no DMARC record at {target.dmarc_host} itself ({agreement.rcode}); "
                f"{outside.fallback(scope, zone)}; mailgate requires the partition's own record, so that its "
                "policy and reports do not hang on the parent's"
            ]
        record = mailauth.read_dmarc(target.dmarc_host, agreement.txt)
        problems = list(record.problems)
        if record.text is None:
            return problems
        if record.policy is not None and record.policy not in allowed:
            problems.append(f"policy p={record.policy} is not one of {', '.join(allowed)} ({which})")
        if mailbox.lower() not in record.rua_mailboxes:
            problems.append(f"rua does not include mailto:{mailbox} (has {', '.join(record.rua_mailboxes) or 'none'})")
        unauthorized, reports[:] = outside.authorization_checks(scope, record, zone)
        if record.pct < 100:
            reports.append(
                f"pct={record.pct}: RFC 7489 receivers apply p={record.policy} to {record.pct}% of failing mail; "
                "RFC 9989 receivers ignore pct"
            )
        return [f"DMARC {mailauth.show(record.text)}: {p}" for p in problems + unauthorized]

    problems, silent = _judge_dns(mailgate_observer, observed, evidence, [(target.dmarc_host, "TXT")], judge)
    if reports:
        evidence.add(f"DMARC report destinations of {target.zone}", reports)
    assert not problems, _fail_text(
        f"DMARC of {target.zone} is wrong",
        problems,
        f"publish one `v=DMARC1; p=...; rua=mailto:{mailbox}` record at {target.dmarc_host}, and have every "
        "report destination outside the organizational domain authorize it",
        silent,
    )


def test_dkim(target: Target, observed: PartitionObservation, mailgate_observer: Observer, evidence: Evidence) -> None:
    context = observed.context
    assert context is not None, str(observed.context_problem)
    selector_problem = mailauth.selector_problem(context.selector)
    assert selector_problem is None, (
        f"cdk.context.json {target.context_key}.dkimSelector: {selector_problem}; rerun the deploy's pre-deploy "
        "step so it writes the selector Postmark issued (DKIMHost before ._domainkey.)"
    )
    host = target.dkim_host(context.selector)
    evidence.add(
        f"cdk.context.json {target.context_key}", [f"selector {context.selector}", f"key {context.public_key}"]
    )

    judged: list[mailauth.DkimRecord] = []  # the record of the last look, for the evidence

    def judge(zone: probe.ZoneObservation) -> list[str]:
        agreement = probe.content(zone, host, "TXT")
        if agreement.problem:
            return [agreement.problem]
        if not agreement.txt:
            return [f"no TXT record at {host} ({agreement.rcode})"]
        record = mailauth.read_dkim(host, agreement.txt)
        judged[:] = [record] if record.text is not None else []
        if record.revoked:
            return [f"the DKIM key at {host} is revoked (empty p=)"]
        problems = list(record.problems)
        expected = mailauth.compact(context.public_key)
        if record.text is not None and record.public_key != expected:
            where = _first_difference(record.public_key, expected)
            problems.append(f"p= at {host} differs from cdk.context.json's dkimPublicKey{where}")
        return problems

    # Postmark's keys against cdk.context.json (and DNS at the hosts this check does not ask) are
    # test_postmark_verified's to judge: one defect, one failing check
    problems, silent = _judge_dns(mailgate_observer, observed, evidence, [(host, "TXT")], judge)
    for key in judged:
        evidence.add(f"DKIM key at {host}", [key.key_summary, *key.notes, *(f"t={f}" for f in key.flags)])
    assert not problems, _fail_text(
        f"DKIM of {target.zone} (selector {context.selector}) is wrong",
        problems,
        "publish the key Postmark issued (cdk.context.json) at the selector host, joined strings exactly as issued, "
        "with only the tags receivers accept (v=DKIM1 first if present, k=rsa, no t=y)",
        silent,
    )


def test_return_path(
    target: Target, observed: PartitionObservation, mailgate_observer: Observer, evidence: Evidence
) -> None:
    cname = dns.name.from_text(target.return_path_target)
    host = target.return_path_host
    domain = observed.postmark.domain if observed.postmark else None

    def judge(zone: probe.ZoneObservation) -> list[str]:
        agreement = probe.content(zone, host, "CNAME")
        if agreement.problem:
            return [agreement.problem]
        if not agreement.records:
            return [f"no CNAME at {host} ({agreement.rcode})"]
        seen = [dns.name.from_text(r) for r in agreement.records]
        return [] if seen == [cname] else [f"CNAME {host} points at {', '.join(map(str, seen))}, expected {cname}"]

    problems, silent = _judge_dns(mailgate_observer, observed, evidence, [(host, "CNAME")], judge)
    if domain is not None:
        if dns.name.from_text(domain.return_path_domain or ".") != dns.name.from_text(host):
            problems.append(f"Postmark's ReturnPathDomain is {domain.return_path_domain!r}, expected {host}")
        if dns.name.from_text(domain.return_path_cname_value or ".") != cname:
            problems.append(
                f"Postmark's ReturnPathDomainCNAMEValue is {domain.return_path_cname_value!r}, expected {cname}"
            )
    assert not problems, _fail_text(
        f"Return-Path of {target.zone} is wrong",
        problems,
        f"point CNAME {host} at {target.return_path_target}",
        silent,
    )


def _name_set(names: frozenset[dns.name.Name]) -> str:
    return "{" + ", ".join(sorted(n.to_text(omit_final_dot=True).lower() for n in names)) + "}"


def _status(answer: probe.Answer) -> str:
    if answer.error:
        return answer.error
    return f"{answer.rcode}{'' if answer.authoritative else ' without AA'}"


def _first_difference(seen: str, expected: str) -> str:
    at = next(
        (i for i, (a, b) in enumerate(zip(seen, expected, strict=False)) if a != b), min(len(seen), len(expected))
    )
    return (
        f" (first difference at character {at + 1}: DNS {seen[at : at + 12]!r}…, context {expected[at : at + 12]!r}…)"
    )
