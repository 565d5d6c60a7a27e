"""`vlmctl merge`: every tiny family merges, reloads alone, generates, and matches the adapter;
--low-memory writes the same bytes; zero adapters, killed merges and existing outputs are safe."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlmctl.run_folder.manifest import RunManifest, write_manifest
from vlmctl.testing.tiny import FAMILIES, FAMILY_INFO

REPO = Path(__file__).resolve().parents[1]
LORA_TARGETS = r".*(language_model|text_model).*\.(q_proj|v_proj|up_proj|down_proj)"


# --------------------------------------------------------------------------- helpers


def make_run(
    base: Path,
    run_dir: Path,
    family: str,
    *,
    zero: bool = False,
    manifest: bool = True,
    collator: dict | None = None,
    quantization: dict | None = None,
    **lora_kwargs,
) -> Path:
    """A run folder as `vlmctl train` writes it: adapter (LoRA B perturbed so it is non-zero),
    the processor, and the manifest in the documented shape."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    trust = FAMILY_INFO[family]["trust_remote_code"]
    model = AutoModelForImageTextToText.from_pretrained(base, trust_remote_code=trust)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, **lora_kwargs)
    peft_model = get_peft_model(model, cfg)
    gen = torch.Generator().manual_seed(0)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name and not zero:
            param.data = torch.randn(param.shape, generator=gen) * 0.5
        if "lora_magnitude_vector" in name and not zero:
            param.data = param.data * (1 + 0.1 * torch.rand(param.shape, generator=gen))
    peft_model.save_pretrained(run_dir)
    AutoProcessor.from_pretrained(base, trust_remote_code=trust).save_pretrained(run_dir)
    if manifest:
        doc = {
            "vlmctl_version": "0.1.0",
            "model_name_or_path": str(base),
            "revision": None,
            "model_class": FAMILY_INFO[family]["model_class"],
            "model_type": json.loads((Path(base) / "config.json").read_text())["model_type"],
            "configs": {
                "model": {
                    "model_name_or_path": str(base),
                    "loading_params": {"torch_dtype": "float32", "trust_remote_code": trust},
                    "processor_params": {"trust_remote_code": trust},
                    "quantization": quantization or {"load_in_4bit": False, "load_in_8bit": False},
                },
                "collator": collator or {},
                "train": {},
                "peft": {"r": 4, "lora_alpha": 8},
            },
            "overrides": [],
            "versions": {},
            "dataset_fingerprint": None,
            "git_commit": None,
            "global_step": 4,
            "finished": True,
        }
        write_manifest(run_dir, RunManifest(**doc))  # the type the worker writes through
    return run_dir


def cli(*args: str):
    from typer.testing import CliRunner

    from vlmctl.cli import app

    return CliRunner().invoke(app, ["merge", *args])


def stderr_of(result) -> str:
    try:
        return result.stderr
    except (ValueError, AttributeError):
        return result.output


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for shard in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(shard)))
    return out


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert set(wa) == set(wb)
    for key in wa:
        assert wa[key].dtype == wb[key].dtype, key
        if not wa[key].equal(wb[key]):
            rel = (wa[key].float() - wb[key].float()).abs().max() / wa[key].float().abs().max()
            assert float(rel) <= 1e-6, key


@pytest.fixture
def qwen(tiny_model_dir):
    return tiny_model_dir("qwen2_vl")


@pytest.fixture(scope="module")
def qwen_run(tiny_model_dir, tmp_path_factory):
    """One trained-looking run of the tiny Qwen2-VL shared by the cheap tests."""
    return make_run(tiny_model_dir("qwen2_vl"), tmp_path_factory.mktemp("qwen-run"), "qwen2_vl")


