"""Every fault of the outside world ends in a failing check that names the cause and the next step: never a pass,
never an internal traceback. DNS and Postmark faults come from the sandbox's own servers, AWS errors from a
loopback server speaking AWS's wire format (moto cannot throttle or deny), the rest from real tools and configs."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
import yaml

from probes import aws
from sandbox.dns_server import Fault
from sandbox.postmark_fake import PostmarkFault
from sandbox.scenarios import Scenarios
from sandbox.world import CHILD_NAMESERVERS

RunChecks = Callable[..., Any]
OUR_FRAME = re.compile(r"\b(probes|plugins|sandbox)/\w+\.py:\d+")
DNS_CHECKS = ("test_ns_delegation", "test_spf", "test_dmarc", "test_dkim", "test_return_path")


def variant(scenarios: Scenarios, tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> str:
    """A copy of the world's partitions file with `change` applied; pass it with --partitions-file."""
    data = yaml.safe_load(Path(scenarios.world.info.partitions_file).read_text())
    change(data)
    path = tmp_path / "partitions-variant.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


def fast_dns(data: dict[str, Any]) -> None:
    data["dns"]["timeout"] = 1.0  # a silent server costs one second, not three


def assert_verdict(run: Any, failed: dict[str, list[str]]) -> None:
    """Exactly these checks failed (or errored), each message naming every given part, none a traceback of ours."""
    assert run.failed() == set(failed), run.messages
    for name, parts in failed.items():
        message = run.messages[name]
        assert "Traceback" not in message, message
        assert not OUR_FRAME.search(message), f"an internal traceback reached the operator:\n{message}"
        for part in parts:
            assert part in message, f"{name}: expected {part!r} in:\n{message}"


# -- DNS ------------------------------------------------------------------------------------------------------


def test_answer_faults_fail_exactly_the_checks_asking_those_questions(
    scenarios: Scenarios, run_checks: RunChecks, tmp_path: Path
) -> None:
    """Timeout, SERVFAIL, NXDOMAIN and an empty answer, each on another question: each fails its own check."""
    seeded = scenarios.seed("dev")
    target, dkim_host = seeded.target, seeded.target.dkim_host(seeded.dkim.selector)
    for fault in (
        Fault("timeout", name=target.dmarc_host, rtype="TXT"),
        Fault("servfail", name=target.zone, rtype="TXT"),
        Fault("nxdomain", name=target.return_path_host, rtype="CNAME"),
        Fault("noanswer", name=dkim_host, rtype="TXT"),
    ):
        scenarios.world.dns.inject(fault)
    run = run_checks("-m", "dns", "--partition", "dev", "--partitions-file", variant(scenarios, tmp_path, fast_dns))
    unusable = "4 of 4 authoritative servers gave no usable answer"
    assert_verdict(
        run,
        {
            "test_dmarc[dev]": [f"{unusable} to TXT {target.dmarc_host}", "no reply: timeout after 1s (3 tries)"],
            "test_spf[dev]": [f"{unusable} to TXT {target.zone}", "answered SERVFAIL"],
            "test_return_path[dev]": [f"no CNAME at {target.return_path_host} (NXDOMAIN)", "point CNAME"],
            "test_dkim[dev]": [f"no TXT record at {dkim_host} (NOERROR)", "publish the key Postmark issued"],
        },
    )
    assert run.outcomes["test_ns_delegation[dev]"] == "passed"


def test_refusing_and_down_servers_are_named_by_the_ns_check(
    scenarios: Scenarios, run_checks: RunChecks, tmp_path: Path
) -> None:
    """Two of four authoritative servers unusable: the NS check names both; the records, agreed by the other
    two, still pass (a lame server is the NS check's to judge)."""
    scenarios.seed("dev")
    refusing, down = CHILD_NAMESERVERS[0], CHILD_NAMESERVERS[2]
    scenarios.world.dns.inject(Fault("refused", server=refusing))
    scenarios.world.dns.inject(Fault("down", server=down))
    run = run_checks("-m", "dns", "--partition", "dev", "--partitions-file", variant(scenarios, tmp_path, fast_dns))
    parts = [
        f"{refusing.rstrip('.')} (127.0.0.2:",
        "is lame for dev.ardamails.com: REFUSED",
        f"{down.rstrip('.')} (127.0.0.4:",
        "timeout after 1s (3 tries)",
    ]
    assert_verdict(run, {"test_ns_delegation[dev]": parts})
    assert set(run.outcomes) == {f"{check}[dev]" for check in DNS_CHECKS}


