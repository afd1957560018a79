"""`mailgate-partitions`: the partitions of partitions.yaml as a CI matrix, so sharded jobs come from the file
and never from a hand-kept list.

`mailgate-partitions [--partitions-file F] [--partition NAMES] [--by partition|infrastructure]` prints one line
of JSON, `{"include": [...]}`, for GitHub Actions' `strategy.matrix: ${{ fromJSON(...) }}`: per shard the
partitions to pass to `--partition`, the infrastructure, its AWS account and profile, whether it is production,
and the names of the secret holding each partition's Postmark token. Shards follow the deploy order. A bad file
gives the config's one line on stderr and exit 4, as a run would.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from probes.config import ConfigError, Target, load

CONFIG_ERROR = 4


def token_secret(target: Target) -> str:
    """The CI secret holding a partition's Postmark token: MAILGATE_POSTMARK_TOKEN_<PARTITION>."""
    return "MAILGATE_POSTMARK_TOKEN_" + re.sub(r"[^A-Z0-9]+", "_", target.name.upper()).strip("_")


def matrix(targets: Sequence[Target], by: str) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[Target]] = {}
    for target in targets:
        groups.setdefault(target.name if by == "partition" else target.infrastructure, []).append(target)
    include = []
    for name, members in groups.items():
        first = members[0]
        include.append(
            {
                "shard": name,
                "partitions": ",".join(t.name for t in members),
                "infrastructure": first.infrastructure,
                "account": first.account,
                "profile": first.profile,
                "region": first.region,
                "production": any(t.production for t in members),
                "token_secrets": ",".join(token_secret(t) for t in members),
            }
        )
    return {"include": include}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mailgate-partitions", description=__doc__.splitlines()[0])
    parser.add_argument("--partitions-file", type=Path, default=Path("partitions.yaml"))
    parser.add_argument("--partition", default="all", help="a comma list, or all (default)")
    parser.add_argument("--by", choices=("partition", "infrastructure"), default="partition", help="one shard per")
    args = parser.parse_args(argv)
    try:
        config = load(args.partitions_file)
        targets = config.in_deploy_order(config.select(args.partition))
    except ConfigError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return CONFIG_ERROR
    print(json.dumps(matrix(targets, args.by), separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
