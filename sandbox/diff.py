"""The sandbox's diff command: the deployed template from sandbox AWS against a fresh synth, with `cdk diff`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3
import botocore.exceptions

from probes.config import load


def diff(infrastructure: str, partition: str, assembly: Path | None = None) -> int:
    """Print `cdk diff` of the partition stack (an absent stack diffs against an empty template). With `assembly`,
    the folder the synth wrote (mailgate's `{out}`) is diffed as it is, so the diff judges the template the synth
    checks judged; a folder without the stack is synthesized into first."""
    from sandbox.world import WorldInfo

    state = os.environ.get("MAILGATE_SANDBOX")
    if not state:
        print("sandbox diff: MAILGATE_SANDBOX is not set: start the world first", file=sys.stderr)
        return 2
    target = load(Path(WorldInfo.read(Path(state)).partitions_file)).targets[partition]
    cloudformation = boto3.Session(profile_name=target.profile, region_name=target.region).client("cloudformation")
    try:
        deployed = cloudformation.get_template(StackName=target.stack_name)["TemplateBody"]
    except botocore.exceptions.ClientError as exc:
        if "does not exist" not in str(exc):
            raise
        deployed = {}
    with tempfile.TemporaryDirectory(prefix=f"diff-{partition}-") as tmp:
        path = Path(tmp, "deployed.json")
        path.write_text(deployed if isinstance(deployed, str) else json.dumps(deployed))
        command = ["npm", "run", "--silent", "diff", "--", f"{infrastructure}/{partition}", str(path)]
        command += [str(assembly.resolve())] if assembly else []
        return subprocess.run(command, check=False).returncode
