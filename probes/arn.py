"""Amazon Resource Names as the stack's exports carry them: partition, service, region, account, resource.

Format: `arn:partition:service:region:account-id:resource` (IAM User Guide, "IAM identifiers", ARNs); the
partition is `aws`, `aws-cn` or `aws-us-gov`; IAM ARNs have an empty region.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):(?P<service>[a-z0-9-]+):(?P<region>[a-z0-9-]*):(?P<account>\d{12}):"
    r"(?P<resource>.+)$"
)


@dataclass(frozen=True)
class Arn:
    partition: str
    service: str
    region: str
    account: str
    resource: str


def parse(value: str) -> Arn | None:
    """The ARN's parts, or None when `value` is not an ARN with a 12-digit account."""
    found = _ARN.match(value)
    if found is None:
        return None
    return Arn(found["partition"], found["service"], found["region"], found["account"], found["resource"])
