"""The partition's Postmark sending domain, judged as the Domains API documents it (probes.sending_domain):
nothing left for Postmark to confirm, a strong key, and the key cdk.context.json holds."""

from __future__ import annotations

import pytest

from plugins.observations import Observer
from plugins.report import Evidence
from probes import sending_domain
from probes.config import Target
from probes.observe import PartitionObservation

pytestmark = [pytest.mark.postmerge, pytest.mark.postmark]


def test_postmark_verified(
    target: Target, observed: PartitionObservation, mailgate_observer: Observer, evidence: Evidence
) -> None:
    seen = observed.postmark
    assert seen is not None, str(observed.postmark_problem)
    evidence.add(
        f"Postmark {seen.api_url} account {seen.account}",
        [
            f"{a.at:%H:%M:%S.%f} {a.method} {a.path} -> {a.status} ({a.elapsed * 1000:.0f} ms) {a.note}"
            for a in seen.attempts
        ],
    )
    assert seen.problem is None, str(seen.problem)
    assert seen.domain is not None, f"{seen.describe()}: Postmark gave neither the domain nor an error"
    settings = mailgate_observer.settings
    verdict = sending_domain.judge(
        seen.domain,
        target,
        observed.context,
        observed.dns,
        verify=settings.postmark_verify,
        wait=settings.postmark_wait,
    )
    evidence.add(f"domain {seen.domain.name} (ID {seen.domain.id})", verdict.fields)
    evidence.add(
        "DKIM keys Postmark names, in DNS (authoritative)",
        [f"{k.host}: {k.describe()}" for k in verdict.keys] + list(verdict.notes) or "none asked here",
    )
    how = (
        f"triggered {', '.join(seen.triggered) or 'nothing'} and polled for {settings.postmark_wait:g} s"
        if settings.postmark_verify
        else "only read (--no-postmark-verify)"
    )
    assert not verdict.findings, f"{seen.describe()}; {how}.\n{verdict.explain()}"
