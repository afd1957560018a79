"""bench/: the benchmarks run end to end on a tiny size, the baseline asks what mailgate asks, and the judging,
RSS sampling and tables are right (correctness, not timing)."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import postmerge, preflight
from bench.common import EXECNET_WORKER, PYTHON, ROOT, Measured, Stats, measure, table
from probes import aws
from probes.observe import Credentials, Settings, observe_all
from sandbox.scenarios import Scenarios

MIB = 2**20


def _cli(module: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POSTMARK_", "MAILGATE_"))}
    return subprocess.run(
        [PYTHON, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _table_lines(output: str, header: str) -> list[list[str]]:
    """The rows of the printed Markdown table whose header starts with `header` (cells stripped)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header}"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_postmerge_benchmark_runs_on_two_tiny_sizes(tmp_path: Path) -> None:
    out = tmp_path / "postmerge.json"
    done = _cli(
        "bench.postmerge",
        *("--sizes", "1,2", "--runs", "1", "--rows", "collect,n0,baseline", "--json", str(out)),
        *("--dns-latency", "0", "--aws-latency", "0", "--postmark-latency", "0.01"),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert set(summary["sizes"]) == {"1", "2"}
    for size, found in summary["sizes"].items():
        rows = found["rows"]
        assert set(rows) == {"collect", "n0", "baseline"}
        for row in rows.values():
            assert 0 < row["seconds"]["low"] <= row["seconds"]["median"] <= row["seconds"]["high"]
            assert row["peak_rss_mib"] > 10, "a Python process needs more than 10 MiB: the sampler saw nothing"
        asked = {row: {k: rows[row]["requests"][k] for k in ("aws", "dns", "postmark")} for row in rows}
        assert asked["collect"] == {"aws": 0, "dns": 0, "postmark": 0}
        assert asked["n0"] == asked["baseline"], "the baseline must ask what mailgate asks"
        [session], [slowest] = rows["n0"]["session"], rows["n0"]["slowest_check"]
        assert 0 < slowest <= session < rows["n0"]["seconds"]["high"], "pytest's own times, from its JUnit report"
        assert rows["baseline"]["session"] == [None]
        assert rows["n0"]["requests"]["postmark"] == 1 + int(size), "dev and stage share an account: one listing"
        assert found["lower_bound"] == pytest.approx(rows["collect"]["seconds"]["median"] + 0.02)
        printed = _table_lines(done.stdout[done.stdout.index(f"N={size}:") :], "N ")
        assert [r[1] for r in printed] == [
            "pytest --collect-only (fixed cost)",
            "mailgate -n 0",
            "baseline: one request at a time",
            "lower bound: fixed cost + postmark chain 2 × latency = 0.02 s",
        ]
        assert all(r[0] == size for r in printed)
    verdicts = {row[0]: row[2] for row in _table_lines(done.stdout, "target")}
    assert set(verdicts) == {
        "N=1 -n 0 ≤ 1.5 × lower bound",
        "N=1 -n 0 ≥ 5 × faster than the baseline",
        "N=2 -n 0 ≤ 2 × N=1 -n 0",
        "N=2 peak RSS of any pytest process < 300 MB",
        "N=1 the baseline asked what mailgate -n 0 asked",
        "N=2 the baseline asked what mailgate -n 0 asked",
        "every timed run did its job (checks passed)",
    }
    assert set(verdicts.values()) <= {"met", "NOT met"}
    assert verdicts["every timed run did its job (checks passed)"] == "met"
    assert verdicts["N=2 the baseline asked what mailgate -n 0 asked"] == "met"


def test_preflight_benchmark_runs_on_one_partition(tmp_path: Path) -> None:
    out = tmp_path / "preflight.json"
    done = _cli("bench.preflight", "--partitions", "1", "--runs", "1", "--checks", "synth", "--json", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert set(summary["rows"]) == {"collect", "n0", "baseline"}
    assert all(0 < row["low"] <= row["median"] <= row["high"] for row in summary["rows"].values())
    assert [(s["partition"], s["step"]) for s in summary["steps"][0]] == [("dev", "synth")]
    assert summary["peak_rss_mib"]["n0"] > 10
    printed = _table_lines(done.stdout, "N ")
    assert [r[1] for r in printed] == [
        "pytest --collect-only (fixed cost)",
        "mailgate -n 0",
        "baseline: each step for each partition in turn",
        "baseline step `synth` (each of 1)",
    ]
    assert printed[1][3] == "1.00"
    assert [row[0] for row in _table_lines(done.stdout, "target")] == [
        "-n 0 ≥ 2.5 × faster than the baseline",
        "peak RSS of any pytest process < 300 MB",
        "every timed run did its job (checks passed)",
    ]


def test_baseline_asks_the_same_questions_as_mailgate_one_at_a_time(scenarios: Scenarios) -> None:
    world = scenarios.world
    for name in ("dev", "demo"):
        scenarios.seed(name)
    config = world.config
    file = config.file
    settings = Settings(
        infra_repo=config.infra_repo,
        parent_domain=file.domain,
        resolvers=tuple(file.dns.resolvers),
        nameserver_port=file.dns.nameserver_port,
        dns_timeout=file.dns.timeout,
        postmark_url=world.info.postmark_url,
        postmark_wait=5.0,
        postmark_verify=True,
        postmark_rate=1000.0,
    )
    targets = [config.targets["dev"], config.targets["demo"]]

    def asked() -> tuple[list[tuple[str, ...]], ...]:
        found = (
            sorted({(q.server, q.qname, q.qtype) for q in world.dns.queries}),  # a resend asks the same again
            sorted((c.method, c.path, c.action) for c in world.aws.calls),
            sorted((c.method, c.path, c.query) for c in world.postmark.calls),
        )
        world.dns.queries.clear()
        world.aws.calls.clear()
        world.postmark.calls.clear()
        aws.forget_clients()  # each run assumes its roles afresh
        return found

    asked()
    observe_all(targets, settings, Credentials())
    by_mailgate = asked()
    world.dns.latency = 0.02
    started = time.monotonic()
    problems = asyncio.run(postmerge.baseline(Path(world.info.partitions_file), "dev,demo"))
    elapsed = time.monotonic() - started
    world.dns.latency = 0.0
    assert problems == []
    assert asked() == by_mailgate
    assert all(by_mailgate), "mailgate asked DNS, AWS and Postmark"
    assert elapsed >= 0.02 * len(by_mailgate[0]), "one question at a time: the latencies add up"


def test_baseline_reports_a_partition_that_is_not_deployed(scenarios: Scenarios) -> None:
    scenarios.seed("dev")
    problems = asyncio.run(postmerge.baseline(Path(scenarios.world.info.partitions_file), "dev,stage"))
    assert problems
    assert all(p.startswith("stage: ") for p in problems), problems
    assert any("stack Alpha002-stage-Email does not exist" in p for p in problems), problems


ASKED = {"aws": 1, "dns": 1, "dns_resent": 0, "postmark": 1}


def _run(row: str, seconds: float, rss: float = 100.0) -> postmerge.Run:
    return postmerge.Run(row, Measured(seconds, 0, rss, 1, None), ASKED, 0.1, 2.0, 1.0)


def _verdicts(results: dict[int, list[postmerge.Run]]) -> dict[str, str]:
    latency = postmerge.Latency(dns=0.05, aws=0.125, postmark=0.1)  # AWS chain 0.375 s: exact in binary
    return {line[0]: line[2] for line in postmerge.targets(results, latency, workers=4)}


def test_lower_bound_is_fixed_cost_plus_the_longest_chain() -> None:
    latency = postmerge.Latency(dns=0.05, aws=0.1, postmark=0.1)
    assert latency.longest_chain() == ("aws", pytest.approx(0.3))
    assert postmerge.Latency(dns=0.1, aws=0.01, postmark=0.01).longest_chain() == ("dns", pytest.approx(0.5))
    runs = [_run("collect", 1.0), _run("collect", 3.0), _run("collect", 2.0)]
    assert postmerge.lower_bound(runs, latency) == pytest.approx(2.3)


def test_postmerge_targets_flip_exactly_at_their_thresholds() -> None:
    small = [_run("collect", 1.625), _run("n0", 3.0), _run("baseline", 15.0)]  # lower bound 2.0
    large = [_run("n0", 6.0, rss=286.0)]  # 299.9 MB
    assert _verdicts({4: small, 32: large}) == {
        "N=4 -n 0 ≤ 1.5 × lower bound": "met",
        "N=4 -n 0 ≥ 5 × faster than the baseline": "met",
        "N=32 -n 0 ≤ 2 × N=4 -n 0": "met",
        "N=32 peak RSS of any pytest process < 300 MB": "met",
        "N=4 the baseline asked what mailgate -n 0 asked": "met",
        "every timed run did its job (checks passed)": "met",
    }
    small = [_run("collect", 1.625), _run("n0", 3.01), _run("baseline", 15.0)]
    large = [_run("n0", 6.03, rss=287.0)]
    verdicts = _verdicts({4: small, 32: large})
    del (
        verdicts["every timed run did its job (checks passed)"],
        verdicts["N=4 the baseline asked what mailgate -n 0 asked"],
    )
    assert set(verdicts.values()) == {"NOT met"}


def test_xdist_target_compares_the_extra_time_with_xdist_own_start_up() -> None:
    runs = [_run("n0", 3.0), _run("nW", 7.0), _run("idle0", 2.0), _run("idleW", 6.0)]
    assert _verdicts({4: runs})["N=4 -n 4 − -n 0 ≤ xdist start-up"] == "met"
    runs = [_run("n0", 3.0), _run("nW", 7.1), _run("idle0", 2.0), _run("idleW", 6.0)]
    assert _verdicts({4: runs})["N=4 -n 4 − -n 0 ≤ xdist start-up"] == "NOT met"


def test_baseline_rss_does_not_count_as_a_pytest_process() -> None:
    runs = [_run("n0", 3.0, rss=100.0), _run("baseline", 10.0, rss=400.0)]
    assert _verdicts({4: runs})["N=4 peak RSS of any pytest process < 300 MB"] == "met"


def test_preflight_target_is_two_and_a_half_times() -> None:
    def rounds(mailgate: float, base: float) -> list[preflight.Round]:
        half = Measured(base / 2, 0, 1.0, 1, None)
        return [
            preflight.Round(
                {"n0": Measured(mailgate, 0, 90.0, 1, None)}, (("dev", "build", half), ("dev", "synth", half))
            )
        ]

    def verdicts(mailgate: float, base: float) -> dict[str, str]:
        return {line[0]: line[2] for line in preflight.targets_met(rounds(mailgate, base))}

    assert verdicts(4.0, 10.0) == {
        "-n 0 ≥ 2.5 × faster than the baseline": "met",
        "peak RSS of any pytest process < 300 MB": "met",
        "every timed run did its job (checks passed)": "met",
    }
    assert verdicts(4.01, 10.0)["-n 0 ≥ 2.5 × faster than the baseline"] == "NOT met"


def test_rss_counts_the_command_and_its_xdist_workers_not_other_children() -> None:
    allocate = f"x = bytearray({150 * MIB}); import time; time.sleep(0.4)"
    as_worker = ["-u", "-c", f"import sys;{EXECNET_WORKER}"]  # how execnet starts an xdist worker
    worker = (
        f"import subprocess, sys; child = subprocess.Popen([sys.executable, *{as_worker!r}], stdin=subprocess.PIPE, "
        f"text=True); child.communicate({repr(allocate) + chr(10)!r})"
    )
    other = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {allocate!r}], check=True)"
    seen_worker = measure([sys.executable, "-c", worker], env=os.environ, cwd=ROOT)
    seen_other = measure([sys.executable, "-c", other], env=os.environ, cwd=ROOT)
    assert seen_worker.processes == 2
    assert seen_worker.peak_rss_mib > 150
    assert seen_other.processes == 1
    assert seen_other.peak_rss_mib < 100


