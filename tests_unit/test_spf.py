"""SPF evaluated through its includes (probes.spf): lookups and void lookups counted over the whole tree, the
branch that crosses a limit named, include and redirect targets judged, the tree shown as evidence."""

from __future__ import annotations

import pytest

from probes.dns import Answer
from probes.spf import SpfEvaluation, evaluate

ZONE = "dev.ardamails.com"


def _answer(
    qname: str, rtype: str, *, txt: tuple[str, ...] = (), records: tuple[str, ...] = (), rcode: str = "NOERROR"
) -> Answer:
    values = tuple(t.encode() for t in txt)
    shown = records or tuple(f'"{t}"' for t in txt)
    return Answer(
        "resolver", "127.0.0.1:53", qname, rtype, "udp", rcode, False, shown, (), values, (), 300, None, 1, 0.0, 0.0
    )


def _world(**spf: str) -> dict[tuple[str, str], Answer]:
    """TXT answers for names given as keyword arguments (underscores for dots), plus what the apex lacks."""
    served = {
        (name.replace("_", "."), "TXT"): _answer(name.replace("_", "."), "TXT", txt=(text,))
        for name, text in spf.items()
    }
    served[(ZONE, "A")] = _answer(ZONE, "A")
    served[(ZONE, "MX")] = _answer(ZONE, "MX")
    return served


def _evaluate(record: str, served: dict[tuple[str, str], Answer]) -> SpfEvaluation:
    return evaluate(ZONE, (record.encode(), b"google-site-verification=abc"), lambda q, t: served.get((q, t)))


POSTMARK = "v=spf1 ip4:50.31.156.96/27 ~all"


def test_postmark_record_is_one_lookup_with_nine_of_headroom() -> None:
    tree = _evaluate("v=spf1 include:spf.mtasv.net ~all", _world(spf_mtasv_net=POSTMARK))
    assert (tree.problems, tree.lookups, tree.voids, tree.missing) == ((), 1, 0, ())
    assert tree.targets == frozenset({"spf.mtasv.net"})
    assert tree.tree() == [
        "dev.ardamails.com: 1 of 10 lookups, 0 void",
        f"  include:spf.mtasv.net: 1 lookup(s) {POSTMARK!r}",
    ]


def test_lookups_count_the_whole_tree_and_name_the_branch_that_crosses_ten() -> None:
    served = _world(
        spf_mtasv_net=POSTMARK,
        bulk_example_net="v=spf1 " + " ".join(f"include:s{i}.example.net" for i in range(1, 10)) + " -all",
    )
    served |= {
        (f"s{i}.example.net", "TXT"): _answer(f"s{i}.example.net", "TXT", txt=(f"v=spf1 ip4:192.0.2.{i} -all",))
        for i in range(1, 10)
    }
    tree = _evaluate("v=spf1 include:spf.mtasv.net include:bulk.example.net ~all", served)
    assert len(tree.problems) == 1, tree.problems
    assert "11 DNS-lookup terms, more than the 10 RFC 7208 §4.6.4 allows" in tree.problems[0]
    assert "crossed at dev.ardamails.com → bulk.example.net → include:s9.example.net" in tree.problems[0]
    under = _evaluate("v=spf1 include:bulk.example.net ~all", served)
    assert (under.problems, under.lookups) == ((), 10)
    assert under.tree()[0] == "dev.ardamails.com: 10 of 10 lookups, 0 void"
    assert under.tree()[1].startswith("  include:bulk.example.net: 10 lookup(s)")


def test_void_lookups_beyond_two_are_a_permerror_and_two_are_not() -> None:
    served = _world(spf_mtasv_net=POSTMARK)
    served[("mail.example.net", "A")] = _answer("mail.example.net", "A", rcode="NXDOMAIN")
    assert _evaluate("v=spf1 a mx include:spf.mtasv.net ~all", served).problems == ()
    tree = _evaluate("v=spf1 a mx a:mail.example.net/24 include:spf.mtasv.net ~all", served)
    assert tree.voids == 3
    assert tree.problems == (
        "SPF permerror: 3 void lookups (NXDOMAIN or no answer), more than the 2 RFC 7208 §4.6.4 allows; the last is "
        "dev.ardamails.com → a:mail.example.net/24 (NXDOMAIN): remove the terms that name nothing",
    )


