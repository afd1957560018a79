"""Credential resolution (`op read`, `env:NAME`) and a Secret that never prints its value.

Every Secret registers its value in a process-wide set; `redact`/`redact_bytes` scrub those values
(and their base64 and URL-encoded forms) from any text before it is logged or reported.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Mapping
from typing import NoReturn
from urllib.parse import quote, quote_plus

MASK = "****"


class CredentialError(Exception):
    """A credential reference that could not be resolved; the message is one line for the operator."""


class Secret:
    """A credential value that shows only its reference in str, repr, format and tracebacks."""

    __slots__ = ("_reference", "_value")

    def __init__(self, reference: str, value: str) -> None:
        if not value:
            raise ValueError(f"{reference}: a Secret needs a non-empty value")
        self._reference = reference
        self._value = value
        _REGISTRY.add(value)

    @property
    def reference(self) -> str:
        """Where the value came from (`op://…` or `env:NAME`); safe to print."""
        return self._reference

    def reveal(self) -> str:
        """The value itself: pass it to the one place that needs it, never to a message."""
        _REGISTRY.add(self._value)
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self._reference}: {MASK})"

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{self!r} cannot be pickled: a secret must not leave the process")

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        self.__reduce__()

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: object) -> Secret:
        return self


def known_secrets() -> frozenset[str]:
    """Every secret value this process has held."""
    return _REGISTRY.values()


def redact(text: str) -> str:
    """`text` with every known secret, plain, base64 (std/urlsafe, ±padding) or URL-encoded, replaced by ****."""
    patterns = _REGISTRY.patterns()
    return patterns[0].sub(MASK, text) if patterns is not None else text


def redact_bytes(data: bytes) -> bytes:
    """`redact` for bytes (the UTF-8 forms of the secrets)."""
    patterns = _REGISTRY.patterns()
    return patterns[1].sub(MASK.encode(), data) if patterns is not None else data


def resolve(reference: str, *, env: Mapping[str, str] | None = None, timeout: float = 30) -> Secret:
    """Resolve `op://vault/item/field` (with `op read`) or `env:NAME` into a Secret.

    `env` is the environment to use (default: os.environ): `env:NAME` reads it, and `op` is found on
    its PATH and runs with it. Any failure raises CredentialError with one line naming the reference.
    """
    environ = dict(os.environ if env is None else env)
    if reference.startswith("env:"):
        name = reference[4:]
        if name not in environ:
            _fail(reference, f"variable {name} is not set; export it or change the credential reference")
        value = environ[name]
    elif reference.startswith("op://"):
        value = _op_read(reference, environ, timeout)
    else:
        _fail(reference, "unsupported credential reference; use op://vault/item/field or env:NAME")
    if value.endswith("\r\n"):
        value = value[:-2]
    elif value.endswith("\n"):
        value = value[:-1]
    if not value:
        _fail(reference, "resolved to an empty value; check the item")
    return Secret(reference, value)


def _op_read(reference: str, environ: dict[str, str], timeout: float) -> str:
    op = shutil.which("op", path=environ.get("PATH", os.defpath))
    if op is None:
        _fail(reference, "`op` is not on PATH; install the 1Password CLI or put `op` on PATH")
    try:
        proc = subprocess.Popen(
            [op, "read", reference],
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        _fail(reference, f"cannot run {op}: {exc.strerror}; reinstall the 1Password CLI")
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        _fail(reference, f"`op read` gave no answer within {timeout:g} s; unlock 1Password or run `op signin`, retry")
    if proc.returncode != 0:
        said = _last_line(stderr, stdout)
        _fail(reference, f"`op read` exited {proc.returncode}{said}; run `op signin` and check the reference")
    try:
        return stdout.decode("utf-8")
    except UnicodeDecodeError:
        _fail(reference, "`op read` printed a value that is not UTF-8 text; check the item's field")


def _last_line(stderr: bytes, stdout: bytes) -> str:
    """ ": <op's last stderr line>", known secrets and anything op printed on stdout masked."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    if not lines:
        return " with no message"
    last = redact(lines[-1])
    printed = stdout.decode("utf-8", "replace").strip()
    return f": {last.replace(printed, MASK) if printed else last}"


def _fail(reference: str, what: str) -> NoReturn:
    raise CredentialError(f"credential {reference}: {what}")


class _Registry:
    """The process-wide set of secret values, with the patterns that find them (rebuilt on change)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: set[str] = set()
        self._patterns: tuple[re.Pattern[str], re.Pattern[bytes]] | None = None

    def add(self, value: str) -> None:
        with self._lock:
            if value not in self._known:
                self._known.add(value)
                self._patterns = None

    def values(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._known)

    def patterns(self) -> tuple[re.Pattern[str], re.Pattern[bytes]] | None:
        with self._lock:
            if self._patterns is None and self._known:
                forms = sorted({form for value in self._known for form in _forms(value)}, key=len, reverse=True)
                self._patterns = (
                    re.compile("|".join(map(re.escape, forms))),
                    re.compile(b"|".join(re.escape(form.encode()) for form in forms)),
                )
            return self._patterns


def _forms(value: str) -> set[str]:
    raw = value.encode()
    forms = {value, quote(value), quote(value, safe=""), quote_plus(value), quote_plus(value, safe="")}
    forms |= {_lower_escapes(form) for form in list(forms)}
    for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        forms |= {encoded, encoded.rstrip("=")}
    return {form for form in forms if form}


def _lower_escapes(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda match: match.group(0).lower(), text)


_REGISTRY = _Registry()