def test_silent_servers_next_step_is_to_reach_them(scenarios: Scenarios, run_checks: RunChecks, tmp_path: Path) -> None:
    scenarios.seed("dev")
    target = scenarios.world.config.targets["dev"]
    scenarios.world.dns.inject(Fault("timeout", name=target.dmarc_host, rtype="TXT"))
    run = run_checks("-m", "dns", "--partition", "dev", "--partitions-file", variant(scenarios, tmp_path, fast_dns))
    assert_verdict(run, {"test_dmarc[dev]": ["--dns-wait"]})


def test_truncated_udp_falls_back_to_tcp_and_passes(scenarios: Scenarios, run_checks: RunChecks) -> None:
    scenarios.seed("dev")
    world = scenarios.world
    world.dns.inject(Fault("truncate"))
    world.dns.queries.clear()
    run = run_checks("-m", "dns", "--partition", "dev")
    assert run.outcomes == {f"{check}[dev]": "passed" for check in DNS_CHECKS}, run.messages
    asked = {
        transport: {(q.server, q.qname.lower(), q.qtype) for q in world.dns.queries if q.transport == transport}
        for transport in ("udp", "tcp")
    }
    assert asked["udp"], "no question was asked"
    assert asked["tcp"] == asked["udp"], "every question truncated over UDP is asked again over TCP"


@pytest.mark.parametrize(
    ("defect", "failing"), [((), set()), (("dkim-one-char",), {"test_dkim[dev]"})], ids=["healthy", "dkim-one-char"]
)
def test_packet_loss_with_dns_wait_keeps_the_verdict(
    scenarios: Scenarios, run_checks: RunChecks, tmp_path: Path, defect: tuple[str, ...], failing: set[str]
) -> None:
    """20 % of UDP queries lost: resends and --dns-wait give the verdict of a clean network, both ways."""
    scenarios.seed("dev", defects=defect)
    scenarios.world.dns.set_packet_loss(0.2, seed=9)
    fast = variant(scenarios, tmp_path, fast_dns)
    run = run_checks("-m", "dns", "--partition", "dev", "--dns-wait", "2", "--partitions-file", fast)
    assert run.failed() == failing, run.messages
    for name in failing:
        assert "differs from cdk.context.json's dkimPublicKey" in run.messages[name]


# -- AWS ------------------------------------------------------------------------------------------------------


class AwsErrors(ThreadingHTTPServer):
    """A loopback endpoint answering every AWS request with one error in AWS's XML, counting requests per action."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _AwsErrorHandler)
        self.answer = (400, "Throttling", "Rate exceeded")
        self.actions: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _AwsErrorHandler(BaseHTTPRequestHandler):
    server: AwsErrors

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        action = parse_qs(body).get("Action", ["?"])[0]
        with self.server.lock:
            self.server.actions.append(action)
        status, code, message = self.server.answer
        xml = (
            f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            "<RequestId>8d6b0f4e-0000-4000-8000-000000000000</RequestId></ErrorResponse>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(xml)))
        self.end_headers()
        self.wfile.write(xml)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def aws_errors() -> Iterator[AwsErrors]:
    """An HTTP server on loopback that answers AWS requests with the errors a test sets."""
    server = AwsErrors()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def aws_config(
    scenarios: Scenarios, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], None]]:
    """Give the dev partition's profile (Alpha002-Admin) another AWS config: `aws_config("<profile body>")`."""
    home = tmp_path / "home"
    (home / ".aws" / "sso" / "cache").mkdir(parents=True)

    def use(body: str) -> None:
        path = tmp_path / "aws-config"
        path.write_text(f"[profile Alpha002-Admin]\nregion = us-east-1\n{body}")
        monkeypatch.setenv("AWS_CONFIG_FILE", str(path))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
        aws.forget_clients()

    yield use
    aws.forget_clients()


STATIC_KEYS = "aws_access_key_id = AKIAMAILGATETEST0001\naws_secret_access_key = not-a-secret\n"
SSO_EXPIRED = """sso_session = arda
sso_account_id = 139852620346
sso_role_name = AdministratorAccess

[sso-session arda]
sso_start_url = https://arda.awsapps.com/start
sso_region = us-east-1
"""


