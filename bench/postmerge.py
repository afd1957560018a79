"""Postmerge benchmark: mailgate against a one-request-at-a-time baseline and the network's lower bound.

    python -m bench.postmerge [--sizes 4,32] [--runs 3] [--workers 4] [--json PATH]

Starts the sandbox world, deploys N partitions healthy (`Scenarios.seed`), injects latency (50 ms per DNS
answer, 100 ms per AWS request, 100 ms per Postmark request) and times, in rounds, for each N:
`pytest --collect-only` of the selection (the fixed cost); mailgate `pytest -m postmerge` at `-n 0` and
`-n W`; xdist's own cost (the same two runs with every test deselected); the HTML report's cost
(`-p no:html`); the Postmark rate limit's cost (`--postmark-rate` unlimited); the Route 53 buckets' cost
(`unpaced`: the sandbox's buckets and mailgate's pacing both lifted; every other row runs under the documented
buckets, full at its start, as after a quiet spell); and the baseline,
`python -m bench.postmerge baseline FILE NAMES`: the same observations with the same probes, one request
after another, partition after partition (the bash script's way). The world's servers count the requests
of every command (DNS as distinct questions: a resend asks the same one again), so the table shows that
the baseline asked exactly what mailgate asked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree

import dns.name

from bench.common import PYTHON, ROOT, Measured, Stats, machine, measure, table, verdict
from probes import aws, cdk, outside, postmark
from probes import dns as probe
from probes.config import Config, DnsSpec, Target, load
from probes.observe import Credentials
from probes.pacing import ROUTE53_BURST, ROUTE53_RATE

if TYPE_CHECKING:  # sandbox (moto) is imported only by the bench process, never by the baseline's
    from sandbox.world import World

# The requests that must follow one another, read from the probe code (probes/observe.py, aws.py, dns.py,
# postmark.py). All partitions overlap, and per partition the three chains do.
CHAINS = {
    "aws": ("sts AssumeRole (the profile's role_arn)", "cloudformation DescribeStacks", "route53 GetHostedZone"),
    "dns": (
        "NS of the parent at the resolvers",
        "A of the parent's name servers at the resolvers",
        "NS of the zone at the parent's servers",
        "A of the zone's name servers at the resolvers",
        "every question at every zone server",
    ),
    "postmark": ("GET /domains?count&offset", "GET /domains/{id}"),
}
ROWS = ("collect", "n0", "nW", "idle0", "idleW", "nohtml", "norate", "unpaced", "baseline")
DEFAULT_ROWS = "collect,n0,nW,idle0,idleW,baseline"
LABELS = {
    "collect": "pytest --collect-only (fixed cost)",
    "n0": "mailgate -n 0",
    "nW": "mailgate -n {workers}",
    "idle0": "-n 0, every test deselected",
    "idleW": "-n {workers}, every test deselected",
    "nohtml": "mailgate -n 0 -p no:html",
    "norate": "mailgate -n 0 --postmark-rate 100000",
    "unpaced": "mailgate -n 0, Route 53 buckets lifted (sandbox and client)",
    "baseline": "baseline: one request at a time",
}
UNLIMITED = 1_000_000.0  # a bucket no run empties
DESELECT_ALL = "not test_"  # every check is a test_ function: workers start and collect, nothing runs
MB_PER_MIB = 1.048576


@dataclass(frozen=True)
class Latency:
    """Seconds the world adds to each answer."""

    dns: float
    aws: float
    postmark: float

    def longest_chain(self) -> tuple[str, float]:
        per = {"aws": self.aws, "dns": self.dns, "postmark": self.postmark}
        return max(((name, len(steps) * per[name]) for name, steps in CHAINS.items()), key=lambda item: item[1])


@dataclass(frozen=True)
class Run:
    """One command of one round: what it cost, and what the world saw it ask."""

    row: str
    measured: Measured
    requests: dict[str, int]  # aws, dns (distinct questions), dns_resent, postmark
    world_cpu: float  # CPU seconds of the bench process meanwhile: the world's servers (and the RSS sampler)
    session: float | None  # pytest's own session time (JUnit), for the rows that run checks
    slowest_check: float | None  # the slowest check's setup+call+teardown: the first, which waited for its partition


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["baseline"]:
        return baseline_main(args[1:])
    options = _parser().parse_args(args)
    latency = Latency(options.dns_latency, options.aws_latency, options.postmark_latency)
    sizes = sorted({int(s) for s in options.sizes.split(",")})
    before = machine()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in before.items()), flush=True)
    results = _benchmark(sizes, _rows(options.rows), latency, options)
    report = targets(results, latency, options.workers)
    print("\n" + table(["target", "measured (medians, seconds)", "verdict"], report), flush=True)
    print(f"load (1/5/15 min) before {before['load (1/5/15 min)']}, after {machine()['load (1/5/15 min)']}")
    if options.json:
        summary = _summary(results, latency, options.workers, report) | {"machine": before, "load_after": machine()}
        Path(options.json).write_text(json.dumps(summary, indent=2))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.postmerge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="4,32", help="partition counts to deploy and time (4,32)")
    parser.add_argument("--runs", type=int, default=3, help="rounds of every command per size (3)")
    parser.add_argument("--baseline-runs", type=int, default=1, help="rounds that also time the baseline (1)")
    parser.add_argument("--workers", type=int, default=4, help="xdist workers of the -n W rows (4)")
    parser.add_argument(
        "--rows",
        default=DEFAULT_ROWS,
        help=f"commands to time: all, or a comma list of {', '.join(ROWS)} (%(default)s)",
    )
    parser.add_argument("--dns-latency", type=float, default=0.05, help="seconds added to each DNS answer (0.05)")
    parser.add_argument("--aws-latency", type=float, default=0.1, help="seconds added to each AWS request (0.1)")
    parser.add_argument("--postmark-latency", type=float, default=0.1, help="seconds per Postmark request (0.1)")
    parser.add_argument("--seed-threads", type=int, default=2, help="partitions deployed at once (2)")
    parser.add_argument(
        "--one-account",
        action="store_true",
        help="every partition timed in one AWS account (the first infrastructure's): Route 53's buckets at scale",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures and verdicts here")
    return parser


def _rows(spec: str) -> tuple[str, ...]:
    chosen = ROWS if spec == "all" else tuple(r.strip() for r in spec.split(",") if r.strip())
    unknown = [r for r in chosen if r not in ROWS]
    if unknown or not chosen:
        raise SystemExit(f"--rows: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(ROWS)} or all")
    return chosen


def _benchmark(
    sizes: Sequence[int], rows: Sequence[str], latency: Latency, options: argparse.Namespace
) -> dict[int, list[Run]]:
    """One world; for each size (ascending) deploy the partitions it adds, then time every row in rounds."""
    from sandbox.scenarios import Scenarios
    from sandbox.world import World, apply_env

    state = Path(tempfile.mkdtemp(prefix="mailgate-bench-"))
    results: dict[int, list[Run]] = {}
    try:
        source = load(ROOT / "partitions.yaml")
        home = next(iter(source.file.infrastructures)) if options.one_account else None
        mine = sum(t.infrastructure == home for t in source.targets.values())
        extra = max(0, max(sizes) - (mine if home else len(source.targets)))
        with World(state / "world", extra_partitions=extra, extras_on=home, verify_delay=0.1) as world:
            env = dict(os.environ)
            apply_env(world.env(), env)
            scenarios = Scenarios(world)
            names = [n for n, t in world.config.targets.items() if home is None or t.infrastructure == home]
            if max(sizes) > len(names) or min(sizes) < 1:
                raise SystemExit(f"--sizes: each from 1 to {len(names)}, got {options.sizes}")
            deployed = 0
            for size in sizes:
                started = time.monotonic()
                scenarios.seed_many(names[deployed:size], options.seed_threads)
                deployed = size
                print(f"\nN={size}: {size} partitions deployed ({time.monotonic() - started:.1f} s)", flush=True)
                commands = _commands(world.info.partitions_file, names[:size], state / "reports", options.workers)
                _set_latency(world, latency)
                chosen = {row: commands[row] for row in rows}
                results[size] = _rounds(world, chosen, env, options.runs, options.baseline_runs)
                _set_latency(world, Latency(0.0, 0.0, 0.0))
                print(table(SIZE_HEADERS, size_rows(size, results[size], latency, options.workers)), flush=True)
    finally:
        shutil.rmtree(state, ignore_errors=True)
    return results


def _set_latency(world: World, latency: Latency) -> None:
    world.dns.latency, world.aws.latency, world.postmark.latency = latency.dns, latency.aws, latency.postmark


def _commands(
    partitions_file: str, names: Sequence[str], reports: Path, workers: int
) -> dict[str, tuple[list[str], tuple[int, ...]]]:
    """Each row's command line, and the exit codes that mean it did its job."""
    selection = ",".join(names)
    # mailgate's path options in the `=` form: pytest reads the project's configuration before plugins load
    pytest = [
        PYTHON,
        "-m",
        "pytest",
        "-m",
        "postmerge",
        f"--partitions-file={partitions_file}",
        "--partition",
        selection,
    ]
    common = [*pytest, "-q", "-p", "no:cacheprovider", f"--reports-dir={reports}"]

    def checks(row: str, *extra: str) -> tuple[list[str], tuple[int, ...]]:
        return [*common, "--junitxml", str(reports / f"{row}.xml"), *extra], (0,)

    return {
        "collect": ([*common, "--collect-only"], (0,)),
        "n0": checks("n0", "-n", "0"),
        "nW": checks("nW", "-n", str(workers)),
        "idle0": ([*common, "-n", "0", "-k", DESELECT_ALL], (5,)),
        "idleW": ([*common, "-n", str(workers), "-k", DESELECT_ALL], (5,)),
        "nohtml": checks("nohtml", "-n", "0", "-p", "no:html"),
        "norate": checks("norate", "-n", "0", "--postmark-rate", "100000"),
        "unpaced": checks("unpaced", "-n", "0", f"--route53-burst={UNLIMITED:g}", f"--route53-rate={UNLIMITED:g}"),
        "baseline": ([PYTHON, "-m", "bench.postmerge", "baseline", partitions_file, selection], (0,)),
    }