def test_a_failed_run_keeps_its_command_and_error_lines() -> None:
    script = "print('collected'); print('E   assert 1 == 2'); print('1 failed'); raise SystemExit(1)"
    found = measure([sys.executable, "-c", script], env=os.environ, cwd=ROOT)
    assert not found.ok
    assert found.returncode == 1
    assert found.problem == (
        f"`{sys.executable} -c {shlex.quote(script)}` (in {ROOT}) exited 1, expected 0:\n"
        "  E   assert 1 == 2\n  collected\n  1 failed"
    )
    assert measure([sys.executable, "-c", "raise SystemExit(5)"], env=os.environ, cwd=ROOT, expect=(5,)).ok


def test_failed_runs_are_left_out_of_the_times_and_fail_their_own_target() -> None:
    failed = postmerge.Run("n0", Measured(0.5, 1, 100.0, 1, "`pytest` exited 1"), ASKED, 0.1, None, None)
    runs = [_run("collect", 1.625), _run("n0", 3.0), failed]
    assert postmerge.stats(runs, "n0") == Stats(3.0, 3.0, 3.0, 1)
    verdicts = _verdicts({4: runs})
    assert verdicts["N=4 -n 0 ≤ 1.5 × lower bound"] == "met"
    assert verdicts["every timed run did its job (checks passed)"] == "NOT met"
    line = postmerge.size_rows(4, runs, postmerge.Latency(0.05, 0.125, 0.1), workers=4)[1]
    assert line[1:3] == ["mailgate -n 0", "3.00 (3.00–3.00)"]
    assert line[-1] == "1 of 2"


