"""The sandbox's own proof: identity per profile through the generated AWS config, a deploy that turns
postmerge's observations from absent to present, `python -m sandbox up|down` from another shell, `--sandbox`
leaving nothing behind, and what starting and stopping the world costs.
"""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import IO

import boto3
import dns.message
import pytest

from probes import aws, mailauth
from probes import dns as probe
from probes.config import EXPORT_NAMES, Target
from probes.observe import Credentials, PartitionObservation, Settings, observe_all
from sandbox.postmark_fake import PostmarkFault
from sandbox.scenarios import Scenarios, renamed_template
from sandbox.suite import POSTMERGE_CHECKS, suite_args
from sandbox.world import UNSET_ENV, World, WorldInfo

ROOT = Path(__file__).resolve().parents[1]
ACCOUNTS = {"Admin-Alpha1": "009765408297", "Alpha002-Admin": "139852620346"}
EXPORTED = {
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ENDPOINT_URL",
    "POSTMARK_API_URL",
    "MAILGATE_SANDBOX",
    "PATH",
}
HANG = 60.0  # seconds: only to catch a hang; the figures are printed, speed targets live in bench/
HEADER = re.compile(
    r"mailgate sandbox: AWS http://127\.0\.0\.1:(\d+), DNS 127\.0\.0\.1:(\d+), Postmark (http://127\.0\.0\.1:(\d+))"
)
# What a user types in another shell after `eval "$(python -m sandbox up | grep ^export)"`: plain boto3, `op`, httpx.
CLIENT = """
import os, subprocess, boto3, httpx
for profile in ("Admin-Alpha1", "Alpha002-Admin"):
    print(profile, boto3.Session(profile_name=profile).client("sts").get_caller_identity()["Account"])
token = subprocess.run(["op", "read", "op://Arda-DevOAM/Postmark/credential"], capture_output=True, text=True).stdout
answer = httpx.get(
    os.environ["POSTMARK_API_URL"] + "/domains",
    params={"count": 1, "offset": 0},
    headers={"X-Postmark-Account-Token": token.strip(), "Accept": "application/json"},
)
print("postmark", answer.status_code, answer.json()["TotalCount"])
"""
START_STOP = """
import json, tempfile, time
from pathlib import Path
t0 = time.monotonic()
from sandbox.world import World
world = World(Path(tempfile.mkdtemp(prefix="mailgate-timing-")) / "state")
t1 = time.monotonic()
world.start()
t2 = time.monotonic()
world.stop()
t3 = time.monotonic()
print(json.dumps({"import": t1 - t0, "start": t2 - t1, "stop": t3 - t2}))
"""


def _outside_env(**extra: str) -> dict[str, str]:
    """This process's environment without any world or AWS settings: a fresh shell."""
    env = {k: v for k, v in os.environ.items() if k not in (*UNSET_ENV, *EXPORTED - {"PATH"})}
    return {**env, **extra}


def _settings(world: World, postmark_wait: float) -> Settings:
    file = world.config.file
    return Settings(
        infra_repo=Path(world.info.infra_repo),
        parent_domain=file.domain,
        resolvers=tuple(file.dns.resolvers),
        nameserver_port=file.dns.nameserver_port,
        dns_timeout=file.dns.timeout,
        postmark_url=file.postmark.api_url,
        postmark_wait=postmark_wait,
        postmark_verify=True,
        postmark_rate=50.0,
    )