def _rounds(
    world: World,
    commands: dict[str, tuple[list[str], tuple[int, ...]]],
    env: dict[str, str],
    runs: int,
    baseline_runs: int,
) -> list[Run]:
    """`runs` rounds of every command in turn (the baseline in the first `baseline_runs`), so the machine's
    noise falls on all of them alike."""
    done: list[Run] = []
    for number in range(runs):
        for row, (command, expect) in commands.items():
            if row == "baseline" and number >= baseline_runs:
                continue
            world.aws.calls.clear()
            _set_route53(world, lifted=row == "unpaced")
            world.dns.queries.clear()
            world.postmark.calls.clear()
            junit = Path(command[command.index("--junitxml") + 1]) if "--junitxml" in command else None
            if junit is not None:
                junit.unlink(missing_ok=True)
            cpu = time.process_time()
            measured = measure(command, env=env, cwd=ROOT, expect=expect)
            cpu = time.process_time() - cpu
            session, slowest = _junit_times(junit) if junit is not None and junit.exists() else (None, None)
            done.append(Run(row, measured, _asked(world), cpu, session, slowest))
            failed = f"\n    FAILED: {measured.problem}" if measured.problem else ""
            print(f"  {row:9} {measured.seconds:6.2f} s {measured.peak_rss_mib:6.1f} MiB{failed}", flush=True)
    return done