@contextlib.contextmanager
def socket_closed_port() -> Iterator[int]:
    """A loopback TCP port that is bound but never listens: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _expired_sso_token(home: Path) -> None:
    """The cached SSO token of session `arda`, expired yesterday and without a refresh token (no network)."""
    cache = home / ".aws" / "sso" / "cache" / f"{hashlib.sha1(b'arda').hexdigest()}.json"
    expired = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86400))
    cache.write_text(
        json.dumps(
            {
                "startUrl": "https://arda.awsapps.com/start",
                "region": "us-east-1",
                "accessToken": "expired",
                "expiresAt": expired,
            }
        )
    )


AWS_CHECKS = {"test_aws_identity[dev]", "test_stack_status[dev]", "test_exports[dev]"}


def test_missing_profile_lists_the_profiles_that_exist(
    scenarios: Scenarios, run_checks: RunChecks, tmp_path: Path
) -> None:
    """A known trap: a profile derived from the infrastructure's name (Admin-Alpha002) does not exist."""

    def derive(data: dict[str, Any]) -> None:
        data["infrastructures"]["Alpha002"]["profile"] = "Admin-Alpha002"

    run = run_checks(
        "-m", "access or aws", "--partition", "dev", "--partitions-file", variant(scenarios, tmp_path, derive)
    )
    parts = ["AWS profile Admin-Alpha002 is not in the AWS config", "Alpha002-Admin", "never derive them"]
    assert_verdict(run, {name: parts for name in AWS_CHECKS})


def test_expired_sso_login_says_to_log_in(
    aws_config: Callable[[str], None], tmp_path: Path, run_checks: RunChecks
) -> None:
    aws_config(SSO_EXPIRED)
    _expired_sso_token(tmp_path / "home")
    run = run_checks("-m", "access or aws", "--partition", "dev")
    parts = ["SSO login of profile Alpha002-Admin is missing or expired", "aws sso login --profile Alpha002-Admin"]
    assert_verdict(run, {name: parts for name in AWS_CHECKS})


@pytest.mark.parametrize(
    ("answer", "parts"),
    [
        (
            (403, "ExpiredToken", "The security token included in the request is expired"),
            ["ExpiredToken: The security token included in the request is expired", "aws sso login --profile"],
        ),
        (
            (403, "AccessDenied", "User: arn:aws:iam::139852620346:user/ci is not authorized to perform this"),
            ["profile Alpha002-Admin is not allowed: User: arn:aws:iam::139852620346:user/ci", "admin profile"],
        ),
    ],
    ids=["expired-token", "access-denied"],
)
def test_refused_credentials_fail_at_once_with_the_next_step(
    aws_config: Callable[[str], None],
    aws_errors: AwsErrors,
    run_checks: RunChecks,
    answer: tuple[int, str, str],
    parts: list[str],
) -> None:
    aws_errors.answer = answer
    aws_config(f"endpoint_url = {aws_errors.url}\n{STATIC_KEYS}")
    run = run_checks("-m", "access or aws", "--partition", "dev")
    assert_verdict(run, {name: parts for name in AWS_CHECKS})
    assert sorted(aws_errors.actions) == ["DescribeStacks", "GetCallerIdentity"], "a refusal is not retried"


def test_throttling_is_retried_in_standard_mode_then_fails_clearly(
    aws_config: Callable[[str], None], aws_errors: AwsErrors, run_checks: RunChecks
) -> None:
    aws_errors.answer = (400, "Throttling", "Rate exceeded")
    aws_config(f"endpoint_url = {aws_errors.url}\n{STATIC_KEYS}")
    run = run_checks("-m", "aws", "--partition", "dev")
    parts = ["AWS throttled profile Alpha002-Admin after retries (Rate exceeded)", "retry later"]
    assert_verdict(run, {"test_stack_status[dev]": parts, "test_exports[dev]": parts})
    assert aws_errors.actions == ["DescribeStacks"] * 4, "standard retry mode: 4 attempts, no more"


def test_unreachable_endpoint_fails_naming_it(aws_config: Callable[[str], None], run_checks: RunChecks) -> None:
    with socket_closed_port() as port:
        aws_config(f"endpoint_url = http://127.0.0.1:{port}\n{STATIC_KEYS}")
        run = run_checks("-m", "aws", "--partition", "dev")
    parts = ["AWS endpoint unreachable for profile Alpha002-Admin", f"127.0.0.1:{port}", "check the network"]
    assert_verdict(run, {"test_stack_status[dev]": parts, "test_exports[dev]": parts})


