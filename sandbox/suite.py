"""mailgate's own checks as the sandbox runs them (the demo, the suite's tests): one place for the arguments."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECK_PATHS = (str(ROOT / "tests_preflight"), str(ROOT / "tests_postmerge"), str(ROOT / "tests_closeout"))
POSTMERGE_CHECKS = (
    "test_stack_status",
    "test_exports",
    "test_ns_delegation",
    "test_spf",
    "test_dmarc",
    "test_dkim",
    "test_return_path",
    "test_postmark_verified",
)
# The code steps as no-ops, for tests whose subject is elsewhere (gates, order, synth defects): the real build,
# lint and unit tests are run by the tests of the code checks themselves.
QUICK_CODE = {"build": "true", "lint": "true", "test": "true"}


def suite_args(*args: str, partitions_file: str | None = None, reports_dir: Path | None = None) -> list[str]:
    """Arguments that run the checks from any directory with this project's rootdir and configuration;
    the check folders are added unless `args` names a path of its own."""
    argv = ["--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"), "-p", "no:cacheprovider"]
    if partitions_file is not None:
        argv += ["--partitions-file", partitions_file]
    if reports_dir is not None:
        argv += ["--reports-dir", str(reports_dir)]
    argv += args
    if not any(arg.startswith(str(ROOT)) for arg in args):
        argv += CHECK_PATHS
    return argv