def _set_route53(world: World, *, lifted: bool) -> None:
    """The sandbox's Route 53 buckets, full: the documented ones, or lifted for the `unpaced` row."""
    from sandbox.aws_quota import ROUTE53_ACCOUNT, ROUTE53_OPERATION, Bucket

    if lifted:
        world.aws.set_route53_quota(Bucket(UNLIMITED, UNLIMITED), Bucket(UNLIMITED, UNLIMITED))
    else:
        world.aws.set_route53_quota(ROUTE53_ACCOUNT, ROUTE53_OPERATION)


def _junit_times(path: Path) -> tuple[float, float]:
    """pytest's session time and the slowest check's time, from the JUnit report it wrote."""
    suite = ElementTree.parse(path).getroot().find("testsuite")
    assert suite is not None, f"{path}: no <testsuite> in the JUnit report"
    return float(suite.get("time", "0")), max((float(c.get("time", "0")) for c in suite.iter("testcase")), default=0.0)


def _asked(world: World) -> dict[str, int]:
    distinct = {(q.server, q.qname.lower(), q.qtype) for q in world.dns.queries}
    calls = [c for c in world.aws.calls if c.metered]
    route53: dict[str, int] = {}
    for call in calls:
        if call.service == "route53":
            route53[call.account] = route53.get(call.account, 0) + 1
    return {
        "aws": len(world.aws.calls),
        "dns": len(distinct),
        "dns_resent": len(world.dns.queries) - len(distinct),
        "postmark": len(world.postmark.calls),
        "sts": sum(c.service == "sts" for c in calls),
        "cloudformation": sum(c.service == "cloudformation" for c in calls),
        "route53": sum(route53.values()),
        "route53_one_account": max(route53.values(), default=0),  # the busiest account's Route 53 requests
        "throttled": sum(c.throttled for c in calls),
    }