def test_stats_and_table() -> None:
    found = Stats.of([3.0, 1.0, 2.0])
    assert (found.median, found.low, found.high, found.runs) == (2.0, 1.0, 3.0, 3)
    assert found.text() == "2.00 (1.00–3.00)"
    with pytest.raises(ValueError, match="no values"):
        Stats.of([])
    assert table(["a", "bb"], [["1", "2"], ["333", ""]]).splitlines() == [
        "| a   | bb |",
        "|-----|----|",
        "| 1   | 2  |",
        "| 333 |    |",
    ]


def test_quota_targets_judge_throttles_and_the_pacing_floor() -> None:
    """256 GetHostedZone in one account: (256 - 50) / 10 = 20.6 s of pacing floor; 1.3 × that is the limit."""
    assert postmerge.pacing_floor(256) == pytest.approx(20.6)
    assert postmerge.pacing_floor(30) == 0.0, "within the burst nothing waits"

    def runs(paced: float, throttled: int) -> list[postmerge.Run]:
        asked = {**ASKED, "route53_one_account": 256, "throttled": throttled}
        n0 = postmerge.Run("n0", Measured(paced, 0, 100.0, 1, None), asked, 0.1, 2.0, 1.0)
        return [_run("collect", 1.0), n0, _run("unpaced", 12.0)]

    met = _verdicts({256: runs(26.78, 0)})
    assert met["N=256 zero throttled requests under Route 53's buckets"] == "met"
    assert met["N=256 -n 0 ≤ 1.3 × max(pacing floor, unthrottled run)"] == "met"
    missed = _verdicts({256: runs(26.79, 1)})
    assert missed["N=256 zero throttled requests under Route 53's buckets"] == "NOT met"
    assert missed["N=256 -n 0 ≤ 1.3 × max(pacing floor, unthrottled run)"] == "NOT met"