# --------------------------------------------------------------------------- every family


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_merges_reloads_and_matches_the_adapter(family, tiny_model_dir, tmp_path):
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    base = tiny_model_dir(family)
    run = make_run(base, tmp_path / "run", family)
    trust = FAMILY_INFO[family]["trust_remote_code"]
    flags = ["--trust-remote-code"] if trust else []

    result = cli(str(run), "--dtype", "fp32", *flags)
    assert result.exit_code == 0, stderr_of(result)
    out = run / "merged"
    report = json.loads((out / "merge-report.json").read_text())
    am = report["verify"]["adapter_vs_merged"]
    print(
        f"\n{family}: adapter vs merged max|dlogit|={am['max_abs_dlogit']:.3g} "
        f"top1={am['top1_agreement']:.0%} over {am['tokens']} tokens"
    )
    assert am["max_abs_dlogit"] <= 1e-4
    assert am["top1_agreement"] == 1.0
    assert report["verify"]["merged_vs_base"]["max_abs_dlogit"] > 1e-2  # the adapter did act
    assert report["noop"] is False and report["verify"]["passed"] is True
    assert "adapter vs merged" in result.output

    # The folder alone serves: Auto classes, the training processor and template, generate.
    processor = AutoProcessor.from_pretrained(out, trust_remote_code=trust)
    model = AutoModelForImageTextToText.from_pretrained(out, trust_remote_code=trust).eval()
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert (out / "generation_config.json").is_file()
    if FAMILY_INFO[family]["has_chat_template"]:
        assert (
            processor.chat_template
            == AutoProcessor.from_pretrained(run, trust_remote_code=trust).chat_template
        )
    image = Image.new("RGB", (32, 32), (200, 30, 30))
    if processor.chat_template:
        msgs = [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": image},
                    {"type": "text", "text": "What colour?"},
                ],
            }
        ]
        batch = processor.apply_chat_template(
            msgs, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
    else:
        batch = processor(text=["<image>What colour?"], images=[image], return_tensors="pt")
    with torch.inference_mode():
        # min_new_tokens: a random tiny model may emit EOS at once, and generate would stop early.
        generated = model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert generated.shape[1] == batch["input_ids"].shape[1] + 4

    # --low-memory writes the same tensors under the same (checkpoint) names.
    low = tmp_path / "low"
    result = cli(str(run), "--dtype", "fp32", "--low-memory", "--no-verify", "-o", str(low), *flags)
    assert result.exit_code == 0, stderr_of(result)
    assert_same_weights(out, low)
    low_model = AutoModelForImageTextToText.from_pretrained(low, trust_remote_code=trust)
    assert set(low_model.state_dict()) == set(model.state_dict())


# --------------------------------------------------------------------------- LoRA variants


@pytest.mark.parametrize("variant", ["dora", "rslora", "patterns"])
def test_dora_and_rslora_merge_in_memory_and_streamed_alike(variant, qwen, tmp_path):
    from vlmctl.merge.plan import MergeOptions
    from vlmctl.merge.run import run_merge

    kwargs = {
        "dora": {"use_dora": True},
        "rslora": {"use_rslora": True},
        # per-layer rank and alpha, matched the way PEFT matches them
        "patterns": {"rank_pattern": {"q_proj": 2}, "alpha_pattern": {"down_proj": 3}},
    }[variant]
    run = make_run(qwen, tmp_path / "run", "qwen2_vl", **kwargs)
    in_mem = run_merge(MergeOptions(source=run, output=tmp_path / "a", dtype="fp32"))
    streamed = run_merge(
        MergeOptions(source=run, output=tmp_path / "b", dtype="fp32", low_memory=True)
    )
    for result in (in_mem, streamed):
        am = result.report["verify"]["adapter_vs_merged"]
        assert am["max_abs_dlogit"] <= 1e-4 and am["top1_agreement"] == 1.0
        if variant != "patterns":
            assert result.report["adapter"]["use_" + variant] is True
    assert_same_weights(tmp_path / "a", tmp_path / "b")


@pytest.mark.parametrize("variant", ["lora", "rslora", "dora", "dora_fan_in_fan_out"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_layer_formula_equals_peft_bit_for_bit(variant, dtype):
    """merge_lora_tensor reproduces PEFT's own merge of one layer exactly (bf16 too)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    from vlmctl.merge.lora import LoraLayer, merge_lora_tensor

    torch.manual_seed(0)
    fifo = variant.endswith("fan_in_fan_out")
    layer = Conv1D(24, 16) if fifo else torch.nn.Linear(16, 24, bias=False)
    net = torch.nn.Sequential()
    net.add_module("proj", layer)
    net = net.to(getattr(torch, dtype))
    original = net.proj.weight.detach().clone()
    cfg = LoraConfig(
        r=4,
        lora_alpha=6,
        target_modules=["proj"],
        fan_in_fan_out=fifo,
        use_rslora=variant == "rslora",
        use_dora=variant.startswith("dora"),
    )
    model = get_peft_model(net, cfg)
    proj = model.base_model.model.proj
    proj.lora_B["default"].weight.data.normal_()
    if cfg.use_dora:
        proj.lora_magnitude_vector["default"].weight.data *= 1.3
    ours = merge_lora_tensor(
        original,
        LoraLayer(
            module="proj",
            A=proj.lora_A["default"].weight.detach(),
            B=proj.lora_B["default"].weight.detach(),
            scaling=proj.scaling["default"],
            magnitude=proj.lora_magnitude_vector["default"].weight.detach()
            if cfg.use_dora
            else None,
            fan_in_fan_out=fifo,
        ),
        getattr(torch, dtype),
    )
    expected = 6 / 2 if variant == "rslora" else 6 / 4
    assert proj.scaling["default"] == expected
    theirs = model.merge_and_unload().proj.weight.detach()
    assert ours.dtype == theirs.dtype
    assert torch.equal(ours, theirs)


# --------------------------------------------------------------------------- safety


def test_zero_adapter_is_refused_unless_allowed(qwen, tmp_path):
    run = make_run(qwen, tmp_path / "run", "qwen2_vl", zero=True)
    result = cli(str(run), "--dtype", "fp32")
    assert result.exit_code == 1
    assert "changes nothing" in stderr_of(result)
    assert not (run / "merged").exists()
    assert not list(run.glob(".merged.tmp-*"))

    result = cli(str(run), "--dtype", "fp32", "--allow-noop", "--low-memory")
    assert result.exit_code == 0, stderr_of(result)
    report = json.loads((run / "merged" / "merge-report.json").read_text())
    assert report["noop"] is True
    assert report["merge"]["zero_delta"] is True
    assert report["verify"]["merged_vs_base"]["max_abs_dlogit"] == 0.0
    assert "changes nothing" in result.output


def test_existing_output_is_refused_then_replaced_with_force(qwen_run, tmp_path):
    out = tmp_path / "out"
    result = cli(str(qwen_run), "-o", str(out), "--no-verify")
    assert result.exit_code == 0, stderr_of(result)
    first = (out / "model.safetensors").stat().st_mtime_ns
    started = time.monotonic()
    result = cli(str(qwen_run), "-o", str(out))
    assert result.exit_code == 1
    lines = [ln for ln in stderr_of(result).splitlines() if ln.strip()]
    assert len(lines) == 1 and "already exists" in lines[0] and "--force" in lines[0]
    assert time.monotonic() - started < 5  # refused before any model is loaded

    result = cli(str(qwen_run), "-o", str(out), "--force", "--no-verify")
    assert result.exit_code == 0, stderr_of(result)
    assert (out / "model.safetensors").stat().st_mtime_ns != first  # replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .old / .tmp left


def test_force_never_replaces_a_folder_merge_did_not_write(qwen_run, tmp_path):
    """`--force` replaces a previous merge output, not a thesis or a config set."""
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("mine")
    started = time.monotonic()
    result = cli(str(qwen_run), "-o", str(out), "--force", "--no-verify")
    assert result.exit_code == 1
    lines = [ln for ln in stderr_of(result).splitlines() if ln.strip()]
    assert len(lines) == 1 and "not written by vlmctl merge" in lines[0], lines
    assert str(out) in lines[0] and "Traceback" not in stderr_of(result)
    assert time.monotonic() - started < 5
    assert [p.name for p in out.iterdir()] == ["chapter1.tex"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]


def test_an_exception_mid_merge_leaves_nothing(qwen_run, tmp_path, monkeypatch):
    from vlmctl.merge import output
    from vlmctl.merge.plan import MergeOptions
    from vlmctl.merge.run import run_merge

    def boom():
        raise RuntimeError("disk full")

    monkeypatch.setattr(output, "sleep_for_tests", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        run_merge(MergeOptions(source=qwen_run, output=tmp_path / "m", low_memory=True))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_killed_merge_leaves_no_output_folder(qwen_run, tmp_path):
    out = tmp_path / "merged"
    env = {**os.environ, "VLMCTL_TEST_MERGE_SLEEP": "60", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlmctl", "merge", str(qwen_run), "-o", str(out), "--no-verify"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".merged.tmp-*/model.safetensors")):
            assert proc.poll() is None, "merge ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)  # mid-save: the weights are written, not renamed
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()
    assert len(list(tmp_path.glob(".merged.tmp-*"))) == 1  # hidden, beside the target

    # The next merge sweeps the dead one's temp folder and completes.
    result = cli(str(qwen_run), "-o", str(out), "--no-verify", "--low-memory")
    assert result.exit_code == 0, stderr_of(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]


# --------------------------------------------------------------------------- errors and inputs


def test_missing_adapter_weights_is_one_line(tmp_path):
    (tmp_path / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    result = cli(str(tmp_path))
    assert result.exit_code == 1
    lines = [ln for ln in stderr_of(result).splitlines() if ln.strip()]
    assert len(lines) == 1 and "adapter weights missing" in lines[0]

    result = cli(str(tmp_path / "nope"))
    assert result.exit_code == 1 and "does not exist" in stderr_of(result)


def test_base_not_found_offline_is_one_line(qwen_run, tmp_path):
    result = cli(str(qwen_run), "--base", "someorg/not-a-cached-model", "-o", str(tmp_path / "o"))
    assert result.exit_code == 1
    lines = [ln for ln in stderr_of(result).splitlines() if ln.strip()]
    assert len(lines) == 1
    assert "not found" in lines[0] and "offline" in lines[0]


@pytest.mark.parametrize("low_memory", [False, True])
def test_mismatched_base_is_one_line(low_memory, qwen_run, tiny_model_dir, tmp_path):
    flags = ["--low-memory"] if low_memory else []
    # Another architecture, named by the adapter (PEFT's auto_mapping) and the manifest.
    args = [str(qwen_run), "--base", str(tiny_model_dir("llava")), "-o", str(tmp_path / "o")]
    result = cli(*args, *flags)
    assert result.exit_code == 1
    lines = [ln for ln in stderr_of(result).splitlines() if ln.strip()]
    assert len(lines) == 1 and "does not fit base" in lines[0], lines
    assert "trained on a Qwen2VLForConditionalGeneration" in lines[0]

    # No class recorded: the adapted layers themselves are missing from the base.
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(qwen_run / "adapter_model.safetensors", bare)
    cfg = json.loads((qwen_run / "adapter_config.json").read_text())
    cfg.pop("auto_mapping")
    (bare / "adapter_config.json").write_text(json.dumps(cfg))
    args = [str(bare), "--base", str(tiny_model_dir("idefics3")), "-o", str(tmp_path / "o")]
    result = cli(*args, *flags)
    assert result.exit_code == 1
    lines = [ln for ln in stderr_of(result).splitlines() if ln.strip()]
    assert len(lines) == 1 and "not in the base checkpoint" in lines[0], lines
    assert not (tmp_path / "o").exists()


def test_output_may_not_replace_the_run(qwen_run):
    result = cli(str(qwen_run), "-o", str(qwen_run), "--force")
    assert result.exit_code == 2
    assert "would replace the folder being merged" in stderr_of(result)
    assert (qwen_run / "adapter_model.safetensors").is_file()


def test_adapter_without_manifest_uses_adapter_config_and_base_processor(qwen, tmp_path):
    from vlmctl.merge.plan import MergeOptions
    from vlmctl.merge.run import run_merge

    run = make_run(qwen, tmp_path / "ad", "qwen2_vl", manifest=False)
    for name in ("processor_config.json", "tokenizer.json", "tokenizer_config.json"):
        (run / name).unlink()
    result = run_merge(MergeOptions(source=run, low_memory=True))
    assert result.output == run / "merged"
    assert result.report["base"] == str(qwen)
    assert result.report["dtype"] == "float32"  # the base's config dtype
    assert result.report["verify"]["probe_source"] == "generated (no run manifest)"
    assert any("base's processor" in n for n in result.report["notes"])
    assert (run / "merged" / "processor_config.json").is_file()


def test_qlora_run_merges_into_the_full_precision_base(qwen, tmp_path):
    from vlmctl.merge.plan import MergeOptions
    from vlmctl.merge.run import run_merge

    run = make_run(qwen, tmp_path / "run", "qwen2_vl", quantization={"load_in_4bit": True})
    result = run_merge(MergeOptions(source=run, verify=False, low_memory=True))
    assert result.report["trained_on_quantized_base"] == "4bit"
    assert any("full precision, not 4bit" in n for n in result.report["notes"])
    cfg = json.loads((run / "merged" / "config.json").read_text())
    assert "quantization_config" not in cfg


def test_probes_come_from_the_training_data_when_the_manifest_finds_it(qwen, tmp_path):
    from PIL import Image

    from vlmctl.merge.plan import MergeOptions
    from vlmctl.merge.run import run_merge

    data = tmp_path / "run" / "configs" / "data"
    data.mkdir(parents=True)
    rows = ["image,question,answer"]
    for i, rgb in enumerate([(250, 0, 0), (0, 250, 0)]):
        Image.new("RGB", (32, 32), rgb).save(data / f"{i}.png")
        rows.append(f"{i}.png,What colour is it?,colour {i}")
    (data / "train.csv").write_text("\n".join(rows) + "\n")
    run = make_run(
        qwen, tmp_path / "run", "qwen2_vl", collator={"dataset": {"path": "data/train.csv"}}
    )
    result = run_merge(MergeOptions(source=run, dtype="fp32", low_memory=True))
    verify = result.report["verify"]
    assert verify["probe_source"] == "training data (first rows)", verify["probe_source"]
    assert verify["probes"] == 2
    assert verify["adapter_vs_merged"]["max_abs_dlogit"] <= 1e-4


def test_sharded_low_memory_output_has_an_index(qwen_run, tmp_path):
    from transformers import AutoModelForImageTextToText

    out = tmp_path / "sharded"
    result = cli(str(qwen_run), "--low-memory", "--max-shard-size", "200KB", "-o", str(out))
    assert result.exit_code == 0, stderr_of(result)
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 1
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {s.name for s in shards}
    AutoModelForImageTextToText.from_pretrained(out)