# -- figures -------------------------------------------------------------------------------------------

SIZE_HEADERS = (
    "N",
    "command",
    "seconds: median (min–max)",
    "× lower bound",
    "peak RSS MiB",
    "requests AWS/DNS/Postmark",
    "DNS resent",
    "world CPU s",
    "pytest session s",
    "slowest check s",
    "AWS sts/cloudformation/route53",
    "throttled",
    "failed runs",
)


def stats(runs: Sequence[Run], row: str) -> Stats | None:
    """Seconds of the row's runs that did their job (a failed run's time says nothing about speed)."""
    values = [r.measured.seconds for r in runs if r.row == row and r.measured.ok]
    return Stats.of(values) if values else None


def lower_bound(runs: Sequence[Run], latency: Latency) -> float | None:
    """The fixed cost (median of --collect-only) plus the longest chain of requests that must follow one another."""
    collect = stats(runs, "collect")
    return None if collect is None else collect.median + latency.longest_chain()[1]


def size_rows(size: int, runs: Sequence[Run], latency: Latency, workers: int) -> list[list[str]]:
    """One line per timed command (requests as the world counted them in the last round), then the lower bound."""
    bound = lower_bound(runs, latency)
    lines = []
    for row in ROWS:
        mine = [r for r in runs if r.row == row]
        if not mine:
            continue
        found, asked = stats(runs, row), mine[-1].requests
        failed = sum(not r.measured.ok for r in mine)
        lines.append(
            [
                str(size),
                LABELS[row].format(workers=workers),
                found.text() if found else "–",
                f"{found.median / bound:.2f}" if found and bound else "–",
                f"{max(r.measured.peak_rss_mib for r in mine):.0f}",
                f"{asked['aws']}/{asked['dns']}/{asked['postmark']}",
                str(asked["dns_resent"]),
                f"{Stats.of([r.world_cpu for r in mine]).median:.2f}",
                _median_text([r.session for r in mine if r.measured.ok]),
                _median_text([r.slowest_check for r in mine if r.measured.ok]),
                "/".join(str(asked.get(k, "–")) for k in ("sts", "cloudformation", "route53")),
                str(max(r.requests.get("throttled", 0) for r in mine)),
                f"{failed} of {len(mine)}",
            ]
        )
    if bound is not None:
        chain, seconds = latency.longest_chain()
        what = f"lower bound: fixed cost + {chain} chain {len(CHAINS[chain])} × latency = {seconds:.2f} s"
        lines.append([str(size), what, f"{bound:.2f}", "1.00", *[""] * (len(SIZE_HEADERS) - 4)])
    return lines


