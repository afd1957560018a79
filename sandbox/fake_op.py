"""A stand-in for the 1Password CLI: `op read op://…` answers the sandbox's tokens.

Like the real CLI, `op item get … --fields credential` returns a field id rather than the value
(an easy trap), so code that uses it fails authentication instead of passing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(state_dir: Path, argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    steer = json.loads((state_dir / "op.json").read_text())
    stamp = time.strftime("%Y/%m/%d %H:%M:%S")
    if args[:2] == ["item", "get"]:
        import uuid

        print(uuid.uuid5(uuid.NAMESPACE_URL, " ".join(args)).hex[:26])
        return 0
    if len(args) != 2 or args[0] != "read":
        print(
            f"[ERROR] {stamp} unknown command: the sandbox op supports `op read op://vault/item/field`", file=sys.stderr
        )
        return 1
    reference = args[1]
    if steer.get("mode") == "fail":
        print(
            f"[ERROR] {stamp} You are not currently signed in. Please run `op signin --help` for instructions",
            file=sys.stderr,
        )
        return 1
    if steer.get("mode") == "empty":
        return 0
    value = steer.get("references", {}).get(reference)
    if value is None:
        print(f"[ERROR] {stamp} could not read secret '{reference}': isn't an item in the vault", file=sys.stderr)
        return 1
    print(value)
    return 0
