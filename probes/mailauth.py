"""SPF, DMARC and DKIM records: find the one record among a name's TXT values, and parse it.

Pure functions over TXT values (bytes, each already joined from its strings). The rules follow
RFC 7208 (SPF), RFC 7489 (DMARC) and RFC 6376 (DKIM) as checkdmarc applies them. Every record
carries `problems`: one sentence each, naming the record and the term at fault; none means valid.
"""

from __future__ import annotations

import binascii
import functools
import ipaddress
import re
from base64 import b64decode, b64encode
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import dns.exception
import dns.name

SPF_LOOKUP_LIMIT = 10
POLICIES = ("none", "quarantine", "reject")
RSA_MIN_BITS = 1024  # RFC 8301 §3.2: verifiers MUST NOT accept signatures by smaller keys
RSA_GOOD_BITS = 2048  # RFC 8301 §3.2: signers SHOULD use keys of at least 2048 bits

_SPF_MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
_SPF_LOOKUPS = frozenset({"include", "a", "mx", "ptr", "exists", "redirect"})
_SPF_TERM = re.compile(r"([+\-~?]?)([A-Za-z][A-Za-z0-9_.-]*)(.*)", re.S)
_MACRO = r"%\{[SLODIPHCRTVslodiphcrtv]\d*[Rr]?[.\-+,/_=]*\}|%%|%_|%-"
_TOPLABEL = r"(?:[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_DOMAIN_SPEC = re.compile(rf"(?:{_MACRO}|[\x21-\x24\x26-\x7e])*(?:\.{_TOPLABEL}\.?|{_MACRO})")
_DUAL_CIDR = re.compile(r"(?::(?P<domain>[^/]+))?(?:/(?P<v4>0|[1-9]\d?))?(?://(?P<v6>0|[1-9]\d{0,2}))?")
_DMARC_VERSION = re.compile(r"[Vv]\s*=\s*DMARC1\s*(?:;|$)")
_TAG = re.compile(r"\s*([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*?)\s*", re.S)
_URI = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(.+?)(?:!(\d+[kmgtKMGT]?))?")
_MAILBOX = re.compile(r"[^@\s]+@[^@\s]+")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_DKIM_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9]*")  # hash-alg, flag (RFC 6376 §3.6.1, hyphen-less tokens)
_DKIM_SERVICE = re.compile(r"\*|[A-Za-z0-9]+")  # key-s-type: "*" or a token (RFC 6376 §3.6.1)
_SELECTOR_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?")
_DMARC_CHOICES = {
    "p": POLICIES,
    "sp": POLICIES,
    "np": POLICIES,
    "adkim": ("r", "s"),
    "aspf": ("r", "s"),
    "t": ("y", "n"),
    "psd": ("y", "n", "u"),
}
_DMARC_TAGS = frozenset({*_DMARC_CHOICES, "v", "rua", "ruf", "pct", "fo", "rf", "ri"})


@dataclass(frozen=True)
class Found:
    """The one record of a kind among the TXT values at a name, or why there is not exactly one."""

    name: str
    kind: str  # "SPF", "DMARC" or "DKIM"
    text: str | None  # the record, when exactly one was found (invalid UTF-8 shown as U+FFFD)
    others: tuple[str, ...]  # the name's other TXT values
    problems: tuple[str, ...]


@dataclass(frozen=True)
class SpfTerm:
    """One term after `v=spf1`: a mechanism (with its qualifier) or a modifier (qualifier "")."""

    text: str  # as written
    qualifier: str  # "+", "-", "~", "?" for mechanisms ("+" when not written); "" for modifiers
    name: str  # lower case: "include", "ip4", "all", "redirect", an unknown modifier's name, ...
    value: str  # what follows ":" or "=" (a CIDR suffix included, e.g. "/24" for a/24); "" when nothing
    modifier: bool


@dataclass(frozen=True)
class SpfRecord:
    """A parsed SPF record; `dns_lookups` counts this record's own terms (probes/spf.py follows the includes)."""

    name: str
    text: str | None
    terms: tuple[SpfTerm, ...]
    includes: tuple[str, ...]  # include: domains, lower case, without a trailing dot
    redirect: str | None
    dns_lookups: int
    all_qualifier: str | None  # the qualifier of the last mechanism when that mechanism is `all`
    problems: tuple[str, ...]

    @property
    def ends_with_all(self) -> bool:
        return self.all_qualifier is not None


