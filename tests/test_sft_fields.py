"""`sft_config_fields()` reads the installed SFTConfig's fields from source: it must equal the
real dataclass, or `validate` would reject valid keys or accept typos."""

import dataclasses
import subprocess
import sys

import pytest

from vlmctl.config.sft_fields import _body_annotations, sft_config_fields


@pytest.mark.slow
def test_fields_equal_the_real_sftconfig_dataclass():
    from trl import SFTConfig

    real = {f.name for f in dataclasses.fields(SFTConfig) if not f.name.startswith("_")}
    assert sft_config_fields() == real
    assert {"learning_rate", "train_sampling_strategy", "max_length"} <= real


def test_reading_fields_imports_neither_trl_nor_transformers():
    code = (
        "import sys; from vlmctl.config.sft_fields import sft_config_fields as f; "
        "n = len(f()); print(n, [m for m in ('trl', 'transformers', 'torch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    count, loaded = out.stdout.split(" ", 1)
    assert int(count) > 100
    assert loaded.strip() == "[]"


def test_body_scan_skips_docstrings_classvars_methods_and_private_names():
    body = '''    """Doc.

    fake_field: int = 1
    """
    real_a: int = 1
    real_b: str | None = field(
        default=None,
        metadata={"help": "x: y"},
    )
    _private: int = 0
    counter: ClassVar[int] = 0

    def method(self):
        local: int = 3
        return local
'''
    assert set(_body_annotations(body)) == {"real_a", "real_b"}
