"""vlmctl: fine-tune vision-language models from four YAML files."""

import os as _os
import sys as _sys

__version__ = "0.1.0"


def _drop_working_folder_from_path() -> None:
    """`python -m vlmctl` / `python -m vlmctl.precommit` put the working folder first on
    sys.path, so a `typer.py` or `evilmod.py` in a checked-out pull request would run on import.
    While `-m` is still locating the module (sys.argv[0] is "-m"), drop that entry: vlmctl's own
    submodules are found through the package, everything else from where it is installed."""
    if not _sys.argv or _sys.argv[0] != "-m" or not _sys.path:
        return
    first = _sys.path[0]
    try:
        if _os.path.realpath(first or ".") == _os.path.realpath(_os.getcwd()):
            del _sys.path[0]
    except OSError:
        pass


_drop_working_folder_from_path()
