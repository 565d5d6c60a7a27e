"""Cross-field rules of a config set: what each file alone cannot know.

Each rule returns findings placed at the key to change. Errors stop `train`; warnings are
things vlmctl works around or that probably are not meant; notes (info) say what the seed's
keys became and what a setting implies. The dataset-level pass (columns against the real data)
is validate's (vlmctl/checks/): these rules read the configs only, and import nothing heavy.
One module per concern: media, messages (and what is trained), model, dataset, training,
settings without effect.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from vlmctl.config.report_to import report_to_findings
from vlmctl.config.rules.dataset import check_dataset
from vlmctl.config.rules.effects import check_no_effect
from vlmctl.config.rules.media import check_media
from vlmctl.config.rules.messages import check_label_masking, check_masking, check_messages
from vlmctl.config.rules.model import check_model, check_peft, check_quantized_full
from vlmctl.config.rules.training import check_padding, check_precision, check_train
from vlmctl.packing_checks import config_findings

if TYPE_CHECKING:
    from vlmctl.config.load import ConfigSet
    from vlmctl.errors import Finding


def check_config_set(cs: ConfigSet, valid: Collection[str] | None = None) -> list[Finding]:
    """Every cross-field finding of a set; with `valid`, only rules whose files all validated.

    The loader passes the files that validated so that a type error in one file does not
    hide the cross-field problems of the others.
    """
    out: list[Finding] = []
    for needs, rule in _RULES:
        if valid is None or needs <= set(valid):
            out += rule(cs)
    return out


# (the files a rule reads, the rule), in the order their findings are reported.
_RULES = (
    ({"train"}, check_precision),
    ({"collator"}, check_media),
    ({"collator"}, check_messages),
    ({"model"}, check_model),
    ({"model", "peft"}, check_quantized_full),
    ({"train"}, check_train),
    ({"collator"}, check_masking),
    ({"collator"}, check_dataset),
    ({"collator"}, check_label_masking),
    ({"collator", "train"}, check_padding),
    ({"collator"}, check_no_effect),
    ({"peft"}, check_peft),
    ({"train"}, report_to_findings),
    ({"model", "collator", "train"}, config_findings),
)
