"""SPF, DMARC and DKIM record rules (probes.mailauth): selection at a name, parsing, problems."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from probes.mailauth import (
    SPF_LOOKUP_LIMIT,
    compact,
    decode_txt,
    parse_dkim,
    parse_dmarc,
    parse_spf,
    read_dkim,
    read_dmarc,
    read_spf,
    select_dmarc,
    select_spf,
    selector_problem,
)

ZONE = "dev.ardamails.com"
DMARC = f"_dmarc.{ZONE}"
SELECTOR = f"20260526234343pm._domainkey.{ZONE}"


def _one(problems: tuple[str, ...], *fragments: str) -> str:
    """The single problem, checked to contain every fragment."""
    assert len(problems) == 1, problems
    for fragment in fragments:
        assert fragment in problems[0], (fragment, problems[0])
    return problems[0]


# --- SPF ---------------------------------------------------------------------------------------


def test_spf_production_record_parses_with_its_include_and_hard_fail() -> None:
    spf = read_spf(ZONE, [b"google-site-verification=abc", b"v=spf1 include:spf.mtasv.net -all"])
    assert spf.problems == ()
    assert spf.text == "v=spf1 include:spf.mtasv.net -all"
    assert spf.includes == ("spf.mtasv.net",)
    assert spf.dns_lookups == 1
    assert spf.all_qualifier == "-"
    assert spf.ends_with_all


def test_spf_version_and_mechanisms_are_case_insensitive_and_includes_normalised() -> None:
    spf = parse_spf("V=SPF1 INCLUDE:Spf.Mtasv.Net. IP4:192.0.2.0/24 ~ALL", ZONE)
    assert spf.problems == ()
    assert spf.includes == ("spf.mtasv.net",)
    assert [(t.qualifier, t.name, t.value) for t in spf.terms] == [
        ("+", "include", "Spf.Mtasv.Net."),
        ("+", "ip4", "192.0.2.0/24"),
        ("~", "all", ""),
    ]
    assert spf.all_qualifier == "~"


def test_spf_bare_version_is_valid_but_does_not_end_with_all() -> None:
    spf = parse_spf("v=spf1")
    assert spf.problems == ()
    assert not spf.ends_with_all
    assert parse_spf("v=spf1 -all include:a.example.com exp=explain.example.com").problems != ()
    assert parse_spf("v=spf1 a -all exp=explain.example.com").all_qualifier == "-"


def test_spf_missing_names_what_was_seen_and_what_to_publish() -> None:
    spf = read_spf(ZONE, [b"hello"])
    assert spf.text is None
    _one(spf.problems, f"no SPF record at {ZONE}", "'hello'", "publish one TXT value starting 'v=spf1 '")
    _one(read_spf(ZONE, []).problems, "has no TXT values")


def test_spf_version_must_be_followed_by_a_space() -> None:
    found = select_spf(ZONE, [b"v=spf1include:spf.mtasv.net -all", b"v=spf10 -all"])
    assert found.text is None
    assert len(found.problems) == 3
    assert found.problems[0].startswith(f"no SPF record at {ZONE}")
    assert "'v=spf1include:spf.mtasv.net -all' starts with v=spf1 but no space follows" in found.problems[1]


def test_two_spf_records_are_a_permerror_naming_both() -> None:
    found = select_spf(ZONE, [b"v=spf1 -all", b"v=spf1 include:spf.mtasv.net ~all"])
    assert found.text is None
    _one(found.problems, "2 SPF records", "'v=spf1 -all'", "'v=spf1 include:spf.mtasv.net ~all'", "PermError")


@pytest.mark.parametrize(
    ("term", "fragment"),
    [
        ("foo", "is not a mechanism"),
        ("include", "needs a domain name"),
        ("include:", "needs a domain name"),
        ("include:localhost", "needs a domain name"),
        ("exists:", "needs a domain name"),
        ("ip4:300.1.1.1", "needs an IPv4 address"),
        ("ip4:192.0.2.1/33", "needs an IPv4 address"),
        ("ip4:2001:db8::1", "needs an IPv4 address"),
        ("ip6:192.0.2.1", "needs an IPv6 address"),
        ("ip6:2001:db8::/129", "needs an IPv6 address"),
        ("a/33", "is not a[:domain][/0-32][//0-128]"),
        ("mx//129", "is not mx[:domain][/0-32][//0-128]"),
        ("a:/24", "is not a[:domain]"),
        ("all:example.com", "takes no value"),
        ("ptr:", "takes an optional domain name"),
        ("ip4=192.0.2.1", "uses '=' after the mechanism ip4; write ip4:192.0.2.1"),
        ("-redirect=example.com", "takes no qualifier"),
        ("redirect=", "needs a domain name after redirect="),
        ("*all", "is not a mechanism or name=value modifier"),
    ],
)
def test_spf_syntax_error_names_the_term(term: str, fragment: str) -> None:
    spf = parse_spf(f"v=spf1 {term} ~all", ZONE)
    _one(spf.problems, f"SPF at {ZONE}: term {term!r}", fragment)


@pytest.mark.parametrize(
    "term",
    [
        "a",
        "a:mail.example.com/24//64",
        "mx//64",
        "ptr",
        "ptr:example.com",
        "exists:%{i}._spf.%{d}",
        "ip6:2001:db8::/32",
        "?include:_spf.example.com",
        "exp=explain._spf.%{d}",
        "custom.mod-ifier=anything%{d}",
    ],
)
def test_spf_valid_terms_have_no_problem(term: str) -> None:
    assert parse_spf(f"v=spf1 {term} -all").problems == ()


def test_spf_counts_every_dns_querying_term_and_only_those() -> None:
    spf = parse_spf("v=spf1 include:a.example.com a mx ptr exists:x.example.com ip4:192.0.2.1 ip6:::1 -all")
    assert spf.dns_lookups == 5
    assert parse_spf("v=spf1 redirect=_spf.example.com").dns_lookups == 1


def test_spf_lookups_over_ten_are_counted_here_and_judged_over_the_whole_tree() -> None:
    terms = [f"include:s{i}.example.com" for i in range(SPF_LOOKUP_LIMIT)]
    spf = parse_spf("v=spf1 " + " ".join([*terms, "mx"]) + " -all", ZONE)
    assert spf.dns_lookups == 11
    assert spf.problems == (), "the limit is the evaluation's (probes/spf.py), not one record's"


def test_spf_modifier_rules() -> None:
    _one(parse_spf("v=spf1 redirect=a.example.com redirect=b.example.com").problems, "redirect= appears more than once")
    _one(parse_spf("v=spf1 exp=a.example.com exp=b.example.com -all").problems, "exp= appears more than once")
    _one(parse_spf("v=spf1 redirect=a.example.com -all").problems, "redirect=a.example.com is ignored")
    assert parse_spf("v=spf1 redirect=a.example.com").redirect == "a.example.com"


def test_spf_mechanisms_after_all_are_named() -> None:
    _one(parse_spf("v=spf1 -all include:spf.mtasv.net ip4:192.0.2.1", ZONE).problems, "(include:spf.mtasv.net ip4:")


def test_spf_not_utf8_is_malformed_naming_the_record() -> None:
    spf = read_spf(ZONE, [b"v=spf1 include:spf.mtasv.net \xff-all", b"other \xfe"])
    assert spf.text == "v=spf1 include:spf.mtasv.net \ufffd-all"
    assert spf.problems[0].startswith(f"SPF at {ZONE}: TXT value 'v=spf1 include:spf.mtasv.net \ufffd-all'")
    assert "is not valid UTF-8" in spf.problems[0]
    assert len(spf.problems) == 2  # and the damaged term is a syntax error
    assert decode_txt(b"ok") == ("ok", True)
    assert decode_txt(b"\xff") == ("\ufffd", False)


# --- DMARC -------------------------------------------------------------------------------------


def test_dmarc_production_record_parses_with_defaults() -> None:
    dmarc = read_dmarc(DMARC, [b"v=DMARC1; p=quarantine; rua=mailto:DMARC-Reports@arda.cards!10m"])
    assert dmarc.problems == ()
    assert (dmarc.policy, dmarc.subdomain_policy, dmarc.pct, dmarc.adkim, dmarc.aspf) == ("quarantine",) * 2 + (
        100,
        "r",
        "r",
    )
    assert dmarc.rua_mailboxes == ("dmarc-reports@arda.cards",)
    assert dmarc.rua[0].size == "10m"


def test_dmarc_is_whitespace_tolerant_and_allows_a_trailing_semicolon() -> None:
    dmarc = parse_dmarc("v = DMARC1 ;p= Reject ; sp=none;  rua = mailto:a@example.com , mailto:b@example.com ;pct=0;")
    assert dmarc.problems == ()
    assert (dmarc.policy, dmarc.subdomain_policy, dmarc.pct) == ("reject", "none", 0)
    assert dmarc.rua_mailboxes == ("a@example.com", "b@example.com")


def test_dmarc_version_must_be_the_first_tag() -> None:
    _one(parse_dmarc("p=none; v=DMARC1", DMARC).problems, "first tag must be v=DMARC1, seen 'p=none'")
    found = select_dmarc(DMARC, [b"p=none; v=DMARC1"])
    assert found.text is None
    assert found.problems[0].startswith(f"no DMARC record at {DMARC}")
    near = select_dmarc(DMARC, [b"v=dmarc1; p=none"])
    assert "must start with exactly v=DMARC1" in near.problems[1]


def test_dmarc_duplicate_tag_is_named() -> None:
    _one(parse_dmarc("v=DMARC1; p=none; rua=mailto:a@x.com; p=reject", DMARC).problems, "tag p= appears more than once")


def test_dmarc_policy_is_required_and_checked() -> None:
    _one(parse_dmarc("v=DMARC1; rua=mailto:a@example.com").problems, "no p= tag (required)")
    _one(parse_dmarc("v=DMARC1; p=block").problems, "p='block' is not one of none, quarantine, reject")
    _one(parse_dmarc("v=DMARC1; p=none; sp=maybe").problems, "sp='maybe'")
    assert parse_dmarc("v=DMARC1; p=block").policy is None


@pytest.mark.parametrize(
    ("tag", "fragment"),
    [
        ("pct=101", "pct='101' is not a whole number from 0 to 100"),
        ("pct=-1", "pct='-1'"),
        ("pct=half", "pct='half'"),
        ("adkim=x", "adkim='x' is not one of r, s"),
        ("aspf=relaxed", "aspf='relaxed'"),
        ("fo=2", "fo='2' must be a colon list"),
        ("ri=soon", "ri='soon'"),
        ("rua=dmarc@example.com", "rua entry 'dmarc@example.com' is not a URI"),
        ("ruf=mailto:nobody", "ruf entry 'mailto:nobody' has no mailbox"),
        ("rua=mailto:r@example..com", "rua entry 'mailto:r@example..com': its domain is not a DNS name"),
        (f"rua=mailto:r@{'a' * 64}.com", f"rua entry 'mailto:r@{'a' * 64}.com': its domain is not a DNS name"),
        ("ruf=mailto:r@.", "ruf entry 'mailto:r@.': its domain is not a DNS name; no report reaches it"),
        ("rua=", "tag rua= has an empty value"),
        ("x", "'x' is not a tag=value pair"),
    ],
)
def test_dmarc_bad_tag_value_is_named(tag: str, fragment: str) -> None:
    _one(parse_dmarc(f"v=DMARC1; p=none; {tag}", DMARC).problems, f"DMARC at {DMARC}: ", fragment)


def test_dmarc_empty_tag_between_separators_is_a_problem() -> None:
    _one(parse_dmarc("v=DMARC1;; p=none").problems, "an empty tag")


def test_dmarc_unknown_tags_are_kept_apart_not_problems() -> None:
    dmarc = parse_dmarc("v=DMARC1; p=none; np=reject; rau=mailto:a@example.com; fo=1:d; rf=afrf; ri=86400")
    assert dmarc.problems == ()
    assert dmarc.unknown_tags == ("rau",)
    assert dmarc.rua == ()


def test_dmarc_name_must_hold_only_the_dmarc_record() -> None:
    found = select_dmarc(DMARC, [b"v=DMARC1; p=none", b"v=spf1 -all", b"note"])
    assert found.text == "v=DMARC1; p=none"
    assert len(found.problems) == 2
    assert "an SPF record 'v=spf1 -all' is here" in found.problems[0]
    assert "unrelated TXT value 'note'" in found.problems[1]
    two = select_dmarc(DMARC, [b"v=DMARC1; p=none", b"v=DMARC1; p=reject"])
    _one(two.problems, "2 DMARC records", "'v=DMARC1; p=reject'")
    assert read_dmarc(DMARC, []).problems[0] == (
        f"no DMARC record at {DMARC}: the name has no TXT values; publish one TXT value 'v=DMARC1; p=…'"
    )


def test_dmarc_not_utf8_is_malformed() -> None:
    dmarc = read_dmarc(DMARC, [b"v=DMARC1; p=none; rua=mailto:r\xe9@example.com"])
    assert "is not valid UTF-8" in dmarc.problems[0]
    assert DMARC in dmarc.problems[0]


# --- DKIM --------------------------------------------------------------------------------------


def _public_key_b64() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def test_dkim_key_is_compared_with_whitespace_removed_and_case_kept() -> None:
    key = _public_key_b64()
    spaced = " ".join(key[i : i + 64] for i in range(0, len(key), 64))
    dkim = read_dkim(SELECTOR, [f"v=DKIM1; k=rsa;\tp={spaced} ;".encode()])
    assert dkim.problems == ()
    assert dkim.public_key == key
    assert dkim.public_key != key.lower()
    assert (dkim.version, dkim.key_type, dkim.revoked) == ("DKIM1", "rsa", False)
    assert compact(" a b\tc\r\nd ") == "abcd"


def test_dkim_empty_key_is_revoked_and_missing_key_is_malformed() -> None:
    revoked = parse_dkim("v=DKIM1; k=rsa; p= ", SELECTOR)
    assert revoked.revoked
    _one(revoked.problems, "revoked (empty p=)")
    missing = parse_dkim("v=DKIM1; k=rsa", SELECTOR)
    assert not missing.revoked
    _one(missing.problems, "no p= tag; the key record is malformed")
    _one(parse_dkim("k=rsa; P=MIGf").problems, "no p= tag")  # tag names are case-sensitive


def _rsa_b64(bits: int) -> str:
    if bits < 1024:  # no key pair that small is generated; a public modulus of that size is all DNS holds
        public = rsa.RSAPublicNumbers(65537, (1 << (bits - 1)) | 0x1F3 | (1 << (bits // 2))).public_key()
    else:
        public = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


KEY_1024 = _rsa_b64(1024)


@pytest.mark.parametrize(
    ("record", "fragment"),
    [
        ("k=rsa; p=KEY; k=rsa", "tag k= appears more than once"),
        ("k=dsa; p=KEY", "k='dsa' is not a known key type"),
        ("k=rsa; v=DKIM1; p=KEY", "v= must be the first tag and exactly DKIM1, seen v='DKIM1' after k="),
        ("v=DKIM2; p=KEY", "exactly DKIM1, seen v='DKIM2'"),
        ("p=MIG*", "p= is not valid base64"),
        ("p=MIGfM", "p= is not valid base64"),
        ("p=MIGf", "p= does not decode as an RSA public key"),
        ("k rsa; p=KEY", "'k rsa' is not a tag=value pair"),
        ("v=DKIM1; t=y; p=KEY", "t=y marks the domain as testing DKIM; receivers treat its mail as unsigned"),
        ("v=DKIM1; t=s:Y; p=KEY", "t=y marks the domain as testing"),
        ("v=DKIM1; h=sha1; p=KEY", "h=sha1 allows no sha256; RFC 8301 §3.1"),
        ("v=DKIM1; h=sha-256; p=KEY", "h='sha-256' is not a colon-separated list of tokens"),
        ("v=DKIM1; s=tlsrpt; p=KEY", "s=tlsrpt does not include email or *"),
        ("v=DKIM1; s=email:; p=KEY", "s='email:' is not a colon-separated list"),
        ("v=DKIM1; k=ed25519; p=KEY", "k=ed25519 needs p= to be 32 raw bytes (RFC 8463 §4.2), seen 162 bytes"),
    ],
)
def test_dkim_malformed_record_is_named(record: str, fragment: str) -> None:
    _one(parse_dkim(record.replace("KEY", KEY_1024), SELECTOR).problems, f"DKIM at {SELECTOR}: ", fragment)


@pytest.mark.parametrize(
    "record",
    [
        "v=DKIM1;k=rsa;p=KEY",
        "p=KEY",
        "v=DKIM1; h=sha1:sha256; s=email:*; t=s; k=rsa; n=note; p=KEY",
        "v=DKIM1; h=sha256:future1; s=email:future; p=KEY",  # unknown tokens are ignored (RFC 6376 §3.6.1)
    ],
)
def test_dkim_records_receivers_accept_have_no_problem(record: str) -> None:
    dkim = parse_dkim(record.replace("KEY", KEY_1024), SELECTOR)
    assert dkim.problems == (), dkim.problems
    assert (dkim.key_bits, dkim.key_summary) == (1024, "RSA 1024 bits")


def test_dkim_rsa_key_size_rules_of_rfc_8301() -> None:
    weak = parse_dkim(f"v=DKIM1; k=rsa; p={_rsa_b64(512)}", SELECTOR)
    _one(weak.problems, "the RSA key has 512 bits; RFC 8301 §3.2 forbids", "issue a new key")
    assert weak.key_bits == 512
    accepted = parse_dkim(f"v=DKIM1; k=rsa; p={KEY_1024}", SELECTOR)
    assert accepted.problems == ()
    assert accepted.notes == ("RSA key of 1024 bits: accepted, under the 2048 bits RFC 8301 §3.2 recommends",)
    strong = parse_dkim(f"v=DKIM1; k=rsa; p={_rsa_b64(2048)}", SELECTOR)
    assert (strong.problems, strong.notes, strong.key_bits) == ((), (), 2048)


def test_dkim_pkcs1_rsa_key_and_ed25519_raw_key_decode() -> None:
    public = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    pkcs1 = base64.b64encode(public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1))
    assert parse_dkim(f"k=rsa; p={pkcs1.decode()}").key_bits == 1024
    raw = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    edkey = base64.b64encode(raw).decode()
    ed = parse_dkim(f"v=DKIM1; k=ed25519; p={edkey}", SELECTOR)
    assert (ed.problems, ed.key_summary) == ((), "Ed25519")
    _one(parse_dkim(f"k=rsa; p={edkey}").problems, "p= does not decode as an RSA public key")


@pytest.mark.parametrize("selector", ["20260526234343pm", "20150316104110.pm", "s1", "a-b.c_d.e", "PM"])
def test_dkim_selectors_of_any_legal_form_are_accepted(selector: str) -> None:
    assert selector_problem(selector) is None


@pytest.mark.parametrize("selector", ["", "a..b", ".pm", "pm.", "-pm", "pm-", "a b", "p/m", "x" * 64])
def test_dkim_selector_that_is_no_dns_name_is_named(selector: str) -> None:
    problem = selector_problem(selector)
    assert problem is not None, f"{selector!r} was taken for a selector"
    assert f"selector {selector!r} is not a DKIM selector" in problem, problem


def test_dkim_selector_holds_one_record() -> None:
    dkim = read_dkim(SELECTOR, [b"k=rsa; p=MIGf", b"k=rsa; p=AAAA"])  # two records: no key is judged
    assert dkim.text is None
    _one(dkim.problems, "2 TXT values at", "keep one")
    _one(read_dkim(SELECTOR, []).problems, f"no DKIM key at {SELECTOR}")


def test_dkim_not_utf8_is_malformed() -> None:
    dkim = read_dkim(SELECTOR, [b"k=rsa; p=MIGf\x80"])
    assert dkim.problems[0].startswith(f"DKIM at {SELECTOR}: TXT value 'k=rsa; p=MIGf\ufffd' is not valid UTF-8")


# --- any input -------------------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_any_txt_value_gives_records_with_one_line_problems(value: bytes) -> None:
    for record in (read_spf(ZONE, [value]), read_dmarc(DMARC, [value]), read_dkim(SELECTOR, [value])):
        assert all(problem and "\n" not in problem for problem in record.problems)
        assert record.text is not None or record.problems  # no record is always explained


@given(st.lists(st.sampled_from(["a", "mx", "ptr", "ip4:192.0.2.1", "include:x.example.com", "exists:e.example.com"])))
def test_spf_lookup_count_matches_the_querying_terms(terms: list[str]) -> None:
    spf = parse_spf(" ".join(["v=spf1", *terms, "-all"]))
    expected = sum(not t.startswith("ip4") for t in terms)
    assert spf.dns_lookups == expected
    assert spf.problems == ()