def targets(results: dict[int, list[Run]], latency: Latency, workers: int) -> list[list[str]]:
    """The issue's targets that the timed rows allow judging: [target, figures, verdict]."""
    small, large = min(results), max(results)

    def median(size: int, row: str) -> float | None:
        found = stats(results[size], row)
        return found.median if found else None

    lines: list[list[str]] = []
    n0, bound, base = median(small, "n0"), lower_bound(results[small], latency), median(small, "baseline")
    if n0 and bound:
        figures = f"{n0:.2f} / {bound:.2f} = {n0 / bound:.2f}"
        lines.append([f"N={small} -n 0 ≤ 1.5 × lower bound", figures, verdict(n0 <= 1.5 * bound)])
    if n0 and base:
        figures = f"{base:.2f} / {n0:.2f} = {base / n0:.2f}"
        lines.append([f"N={small} -n 0 ≥ 5 × faster than the baseline", figures, verdict(base >= 5 * n0)])
    big = median(large, "n0")
    if large != small and n0 and big:
        figures = f"{big:.2f} / {n0:.2f} = {big / n0:.2f}"
        lines.append([f"N={large} -n 0 ≤ 2 × N={small} -n 0", figures, verdict(big <= 2 * n0)])
    for size in sorted(results):
        many, one, idle_many, idle_one = (median(size, row) for row in ("nW", "n0", "idleW", "idle0"))
        if many and one and idle_many and idle_one:
            extra, startup = many - one, idle_many - idle_one
            figures = f"{many:.2f} − {one:.2f} = {extra:.2f}; xdist: {idle_many:.2f} − {idle_one:.2f} = {startup:.2f}"
            lines.append([f"N={size} -n {workers} − -n 0 ≤ xdist start-up", figures, verdict(extra <= startup)])
    peaks = [r.measured.peak_rss_mib for r in results[large] if r.row != "baseline"]
    if peaks:
        peak = max(peaks) * MB_PER_MIB
        lines.append([f"N={large} peak RSS of any pytest process < 300 MB", f"{peak:.0f} MB", verdict(peak < 300)])
    for size, runs in sorted(results.items()):
        mailgate_asked = {_without_resends(r.requests) for r in runs if r.row == "n0" and r.measured.ok}
        baseline_asked = {_without_resends(r.requests) for r in runs if r.row == "baseline" and r.measured.ok}
        if mailgate_asked and baseline_asked:
            figures = "AWS/DNS/Postmark " + "; ".join(
                f"{who} {' or '.join(f'{a}/{d}/{p}' for a, d, p in sorted(found))}"
                for who, found in (("mailgate", mailgate_asked), ("baseline", baseline_asked))
            )
            same = mailgate_asked == baseline_asked and len(mailgate_asked) == 1
            lines.append([f"N={size} the baseline asked what mailgate -n 0 asked", figures, verdict(same)])
    for size, runs in sorted(results.items()):
        lines += _quota_targets(size, runs)
    every = [(size, r) for size, runs in results.items() for r in runs]
    failed = sorted({f"N={size} {r.row}" for size, r in every if not r.measured.ok})
    figures = f"{len(every) - sum(not r.measured.ok for _, r in every)} of {len(every)} passed"
    lines.append(["every timed run did its job (checks passed)", figures + "".join(f"; failed: {f}" for f in failed)])
    lines[-1].append(verdict(not failed))
    return lines


def pacing_floor(route53_one_account: int, burst: float = ROUTE53_BURST, rate: float = ROUTE53_RATE) -> float:
    """Seconds the busiest account's Route 53 requests need at least: those beyond the burst, at the refill rate."""
    return max(0.0, route53_one_account - burst) / rate


def _quota_targets(size: int, runs: Sequence[Run]) -> list[list[str]]:
    """With an `unpaced` row: zero throttled requests under the buckets, and wall time ≤ 1.3 × the larger of the
    pacing floor and the unthrottled run."""
    paced, unpaced = stats(runs, "n0"), stats(runs, "unpaced")
    if paced is None or unpaced is None:
        return []
    asked = [r.requests for r in runs if r.row == "n0" and r.measured.ok]
    throttled = max(a.get("throttled", 0) for a in asked)
    floor = pacing_floor(max(a.get("route53_one_account", 0) for a in asked))
    limit = 1.3 * max(floor, unpaced.median)
    figures = f"{paced.median:.2f} vs 1.3 × max(floor {floor:.2f}, unthrottled {unpaced.median:.2f}) = {limit:.2f}"
    return [
        [f"N={size} zero throttled requests under Route 53's buckets", f"{throttled}", verdict(throttled == 0)],
        [f"N={size} -n 0 ≤ 1.3 × max(pacing floor, unthrottled run)", figures, verdict(paced.median <= limit)],
    ]