def _deploy(world: World, infrastructure: str, partition: str) -> subprocess.CompletedProcess[str]:
    """`python -m sandbox deploy` as an operator runs it: in the infra repo, with this (world-pointed) environment."""
    return subprocess.run(
        [sys.executable, "-m", "sandbox", "deploy", infrastructure, partition],
        cwd=world.info.infra_repo,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _refused(host: str, port: int, transport: str) -> bool:
    """True when nothing listens there: TCP connect refused, or a UDP query answered by ICMP port unreachable."""
    kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.settimeout(2)
        try:
            sock.connect((host, port))
            if transport == "udp":
                sock.send(dns.message.make_query("ardamails.com.", "NS").to_wire())
                sock.recv(512)
        except ConnectionRefusedError:
            return True
        except TimeoutError:
            return False
    return False


class _Lines:
    """A child's stdout, line by line, read by a thread so that waiting for a line can time out."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def until(self, marker: str, timeout: float) -> list[str]:
        """Lines up to and including the first that starts with marker."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while not seen or not seen[-1].startswith(marker):
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line starting {marker!r} within {timeout:.0f} s; saw {seen}")
            if line is None:
                pytest.fail(f"the process ended before printing {marker!r}; saw {seen}")
            seen.append(line)
        return seen

    def rest(self) -> list[str]:
        """The remaining lines, once the child has closed its stdout."""
        self._thread.join(timeout=HANG)
        return [str(line) for line in iter(self._lines.get_nowait, None)]


# --- 1. identity per profile ------------------------------------------------------------------------------------


def _caller(profile: str) -> tuple[str, str]:
    """(account, role) of `sts get-caller-identity` with plain boto3 and the profile's name."""
    found = boto3.Session(profile_name=profile).client("sts").get_caller_identity()
    return found["Account"], found["Arn"].rsplit("/", 1)[0]  # the session name after the last / varies


@pytest.mark.parametrize(("profile", "account"), ACCOUNTS.items())
def test_each_profile_lands_in_its_infrastructures_account(
    scenarios: Scenarios, monkeypatch: pytest.MonkeyPatch, profile: str, account: str
) -> None:
    """Through the generated config with the world's env, and with the file alone (its endpoint_url and role_arn)."""
    found, role = _caller(profile)
    assert found == account, f"profile {profile} landed in {role}"
    assert role.startswith(f"arn:aws:sts::{account}:assumed-role/"), role
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    assert _caller(profile) == (account, role)
    seen = aws.identity(profile, scenarios.world.config.file.region)
    assert (seen.account, seen.problem) == (account, None)
    assert str(seen.arn).startswith(f"{role}/"), seen.arn


# --- 2. a deploy turns the observations from absent to present ----------------------------------------------------


def _assert_absent(seen: PartitionObservation) -> None:
    target = seen.target
    assert seen.stack.problem is not None, seen.stack
    assert seen.stack.problem.kind == "not-found", seen.stack.problem
    assert seen.zone is None
    assert seen.context is None, seen.context
    assert seen.dns is not None, str(seen.dns_problem)
    no_ns = probe.delegation_problem(seen.dns)
    assert no_ns is not None, seen.dns.delegation
    assert f"parent servers name no NS for {target.zone}" in no_ns
    assert seen.postmark is not None, str(seen.postmark_problem)
    assert seen.postmark.domain is None, seen.postmark.describe()
    assert seen.postmark.problem is not None, seen.postmark.describe()
    assert seen.postmark.problem.kind == "not-found", seen.postmark.describe()
    assert "is not among the domains" in str(seen.postmark.problem), seen.postmark.describe()


def _assert_present_and_healthy(seen: PartitionObservation) -> None:
    target = seen.target
    assert (seen.stack.status, seen.stack.problem) == ("CREATE_COMPLETE", None), seen.stack
    assert set(seen.stack.exports()) == {target.export_name(n) for n in EXPORT_NAMES}
    assert seen.zone is not None, "no hosted zone behind the PartitionMailZoneId export"
    assert seen.zone.problem is None, seen.zone.problem
    assert seen.context is not None, str(seen.context_problem)
    assert seen.dns is not None, str(seen.dns_problem)
    assert probe.delegation_problem(seen.dns) is None
    assert probe.as_names(seen.dns.delegation.ns_hosts) == probe.as_names(seen.zone.name_servers)
    spf = probe.agreed(seen.dns, target.zone, "TXT")
    assert spf.problem is None, spf.problem
    spf_record = mailauth.read_spf(target.zone, spf.txt)
    assert spf_record.problems == (), spf.txt
    assert set(target.spf_includes) <= set(spf_record.includes), spf_record.includes
    dmarc = probe.agreed(seen.dns, target.dmarc_host, "TXT")
    assert dmarc.problem is None, dmarc.problem
    assert mailauth.read_dmarc(target.dmarc_host, dmarc.txt).policy in ("quarantine", "reject"), dmarc.txt
    dkim = probe.agreed(seen.dns, target.dkim_host(seen.context.selector), "TXT")
    assert dkim.problem is None, dkim.problem
    assert mailauth.read_dkim(dkim.qname, dkim.txt).public_key == seen.context.public_key
    cname = probe.agreed(seen.dns, target.return_path_host, "CNAME")
    assert probe.as_names(cname.records) == probe.as_names([target.return_path_target]), cname
    assert seen.postmark is not None, str(seen.postmark_problem)
    assert seen.postmark.domain is not None, seen.postmark.describe()
    issued = mailauth.parse_dkim(seen.postmark.domain.dkim_text_value or seen.postmark.domain.dkim_pending_text_value)
    assert issued.public_key == seen.context.public_key, "cdk.context.json's key is not the one Postmark issued"
    assert (seen.postmark.verified_dkim, seen.postmark.verified_return_path) == (True, True), seen.postmark.describe()


def test_deploy_turns_postmerge_observations_from_absent_to_present(scenarios: Scenarios) -> None:
    world = scenarios.world
    target: Target = world.config.targets["dev"]
    _assert_absent(observe_all([target], _settings(world, 0.0), Credentials())["dev"])

    started = time.monotonic()
    done = _deploy(world, "Alpha002", "dev")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"sandbox deploy Alpha002 dev: {took:.2f} s")
    for token in world.tokens.values():
        assert token not in done.stdout + done.stderr, "the deploy printed a Postmark token"

    _assert_present_and_healthy(observe_all([target], _settings(world, 15.0), Credentials())["dev"])


