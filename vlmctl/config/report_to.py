"""report_to: each named integration exists and is installed, refused at validate rather than
when transformers builds its callbacks after launch."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from vlmctl.errors import Finding, did_you_mean

if TYPE_CHECKING:
    from vlmctl.config.load import ConfigSet


# report_to name -> the modules of which one must be installed (transformers' integrations).
REPORTERS: dict[str, tuple[str, ...]] = {
    "azure_ml": ("azureml",),
    "clearml": ("clearml",),
    "codecarbon": ("codecarbon",),
    "comet_ml": ("comet_ml",),
    "dagshub": ("dagshub",),
    "dvclive": ("dvclive",),
    "flyte": ("flytekit",),
    "kubeflow": ("kubeflow",),
    "mlflow": ("mlflow",),
    "neptune": ("neptune",),
    "swanlab": ("swanlab",),
    "tensorboard": ("tensorboard", "tensorboardX"),
    "trackio": ("trackio",),
    "wandb": ("wandb",),
}


def report_to_findings(cs: ConfigSet) -> list[Finding]:
    """Misspelled or missing reporters, located at train_config.yaml:report_to."""
    out: list[Finding] = []
    for name in cs.train.report_to_list():
        if name == "all":
            continue
        if name not in REPORTERS:
            close = did_you_mean(name, [*REPORTERS, "none", "all"])
            out.append(
                cs.finding(
                    "error",
                    "train",
                    "report_to",
                    f"report_to: {name!r} is not a logging integration of transformers",
                    hint=f"did you mean {close!r}?"
                    if close
                    else f"use none or one of {', '.join(REPORTERS)}",
                    code="report-to",
                )
            )
        elif importlib.util.find_spec("transformers") is None:
            continue  # the light install trains nothing: the reporter is checked where it trains
        elif not any(importlib.util.find_spec(m) is not None for m in REPORTERS[name]):
            out.append(
                cs.finding(
                    "error",
                    "train",
                    "report_to",
                    f"report_to: {name} is not installed (no module {REPORTERS[name][0]})",
                    hint=f"pip install {REPORTERS[name][0]}, or remove {name} from report_to",
                    code="report-to",
                )
            )
    return out