def test_missing_stack_says_to_deploy(scenarios: Scenarios, run_checks: RunChecks) -> None:
    run = run_checks("-m", "aws", "--partition", "dev")
    parts = ["stack Alpha002-dev-Email does not exist in us-east-1 for profile Alpha002-Admin", "deploy"]
    assert_verdict(run, {"test_stack_status[dev]": parts, "test_exports[dev]": parts})


# -- Postmark -------------------------------------------------------------------------------------------------

POSTMARK = "test_postmark_verified[dev]"


@pytest.mark.parametrize(
    ("fault", "parts"),
    [
        (
            PostmarkFault(401),
            ["answered 401", "the token of account PostmarkNonProd", "check the credential reference"],
        ),
        (PostmarkFault(403), ["answered 403 (not JSON: '<html>Forbidden</html>')", "check HTTPS_PROXY"]),
        (PostmarkFault(-1), ["answered 200 with malformed JSON", "is postmark.api_url really the Postmark API?"]),
        (PostmarkFault(429, retry_after=0.05), ["answered 429", "still rate limited after 10 attempts", "rerun"]),
        (PostmarkFault(503), ["answered 503 (ErrorCode 100: Maintenance", "failed 5 times", "status.postmarkapp.com"]),
    ],
    ids=["401", "403-not-json", "malformed-json", "429-always", "503-always"],
)
def test_postmark_fault_fails_the_postmark_check(
    scenarios: Scenarios, run_checks: RunChecks, fault: PostmarkFault, parts: list[str]
) -> None:
    scenarios.seed("dev")
    scenarios.world.postmark.inject(fault)
    run = run_checks("-m", "postmark", "--partition", "dev", "--postmark-wait", "1")
    assert_verdict(run, {POSTMARK: ["PostmarkNonProd", *parts]})
    if fault.status in (429, 503):  # bounded: 1 request + 9 retries when rate limited, + 4 when failing
        assert len(scenarios.world.postmark.calls) == (10 if fault.status == 429 else 5)


@pytest.mark.parametrize("workers", ["0", "4"])
def test_postmark_404_says_the_url_is_wrong(
    scenarios: Scenarios, run_checks: RunChecks, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    scenarios.seed("dev")
    monkeypatch.setenv("POSTMARK_API_URL", scenarios.world.postmark.url + "/v2")
    run = run_checks("-n", workers, "-m", "postmark", "--partition", "dev", "--postmark-wait", "1")
    assert_verdict(
        run, {POSTMARK: ["/v2/domains?count=500&offset=0 answered 404", "no such endpoint", "POSTMARK_API_URL"]}
    )


@pytest.mark.parametrize("workers", ["0", "4"])
@pytest.mark.parametrize("status", [404, 422])
def test_a_listed_domain_gone_when_read_says_so(
    scenarios: Scenarios, run_checks: RunChecks, status: int, workers: str
) -> None:
    """Listed, then gone when read (deleted in between): 404 "Entity doesn't exist" or 422 with ErrorCode 510
    "This domain was not found", both documented (API overview). The fake cannot race, so the transport answers;
    under xdist too, since the controller asks Postmark and the workers judge what it saw."""
    scenarios.seed("dev")
    gone = httpx.Response(status, json={"ErrorCode": 510, "Message": "This domain was not found."})
    with respx.mock(assert_all_called=False) as router:
        read = router.get(path__regex=r"/domains/\d+$").mock(return_value=gone)
        router.route().pass_through()
        run = run_checks("-n", workers, "-m", "postmark", "--partition", "dev", "--postmark-wait", "1")
    assert read.called
    meaning = "404 Entity doesn't exist" if status == 404 else "ErrorCode 510 This domain was not found"
    assert_verdict(
        run,
        {
            POSTMARK: [
                f"answered {status} (ErrorCode 510",
                "account PostmarkNonProd has no domain with ID ",
                f"({meaning}), though its listing named it: it was deleted meanwhile, or the listing is stale; rerun",
            ]
        },
    )


def test_postmark_timeout_says_to_check_the_network(scenarios: Scenarios, run_checks: RunChecks) -> None:
    """A hang costs the client's 10 s timeout against the fake (test_sandbox_postmark does that); here the
    transport times out at once, to judge the verdict."""
    scenarios.seed("dev")
    with respx.mock(assert_all_called=False) as router:
        listing = router.get(path__regex=r"/domains$").mock(side_effect=httpx.ReadTimeout("timed out"))
        router.route().pass_through()
        run = run_checks("-m", "postmark", "--partition", "dev", "--postmark-wait", "1")
    assert listing.called
    assert_verdict(run, {POSTMARK: ["no answer within 10 s", "check the network"]})


@pytest.mark.parametrize(
    ("fault", "pause"),
    [(PostmarkFault(429, count=2, retry_after=0.4), 0.4), (PostmarkFault(503, count=2), 0.0)],
    ids=["429-retry-after", "503-twice"],
)
def test_transient_postmark_failures_are_retried_and_pass(
    scenarios: Scenarios, run_checks: RunChecks, fault: PostmarkFault, pause: float
) -> None:
    scenarios.seed("dev")
    scenarios.world.postmark.inject(fault)
    run = run_checks("-m", "postmark", "--partition", "dev", "--postmark-wait", "1")
    assert run.outcomes == {POSTMARK: "passed"}, run.messages
    calls = scenarios.world.postmark.calls
    assert [c.status for c in calls[:3]] == [fault.status, fault.status, 200]
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(calls[:3])]
    assert min(gaps) >= pause, f"Retry-After {pause} s not honoured: gaps {gaps}"