def _median_text(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{Stats.of(known).median:.2f}" if known else "–"


def _without_resends(requests: dict[str, int]) -> tuple[int, int, int]:
    return requests["aws"], requests["dns"], requests["postmark"]


def _summary(results: dict[int, list[Run]], latency: Latency, workers: int, report: list[list[str]]) -> dict[str, Any]:
    def row_summary(runs: Sequence[Run], row: str) -> dict[str, Any]:
        mine, found = [r for r in runs if r.row == row], stats(runs, row)
        return {
            "seconds": asdict(found) if found else None,
            "peak_rss_mib": max(r.measured.peak_rss_mib for r in mine),
            "requests": mine[-1].requests,
            "world_cpu": [r.world_cpu for r in mine],
            "session": [r.session for r in mine],
            "slowest_check": [r.slowest_check for r in mine],
            "problems": [r.measured.problem for r in mine if r.measured.problem],
        }

    sizes = {
        str(size): {
            "rows": {row: row_summary(runs, row) for row in ROWS if any(r.row == row for r in runs)},
            "lower_bound": lower_bound(runs, latency),
            "table": size_rows(size, runs, latency, workers),
        }
        for size, runs in results.items()
    }
    chain = latency.longest_chain()
    return {"latency": asdict(latency), "longest_chain": chain, "sizes": sizes, "targets": report}


# -- the baseline --------------------------------------------------------------------------------------


def baseline_main(argv: Sequence[str]) -> int:
    """`python -m bench.postmerge baseline FILE NAMES`: observe in turn; exit 1 when an observation failed."""
    parser = argparse.ArgumentParser(prog="python -m bench.postmerge baseline", description=baseline.__doc__)
    parser.add_argument("partitions_file", type=Path)
    parser.add_argument("partitions", help="comma list, or all")
    args = parser.parse_args(argv)
    problems = asyncio.run(baseline(args.partitions_file, args.partitions))
    for problem in problems:
        print(f"baseline: {problem}", file=sys.stderr)
    return 1 if problems else 0


async def baseline(partitions_file: Path, names: str) -> list[str]:
    """The bash script's way with mailgate's probes: every request in turn, partition after partition.

    The questions of `probes.observe` (stack and zone; the delegation and every question at every server
    and resolver; the Postmark domain), never two at once. Returns what failed: a broken baseline must
    not pass for a fast one.
    """
    config = load(partitions_file)
    shared = _Shared(os.environ.get("POSTMARK_API_URL") or config.file.postmark.api_url)
    problems: list[str] = []
    try:
        for target in config.select(names):
            problems += await _in_turn(target, config, shared)
    finally:
        for client in shared.clients.values():
            await client.aclose()
    return problems


@dataclass
class _Shared:
    """What the baseline keeps from one partition to the next, as `probes.observe` does."""

    postmark_url: str
    credentials: Credentials = field(default_factory=Credentials)
    lookups: dict[tuple[dns.name.Name, str], tuple[str, ...]] = field(default_factory=dict)  # one per gathering
    clients: dict[str, postmark.PostmarkClient] = field(default_factory=dict)  # one client (listing) per account


async def _in_turn(target: Target, config: Config, shared: _Shared) -> list[str]:
    """One partition's observations, one request at a time; what failed."""
    context = cdk.read_context_entry(config.infra_repo / "cdk.context.json", target.context_key)
    stack = aws.stack(target.profile, target.region, target.stack_name)
    zone_id = stack.exports().get(target.export_name("PartitionMailZoneId"))
    zone = aws.hosted_zone(target.profile, target.region, zone_id) if zone_id else None
    questions = [(target.zone, "TXT"), (target.dmarc_host, "TXT"), (target.return_path_host, "CNAME")]
    if context is not None:
        questions.append((target.dkim_host(context.selector), "TXT"))
    answers = await _dns_in_turn(target.zone, config.file.domain, questions, config.file.dns, shared.lookups)
    answers += await _outside_in_turn(target, config)
    token = shared.credentials.get(target.credential)
    if target.postmark_account not in shared.clients:
        shared.clients[target.postmark_account] = postmark.PostmarkClient(
            shared.postmark_url, token, account=target.postmark_account
        )
    client = shared.clients[target.postmark_account]
    seen = await postmark.observe_domain(client, target.postmark_account, target.zone, wait=60.0, verify=True)
    return [f"{target.name}: {p}" for p in _failures(stack, zone, answers, seen)]


async def _dns_in_turn(
    zone: str,
    parent: str,
    queries: Sequence[tuple[str, str]],
    spec: DnsSpec,
    lookups: dict[tuple[dns.name.Name, str], tuple[str, ...]],
) -> list[probe.Answer]:
    """`probes.dns.observe_zone`'s questions to the same servers, one at a time; resolver lookups (the parent's
    NS, name server addresses) already made for an earlier partition are reused, as mailgate does."""
    resolvers = [probe.parse_server(resolver) for resolver in spec.resolvers]
    questions = list(dict.fromkeys([(zone, "NS"), (zone, "SOA"), *((q, t.upper()) for q, t in queries)]))
    answers: list[probe.Answer] = []

    async def ask(where: tuple[str, int], qname: str, rtype: str, label: str) -> probe.Answer:
        recursion = label == probe.RESOLVER
        answer = await probe.query(where, qname, rtype, timeout=spec.timeout, server_label=label, recursion=recursion)
        answers.append(answer)
        return answer

    async def first_records(qname: str, rtype: str) -> tuple[str, ...]:
        key = (dns.name.from_text(qname), rtype)
        if key not in lookups:
            lookups[key] = ()
            for resolver in resolvers:
                answer = await ask(resolver, qname, rtype, probe.RESOLVER)
                if answer.rcode == "NOERROR" and answer.records:
                    lookups[key] = answer.records
                    break
        return lookups[key]

    parent_hosts = sorted({probe.host_text(n) for n in await first_records(parent, "NS")})
    parent_servers = {host: await first_records(host, "A") for host in parent_hosts}
    zone_name, named = dns.name.from_text(zone), set()
    for host, addresses in parent_servers.items():
        for address in addresses:
            answer = await ask((address, spec.nameserver_port), zone, "NS", host)
            referral = [r for owner, t, r in answer.authority if t == "NS" and dns.name.from_text(owner) == zone_name]
            named |= {probe.host_text(r) for r in (*answer.records, *referral)}
    zone_servers = {host: await first_records(host, "A") for host in sorted(named)}
    for host, addresses in zone_servers.items():
        for address in addresses:
            for qname, rtype in questions:
                await ask((address, spec.nameserver_port), qname, rtype, host)
    for resolver in resolvers:
        for qname, rtype in questions:
            await ask(resolver, qname, rtype, probe.RESOLVER)
    return answers


async def _outside_in_turn(target: Target, config: Config) -> tuple[probe.Answer, ...]:
    """`probes.outside`'s lookups beyond the zone (SPF include targets, report authorizations), one at a time
    (the healthy records the resolvers see are the authoritative ones, so nothing is left to complete)."""
    turn = asyncio.Lock()

    async def ask(qname: str, rtype: str) -> probe.Answer:
        async with turn:
            return await probe.resolve(
                qname, rtype, resolvers=config.file.dns.resolvers, timeout=config.file.dns.timeout
            )

    scope = outside.Scope(target.zone, config.file.domain, config.file.dmarc.report_mailbox)
    return await outside.from_resolvers(scope, ask)


def _failures(
    stack: aws.Stack,
    zone: aws.HostedZone | None,
    answers: Sequence[probe.Answer],
    seen: postmark.PostmarkObservation,
) -> list[str]:
    """Why an observation is not the healthy partition the bench deployed."""
    problems = [str(stack.problem)] if stack.problem else []
    if zone is None or zone.problem:
        problems.append(f"hosted zone not observed: {zone.problem if zone and zone.problem else 'no id'}")
    problems += [probe.evidence(a) for a in answers if a.error]
    if seen.problem or not (seen.verified_dkim and seen.verified_return_path):
        problems.append(seen.describe())
    return problems


if __name__ == "__main__":
    raise SystemExit(main())
