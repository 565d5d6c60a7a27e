"""A light environment in a second: what `pip install vlmctl` (no extras) would give.

A venv without pip whose only packages are the light dependencies of pyproject.toml (and what
they require, followed through the installed distributions' metadata), linked from the test's
own environment, plus this checkout on a `.pth` line. No torch, transformers, pillow, numpy:
importing one fails exactly as in a real light install. (The real `pip install <checkout>` is
tested by `tests/test_light_install.py::test_real_light_install` and `.ci/run`.)
"""

from __future__ import annotations

import re
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0]


def light_distributions() -> set[str]:
    """The light dependencies and their own requirements (extras and unmet markers skipped)."""
    from packaging.requirements import Requirement

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    todo = [_name(d) for d in deps]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        seen.add(key)
        for req in metadata.requires(name) or []:
            r = Requirement(req)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return seen


def _top_level(dist: metadata.Distribution) -> set[str]:
    tops: set[str] = set()
    for f in dist.files or []:
        first = f.parts[0]
        if first in ("..", "__pycache__") or first.endswith((".pth", ".dist-info")):
            continue
        tops.add(first)
    return tops


def make_light_venv(root: Path) -> Path:
    """Create the light venv under `root`; return its python."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(root / "venv")
    py = root / "venv" / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    for name in sorted(light_distributions()):
        dist = metadata.distribution(name)
        base = Path(dist.locate_file(""))
        for top in _top_level(dist):
            src = base / top
            if src.exists() and not (site / top).exists():
                (site / top).symlink_to(src)
        info = Path(str(dist._path))  # the .dist-info folder: importlib.metadata reads it
        if not (site / info.name).exists():
            (site / info.name).symlink_to(info)
    (site / "vlmctl-checkout.pth").write_text(f"{REPO}\n")
    return py


if __name__ == "__main__":  # python tests/_light_env.py DIR: make one to try things by hand
    print(make_light_venv(Path(sys.argv[1])))
