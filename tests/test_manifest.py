"""`vlmctl-run.json` has one shape, `RunManifest`: the worker writes through it, merge reads
through it (vlmctl/run_folder/manifest.py)."""

from __future__ import annotations

import json

import pytest

from vlmctl.run_folder.manifest import MANIFEST, RunManifest, read_manifest, write_manifest


def test_written_and_read_through_the_same_type(tmp_path):
    written = RunManifest(
        model_name_or_path="/models/base",
        model_class="Qwen2VLForConditionalGeneration",
        model_type="qwen2_vl",
        configs={"model": {"loading_params": {"torch_dtype": "bf16"}}, "collator": {}},
        global_step=3,
        finished=True,
        train_loss=1.5,
    )
    write_manifest(tmp_path, written)
    assert read_manifest(tmp_path / MANIFEST) == written
    raw = json.loads((tmp_path / MANIFEST).read_text())
    assert raw["model_type"] == "qwen2_vl"
    # Figures not measured yet are left out, not written as null.
    assert "peak_gpu_memory_gb" not in raw and raw["train_loss"] == 1.5


def test_a_dict_is_written_only_with_keys_the_type_knows(tmp_path):
    """The worker builds a dict: a key RunManifest lacks is refused, so merge can never be
    left reading a key nobody writes (or writing one nobody reads)."""
    write_manifest(tmp_path, {"model_type": "llava", "global_step": 1})
    assert read_manifest(tmp_path / MANIFEST).model_type == "llava"
    with pytest.raises(KeyError, match="model_family"):
        write_manifest(tmp_path, {"model_family": "llava"})


def test_reading_ignores_keys_of_other_versions_and_strips_secrets(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({"finished": False, "from_the_future": 1}))
    got = read_manifest(tmp_path / MANIFEST)
    assert got.finished is False and got.model_type is None and got.config("model") == {}
    write_manifest(tmp_path, RunManifest(overrides=["train.hub_token=hf_" + "a" * 30]))
    assert "hf_" not in (tmp_path / MANIFEST).read_text()


def test_the_manifest_is_indented_json_and_writes_paths_as_text(tmp_path):
    """People read vlmctl-run.json (indented, one key a line); a Path the worker passes is
    written as its text instead of failing the write at the end of a run."""
    from pathlib import Path

    write_manifest(tmp_path, RunManifest(config_dir=Path("/runs/cfg"), global_step=2))
    text = (tmp_path / MANIFEST).read_text()
    assert text.startswith('{\n  "vlmctl_version": null,\n  "model_name_or_path"')
    assert text.endswith("}\n") and '\n  "global_step": 2,\n' in text
    assert read_manifest(tmp_path / MANIFEST).config_dir == "/runs/cfg"
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST]  # no temporary file left


def test_a_manifest_that_is_not_an_object_is_refused(tmp_path):
    (tmp_path / MANIFEST).write_text("[1, 2]")
    with pytest.raises(ValueError, match="not an object"):
        read_manifest(tmp_path / MANIFEST)


def test_the_saved_configs_read_back_typed_as_train_validated_them(tmp_path):
    """merge reads the run's configs through the config models, not as untyped dicts: the
    dtype alias is canonical, quantization and processor_params are typed."""
    from vlmctl.config.collator import CollatorConfig
    from vlmctl.config.model import ModelConfig

    write_manifest(
        tmp_path,
        RunManifest(
            configs={
                "model": {
                    "loading_params": {"torch_dtype": "bf16"},
                    "quantization": {"load_in_4bit": True},
                    "processor_params": {"max_pixels": 1024},
                },
                "collator": {"text_processing": {"max_length": 77}},
            }
        ),
    )
    got = read_manifest(tmp_path / MANIFEST)
    model = got.model_config()
    assert isinstance(model, ModelConfig) and model.dtype_name == "bfloat16"
    assert model.quantization.enabled and model.processor_params.model_dump()["max_pixels"] == 1024
    collator = got.collator_config()
    assert isinstance(collator, CollatorConfig) and collator.text_processing.max_length == 77
    assert RunManifest().model_config() is None and RunManifest().collator_config() is None


def test_a_saved_config_that_no_longer_validates_is_one_line(tmp_path):
    from vlmctl.errors import VlmctlError

    bad = RunManifest(configs={"model": {"loading_params": {"torch_dtype": "int3"}}})
    with pytest.raises(VlmctlError, match=r"vlmctl-run.json: configs.model.loading_params"):
        bad.model_config()
