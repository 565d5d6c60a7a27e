"""pre-commit entry point: validate every config set that a commit touches.

pre-commit passes changed FILE names, but `vlmctl validate` takes config-set DIRECTORIES (the
four files are checked together, since their rules cross files). This maps each config file to
its folder, drops duplicates, and runs `vlmctl validate` once over all of them, so one commit
that touches several config sets gets one report and one exit status.

Used by `.pre-commit-hooks.yaml` as `python -m vlmctl.precommit`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

CONFIG_FILES = (
    "vlm_model_config.yaml",
    "vlm_collator_config.yaml",
    "train_config.yaml",
    "peft_config.yaml",
)


def split_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split hook arguments into (options for `vlmctl validate`, config-set folders).

    A path whose name is one of the four config files stands for its folder; everything else
    (e.g. `--format github` from the hook's `args:`) is passed on to validate unchanged. A bare
    folder holding a config file also counts, so `args: [configs/a]` works with
    `pass_filenames: false`.
    """
    options: list[str] = []
    dirs: list[str] = []
    seen: set[str] = set()
    for arg in argv:
        if arg == "--":
            continue
        folder: str | None = None
        if os.path.basename(arg) in CONFIG_FILES and not arg.startswith("-"):
            folder = os.path.dirname(arg) or "."
        elif not arg.startswith("-") and os.path.isdir(arg):
            if any(os.path.isfile(os.path.join(arg, name)) for name in CONFIG_FILES):
                folder = arg
        if folder is None:
            options.append(arg)
            continue
        key = os.path.normpath(folder)
        if key not in seen:
            seen.add(key)
            dirs.append(key)
    return options, sorted(dirs)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `vlmctl validate` over the folders of the given config files; return its exit code."""
    options, dirs = split_args(sys.argv[1:] if argv is None else argv)
    if not dirs:
        return 0
    # A subprocess, not an in-process call: the CLI boundary (one line per finding, exit 1 on
    # errors, 2 on usage errors) is exactly what a user sees from `vlmctl validate`.
    # -P (3.11+): the working folder (a checked-out pull request) is never on the child's
    # sys.path; vlmctl/__init__.py drops it too, for older Pythons.
    safe = ["-P"] if sys.version_info >= (3, 11) else []
    cmd = [sys.executable, *safe, "-m", "vlmctl", "validate", *options, *dirs]
    return subprocess.call(cmd)


if __name__ == "__main__":
    raise SystemExit(main())
