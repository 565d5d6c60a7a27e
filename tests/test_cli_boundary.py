"""The one error boundary: one line per problem, exit codes, traceback only on request."""

from __future__ import annotations

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
