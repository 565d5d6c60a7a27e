"""Test-wide settings: nothing may reach the network or prompt for credentials."""

import os
import sys

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


# The demo as a user runs it (`vlmctl demo`), ONCE per session: test_demo checks the CLI's
# result, test_eval evaluates its models. generation_eval is on during training (the held-out csv
# as the eval split, an evaluation at steps 60 and 120), so the training-time hook runs for real.
DEMO_OVERRIDES = (
    "collator.dataset.eval_path=../data/eval.csv",
    "train.eval_steps=60",
    "train.generation_eval.rows=4",
    "train.generation_eval.max_new_tokens=4",
)


_DEMO: dict = {}  # the early-started demo: process, out folder, its output files


def _start_demo(out) -> None:
    """Start `vlmctl demo --out OUT --set ...` in the background (stdout/stderr to files)."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    env = dict(os.environ, HF_HUB_OFFLINE="1", TMPDIR=str(out.parent), PYTHONPATH=str(repo))
    env.pop("WANDB_API_KEY", None)
    argv = [sys.executable, "-m", "vlmctl", "demo", "--out", str(out)]
    for item in DEMO_OVERRIDES:
        argv += ["--set", item]
    files = (open(out.parent / "demo.stdout", "w+"), open(out.parent / "demo.stderr", "w+"))
    proc = subprocess.Popen(
        argv, env=env, stdin=subprocess.DEVNULL, stdout=files[0], stderr=files[1], text=True
    )
    _DEMO.update(proc=proc, out=out, files=files, argv=argv)


def _finished_demo():
    """Wait for the started demo: its CompletedProcess (stdout and stderr read back)."""
    import subprocess

    proc, files = _DEMO["proc"], _DEMO["files"]
    try:
        code = proc.wait(timeout=1800)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    stdout, stderr = (f.seek(0) or f.read() for f in files)
    return subprocess.CompletedProcess(_DEMO["argv"], code, stdout, stderr)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`vlmctl demo --out DIR --set ...` run once: (DIR, the finished process).

    The process starts as soon as the tests are collected (pytest_collection_finish), so it
    runs beside the rest of the suite; VLMCTL_TEST_DEMO_EARLY=0 starts it here instead.
    VLMCTL_TEST_DEMO_DIR=<a finished demo folder> reuses one when developing (no process then).
    """
    from pathlib import Path

    given = os.environ.get("VLMCTL_TEST_DEMO_DIR")
    if given and (Path(given) / "demo-report.json").is_file():
        return Path(given), None
    if not _DEMO:
        _start_demo(tmp_path_factory.mktemp("demo") / "demo")
    proc = _finished_demo()
    assert proc.returncode == 0, proc.stderr[-4000:]
    return _DEMO["out"], proc


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
    """Run the tests that wait on a background job last: the real-kit jobs' tests, then the
    tests of the session's demo run (both start when collection ends, so the rest of the suite
    runs beside them and the waits shrink); refuse to run without the real-file tiers when the
    environment requires them."""
    if os.environ.get("VLMCTL_REALKIT_EARLY") != "0" and "_realkit_util" in sys.modules:
        kit_job = sys.modules["_realkit_util"].kit_job
        waits = [item for item in items if kit_job(item) is not None]
        items[:] = [item for item in items if kit_job(item) is None] + waits
    if os.environ.get("VLMCTL_TEST_DEMO_EARLY") != "0":
        waits = [item for item in items if "demo_run" in getattr(item, "fixturenames", ())]
        items[:] = [item for item in items if item not in waits] + waits
    if os.environ.get("VLMCTL_REQUIRE_REALDATA") != "1":
        return
    missing = [str(p) for p in REAL_TIERS.values() if not p.is_dir()]
    if missing:
        raise pytest.UsageError(
            f"VLMCTL_REQUIRE_REALDATA=1 but {', '.join(missing)} is absent: the real-file test "
            "tier would be skipped (put shared/ beside the checkout, or unset the variable)"
        )


def pytest_collection_finish(session):
    """Start the session's demo run (when a collected test uses it) and the real-kit jobs (child
    processes: train/merge, packing exactness) as soon as the tests are known, so that they run
    beside the rest of the suite; VLMCTL_TEST_DEMO_EARLY=0 / VLMCTL_REALKIT_EARLY=0 start them
    when the first such test asks (for debugging one job)."""
    if session.config.option.collectonly:
        return
    if (
        os.environ.get("VLMCTL_TEST_DEMO_EARLY") != "0"
        and not os.environ.get("VLMCTL_TEST_DEMO_DIR")
        and any("demo_run" in getattr(item, "fixturenames", ()) for item in session.items)
    ):
        _start_demo(session.config._tmp_path_factory.mktemp("demo") / "demo")
    if os.environ.get("VLMCTL_REALKIT_EARLY") == "0":
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
    """Stop a demo run no test waited for (a stopped session); log the last file's memory."""
    proc = _DEMO.get("proc")
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()
    log = os.environ.get("VLMCTL_TEST_RSS_LOG")
    if log and _rss_last_file and os.path.exists("/proc/self/status"):
        rss, hwm = _rss_mb()
        with open(log, "a") as fh:
            fh.write(f"{_rss_last_file[0]}\t{rss:.0f}\t{hwm:.0f}\n")
