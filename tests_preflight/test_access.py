"""The operator can reach each partition's world: the AWS profile lands in the right account, the token works."""

from __future__ import annotations

import pytest

from plugins.observations import Observer
from plugins.partitions import Selection
from plugins.report import Evidence
from probes import aws, postmark
from probes.config import Target
from probes.secrets import CredentialError

pytestmark = [pytest.mark.preflight, pytest.mark.access]


def test_aws_identity(target: Target, evidence: Evidence) -> None:
    identity = aws.identity(target.profile, target.region)
    evidence.add(
        f"sts get-caller-identity --profile {target.profile}", [f"account {identity.account}", f"arn {identity.arn}"]
    )
    assert identity.problem is None, str(identity.problem)
    assert identity.account == target.account, (
        f"profile {target.profile} lands in account {identity.account} ({identity.arn}), expected "
        f"{target.account} ({target.infrastructure}): fix the profile in the AWS config or partitions.yaml"
    )


def test_postmark_credential(
    target: Target, selection: Selection, mailgate_observer: Observer, evidence: Evidence
) -> None:
    try:
        token = mailgate_observer.credentials.get(target.credential)
    except CredentialError as exc:
        pytest.fail(f"Postmark token of {target.postmark_account}: {exc}", pytrace=False)
    evidence.add(f"credential {target.credential}", "resolved to a non-empty value (not shown)")
    try:
        domain = postmark.authenticate(selection.postmark_api_url, token, target.postmark_account, target.zone)
    except postmark.PostmarkError as exc:
        pytest.fail(
            f"the token of {target.postmark_account} does not work at {selection.postmark_api_url}: {exc}",
            pytrace=False,
        )
    registered = f"registered (ID {domain.id})" if domain else "not registered yet"
    evidence.add(
        f"Postmark {selection.postmark_api_url} account {target.postmark_account}",
        f"token accepted; {target.zone} {registered}",
    )
