"""The partition's Postmark sending domain: found in its account, DKIM and Return-Path verified."""

from __future__ import annotations

import pytest

from plugins.observations import Observer
from plugins.report import Evidence
from probes.config import Target
from probes.observe import PartitionObservation

pytestmark = [pytest.mark.postmerge, pytest.mark.postmark]


def test_postmark_verified(
    target: Target, observed: PartitionObservation, mailgate_observer: Observer, evidence: Evidence
) -> None:
    seen = observed.postmark
    assert seen is not None, observed.postmark_problem
    evidence.add(
        f"Postmark {seen.api_url} account {seen.account}",
        [
            f"{a.at:%H:%M:%S.%f} {a.method} {a.path} -> {a.status} ({a.elapsed * 1000:.0f} ms) {a.note}"
            for a in seen.attempts
        ],
    )
    assert seen.error is None, seen.error
    domain = seen.domain
    assert domain is not None
    fields = {
        "DKIMVerified": domain.dkim_verified,
        "DKIMUpdateStatus": domain.dkim_update_status,
        "DKIMHost": domain.dkim_host,
        "DKIMPendingHost": domain.dkim_pending_host,
        "ReturnPathDomain": domain.return_path_domain,
        "ReturnPathDomainVerified": domain.return_path_verified,
        "ReturnPathDomainCNAMEValue": domain.return_path_cname_value,
    }
    evidence.add(f"domain {domain.name} (ID {domain.id})", [f"{k}: {v}" for k, v in fields.items()])
    settings = mailgate_observer.settings
    how = (
        f"triggered {', '.join(seen.triggered)} and polled for {settings.postmark_wait:g} s"
        if settings.postmark_verify
        else "only read (--no-postmark-verify)"
    )
    assert domain.verified, (
        f"{seen.describe()}; {how}.\nseen: "
        + ", ".join(f"{k}={v}" for k, v in fields.items())
        + "\nnext: check the DKIM TXT and pm-bounces CNAME checks; if they pass, Postmark has not rechecked yet: "
        "run again with a longer --postmark-wait"
    )