# -- tools ----------------------------------------------------------------------------------------------------

CREDENTIAL_CHECKS = ("test_postmark_credential[dev]", POSTMARK)


@pytest.mark.parametrize(
    ("mode", "parts"),
    [
        ("fail", ["`op read` exited 1", "You are not currently signed in", "run `op signin`"]),
        ("empty", ["resolved to an empty value; check the item"]),
    ],
)
def test_op_failing_or_empty_fails_both_credential_checks(
    scenarios: Scenarios, run_checks: RunChecks, mode: str, parts: list[str]
) -> None:
    scenarios.seed("dev")
    scenarios.world.set_op(mode=mode)
    run = run_checks("-m", "access or postmark", "--partition", "dev")
    reference = ["credential op://Arda-DevOAM/Postmark/credential", *parts]
    assert_verdict(run, {name: reference for name in CREDENTIAL_CHECKS})


def test_op_missing_says_to_install_it(
    scenarios: Scenarios, run_checks: RunChecks, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenarios.seed("dev")
    sandbox_bin = str(Path(scenarios.world.info.state_dir) / "bin")
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != sandbox_bin))
    assert shutil.which("op") is None, "this machine has a real op on PATH"
    run = run_checks("-m", "access or postmark", "--partition", "dev")
    parts = ["`op` is not on PATH; install the 1Password CLI"]
    assert_verdict(run, {name: parts for name in CREDENTIAL_CHECKS})


def _path_without(tmp_path: Path, *names: str) -> str:
    """A PATH of one folder linking every command of the current PATH except `names`."""
    folder = tmp_path / "path-without"
    folder.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not Path(directory).is_dir():
            continue
        for entry in Path(directory).iterdir():
            target = folder / entry.name
            if entry.name not in names and not target.exists() and os.access(entry, os.X_OK):
                target.symlink_to(entry)
    return str(folder)


def test_npm_missing_fails_the_code_checks_as_command_not_found(
    scenarios: Scenarios, run_checks: RunChecks, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", _path_without(tmp_path, "npm", "npx"))
    assert shutil.which("npm") is None
    run = run_checks("-m", "code", "-k", "build or lint")
    parts = ["exited 127 (command not found)", "npm: command not found"]
    assert_verdict(run, {"test_build": ["`npm run build`", *parts], "test_lint": ["`npm run lint`", *parts]})


def test_command_killed_by_a_signal_is_named(scenarios: Scenarios, run_checks: RunChecks, tmp_path: Path) -> None:
    def killed(data: dict[str, Any]) -> None:
        data["infra"]["build"] = "echo building; kill -KILL $$"

    run = run_checks("-m", "code", "-k", "build", "--partitions-file", variant(scenarios, tmp_path, killed))
    assert_verdict(run, {"test_build": ["was killed by SIGKILL (9)", "building"]})


def test_missing_infra_repo_fails_every_code_check_naming_it(
    scenarios: Scenarios, run_checks: RunChecks, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-infrastructure"
    run = run_checks("-m", "code", "--infra-repo", str(missing))
    parts = [str(missing), "does not exist", "--infra-repo"]
    assert_verdict(run, {f"test_{name}": parts for name in ("infra_repo_clean", "build", "lint", "unit_tests")})