@dataclass(frozen=True)
class ReportUri:
    """One `rua`/`ruf` destination."""

    uri: str  # as written, e.g. "mailto:dmarc@example.com!10m"
    scheme: str  # lower case
    address: str  # for mailto the mailbox, else the URI without its size
    size: str | None  # the `!size` limit, e.g. "10m"


@dataclass(frozen=True)
class DmarcRecord:
    """A parsed DMARC record; defaults applied (sp from p, pct 100, alignment relaxed)."""

    name: str
    text: str | None
    tags: tuple[tuple[str, str], ...]  # (lower-case tag, value as written), in record order
    policy: str | None
    subdomain_policy: str | None
    pct: int
    adkim: str
    aspf: str
    rua: tuple[ReportUri, ...]
    ruf: tuple[ReportUri, ...]
    unknown_tags: tuple[str, ...]  # ignored, as RFC 7489 requires
    problems: tuple[str, ...]

    @property
    def rua_mailboxes(self) -> tuple[str, ...]:
        """The aggregate-report mailboxes, lower case."""
        return tuple(uri.address.lower() for uri in self.rua if uri.scheme == "mailto")


@dataclass(frozen=True)
class DkimRecord:
    """A parsed DKIM key record (RFC 6376 §3.6.1), its key decoded (RFC 8301 sizes, RFC 8463 Ed25519)."""

    name: str
    text: str | None
    tags: tuple[tuple[str, str], ...]  # (tag, value with surrounding whitespace removed), in record order
    version: str | None
    key_type: str  # k= as written; "rsa" when absent
    public_key: str  # p= with all whitespace removed, case kept; "" when revoked or missing
    revoked: bool  # p= present and empty
    problems: tuple[str, ...]
    key_bits: int | None = None  # RSA modulus size, or 256 for Ed25519; None when the key did not decode
    flags: tuple[str, ...] = ()  # t= flags, lower case ("y" testing, "s" strict)
    notes: tuple[str, ...] = ()  # evidence that is not a failure (an RSA key under 2048 bits)

    @property
    def key_summary(self) -> str:
        """'RSA 1024 bits', 'Ed25519', or why there is no key."""
        if self.revoked:
            return "revoked (empty p=)"
        if self.key_bits is None:
            return "no usable key"
        return "Ed25519" if self.key_type == "ed25519" else f"RSA {self.key_bits} bits"


def decode_txt(value: bytes) -> tuple[str, bool]:
    """A TXT value as text, and whether it was valid UTF-8 (invalid bytes become U+FFFD)."""
    try:
        return value.decode("utf-8"), True
    except UnicodeDecodeError:
        return value.decode("utf-8", errors="replace"), False


def compact(value: str) -> str:
    """A key with every whitespace character removed (how DKIM keys compare)."""
    return "".join(value.split())


