"""The commented templates `vlmctl init` writes, found both in a wheel and in a checkout."""

from __future__ import annotations

import json
import re
from pathlib import Path

from vlmctl.config import FILES


def templates_dir() -> Path:
    """`vlmctl/_templates` when installed (wheel force-include), else `<repo>/templates`."""
    package = Path(__file__).resolve().parent.parent
    for cand in (package / "_templates", package.parent / "templates"):
        if all((cand / name).is_file() for name in FILES.values()):
            return cand
    raise FileNotFoundError(f"vlmctl templates not found under {package}")


def render_templates(model: str | None = None) -> dict[str, str]:
    """File name -> template text; `model` replaces `model_name_or_path` (comments kept)."""
    root = templates_dir()
    out = {name: (root / name).read_text(encoding="utf-8") for name in FILES.values()}
    if model is not None:
        name = FILES["model"]
        # json.dumps gives a valid YAML double-quoted scalar for any string.
        out[name], count = re.subn(
            r"(?m)^model_name_or_path:[ \t]*(\"[^\"\n]*\"|'[^'\n]*'|[^\s#]*)",
            f"model_name_or_path: {json.dumps(model)}",
            out[name],
            count=1,
        )
        if count != 1:
            raise ValueError(f"{name} template has no top-level model_name_or_path line")
    return out
