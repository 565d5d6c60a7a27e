"""Test-wide settings: nothing may reach the network or prompt for credentials."""

import os

import pytest

_OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "TOKENIZERS_PARALLELISM": "false",
}

# Set at import time too, so modules imported during collection already see offline mode.
os.environ.update(_OFFLINE_ENV)


@pytest.fixture(autouse=True, scope="session")
def _offline_env():
    """Keep the offline settings for the whole session (a test may not switch them off)."""
    os.environ.update(_OFFLINE_ENV)
    yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Factory `tiny_model_dir(family) -> Path`: each tiny twin is built once per session."""
    from vlmctl.testing.tiny import build_tiny_model

    cache: dict[str, object] = {}

    def get(family: str):
        if family not in cache:
            cache[family] = build_tiny_model(family, tmp_path_factory.mktemp(f"tiny-{family}"))
        return cache[family]

    return get


# --------------------------------------------------------------------------- the real-file tiers
# Tests that read ../shared/data (real datasets) or ../shared/real-models (real model files)
# skip with a reason when those folders are absent. So that an absent folder cannot pass for a
# green run: the skip count is said in the summary, and VLMCTL_REQUIRE_REALDATA=1 (set by
# .ci/run under CI) turns an absent folder into an error before any test runs.

from pathlib import Path  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL_TIERS = {"data": SHARED / "data", "real-models": SHARED / "real-models"}


def pytest_collection_modifyitems(config, items):
    """Refuse to run without the real-file tiers when the environment requires them."""
    if os.environ.get("VLMCTL_REQUIRE_REALDATA") != "1":
        return
    missing = [str(p) for p in REAL_TIERS.values() if not p.is_dir()]
    if missing:
        raise pytest.UsageError(
            f"VLMCTL_REQUIRE_REALDATA=1 but {', '.join(missing)} is absent: the real-file test "
            "tier would be skipped (put shared/ beside the checkout, or unset the variable)"
        )


def pytest_collection_finish(session):
    """Start the real-kit jobs (child processes: train/merge, packing exactness) as soon as the
    tests are known, so that they run beside the rest of the suite; VLMCTL_REALKIT_EARLY=0
    starts them when the first such test asks (for debugging one job)."""
    if session.config.option.collectonly or os.environ.get("VLMCTL_REALKIT_EARLY") == "0":
        return
    import sys

    if "_realkit_util" not in sys.modules:  # no real-kit test file was collected
        return
    import _realkit_util

    if _realkit_util.kit_jobs(session.items):
        _realkit_util.start_jobs_early(session.items)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say how many tests the absent real-file tiers skipped, next to pytest's own counts."""
    reasons = [str(getattr(r, "longrepr", "")) for r in terminalreporter.stats.get("skipped", [])]
    for name, path in REAL_TIERS.items():
        n = sum(1 for reason in reasons if str(path) in reason)
        if n:
            terminalreporter.write_line(
                f"real-file tier: {n} tests skipped because {path} is absent "
                f"(shared/{name}; VLMCTL_REQUIRE_REALDATA=1 makes that an error)"
            )


# --------------------------------------------------------------------------- memory of the run
# VLMCTL_TEST_RSS_LOG=FILE appends, after each test file, pytest's own resident memory (VmRSS)
# and peak (VmHWM) in MB: the way to find a test file that leaves memory behind in the
# long-lived pytest process (a full run must fit the 24 GB CI machine beside its children).

_rss_last_file: list[str] = []


def _rss_mb() -> tuple[float, float]:
    fields = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


def pytest_runtest_logstart(nodeid, location):
    """Log pytest's memory when a new test file starts, for the file before (VLMCTL_TEST_RSS_LOG)."""
    log = os.environ.get("VLMCTL_TEST_RSS_LOG")
    if not log or not os.path.exists("/proc/self/status"):
        return
    path = nodeid.split("::", 1)[0]
    if _rss_last_file and _rss_last_file[0] != path:
        rss, hwm = _rss_mb()
        with open(log, "a") as fh:
            fh.write(f"{_rss_last_file[0]}\t{rss:.0f}\t{hwm:.0f}\n")
    _rss_last_file[:] = [path]


def pytest_sessionfinish(session, exitstatus):
    """Log the last test file's memory too."""
    log = os.environ.get("VLMCTL_TEST_RSS_LOG")
    if log and _rss_last_file and os.path.exists("/proc/self/status"):
        rss, hwm = _rss_mb()
        with open(log, "a") as fh:
            fh.write(f"{_rss_last_file[0]}\t{rss:.0f}\t{hwm:.0f}\n")
