"""The runtime assembly (vlmctl/runtime.py): one way from a config set to the collator, used by
validate, preview, the worker, merge's verify and eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _validate_util import Row, jpeg_bytes, write_config_set, write_csv

from vlmctl import runtime
from vlmctl.config.load import load_config_set
from vlmctl.errors import DataError


@pytest.fixture(scope="module")
def config(tmp_path_factory, tiny_model_dir) -> Path:
    root = tmp_path_factory.mktemp("runtime")
    data = root / "data"
    data.mkdir()
    (data / "a.jpg").write_bytes(jpeg_bytes(0, 32))
    write_csv(data / "train.csv", [Row("a.jpg", "what colour", "red")] * 10)
    return write_config_set(root / "config", data / "train.csv", tiny_model_dir("qwen2_vl"))


def test_model_type_comes_from_config_json_and_never_from_the_network(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    assert runtime.model_type_of(tmp_path) == "llava"
    assert runtime.model_type_of(tmp_path / "missing") is None  # not a repo id: None
    (tmp_path / "config.json").write_text("[1]")
    assert runtime.model_type_of(tmp_path) is None and runtime.read_config(tmp_path) is None


def test_assemble_builds_the_collator_of_the_model_family_over_the_file_rows(config):
    cs = load_config_set(config, ["collator.dataset.eval_size=0.5"])
    with runtime.private_datasets_cache():
        built = runtime.assemble(cs)
    assert built.site.model_type == "qwen2_vl" and built.site.local
    assert built.collator.model_type == "qwen2_vl"
    assert built.collator.processor is built.processor
    # The file's own rows (eval_size off), as validate and preview number them.
    assert len(built.data.train) == 10 and built.data.eval is None
    split = runtime.load_data(cs)
    assert len(split.train) + len(split.eval) == 10 and split.eval is not None


def test_a_local_model_without_processor_files_is_one_error_finding(config, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    cs = load_config_set(config, [f"model.model_name_or_path={tmp_path}"])
    site = runtime.locate(cs)
    processor, problem = runtime.try_processor(cs, site)
    assert processor is None and problem.severity == "error"
    assert problem.code == "processor-load" and str(tmp_path) in problem.message
    with pytest.raises(DataError, match="cannot load the processor"):
        runtime.processor_or_error(cs, site)