@pytest.mark.parametrize(
    ("served", "fragment"),
    [
        (
            {},
            "spf.example.net has no SPF record (NXDOMAIN); an include target must hold exactly one valid SPF "
            "record (RFC 7208 §5.2)",
        ),
        ({"spf.example.net": ("google-site-verification=x",)}, "has no SPF record (TXT 'google-site-verification=x')"),
        ({"spf.example.net": ("v=spf1 -all", "v=spf1 ~all")}, "has 2 SPF records (TXT 'v=spf1 -all', 'v=spf1 ~all')"),
        ({"spf.example.net": ("v=spf1 foo:bar -all",)}, "term 'foo:bar' is not a mechanism"),
    ],
)
def test_include_target_without_exactly_one_valid_record_is_a_named_permerror(
    served: dict[str, tuple[str, ...]], fragment: str
) -> None:
    world = _world()
    world[("spf.example.net", "TXT")] = _answer(
        "spf.example.net", "TXT", rcode="NOERROR" if served else "NXDOMAIN", txt=served.get("spf.example.net", ())
    )
    tree = _evaluate("v=spf1 include:spf.example.net ~all", world)
    assert len(tree.problems) == 1, tree.problems
    assert tree.problems[0].startswith("SPF permerror: dev.ardamails.com → include:spf.example.net: ")
    assert fragment in tree.problems[0], tree.problems[0]


def test_redirect_is_followed_last_and_its_targets_count_as_included() -> None:
    served = _world(spf_mtasv_net=POSTMARK)
    served[("_spf.ardamails.com", "TXT")] = _answer(
        "_spf.ardamails.com", "TXT", txt=("v=spf1 include:spf.mtasv.net ~all",)
    )
    tree = _evaluate("v=spf1 ip4:192.0.2.1 redirect=_spf.ardamails.com", served)
    assert (tree.problems, tree.lookups, tree.ends_in_redirect) == ((), 2, True)
    assert tree.targets == {"_spf.ardamails.com", "spf.mtasv.net"}
    ignored = _evaluate("v=spf1 redirect=_spf.ardamails.com -all", served)
    assert ignored.lookups == 0, "with all, receivers never reach redirect="
    gone = _evaluate("v=spf1 redirect=nothing.example.net", _world())
    assert gone.missing == (("nothing.example.net", "TXT"),), "what is not yet answered is asked for, not judged"


def test_include_loop_is_named_and_ends_the_walk() -> None:
    served = _world(
        a_example_net="v=spf1 include:b.example.net -all", b_example_net="v=spf1 include:a.example.net -all"
    )
    tree = _evaluate("v=spf1 include:a.example.net ~all", served)
    assert len(tree.problems) == 1, tree.problems
    assert (
        "loops back to a.example.net (dev.ardamails.com → a.example.net → b.example.net → a.example.net)"
        in tree.problems[0]
    )


def test_unusable_answers_are_temperrors_and_ptr_and_macros_cost_a_lookup_without_one() -> None:
    served = _world()
    served[("spf.example.net", "TXT")] = _answer("spf.example.net", "TXT", rcode="SERVFAIL")
    tree = _evaluate("v=spf1 include:spf.example.net ~all", served)
    assert tree.problems[0].startswith(
        "SPF temperror: dev.ardamails.com → include:spf.example.net: the resolvers gave no usable answer"
    )
    macros = _evaluate("v=spf1 ptr exists:%{i}._spf.example.net ~all", _world())
    assert (macros.problems, macros.lookups, macros.missing) == ((), 2, ())