def test_a_renamed_template_is_the_one_a_synth_of_its_own_gives(scenarios: Scenarios) -> None:
    """Benchmarks and the load test seed most partitions from another's renamed template: stage (Alpha002,
    PostmarkNonProd, like dev) synthesized for real must equal dev's template renamed to stage."""
    dev, stage = scenarios.seed("dev"), scenarios.seed("stage")
    renamed = renamed_template(dev.template, "dev", dev.dkim, "stage", stage.dkim)
    resources, real = renamed["Resources"], stage.template["Resources"]
    differing = sorted(k for k in resources.keys() | real.keys() if resources.get(k) != real.get(k))
    assert renamed == stage.template, (
        f"a renamed template differs from a real synth (resources {differing}): seeding by rename would deploy "
        "what a synth does not give"
    )


def _op_fails(scenarios: Scenarios) -> None:
    scenarios.world.set_op(mode="fail")


def _postmark_401(scenarios: Scenarios) -> None:
    scenarios.world.postmark.inject(PostmarkFault(401))


def _nothing(_: Scenarios) -> None:
    """The world as it is: the command line itself is wrong."""


FAILURES: list[tuple[Callable[[Scenarios], None], str, str]] = [
    (_op_fails, "Alpha002", "op read op://Arda-DevOAM/Postmark/credential failed (exit 1): [ERROR]"),
    (_postmark_401, "Alpha002", "Postmark GET /domains: HTTP 401"),
    (_nothing, "Alpha001", "no partition dev on Alpha001 in "),
]


@pytest.mark.parametrize(
    ("arrange", "infrastructure", "message"), FAILURES, ids=["op-fails", "postmark-401", "wrong-infra"]
)
def test_failing_deploy_exits_non_zero_with_one_line(
    scenarios: Scenarios, arrange: Callable[[Scenarios], None], infrastructure: str, message: str
) -> None:
    arrange(scenarios)
    done = _deploy(scenarios.world, infrastructure, "dev")
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"sandbox deploy {infrastructure} dev: {message}"), done.stderr
    target = scenarios.world.config.targets["dev"]
    assert aws.stack(target.profile, target.region, target.stack_name).problem is not None, "a stack was left behind"
    for token in scenarios.world.tokens.values():
        assert token not in done.stdout + done.stderr, "the deploy printed a Postmark token"


