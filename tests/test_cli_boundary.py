"""The one error boundary: one line per problem, exit codes, traceback only on request."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from vlmctl.cli import error_boundary
from vlmctl.errors import ConfigError, Finding, UsageError


def _app(fn):
    app = typer.Typer()
    app.command()(error_boundary(fn))

    @app.command()
    def other() -> None:  # two commands, so the verb name is needed as with vlmctl
        pass

    return app


def _invoke(fn, monkeypatch, debug=False):
    if debug:
        monkeypatch.setenv("VLMCTL_DEBUG", "1")
    else:
        monkeypatch.delenv("VLMCTL_DEBUG", raising=False)
    return CliRunner().invoke(_app(fn), [fn.__name__])


def test_vlmctl_error_is_one_line_per_finding(monkeypatch):
    def boom() -> None:
        raise ConfigError(
            [
                Finding("error", "bad r", hint="use 8", file="p.yaml", line=3, col=1, key="r"),
                Finding("error", "second"),
            ]
        )

    r = _invoke(boom, monkeypatch)
    assert r.exit_code == 1
    assert r.stderr.splitlines() == ["error: p.yaml:3:1 (r): bad r (fix: use 8)", "error: second"]


def test_usage_error_exits_2(monkeypatch):
    def boom() -> None:
        raise UsageError("bad flags")

    r = _invoke(boom, monkeypatch)
    assert r.exit_code == 2 and r.stderr.strip() == "error: bad flags"


def test_unexpected_exception_is_one_line_and_a_hint(monkeypatch):
    def boom() -> None:
        raise RuntimeError("disk on fire\nsecond line")

    r = _invoke(boom, monkeypatch)
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [
        "error: RuntimeError: disk on fire",
        "set VLMCTL_DEBUG=1 for the traceback",
    ]
    assert "Traceback" not in r.output


def test_debug_reraises(monkeypatch):
    def boom() -> None:
        raise RuntimeError("disk on fire")

    r = _invoke(boom, monkeypatch, debug=True)
    assert isinstance(r.exception, RuntimeError)


def test_keyboard_interrupt_exits_130(monkeypatch):
    def boom() -> None:
        raise KeyboardInterrupt

    r = _invoke(boom, monkeypatch)
    assert r.exit_code == 130 and "interrupted" in r.stderr


def test_typer_exit_passes_through(monkeypatch):
    def fine() -> None:
        raise typer.Exit(3)

    assert _invoke(fine, monkeypatch).exit_code == 3


HEAVY = ("torch", "transformers", "peft", "trl", "datasets", "accelerate")


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["init", "{d}/c"],
        ["schema"],
        ["validate", "{d}/c"],
        ["validate", "{d}/c", "--format", "json"],
    ],
    ids=["help", "init", "schema", "validate", "validate-json"],
)
def test_light_commands_import_nothing_heavy(tmp_path, argv):
    from _config_util import write_set

    if argv[0] == "validate":
        write_set(tmp_path / "c")
    argv = [a.replace("{d}", str(tmp_path)) for a in argv]
    code = (
        "import sys\n"
        f"sys.argv = ['vlmctl', *{argv!r}]\n"
        "from vlmctl.cli import run\n"
        "code = run()\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('HEAVY', heavy, code, file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    last = r.stderr.strip().splitlines()[-1]
    assert last == "HEAVY [] 0", r.stderr


_EXIT_PROBE = (
    "import atexit, sys\n"
    "{pre}"
    "class Teardown:\n"
    "    def __del__(self):\n"  # runs when the interpreter clears __main__ at shutdown
    "        sys.stderr.write('TEARDOWN')\n"
    "marker = Teardown()\n"
    "atexit.register(lambda: sys.stdout.write('ATEXIT'))\n"
    "sys.argv = ['vlmctl', *{argv!r}]\n"
    "from vlmctl.cli import main\n"
    "main()\n"
    "print('NOT REACHED')\n"
)


@pytest.mark.parametrize("pre", ["", "import multiprocessing\n"], ids=["light", "heavy"])
def test_main_exit_runs_atexit_flushes_and_keeps_the_code(tmp_path, pre):
    """`main` skips interpreter teardown only for light runs; either way the atexit handlers
    run, buffered output arrives (a pipe is block-buffered) and the exit code is kept."""
    from _config_util import write_set

    write_set(tmp_path / "c")
    (tmp_path / "c" / "peft_config.yaml").write_text("r: 0\n")  # an error: exit 1
    code = _EXIT_PROBE.format(pre=pre, argv=["validate", "--config-only", str(tmp_path / "c")])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # real buffering
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert r.returncode == 1, r.stderr
    assert "NOT REACHED" not in r.stdout
    assert "peft_config.yaml:1:" in r.stdout + r.stderr
    assert r.stdout.endswith("ATEXIT")  # written at exit, unflushed, into a pipe
    # The light run skipped the interpreter's teardown; the heavy one went through it.
    assert ("TEARDOWN" in r.stderr) is bool(pre), r.stderr[-500:]


def test_main_fast_exit_only_when_nothing_heavy_is_loaded(monkeypatch):
    """With a heavy module loaded (here: multiprocessing), `main` exits the normal way."""
    import multiprocessing  # noqa: F401 - its presence is the condition under test

    from vlmctl import cli

    monkeypatch.setattr(cli, "run", lambda argv=None: 3)
    monkeypatch.setattr(cli.os, "_exit", lambda code: pytest.fail("os._exit in a heavy run"))
    was_enabled = gc.isenabled()
    try:
        with pytest.raises(SystemExit) as exc:
            cli.main()  # pauses the GC; the real `run` would turn it back on
    finally:
        if was_enabled:
            gc.enable()
    assert exc.value.code == 3


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["validate", "--format", "xml", "."],
            "error: vlmctl validate: invalid value for '--format': 'xml' is not one of 'text', "
            "'json', 'github'. (fix: see `vlmctl validate --help`)",
        ),
        (
            ["validate", "--nope"],
            "error: vlmctl validate: no such option: --nope (fix: see `vlmctl validate --help`)",
        ),
        (
            ["validat"],
            "error: vlmctl: no such command 'validat'. Did you mean 'validate'? "
            "(fix: see `vlmctl --help`)",
        ),
        (
            ["merge"],
            "error: vlmctl merge: missing argument 'source'. (fix: see `vlmctl merge --help`)",
        ),
    ],
    ids=["bad-value", "unknown-option", "unknown-verb", "missing-argument"],
)
def test_bad_flags_are_one_line_exit_2(tmp_path, argv, expected):
    """The console entry point: a usage error is one line on stderr, nothing on stdout."""
    r = subprocess.run(
        [sys.executable, "-m", "vlmctl", *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [expected]
    assert r.stdout == "" and list(tmp_path.iterdir()) == []


def test_run_returns_codes_without_exiting(tmp_path):
    from vlmctl.cli import run

    assert run(["--version"]) == 0
    assert run(["init", str(tmp_path / "c")]) == 0
    assert run(["init", str(tmp_path / "c")]) == 1  # refuses to overwrite
    assert run(["validate", "--config-only", str(tmp_path / "c")]) == 0
    assert run(["validate", "--format", "xml", str(tmp_path / "c")]) == 2


def test_bare_vlmctl_prints_the_help_only():
    r = subprocess.run(
        [sys.executable, "-m", "vlmctl"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2
    assert "Usage: vlmctl" in r.stdout and "validate" in r.stdout
    assert r.stderr == ""


def test_click_errors_fall_back_to_click_for_older_typer(monkeypatch):
    """Older typer (0.25) has no vendored `typer._click`: the one-line usage errors must come
    from click itself (and click < 8.2 has no NoArgsIsHelpError)."""
    import types

    from vlmctl import cli

    class FakeClickException(Exception):
        pass

    fake = types.ModuleType("click")
    fake.exceptions = types.SimpleNamespace(ClickException=FakeClickException)
    monkeypatch.setitem(sys.modules, "typer._click", None)  # import -> ImportError
    monkeypatch.setitem(sys.modules, "click", fake)
    click_exc, no_args = cli._click_errors()
    assert click_exc is FakeClickException
    assert issubclass(no_args, Exception) and no_args not in (Exception, FakeClickException)
