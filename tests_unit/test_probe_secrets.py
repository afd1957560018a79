"""probes.secrets: a Secret never prints; resolve() uses `op read` or env:NAME and fails in one clear line."""

from __future__ import annotations

import base64
import copy
import pickle
import re
import stat
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from probes.secrets import CredentialError, Secret, known_secrets, redact, redact_bytes, resolve

REF = "op://Arda-ProdOAM/Postmark/credential"
# Characters that make std and urlsafe base64 differ, need padding and need URL-encoding.
CANARY = "cAn4ry?>>~ü/+ &=secrets-test"


def _fake_op(tmp_path: Path, script: str) -> dict[str, str]:
    """An environment whose PATH holds only a fake `op` (plus the basics it needs), logging its argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    op = bin_dir / "op"
    op.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" > "{tmp_path}/argv"\n{script}\n')
    op.chmod(op.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}


def _error(reference: str, **kwargs: object) -> str:
    with pytest.raises(CredentialError) as caught:
        resolve(reference, **kwargs)  # type: ignore[arg-type]  # the test passes options by name
    message = str(caught.value)
    assert "\n" not in message
    assert reference in message
    return message


def test_secret_never_prints_its_value() -> None:
    secret = Secret(REF, CANARY)
    shown = " ".join(
        [str(secret), repr(secret), format(secret, ">40"), f"{secret:x}", str([secret]), str({"t": secret})]
    )
    shown += "%s %r" % (secret, secret)  # noqa: UP031 - the old formatting must hide it too
    assert CANARY not in shown
    assert repr(secret) == f"Secret({REF}: ****)"
    assert secret.reveal() == CANARY
    assert secret.reference == REF
    assert CANARY in known_secrets()


def test_secret_refuses_pickling_and_copies_to_itself() -> None:
    secret = Secret(REF, CANARY)
    with pytest.raises(TypeError, match="cannot be pickled") as caught:
        pickle.dumps(secret)
    assert CANARY not in str(caught.value)
    assert copy.copy(secret) is secret
    assert copy.deepcopy({"s": secret})["s"] is secret


def test_comparison_is_by_value_among_secrets_and_a_failure_prints_no_value() -> None:
    first, same, other = Secret("env:A", CANARY), Secret("env:B", CANARY), Secret("env:C", CANARY + "-other")
    assert first == same
    assert hash(first) == hash(same)
    assert first != CANARY  # never equal to a plain string, so no assertion shows the two side by side
    with pytest.raises(AssertionError) as caught:
        assert first == other
    assert CANARY not in str(caught.value)
    assert "Secret(env:A: ****)" in str(caught.value)


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        Secret("env:X", "")


@pytest.mark.parametrize(
    "form",
    [
        pytest.param(CANARY, id="plain"),
        pytest.param(base64.b64encode(CANARY.encode()).decode(), id="base64"),
        pytest.param(base64.b64encode(CANARY.encode()).decode().rstrip("="), id="base64-unpadded"),
        pytest.param(base64.urlsafe_b64encode(CANARY.encode()).decode(), id="urlsafe"),
        pytest.param(base64.urlsafe_b64encode(CANARY.encode()).decode().rstrip("="), id="urlsafe-unpadded"),
        pytest.param(quote(CANARY), id="quote"),
        pytest.param(quote(CANARY, safe=""), id="quote-nosafe"),
        pytest.param(quote_plus(CANARY), id="quote-plus"),
        pytest.param(re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), quote(CANARY, safe="")), id="quote-lower-hex"),
    ],
)
def test_redact_replaces_every_form(form: str) -> None:
    Secret(REF, CANARY)
    text = f"header: {form} and again {form}."
    assert redact(text) == "header: **** and again ****."
    assert redact_bytes(text.encode()) == b"header: **** and again ****."


def test_the_base64_forms_differ_so_each_is_really_tested() -> None:
    raw = CANARY.encode()
    assert base64.b64encode(raw) != base64.urlsafe_b64encode(raw)
    assert base64.b64encode(raw).endswith(b"=")
    assert quote(CANARY) != quote_plus(CANARY)


def test_redact_leaves_other_text_alone() -> None:
    Secret(REF, CANARY)
    assert redact("nothing secret here: cAn4ry") == "nothing secret here: cAn4ry"


def test_env_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = resolve("env:MAILGATE_TOKEN", env={"MAILGATE_TOKEN": "tok-env-1\n\n"})
    assert secret.reveal() == "tok-env-1\n"  # exactly one trailing newline is stripped
    assert secret.reference == "env:MAILGATE_TOKEN"
    monkeypatch.setenv("MAILGATE_TOKEN_2", "tok-env-2")
    assert resolve("env:MAILGATE_TOKEN_2").reveal() == "tok-env-2"


def test_env_reference_missing_or_empty() -> None:
    assert "variable NOPE is not set" in _error("env:NOPE", env={})
    assert _error("env:EMPTY", env={"EMPTY": "\n"}).endswith("resolved to an empty value; check the item")


def test_unsupported_reference() -> None:
    assert "use op://vault/item/field or env:NAME" in _error("vault/item/field", env={})


def test_op_read_is_used_and_one_newline_stripped(tmp_path: Path) -> None:
    env = _fake_op(tmp_path, "printf 'tok-op-1\\n'")
    secret = resolve(REF, env=env)
    assert secret.reveal() == "tok-op-1"
    assert (tmp_path / "argv").read_text().splitlines() == ["read", REF]


def test_op_not_on_path(tmp_path: Path) -> None:
    assert "install the 1Password CLI or put `op` on PATH" in _error(REF, env={"PATH": str(tmp_path)})


def test_op_failure_shows_its_last_stderr_line_redacted(tmp_path: Path) -> None:
    Secret("env:LEAK", "tok-leaked-in-stderr")
    env = _fake_op(tmp_path, 'echo first >&2; echo "[ERROR] not signed in (tok-leaked-in-stderr)" >&2; exit 1')
    message = _error(REF, env=env)
    assert "`op read` exited 1: [ERROR] not signed in (****)" in message
    assert "run `op signin`" in message
    assert "tok-leaked-in-stderr" not in message
    assert "first" not in message


def test_op_timeout_kills_op_and_its_children(tmp_path: Path) -> None:
    env = _fake_op(tmp_path, "sleep 30; echo late")
    started = time.monotonic()
    message = _error(REF, env=env, timeout=0.3)
    assert time.monotonic() - started < 5
    assert "gave no answer within 0.3 s" in message


def test_op_empty_value(tmp_path: Path) -> None:
    env = _fake_op(tmp_path, "echo")
    assert _error(REF, env=env).endswith("resolved to an empty value; check the item")


def test_messages_never_hold_the_value(tmp_path: Path) -> None:
    value = "tok-value-never-shown"
    env = _fake_op(tmp_path, f"echo {value}; echo {value} >&2; exit 2")
    message = _error(REF, env=env)
    assert "exited 2" in message
    assert value not in message  # what op printed on stdout is masked in its stderr line too
