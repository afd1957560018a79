"""`python -m sandbox up|down|deploy|diff|demo`: the local world from a shell."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STATE = ROOT / ".sandbox"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the world and keep it running until Ctrl-C or `down`")
    up.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    up.add_argument("--partitions-file", type=Path, default=ROOT / "partitions.yaml")
    down = commands.add_parser("down", help="stop a world started with `up`")
    down.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    deploy = commands.add_parser("deploy", help="the sandbox's amm.sh: deploy one partition into the running world")
    deploy.add_argument("infrastructure")
    deploy.add_argument("partition")
    diff = commands.add_parser("diff", help="cdk diff of the partition's synth against the deployed stack")
    diff.add_argument("infrastructure")
    diff.add_argument("partition")
    diff.add_argument(
        "assembly", nargs="?", type=Path, help="a cloud assembly folder: diffed as it is when it holds the stack"
    )
    commands.add_parser(
        "demo", help="the cascade (preflight, deploy in order, postmerge) and its closeout in a fresh world"
    )
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("sandbox: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    if args.command == "up":
        return _up(args.state_dir, args.partitions_file)
    if args.command == "down":
        return _down(args.state_dir)
    if args.command == "deploy":
        import httpx
        from botocore.exceptions import BotoCoreError, ClientError

        from sandbox.deploy import DeployError, deploy

        try:
            deploy(args.infrastructure, args.partition, say=lambda line: print(line, flush=True))
        except (DeployError, httpx.HTTPError, BotoCoreError, ClientError) as exc:
            print(f"sandbox deploy {args.infrastructure} {args.partition}: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "diff":
        from sandbox.diff import diff

        return diff(args.infrastructure, args.partition, args.assembly)
    return _demo()


def _up(state_dir: Path, source: Path) -> int:
    from sandbox.world import World

    world = World(state_dir, source=source)
    info = world.start()
    print(f"sandbox up in {world.started_in:.2f} s (pid {info.pid}); in another shell:")
    for name, value in info.env().items():
        print(f"export {name}={shlex.quote(value)}")
    print(f"then: pytest --partitions-file {info.partitions_file} --resolver {info.resolver} ...", flush=True)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stop:
        time.sleep(0.2)
    world.stop()
    (state_dir / "world.json").unlink(missing_ok=True)  # a later `down` must not signal a recycled pid
    print("sandbox down")
    return 0


def _down(state_dir: Path) -> int:
    from sandbox.world import WorldInfo

    try:
        pid = WorldInfo.read(state_dir).pid
        os.kill(pid, signal.SIGTERM)
    except (FileNotFoundError, ProcessLookupError):
        print(f"sandbox: no running world in {state_dir}", file=sys.stderr)
        return 1
    print(f"sandbox: stopping pid {pid}")
    return 0


def _demo() -> int:
    """The README's main job: the cascade (preflight, gated deploy in deploy order, postmerge), then its closeout."""
    from sandbox.demo import run

    return run()


if __name__ == "__main__":
    raise SystemExit(main())