def test_deploy_with_postmark_unreachable_exits_with_one_line(
    scenarios: Scenarios, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A stopped or unreachable Postmark (world.json of a world whose Postmark is gone) is a one-line failure."""
    info = json.loads((Path(scenarios.world.info.state_dir) / "world.json").read_text())
    gone = f"http://127.0.0.1:{_closed_port()}"
    (tmp_path / "world.json").write_text(json.dumps({**info, "postmark_url": gone}))
    monkeypatch.setenv("MAILGATE_SANDBOX", str(tmp_path))
    done = _deploy(scenarios.world, "Alpha002", "dev")
    assert done.returncode != 0
    assert done.stderr.startswith(f"sandbox deploy Alpha002 dev: Postmark {gone}"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# --- 3. `python -m sandbox up` / `down` -------------------------------------------------------------------------


def _up(state: Path) -> tuple[subprocess.Popen[str], _Lines, list[str], float]:
    started = time.monotonic()
    with (state.parent / "up.stderr").open("w") as errors:  # a file: an undrained pipe could block the world
        up = subprocess.Popen(
            [sys.executable, "-m", "sandbox", "up", "--state-dir", str(state)],
            cwd=state.parent,
            env=_outside_env(),
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    assert up.stdout is not None
    lines = _Lines(up.stdout)
    return up, lines, lines.until("then: ", HANG), time.monotonic() - started


def _in_another_shell(exports: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = 'eval "$EXPORTS" && exec "$PYTHON" -c "$CLIENT"'
    env = _outside_env(EXPORTS="\n".join(exports), PYTHON=sys.executable, CLIENT=CLIENT)
    return subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG, check=False
    )


def test_up_prints_a_working_environment_and_down_stops_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up, output, lines, ready = _up(state)
    try:
        exports = [line for line in lines if line.startswith("export ")]
        assert {line.removeprefix("export ").split("=", 1)[0] for line in exports} == EXPORTED, lines
        print(f"`python -m sandbox up`: environment printed {ready:.2f} s after launch ({lines[0]})")
        used = _in_another_shell(exports, tmp_path)
        assert used.returncode == 0, used.stderr
        assert used.stdout.split("\n")[:3] == [*(f"{p} {a}" for p, a in ACCOUNTS.items()), "postmark 200 0"]

        info = json.loads((state / "world.json").read_text())
        assert info["pid"] == up.pid
        aws_port = int(info["aws_url"].rsplit(":", 1)[1])
        postmark_port = int(info["postmark_url"].rsplit(":", 1)[1])
        listening = [("tcp", aws_port), ("tcp", postmark_port), ("tcp", info["dns_port"]), ("udp", info["dns_port"])]
        assert not any(_refused("127.0.0.1", port, kind) for kind, port in listening)

        stopping = time.monotonic()
        down = _down(state)
        assert (down.returncode, down.stdout.strip()) == (0, f"sandbox: stopping pid {up.pid}"), down.stderr
        assert up.wait(timeout=HANG) == 0, (tmp_path / "up.stderr").read_text()
        print(f"`python -m sandbox down`: the world's process ended {time.monotonic() - stopping:.2f} s later")
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert output.rest() == ["sandbox down"]
    still = [f"{kind} {port}" for kind, port in listening if not _refused("127.0.0.1", port, kind)]
    assert still == [], f"still listening after down: {still}"


@pytest.mark.parametrize("stale", [False, True], ids=["never-started", "already-stopped"])
def test_down_without_a_world_says_so_and_exits_1(tmp_path: Path, stale: bool) -> None:
    state = tmp_path / "state"
    if stale:  # a world.json left by a world that has ended: its pid is gone
        ended = subprocess.Popen([sys.executable, "-c", ""])
        ended.wait()
        url = f"http://127.0.0.1:{_closed_port()}"
        info = WorldInfo(str(state), url, 1, "127.0.0.1:1", url, "", "", "", ended.pid)
        state.mkdir()
        (state / "world.json").write_text(json.dumps(asdict(info)))
    down = _down(state)
    assert (down.returncode, down.stdout, down.stderr) == (1, "", f"sandbox: no running world in {state}\n")


def _down(state: Path) -> subprocess.CompletedProcess[str]:
    """`python -m sandbox down` from outside the project, as an operator's second shell runs it."""
    return subprocess.run(
        [sys.executable, "-m", "sandbox", "down", "--state-dir", str(state)],
        env=_outside_env(),
        capture_output=True,
        text=True,
        timeout=HANG,
        check=False,
    )


def test_up_environment_survives_a_state_dir_with_a_space(tmp_path: Path) -> None:
    state = tmp_path / "my worlds" / "state"
    state.parent.mkdir()
    up, _, lines, _ = _up(state)
    try:
        used = _in_another_shell([line for line in lines if line.startswith("export ")], tmp_path)
        assert used.returncode == 0, used.stderr
    finally:
        up.terminate()
        up.wait(timeout=HANG)


# --- 4. `--sandbox` through a real pytest run -------------------------------------------------------------------


def _world_processes(marker: str) -> list[str]:
    """Processes whose environment points MAILGATE_SANDBOX into marker (the run's TMPDIR): orphans of the world."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if f"MAILGATE_SANDBOX={marker}".encode() in environ:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{proc.name}: {command[:120]}")
    return found


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist-2"])
def test_sandbox_option_runs_against_a_fresh_world_and_leaves_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, workers: list[str]
) -> None:
    real = (ROOT / "partitions.yaml").read_bytes()
    run_tmp = tmp_path / "run-tmp"
    run_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(run_tmp))  # the plugin's state dir lands here
    for name in UNSET_ENV:
        monkeypatch.delenv(name, raising=False)
    started = time.monotonic()
    result = pytester.runpytest_subprocess(
        *suite_args(
            *workers,
            "-m",
            "postmerge",
            "--partition",
            "dev",
            "--sandbox",
            "--postmark-wait",
            "0",
            "-rA",
            str(ROOT / "tests_postmerge"),
            reports_dir=tmp_path / "reports",
        ),
        timeout=180,
    )
    took = time.monotonic() - started
    out = result.stdout.str()
    header = HEADER.search(out)
    assert header is not None, out[-3000:]
    print(f"pytest --sandbox {' '.join(workers)}: {took:.2f} s; {header.group(0)}")
    failed = {line.split("::")[-1].split(" ")[0] for line in out.splitlines() if line.startswith("FAILED")}
    assert result.ret == pytest.ExitCode.TESTS_FAILED, out[-3000:]
    assert failed == {f"{check}[dev]" for check in POSTMERGE_CHECKS}, out[-3000:]
    assert "stack Alpha002-dev-Email does not exist" in out, "moto was not asked: the world was not used"
    assert f"at {header.group(3)}; was the partition deployed?" in out, "the world's Postmark was not asked"
    assert (ROOT / "partitions.yaml").read_bytes() == real, "the real partitions.yaml changed"

    aws_port, dns_port, postmark_port = int(header.group(1)), int(header.group(2)), int(header.group(4))
    listening = [("tcp", aws_port), ("tcp", postmark_port), ("tcp", dns_port), ("udp", dns_port)]
    still = [f"{kind} 127.0.0.1:{port}" for kind, port in listening if not _refused("127.0.0.1", port, kind)]
    assert still == [], f"the world still listens after the run: {still}"
    assert _world_processes(str(run_tmp)) == []
    assert list(run_tmp.glob("mailgate-sandbox-*")) == [], "the world's state dir was left behind"


# --- 5. what starting and stopping the world costs ---------------------------------------------------------------


def test_world_start_and_stop_cost(tmp_path: Path) -> None:
    """Measured in a fresh interpreter (cold imports); the figure is printed, the bound only catches a hang."""
    done = subprocess.run(
        [sys.executable, "-c", START_STOP],
        cwd=tmp_path,
        env=_outside_env(TMPDIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=HANG,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    cost = json.loads(done.stdout)
    total = cost["start"] + cost["stop"]
    print(
        f"World start {cost['start']:.2f} s + stop {cost['stop']:.2f} s = {total:.2f} s "
        f"(+ {cost['import']:.2f} s importing sandbox.world)"
    )
    assert total < 10, f"start + stop took {total:.1f} s: something hangs"


def test_credentials_are_read_while_every_aws_thread_waits(scenarios: Scenarios, monkeypatch) -> None:
    """Route 53's pacing may hold every AWS thread of the gathering; the Postmark tokens must be read meanwhile,
    not after (at 256 partitions the Postmark reads, and the DKIM lookups after them, waited for the pacing)."""
    from probes import observe
    from probes.secrets import resolve

    world = scenarios.world
    targets = [world.config.targets["dev"], world.config.targets["prod"]]
    references = {t.credential for t in targets}
    read: set[str] = set()
    all_read = threading.Event()

    def reading(reference: str):
        read.add(reference)
        if read >= references:
            all_read.set()
        return resolve(reference)

    aws_read = observe._stack_and_zone
    waited: list[bool] = []

    def held(target: Target):
        waited.append(all_read.wait(timeout=15))  # a paced AWS read holding its thread until the tokens are read
        return aws_read(target)

    monkeypatch.setattr(observe, "AWS_THREADS", 1)
    monkeypatch.setattr(observe, "_stack_and_zone", held)
    found = observe_all(targets, _settings(world, 0.0), Credentials(reading))

    assert waited == [True, True], "a credential read waited behind an AWS read that waited for it"
    assert {name: o.postmark_problem for name, o in found.items()} == {"dev": None, "prod": None}