def show(text: str, limit: int = 80) -> str:
    """Text quoted for a message, shortened in the middle when long."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[: limit - 20]!r}…{text[-12:]!r} ({len(text)} chars)"


def is_spf(text: str) -> bool:
    """Whether a TXT value is an SPF record: `v=spf1` then a space or the end (RFC 7208 §4.5)."""
    head = text[:7].lower()
    return head in {"v=spf1", "v=spf1 "}


def is_dmarc(text: str) -> bool:
    """Whether a TXT value is a DMARC record: first tag `v=DMARC1` (value case-sensitive)."""
    return _DMARC_VERSION.match(text) is not None


def select_spf(name: str, values: Sequence[bytes]) -> Found:
    """Exactly one SPF record must be among the TXT values at `name` (two are a PermError)."""
    texts, matches, others = _split(values, is_spf)
    problems = _utf8_problems(name, "SPF", values, matches)
    near = [t for t in others if t[:6].lower() == "v=spf1"]
    problems += [
        f"SPF at {name}: TXT value {show(t)} starts with v=spf1 but no space follows, so receivers "
        "discard it (RFC 7208 §4.5); put a space after v=spf1"
        for t in near
    ]
    if not matches:
        problems.insert(0, f"no SPF record at {name}: {_seen(texts)}; publish one TXT value starting 'v=spf1 '")
    elif len(matches) > 1:
        problems.insert(
            0,
            f"{len(matches)} SPF records at {name} ({', '.join(show(texts[i]) for i in matches)}); "
            "RFC 7208 §4.5 makes that a PermError: merge them into one",
        )
    return _found(name, "SPF", (texts, matches, others), problems)


def select_dmarc(name: str, values: Sequence[bytes]) -> Found:
    """Exactly one DMARC record, and nothing else, must be the TXT values at `name` (`_dmarc.<zone>`)."""
    texts, matches, others = _split(values, is_dmarc)
    problems = _utf8_problems(name, "DMARC", values, matches)
    for text in others:
        if is_spf(text):
            problems.append(f"DMARC at {name}: an SPF record {show(text)} is here, where only DMARC belongs; remove it")
        elif text.lstrip()[:7].lower() == "v=dmarc":
            problems.append(
                f"DMARC at {name}: TXT value {show(text)} is not a DMARC record: it must start with "
                "exactly v=DMARC1 (upper-case value, no leading space)"
            )
        else:
            problems.append(f"DMARC at {name}: unrelated TXT value {show(text)}; receivers may reject it, remove it")
    if not matches:
        problems.insert(0, f"no DMARC record at {name}: {_seen(texts)}; publish one TXT value 'v=DMARC1; p=…'")
    elif len(matches) > 1:
        problems.insert(
            0,
            f"{len(matches)} DMARC records at {name} ({', '.join(show(texts[i]) for i in matches)}); "
            "receivers then apply no DMARC at all (RFC 7489 §6.6.3): keep one",
        )
    return _found(name, "DMARC", (texts, matches, others), problems)


def select_dkim(name: str, values: Sequence[bytes]) -> Found:
    """Exactly one TXT value, the key record, must be at a DKIM selector name."""
    texts, matches, others = _split(values, lambda _text: True)
    problems = _utf8_problems(name, "DKIM", values, matches)
    if not matches:
        problems.insert(0, f"no DKIM key at {name}: no TXT value there; publish the key record")
    elif len(matches) > 1:
        problems.insert(
            0,
            f"{len(matches)} TXT values at {name} ({', '.join(show(t) for t in texts)}); "
            "a DKIM selector holds exactly one key record: keep one",
        )
    return _found(name, "DKIM", (texts, matches, others), problems)


def read_spf(name: str, values: Sequence[bytes]) -> SpfRecord:
    """The SPF record among the TXT values at `name`, parsed; selection problems first (no text: none)."""
    found = select_spf(name, values)
    if found.text is None:
        return SpfRecord(name, None, (), (), None, 0, None, found.problems)
    record = parse_spf(found.text, name)
    return replace(record, problems=found.problems + record.problems)


def read_dmarc(name: str, values: Sequence[bytes]) -> DmarcRecord:
    """The DMARC record among the TXT values at `name`, parsed; selection problems first (no text: none)."""
    found = select_dmarc(name, values)
    if found.text is None:
        return DmarcRecord(name, None, (), None, None, 100, "r", "r", (), (), (), found.problems)
    record = parse_dmarc(found.text, name)
    return replace(record, problems=found.problems + record.problems)


def read_dkim(name: str, values: Sequence[bytes]) -> DkimRecord:
    """The DKIM key record at the selector name `name`, parsed; selection problems first (no text: none)."""
    found = select_dkim(name, values)
    if found.text is None:
        return DkimRecord(name, None, (), None, "rsa", "", False, found.problems)
    record = parse_dkim(found.text, name)
    return replace(record, problems=found.problems + record.problems)


def parse_spf(text: str, name: str = "") -> SpfRecord:
    """Parse one SPF record (`v=spf1 …`): terms, includes, DNS lookups, the final `all`."""
    where = f"SPF at {name}" if name else "SPF"
    if not is_spf(text):
        problem = f"{where}: {show(text)} does not start with 'v=spf1' followed by a space or the end"
        return SpfRecord(name, text, (), (), None, 0, None, (problem,))
    terms: list[SpfTerm] = []
    problems: list[str] = []
    for raw in text[6:].split():
        term, why = _spf_term(raw)
        if why:
            problems.append(f"{where}: term {raw!r} {why}")
        elif term:
            terms.append(term)
    mechanisms = [t for t in terms if not t.modifier]
    for modifier in ("redirect", "exp"):
        if sum(t.name == modifier for t in terms) > 1:
            problems.append(f"{where}: {modifier}= appears more than once (RFC 7208 §6 PermError); keep one")
    all_at = next((i for i, t in enumerate(mechanisms) if t.name == "all"), None)
    if all_at is not None and all_at < len(mechanisms) - 1:
        after = " ".join(t.text for t in mechanisms[all_at + 1 :])
        problems.append(f"{where}: mechanisms after 'all' are never evaluated ({after}); move them before 'all'")
    redirect = next((t.value for t in terms if t.name == "redirect"), None)
    if redirect is not None and all_at is not None:
        problems.append(f"{where}: redirect={redirect} is ignored because the record has an 'all' mechanism")
    # the limit of 10 applies to the whole evaluated tree, includes included: probes/spf.py judges it
    lookups = sum(t.name in _SPF_LOOKUPS for t in terms)
    last = mechanisms[-1] if mechanisms else None
    return SpfRecord(
        name=name,
        text=text,
        terms=tuple(terms),
        includes=tuple(t.value.lower().rstrip(".") for t in terms if t.name == "include"),
        redirect=redirect,
        dns_lookups=lookups,
        all_qualifier=last.qualifier if last is not None and last.name == "all" else None,
        problems=tuple(problems),
    )


def parse_dmarc(text: str, name: str = "") -> DmarcRecord:
    """Parse one DMARC record: `v=DMARC1` first, tags `name=value` separated by `;`, `p=` required."""
    where = f"DMARC at {name}" if name else "DMARC"
    tags, problems = _tag_list(text, where, dkim=False)
    values = dict(tags)
    if text[:1].isspace():
        problems.append(f"{where}: the record starts with whitespace; it must start with v=DMARC1")
    if not tags or tags[0] != ("v", "DMARC1"):
        first = f"{tags[0][0]}={tags[0][1]}" if tags else text
        problems.append(f"{where}: the first tag must be v=DMARC1, seen {show(first)}")
    for tag, value in tags:
        if tag in _DMARC_CHOICES and value.lower() not in _DMARC_CHOICES[tag]:
            problems.append(f"{where}: {tag}={value!r} is not one of {', '.join(_DMARC_CHOICES[tag])}")
    if "p" not in values:
        problems.append(f"{where}: no p= tag (required); add p=none, p=quarantine or p=reject")
    pct = _dmarc_pct(values.get("pct"), where, problems)
    _dmarc_lists(values, where, problems)
    rua = _report_uris("rua", values.get("rua"), where, problems)
    ruf = _report_uris("ruf", values.get("ruf"), where, problems)
    policy = _choice(values, "p")
    return DmarcRecord(
        name=name,
        text=text,
        tags=tuple(tags),
        policy=policy,
        subdomain_policy=_choice(values, "sp") or policy,
        pct=pct,
        adkim=_choice(values, "adkim") or "r",
        aspf=_choice(values, "aspf") or "r",
        rua=rua,
        ruf=ruf,
        unknown_tags=tuple(tag for tag, _ in tags if tag not in _DMARC_TAGS),
        problems=tuple(problems),
    )


def parse_dkim(text: str, name: str = "") -> DkimRecord:
    """Parse one DKIM key record (`v=DKIM1; k=rsa; p=…`) as a verifier reads it (RFC 6376 §3.6.1).

    Empty p= is revoked, missing p= malformed; the key must decode as its k= type says (RSA: DER, at least
    1024 bits by RFC 8301; Ed25519: 32 raw bytes by RFC 8463 §4.2); t=y, and h=/s= lists a verifier cannot
    use for email, make the key unusable.
    """
    where = f"DKIM at {name}" if name else "DKIM"
    tags, problems = _tag_list(text, where, dkim=True)
    values = dict(tags)
    version = values.get("v")
    if version is not None and (tags[0][0] != "v" or version != "DKIM1"):
        seen = f"v={version!r}" + ("" if tags[0][0] == "v" else f" after {tags[0][0]}=")
        problems.append(
            f"{where}: v= must be the first tag and exactly DKIM1, seen {seen} (RFC 6376 §3.6.1); "
            "put v=DKIM1 first or drop it"
        )
    key_type = values.get("k", "rsa")
    if key_type not in ("rsa", "ed25519"):
        problems.append(f"{where}: k={values['k']!r} is not a known key type (rsa, ed25519; RFC 6376 §3.6.1, RFC 8463)")
    problems += _dkim_lists(values, where)
    flags = tuple(f.strip().lower() for f in values.get("t", "").split(":") if f.strip())
    key = compact(values.get("p", ""))
    bits: int | None = None
    notes: list[str] = []
    if "p" not in values:
        problems.append(f"{where}: no p= tag; the key record is malformed (RFC 6376 §3.6.1 requires p=)")
    elif not key:
        problems.append(f"{where}: the key is revoked (empty p=); publish the current public key")
    elif not _is_base64(key):
        problems.append(f"{where}: p= is not valid base64 ({show(key, 60)})")
    elif key_type in ("rsa", "ed25519"):
        bits, problem = key_size(key_type, key)
        if problem:
            problems.append(f"{where}: {problem}")
        elif key_type == "rsa" and bits is not None and bits < RSA_MIN_BITS:
            problems.append(
                f"{where}: the RSA key has {bits} bits; RFC 8301 §3.2 forbids verifiers to accept keys under "
                f"{RSA_MIN_BITS} bits, so receivers treat the mail as unsigned: issue a new key (rotate DKIM)"
            )
        elif key_type == "rsa" and bits is not None and bits < RSA_GOOD_BITS:
            notes.append(f"RSA key of {bits} bits: accepted, under the {RSA_GOOD_BITS} bits RFC 8301 §3.2 recommends")
    return DkimRecord(
        name=name,
        text=text,
        tags=tuple(tags),
        version=version,
        key_type=key_type,
        public_key=key,
        revoked="p" in values and not key,
        problems=tuple(problems),
        key_bits=bits,
        flags=flags,
        notes=tuple(notes),
    )


def selector_problem(selector: str) -> str | None:
    """Why `selector` is not a DKIM selector (RFC 6376 §3.1: dot-separated sub-domains, so
    `20150316104110.pm` is one); None when it is."""
    labels = selector.split(".")
    if not selector or len(selector) > 200 or not all(_SELECTOR_LABEL.fullmatch(label) for label in labels):
        return (
            f"selector {selector!r} is not a DKIM selector: labels of letters, digits and inner hyphens separated "
            "by dots, like 20260526234343pm or 20150316104110.pm (RFC 6376 §3.1)"
        )
    return None


@functools.lru_cache(maxsize=256)
def key_size(key_type: str, key: str) -> tuple[int | None, str | None]:
    """The size in bits of a base64 DKIM public key, or why it does not decode as `key_type`."""
    raw = b64decode(key)
    if key_type == "ed25519":
        # RFC 8463 §4.2: p= is the base64 of the raw 32-byte Ed25519 public key, not a DER structure
        if len(raw) != 32:
            return None, f"k=ed25519 needs p= to be 32 raw bytes (RFC 8463 §4.2), seen {len(raw)} bytes"
        return 256, None
    # imported here: only a run that judges a key pays for loading the library
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        public = serialization.load_der_public_key(raw)  # SubjectPublicKeyInfo, what every signer publishes
    except ValueError:
        try:  # RFC 6376 §3.6.1 also names the bare RSAPublicKey (PKCS#1), which verifiers accept
            pem = b"-----BEGIN RSA PUBLIC KEY-----\n" + b64encode(raw) + b"\n-----END RSA PUBLIC KEY-----\n"
            public = serialization.load_pem_public_key(pem)
        except ValueError:
            return None, f"p= does not decode as an RSA public key (DER SubjectPublicKeyInfo) ({show(key, 60)})"
    if not isinstance(public, rsa.RSAPublicKey):
        return None, f"p= holds a {type(public).__name__.removeprefix('_')} key, not the RSA key k=rsa says"
    return public.key_size, None


def _dkim_lists(values: dict[str, str], where: str) -> list[str]:
    """h=, s= and t= of a key record (RFC 6376 §3.6.1): colon lists that must still let email be verified."""
    problems: list[str] = []
    lists: dict[str, list[str]] = {
        tag: [v.strip() for v in values[tag].split(":")] for tag in ("h", "s", "t") if tag in values
    }
    for tag, pattern in (("h", _DKIM_TOKEN), ("s", _DKIM_SERVICE), ("t", _DKIM_TOKEN)):
        bad = [v for v in lists.get(tag, []) if not pattern.fullmatch(v)]
        if bad:
            problems.append(f"{where}: {tag}={values[tag]!r} is not a colon-separated list of tokens (RFC 6376 §3.6.1)")
            lists.pop(tag)
    hashes = [h.lower() for h in lists.get("h", [])]
    if hashes and "sha256" not in hashes:
        problems.append(
            f"{where}: h={values['h']} allows no sha256; RFC 8301 §3.1 forbids verifiers to accept rsa-sha1, so no "
            "signature can pass: add sha256 (h=sha256) or drop h="
        )
    services = [v.lower() for v in lists.get("s", [])]
    if services and not {"*", "email"} & set(services):
        problems.append(
            f"{where}: s={values['s']} does not include email or *, so the key may not be used for mail "
            "(RFC 6376 §3.6.1): drop s= or write s=email"
        )
    if "y" in (f.lower() for f in lists.get("t", [])):
        problems.append(
            f"{where}: t=y marks the domain as testing DKIM; receivers treat its mail as unsigned "
            "(RFC 6376 §3.6.1): remove the y flag"
        )
    return problems


def _split(values: Sequence[bytes], matches: Callable[[str], bool]) -> tuple[list[str], list[int], list[str]]:
    texts = [decode_txt(v)[0] for v in values]
    hits = [i for i, t in enumerate(texts) if matches(t)]
    return texts, hits, [t for i, t in enumerate(texts) if i not in hits]


def _utf8_problems(name: str, kind: str, values: Sequence[bytes], matches: list[int]) -> list[str]:
    return [
        f"{kind} at {name}: TXT value {show(decode_txt(values[i])[0])} is not valid UTF-8 (shown with U+FFFD); "
        "republish it as plain ASCII"
        for i in matches
        if not decode_txt(values[i])[1]
    ]


def _seen(texts: list[str]) -> str:
    if not texts:
        return "the name has no TXT values"
    return f"its {len(texts)} TXT value(s) are {', '.join(show(t) for t in texts)}"


def _found(name: str, kind: str, split: tuple[list[str], list[int], list[str]], problems: list[str]) -> Found:
    texts, hits, others = split
    text = texts[hits[0]] if len(hits) == 1 else None
    return Found(name=name, kind=kind, text=text, others=tuple(others), problems=tuple(problems))


def _spf_term(raw: str) -> tuple[SpfTerm | None, str | None]:
    """One term, or the reason it is a syntax error (a phrase following the quoted term)."""
    match = _SPF_TERM.fullmatch(raw)
    if match is None:
        return None, "is not a mechanism or name=value modifier"
    qualifier, name, rest = match.group(1), match.group(2).lower(), match.group(3)
    if rest.startswith("="):
        if name in _SPF_MECHANISMS:
            return None, f"uses '=' after the mechanism {name}; write {name}:{rest[1:]}"
        if qualifier:
            return None, "is a modifier, which takes no qualifier"
        value = rest[1:]
        if name in ("redirect", "exp") and not _DOMAIN_SPEC.fullmatch(value):
            return None, f"needs a domain name after {name}="
        return SpfTerm(raw, "", name, value, modifier=True), None
    if name not in _SPF_MECHANISMS:
        return None, f"is not a mechanism ({', '.join(sorted(_SPF_MECHANISMS))}) nor a name=value modifier"
    problem = _mechanism_value_problem(name, rest)
    if problem:
        return None, problem
    value = rest[1:] if rest.startswith(":") else rest
    return SpfTerm(raw, qualifier or "+", name, value, modifier=False), None


def _mechanism_value_problem(name: str, rest: str) -> str | None:
    if name == "all":
        return None if not rest else "takes no value: write all, -all, ~all or ?all"
    if name in ("include", "exists"):
        ok = rest.startswith(":") and _DOMAIN_SPEC.fullmatch(rest[1:]) is not None
        return None if ok else f"needs a domain name: {name}:example.com"
    if name == "ptr":
        ok = not rest or (rest.startswith(":") and _DOMAIN_SPEC.fullmatch(rest[1:]) is not None)
        return None if ok else "takes an optional domain name: ptr or ptr:example.com"
    if name in ("a", "mx"):
        cidr = _DUAL_CIDR.fullmatch(rest)
        ok = cidr is not None and int(cidr["v4"] or 0) <= 32 and int(cidr["v6"] or 0) <= 128
        domain = cidr["domain"] if cidr is not None else None
        ok = ok and (domain is None or _DOMAIN_SPEC.fullmatch(domain) is not None)
        return None if ok else f"is not {name}[:domain][/0-32][//0-128]"
    return _ip_problem(name, rest)


def _ip_problem(name: str, rest: str) -> str | None:
    version, bits = (4, 32) if name == "ip4" else (6, 128)
    address, _, length = rest[1:].partition("/")
    try:
        valid = rest.startswith(":") and ipaddress.ip_address(address).version == version
    except ValueError:
        valid = False
    if valid and length:
        valid = length.isdigit() and length == str(int(length)) and int(length) <= bits
    return None if valid else f"needs an IPv{version} address with an optional /0-{bits} prefix"


def _tag_list(text: str, where: str, *, dkim: bool) -> tuple[list[tuple[str, str]], list[str]]:
    """`name=value` tags separated by `;` (a trailing `;` allowed); duplicates and junk are problems.

    DMARC tag names fold to lower case and need a value; DKIM tag names are case-sensitive and may
    have an empty value (RFC 6376 §3.2).
    """
    parts = text.split(";")
    if len(parts) > 1 and not parts[-1].strip():
        parts.pop()
    tags: list[tuple[str, str]] = []
    problems: list[str] = []
    seen: set[str] = set()
    for part in parts:
        match = _TAG.fullmatch(part)
        if not part.strip():
            problems.append(f"{where}: an empty tag (a ';' with nothing before it); remove the extra ';'")
            continue
        if match is None:
            problems.append(f"{where}: {show(part.strip())} is not a tag=value pair")
            continue
        tag, value = match.group(1) if dkim else match.group(1).lower(), match.group(2)
        if tag in seen:
            problems.append(f"{where}: tag {tag}= appears more than once, which makes the record invalid; keep one")
            continue
        seen.add(tag)
        if not value and not dkim:
            problems.append(f"{where}: tag {tag}= has an empty value")
        elif not all(" " <= ch <= "~" for ch in value.replace("\t", " ").replace("\r\n", " ")):
            problems.append(f"{where}: tag {tag}= holds characters outside printable ASCII ({show(value, 60)})")
        tags.append((tag, value))
    return tags, problems


def _choice(values: dict[str, str], tag: str) -> str | None:
    value = values.get(tag, "").lower()
    return value if value in _DMARC_CHOICES[tag] else None


def _dmarc_pct(value: str | None, where: str, problems: list[str]) -> int:
    if value is None:
        return 100
    if value.isdigit() and int(value) <= 100:
        return int(value)
    problems.append(f"{where}: pct={value!r} is not a whole number from 0 to 100")
    return 100


def _dmarc_lists(values: dict[str, str], where: str, problems: list[str]) -> None:
    fo = values.get("fo")
    if fo is not None and any(part.strip().lower() not in ("0", "1", "d", "s") for part in fo.split(":")):
        problems.append(f"{where}: fo={fo!r} must be a colon list of 0, 1, d, s")
    ri = values.get("ri")
    if ri is not None and not (ri.isdigit() and int(ri) < 2**32):
        problems.append(f"{where}: ri={ri!r} must be a number of seconds")


def is_name(text: str) -> bool:
    """Whether `text` is a DNS name (RFC 1035 §2.3.4: no empty label, labels of at most 63 octets, 255 in all):
    what a record or an API answer names is not trusted to be one."""
    if not text.strip("."):
        return False
    try:
        dns.name.from_text(text)
    except dns.exception.DNSException:
        return False
    return True


def _report_uris(tag: str, value: str | None, where: str, problems: list[str]) -> tuple[ReportUri, ...]:
    if not value:
        return ()
    uris: list[ReportUri] = []
    for raw in value.split(","):
        uri = raw.strip()
        match = _URI.fullmatch(uri)
        if match is None:
            problems.append(f"{where}: {tag} entry {show(uri)} is not a URI like mailto:reports@example.com")
            continue
        scheme, address, size = match.group(1).lower(), match.group(2), match.group(3)
        if scheme == "mailto" and not _MAILBOX.fullmatch(address):
            problems.append(f"{where}: {tag} entry {show(uri)} has no mailbox (mailto:name@domain)")
            continue
        if scheme == "mailto" and not is_name(address.rsplit("@", 1)[1]):
            # no mail can reach a domain that DNS cannot name (RFC 7489 §7.1 looks it up, RFC 5321 §2.3.5)
            problems.append(f"{where}: {tag} entry {show(uri)}: its domain is not a DNS name; no report reaches it")
            continue
        uris.append(ReportUri(uri, scheme, address if scheme == "mailto" else f"{scheme}:{address}", size))
    return tuple(uris)


def _is_base64(key: str) -> bool:
    if not _BASE64.fullmatch(key) or len(key) % 4:
        return False
    try:
        b64decode(key, validate=True)
    except binascii.Error:
        return False
    return True
