"""The `vlmctl` command: registers the verbs, and is the ONE place errors become output.

Each verb lives in `vlmctl/commands/<verb>.py` as a plain function; heavy libraries are
imported inside the verbs that need them, so `vlmctl --help` answers in a fraction of a second.
Errors a user can act on (`VlmctlError`) print one line per finding on stderr; anything else
prints one line and the way to get the traceback (VLMCTL_DEBUG=1).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from vlmctl import __version__
from vlmctl.commands.demo import demo
from vlmctl.commands.eval import eval_
from vlmctl.commands.init import init
from vlmctl.commands.merge import merge
from vlmctl.commands.models import models
from vlmctl.commands.preview import preview
from vlmctl.commands.schema import schema
from vlmctl.commands.train import train
from vlmctl.commands.validate import validate
from vlmctl.errors import VlmctlError
from vlmctl.extras import missing_extra_error
from vlmctl.proc import DEBUG_ENV, debug_enabled

app = typer.Typer(
    name="vlmctl",
    help="Fine-tune vision-language models from four YAML files: init, validate, preview, "
    "train, merge, eval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals can hold tokens and paths
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def error_boundary(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn exceptions into one line each and an exit code (traceback with VLMCTL_DEBUG=1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except VlmctlError as exc:
            if debug_enabled():
                raise
            for finding in exc.findings:
                _err(f"{finding.severity}: {finding.one_line()}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            if debug_enabled():
                raise
            _err("interrupted (Ctrl-C)")
            raise typer.Exit(130) from None
        except Exception as exc:
            if debug_enabled():
                raise
            extra_error = missing_extra_error(exc, fn.__name__)
            if extra_error is not None:  # an extra's module is not installed: one line
                for finding in extra_error.findings:
                    _err(f"{finding.severity}: {finding.one_line()}")
                raise typer.Exit(extra_error.exit_code) from None
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            _err(f"error: {type(exc).__name__}: {text}" if text else f"error: {type(exc).__name__}")
            _err(f"set {DEBUG_ENV}=1 for the traceback")
            raise typer.Exit(1) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        print(f"vlmctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Fine-tune vision-language models from four YAML files."""


def _summary(fn: Callable[..., Any]) -> str:
    """The docstring's first paragraph on one line (rich wraps it to the terminal)."""
    doc = (fn.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(doc.split())


for _verb in (init, validate, preview, train, merge, demo, schema, models):
    app.command(short_help=_summary(_verb))(error_boundary(_verb))
app.command("eval", short_help=_summary(eval_))(error_boundary(eval_))


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (never exits; for tests and embedding).

    A bad flag, value or verb is ONE line on stderr (`error: <where>: <what> (fix: ...)`),
    exit 2, like every other error vlmctl reports (click would print a usage block).
    """
    ClickException, NoArgsIsHelpError = _click_errors()
    try:
        code = app(args=argv, prog_name="vlmctl", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # bare `vlmctl`: the help (rich has printed it already)
        if exc.format_message().strip():
            exc.show()
        return exc.exit_code
    except ClickException as exc:
        _err(f"error: {_usage_line(exc)}")
        return exc.exit_code
    except (typer.Abort, EOFError):
        _err("aborted")
        return 1
    except SystemExit as exc:
        code = exc.code
        if code is not None and not isinstance(code, int):
            _err(str(code))
            return 1
    except KeyboardInterrupt:  # Ctrl-C while parsing flags, before a verb runs
        _err("interrupted (Ctrl-C)")
        return 130
    return code if type(code) is int else 0  # a verb's return value is not an exit code


def _click_errors() -> tuple[type[BaseException], type[BaseException]]:
    """(ClickException, NoArgsIsHelpError) of the click that this typer runs on.

    typer 0.29 vendors click as `typer._click`; older ones (0.25 checked) use click itself, and click
    before 8.2 has no NoArgsIsHelpError (it prints the help and exits on its own).
    """
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions.ClickException, getattr(exceptions, "NoArgsIsHelpError", _Never)


class _Never(Exception):
    """Stands in for an exception class this click does not have (never raised)."""


def _usage_line(exc: Any) -> str:
    """`vlmctl validate: invalid value for '--format': ... (fix: vlmctl validate --help)`."""
    message = " ".join(exc.format_message().split())
    message = message.replace(": Value error, ", ": ")  # pydantic's prefix, via typer
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "vlmctl"
    return f"{command}: {message[:1].lower()}{message[1:]} (fix: see `{command} --help`)"


def main() -> None:
    """Console entry point (`vlmctl`): run the CLI, exit with its code.

    No start-up tricks here: pausing the GC and ending light runs with `os._exit` were
    measured within noise of nothing (BENCHMARKS.md, CLI start-up) and the 0.3 s goal held
    without them.
    """
    sys.exit(run())
