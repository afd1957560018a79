"""Bad input: mutated partitions files end in one clean line or a valid config; malformed DNS records fail by name."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probes.config import Config, ConfigError, load
from sandbox.scenarios import Scenarios, Seeded
from sandbox.suite import suite_args

ROOT = Path(__file__).resolve().parents[1]
VALID_TEXT = (ROOT / "partitions.yaml").read_text()
VALID: dict[str, Any] = yaml.safe_load(VALID_TEXT)
LOAD_LIMIT = 5.0  # seconds: far above a real load (milliseconds), far below a hang
MAX_MESSAGE = 1000  # characters: one line an operator can read

Path_ = tuple[str | int, ...]


def _paths(value: Any, at: Path_ = ()) -> list[Path_]:
    """Every key/index path in a YAML document (the root excluded)."""
    found: list[Path_] = []
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        found.append((*at, key))
        found.extend(_paths(child, (*at, key)))
    return found


def _parent(doc: Any, path: Path_) -> Any:
    for part in path[:-1]:
        doc = doc[part]
    return doc


WEIRD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(alphabet=st.characters(min_codepoint=0x80), min_size=1, max_size=20),
    st.text(alphabet="x", min_size=3000, max_size=3000),
    st.lists(st.text(max_size=5), max_size=4),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
)


@st.composite
def mutated_documents(draw: st.DrawFn) -> str:
    """The valid file as YAML text after 1 to 4 structural mutations: removed keys, wrong types, new keys."""
    doc = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(doc, path)
        action = draw(st.sampled_from(["remove", "retype", "add", "rename"]))
        if action == "remove":
            del parent[path[-1]]
        elif action == "retype":
            parent[path[-1]] = draw(WEIRD)
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=30))] = draw(WEIRD)
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=30))] = parent.pop(path[-1])
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=draw(st.booleans()))


def _bomb(width: int, depth: int) -> str:
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, depth)]
    return VALID_TEXT + "\n".join(lines) + "\n"


def _anchored(name: str) -> str:
    """Valid YAML that shares a whole section through an anchor (legal YAML, an unknown key here)."""
    return VALID_TEXT.replace("\ninfrastructures:", f"\n{name}: &shared\n  x: 1\ninfrastructures:", 1) + (
        "copy: *shared\n"
    )


def _nested(opening: str, closing: str, depth: int) -> str:
    return f"{VALID_TEXT}deep: {opening * depth}1{closing * depth}\n"


TEXT_ATTACKS: dict[str, Callable[[st.DrawFn], str]] = {
    "alias bomb": lambda draw: _bomb(draw(st.integers(2, 9)), draw(st.integers(2, 9))),
    "recursive anchor": lambda draw: VALID_TEXT + draw(st.sampled_from(["r: &r [*r]\n", "r: &r {k: *r}\n"])),
    "deep nesting": lambda draw: _nested("[", "]", draw(st.integers(20, 2_000))),
    "deep mapping": lambda draw: _nested("{a: ", "}", draw(st.integers(20, 3_000))),
    "anchors": lambda draw: _anchored(draw(st.sampled_from(["shared", "ünï", "x" * 300]))),
    "huge number": lambda draw: VALID_TEXT.replace("timeout: 3.0", "timeout: " + "9" * draw(st.integers(50, 20_000))),
    "python tag": lambda draw: (
        VALID_TEXT + draw(st.sampled_from(["x: !!python/object/apply:os.system [id]\n", "x: !t 1\n"]))
    ),
    "escaped control": lambda draw: VALID_TEXT + 'x: "a' + draw(st.sampled_from(["\\x00", "\\x07", "\\ufffe"])) + '"\n',
    "raw control": lambda draw: VALID_TEXT + "x: a" + draw(st.sampled_from(["\x00", "\x07", "\x1b", "\ufffe"])) + "\n",
    "unhashable key": lambda draw: VALID_TEXT + "? [a, b]\n: c\n",
    "duplicate key": lambda draw: VALID_TEXT + draw(st.sampled_from(["domain: example.com\n", "region: eu-west-1\n"])),
    "truncated": lambda draw: VALID_TEXT[: draw(st.integers(0, len(VALID_TEXT)))],
    "unicode names": lambda draw: VALID_TEXT.replace("dev", draw(st.text(min_size=1, max_size=10))),
}


@st.composite
def attacked_bytes(draw: st.DrawFn) -> bytes:
    """Text-level attacks YAML dumping cannot produce, and raw bytes (not UTF-8, BOMs, NULs)."""
    kind = draw(st.sampled_from([*TEXT_ATTACKS, "bytes spliced in"]))
    if kind != "bytes spliced in":
        return TEXT_ATTACKS[kind](draw).encode("utf-8", "surrogatepass")
    raw = VALID_TEXT.encode()
    at = draw(st.integers(0, len(raw)))
    return raw[:at] + draw(st.binary(min_size=1, max_size=64)) + raw[at:]


def _judge_load(path: Path) -> Config | ConfigError:
    """Load, and hold the outcome to the contract: a Config, or one ConfigError line naming the file, fast."""
    started = time.monotonic()
    try:
        outcome: Config | ConfigError = load(path)
    except ConfigError as exc:
        outcome = exc
    elapsed = time.monotonic() - started
    assert elapsed < LOAD_LIMIT, f"load took {elapsed:.1f} s"
    if isinstance(outcome, ConfigError):
        message = str(outcome)
        assert message.isprintable(), f"not one printable line: {message!r}"
        assert message.startswith(str(path)), message
        assert len(message) <= MAX_MESSAGE, f"{len(message)} characters: {message[:200]!r}…"
    return outcome


FUZZ = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # examples: the profile (conftest)


@FUZZ
@given(text=mutated_documents())
def test_mutated_documents_end_in_a_config_or_one_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "partitions.yaml"
    path.write_text(text, encoding="utf-8")
    _judge_load(path)


@FUZZ
@given(data=attacked_bytes())
def test_text_attacks_end_in_a_config_or_one_line(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "partitions.yaml"
    path.write_bytes(data)
    _judge_load(path)


REFUSED = {
    "deep nesting": (_nested("[", "]", 100_000), "YAML nested more than 32 levels deep"),
    "recursive anchor": (VALID_TEXT + "r: &r [*r]\n", "(a recursive anchor?)"),
    "python tag": (VALID_TEXT + "x: !!python/object/apply:os.system [id]\n", "python/object/apply:os.system"),
    "huge number": (VALID_TEXT.replace("timeout: 3.0", "timeout: " + "9" * 5000), "dns.timeout: a number 5000"),
    "NUL": (VALID_TEXT + "x: a\x00\n", "'\\x00' is not allowed in YAML"),
    "newline in a key": (VALID_TEXT + '"a\\nb": 1\n', "'a\\nb': unknown key"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_each_attack_is_refused_in_one_line_naming_the_cause(tmp_path: Path, case: str) -> None:
    text, expected = REFUSED[case]
    path = tmp_path / "partitions.yaml"
    path.write_text(text, encoding="utf-8")
    outcome = _judge_load(path)
    assert isinstance(outcome, ConfigError), f"{case}: loaded"
    assert expected in str(outcome), str(outcome)


def test_the_unmutated_file_loads() -> None:
    """The fuzzers start from a valid file: were it invalid, every mutation would be a trivial refusal."""
    assert set(load(ROOT / "partitions.yaml").targets) == {"dev", "stage", "demo", "prod"}


@pytest.mark.parametrize("case", ["deep nesting", "recursive anchor", "python tag", "newline in a key"])
def test_bad_file_through_pytest_is_one_usage_error_line(pytester: pytest.Pytester, case: str) -> None:
    text, expected = REFUSED[case]
    bad = pytester.path / "partitions.yaml"
    bad.write_text(text, encoding="utf-8")
    result = pytester.runpytest(*suite_args(str(ROOT / "tests_postmerge"), partitions_file=str(bad)))
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1, output
    assert errors[0].startswith(f"ERROR: {bad}:"), errors[0]
    assert expected in errors[0], errors[0]
    assert "Traceback" not in output
    assert " passed" not in output


def _upsert(scenarios: Scenarios, seeded: Seeded, name: str, rtype: str, values: list[str]) -> None:
    """Replace one record set of the seeded partition's hosted zone, as an operator's console edit would."""
    route53 = scenarios.world.client("route53", seeded.target.account)
    record = {"Name": name, "Type": rtype, "TTL": 300, "ResourceRecords": [{"Value": v} for v in values]}
    route53.change_resource_record_sets(
        HostedZoneId=seeded.zone_id, ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": record}]}
    )


MALFORMED = {
    "spf-junk-terms": ("zone", '"v=spf1 include:spf.mtasv.net foo:bar !!! ~all"', "test_spf", ["'foo:bar'", "'!!!'"]),
    "spf-not-utf8": ("zone", '"v=spf1 include:spf.mtasv.net \\255\\254 ~all"', "test_spf", ["not valid UTF-8"]),
    "dmarc-duplicate-tag": (
        "dmarc",
        '"v=DMARC1; p=reject; p=none; rua=mailto:dmarc-reports@arda.cards"',
        "test_dmarc",
        ["tag p= appears more than once"],
    ),
    "dkim-without-p": ("dkim", '"k=rsa; t=s"', "test_dkim", ["no p= tag"]),
    "dkim-not-utf8": ("dkim", '"k=rsa; p=MIIB\\255AQAB"', "test_dkim", ["not valid UTF-8"]),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_record_fails_its_check_naming_the_record(scenarios: Scenarios, run_checks: Any, case: str) -> None:
    where, value, check, expected = MALFORMED[case]
    seeded = scenarios.seed("dev")
    target = seeded.target
    name = {"zone": target.zone, "dmarc": target.dmarc_host, "dkim": target.dkim_host(seeded.dkim.selector)}[where]
    _upsert(scenarios, seeded, name, "TXT", [value])
    run = run_checks("-m", "dns", "--partition", "dev")
    assert run.failed() == {f"{check}[dev]"}, run.messages
    message = run.messages[f"{check}[dev]"]
    assert name in message, message
    for part in expected:
        assert part in message, message
    assert "Traceback" not in message
