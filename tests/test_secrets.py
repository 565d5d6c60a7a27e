"""Credentials (#18 item 2) and the credential filter (#19 item 2).

Credentials are recognised by what they are (known secret key names, values shaped like
tokens), never by a substring of a key's name: `mask_pad_token` is a setting, `hub_token` a
secret. They reach the worker through a private file, never its command line, and leave no
trace in anything a run saves or prints.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests._config_util import write_set
from vlmctl import credentials
from vlmctl.config.load import load_config_set
from vlmctl.run_folder import manifest as mf
from vlmctl.training.parent import TrainRequest, plan_run

REPO = Path(__file__).resolve().parent.parent
PLANTED_HUB = "hf_PlantedHubTokenAAAAAAAAAAAAAAAAAAAA"
PLANTED_PROC = "hf_PlantedProcessorTokenBBBBBBBBBBBBBB"
PLANTED_ENV = {  # credentials in the environment a CI job or a VM gives vlmctl
    "WANDB_API_KEY": "0123456789abcdefPlantedWandbKeyCCCCCCCC",
    "HUGGING_FACE_HUB_TOKEN": "hf_PlantedEnvTokenDDDDDDDDDDDDDDDDDDDD",
}


def test_filter_keeps_settings_whose_names_contain_token_or_key():
    data = {
        "label_masking": {"mask_pad_token": False, "mask_image_token": False, "ignore_index": -1},
        "conversation": {"role_key": "from", "content_key": "value", "image_tag": "<image>"},
        "train": {"include_num_input_tokens_seen": "all", "max_tokens": 3, "key_column": "k"},
    }
    assert credentials.strip_secrets(data) == data


def test_filter_drops_credentials_by_name_and_by_value_also_inside_lists():
    data = {
        "train": {"hub_token": "x", "learning_rate": 1e-4, "push_to_hub_token": "y"},
        "model": {"processor_params": {"token": "abc", "use_fast": True}},
        "env": {"WANDB_API_KEY": "k", "db_password": "p", "client_secret": "s", "API-KEY": "z"},
        "lists": [{"token": "t", "keep": 1}, f"{PLANTED_HUB}", "plain", {"note": PLANTED_PROC}],
        "run_name": f"run-{PLANTED_HUB}",
    }
    clean = credentials.strip_secrets(data)
    assert clean["train"] == {"learning_rate": 1e-4}
    assert clean["model"]["processor_params"] == {"use_fast": True}
    assert clean["env"] == {}
    assert clean["lists"] == [{"keep": 1}, "plain", {}]
    assert "run_name" not in clean
    assert credentials.strip_secret_overrides(
        ["train.hub_token=abc", "peft.r=8", f"model.processor_params.x={PLANTED_PROC}",
         "collator.label_masking.mask_pad_token=false"]
    ) == ["peft.r=8", "collator.label_masking.mask_pad_token=false"]  # fmt: skip


def test_a_secret_key_is_known_by_its_whole_name_in_any_spelling():
    for name in (
        "token",
        " Hub.Token ",
        "HF-TOKEN",
        "api key",
        "WANDB_API_KEY",
        "db_password",
        "client_secret",
        "Push_To_Hub_Token",
        "my-private-key",
        "x_hf_token",
    ):
        assert credentials.is_secret_key(name), name
    for name in (
        "mask_pad_token",
        "tokenizer",
        "max_tokens",
        "role_key",
        "keyword",
        7,
        None,
        "password_hint",
        "secretary",
        "token_id",
    ):
        assert not credentials.is_secret_key(name), name


def test_a_secret_value_is_known_by_its_shape_anywhere_in_a_string_only():
    assert credentials.is_secret_value(PLANTED_HUB)
    assert credentials.is_secret_value(f"see {PLANTED_HUB} here")
    assert credentials.is_secret_value("sk-" + "a" * 24)
    assert not credentials.is_secret_value("hf_short")  # too short to be a token
    assert not credentials.is_secret_value("x" + PLANTED_HUB)  # part of a longer word
    assert not credentials.is_secret_value(None) and not credentials.is_secret_value(12345)
    assert not credentials.is_secret_value(
        [PLANTED_HUB]
    )  # a list is filtered item by item, not here


def test_filter_recurses_through_tuples_and_nested_lists_and_keeps_order():
    data = {
        "a": ({"b": [PLANTED_HUB, {"hub_token": 1, "k": [1, PLANTED_PROC, 2]}]}, "keep", 3),
        "hf_token": {"nested": "dropped with its key"},
        "z": [[], {}, None, 0, False],
    }
    assert credentials.strip_secrets(data) == {
        "a": [{"b": [{"k": [1, 2]}]}, "keep", 3],
        "z": [[], {}, None, 0, False],
    }
    assert list(credentials.strip_secrets({"y": 1, "x": 2, "token": 3, "w": 4})) == ["y", "x", "w"]
    assert (
        credentials.strip_secrets(PLANTED_HUB) is None
    )  # a bare token-shaped value: nothing is left
    assert credentials.strip_secrets("plain") == "plain" and credentials.strip_secrets(3) == 3


def test_a_secret_override_is_known_by_any_key_part_or_by_its_value():
    assert credentials.is_secret_override("train.hub_token=abc")
    assert credentials.is_secret_override("model.processor_params.token=abc")
    assert credentials.is_secret_override("hub_token")  # no `=`: still names a credential
    assert credentials.is_secret_override(f"train.run_name=run-{PLANTED_HUB}")
    assert not credentials.is_secret_override("collator.label_masking.mask_pad_token=false")
    assert not credentials.is_secret_override(
        "train.run_name=hub_token"
    )  # the value is only a word
    assert credentials.strip_secret_overrides(
        ["peft.r=8", "train.hub_token=abc", "train.max_steps=3", f"x={PLANTED_PROC}"]
    ) == ["peft.r=8", "train.max_steps=3"]


def _relative_set(tmp_path: Path) -> Path:
    """A config set with relative data/model paths and keys named like credentials."""
    from vlmctl.demo.colors import write_color_dataset

    write_color_dataset(tmp_path / "data", 8, 0, seed=1)
    cfg = write_set(
        tmp_path / "cfg",
        collator=("path: null", 'path: "../data/train.csv"'),
    )
    return cfg


def test_saved_config_set_reproduces_the_run(tmp_path):
    """Everything but credentials survives configs/ (mask_*_token included), paths too."""
    cfg = _relative_set(tmp_path)
    overrides = [
        "collator.label_masking.mask_pad_token=false",
        "collator.label_masking.mask_image_token=false",
        "collator.label_masking.mask_input_tokens=true",
        "collator.conversation.column=messages",
        "collator.conversation.role_key=from",
        "peft.r=4",
        "train.learning_rate=3e-4",
        "train.max_steps=7",
        f"train.hub_token={PLANTED_HUB}",
        f"model.processor_params.token={PLANTED_PROC}",
        "model.processor_params.use_fast=true",
        "model.model_name_or_path=../data",
    ]
    cs = load_config_set(cfg, overrides)
    run = tmp_path / "elsewhere" / "run"
    configs = mf.resolved_configs(cs)
    mf.write_configs(run, configs)
    text = "".join(p.read_text() for p in (run / "configs").iterdir())
    assert PLANTED_HUB not in text and PLANTED_PROC not in text and "hub_token" not in text
    again = load_config_set(run / "configs")
    for key in ("model", "collator", "train", "peft"):
        want = getattr(cs, key).model_dump(mode="json")
        got = getattr(again, key).model_dump(mode="json")
        if key == "train":
            want.pop("hub_token")
        if key == "model":
            want["processor_params"].pop("token")
            assert again.model_location() == cs.model_location()
            want.pop("model_name_or_path"), got.pop("model_name_or_path")
        if key == "collator":
            assert again.resolve_path(got["dataset"].pop("path")).resolve() == (
                cs.resolve_path(want["dataset"].pop("path")).resolve()
            )
        assert got == want, key


def test_saved_config_set_makes_eval_data_and_media_roots_absolute(tmp_path):
    """configs/ lives in the run folder: eval data and media roots written relative to the
    config folder are saved absolute, or training the saved set again would not find them."""
    cfg = _relative_set(tmp_path)
    (tmp_path / "data" / "eval.csv").write_text((tmp_path / "data" / "train.csv").read_text())
    (tmp_path / "media").mkdir()
    overrides = [
        "collator.dataset.eval_path=../data/eval.csv",
        "collator.dataset.media_root=../media",
    ]
    cs = load_config_set(cfg, overrides)
    dataset = mf.resolved_configs(cs)["collator"]["dataset"]
    assert dataset["eval_path"] == str((tmp_path / "data" / "eval.csv").resolve())
    assert dataset["media_root"] == str((tmp_path / "media").resolve())
    (tmp_path / "more").mkdir()
    listed = load_config_set(cfg, ["collator.dataset.media_root=[../media, ../more]"])
    roots = mf.resolved_configs(listed)["collator"]["dataset"]["media_root"]
    assert roots == [str((tmp_path / d).resolve()) for d in ("media", "more")]  # item by item


def test_saved_config_set_keeps_the_model_classes_entry_of_a_relative_model(tmp_path):
    """A local model written relative to the config folder, with its model_classes entry
    under the same relative key: the saved set (model path made absolute) still resolves the
    model through that entry, to the same classes, and trains the same settings."""
    from vlmctl.models.resolve import resolve_model
    from vlmctl.training.model_prep import choose_precision
    from vlmctl.training.worker_steps import sft_kwargs

    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "tiny" / "config.json").write_text(
        '{"model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"]}'
    )
    cfg = _relative_set(tmp_path)
    overrides = [
        "model.model_name_or_path=../models/tiny",
        'model.model_classes["../models/tiny"].model_class=Qwen2VLForConditionalGeneration',
        'model.model_classes["../models/tiny"].processor_class=Qwen2VLProcessor',
        'model.model_classes["../models/tiny"].import_path=transformers',
    ]
    cs = load_config_set(cfg, overrides)
    assert resolve_model(cs.model).source != "auto"  # the entry is used
    run = tmp_path / "run"
    mf.write_configs(run, mf.resolved_configs(cs))
    again = load_config_set(run / "configs")
    assert again.model_location() == cs.model_location()
    want, got = resolve_model(cs.model), resolve_model(again.model)
    for field in ("model_class", "processor_class", "import_path", "source"):
        assert getattr(got, field) == getattr(want, field), field
    out = tmp_path / "out"

    def kwargs(c):
        precision = choose_precision(c, cuda=True, bf16_supported=True)
        return sft_kwargs(c, out, precision, False, True, env={})

    assert kwargs(again) == kwargs(cs)
    assert mf.resolved_configs(again) == mf.resolved_configs(cs)


def test_credentials_reach_the_worker_through_a_private_file_not_argv(tmp_path, monkeypatch):
    cfg = _relative_set(tmp_path)
    monkeypatch.chdir(tmp_path)
    req = TrainRequest(
        config_dir=cfg,
        output_dir=tmp_path / "run",
        overrides=[f"train.hub_token={PLANTED_HUB}", f"model.processor_params.token={PLANTED_PROC}",
                   "peft.r=4"],
    )  # fmt: skip
    plan = plan_run(req, gpu_count=0)
    try:
        argv = " ".join(plan.argv)
        assert PLANTED_HUB not in argv and PLANTED_PROC not in argv
        assert "peft.r=4" in argv  # ordinary overrides still travel on the command line
        assert "hub_token" in argv.split("--resume-hint", 1)[1]  # the hint says to pass it again
        files = [p for p in plan.status_dir.iterdir() if PLANTED_HUB in p.read_text()]
        assert len(files) == 1 and PLANTED_PROC in files[0].read_text()
        assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
        assert stat.S_IMODE(plan.status_dir.stat().st_mode) == 0o700
        assert all(PLANTED_HUB not in v for v in plan.env.values())
        # The worker reads them back: its config set has them.
        from vlmctl.training.worker import parse_args, worker_overrides

        args = parse_args(plan.argv[plan.argv.index("vlmctl.training.worker") + 1 :])
        ovs = worker_overrides(args)
        assert f"train.hub_token={PLANTED_HUB}" in ovs and "peft.r=4" in ovs
    finally:
        import shutil

        shutil.rmtree(plan.status_dir, ignore_errors=True)


def test_hub_token_goes_to_the_environment_not_to_training_args(tmp_path):
    from types import SimpleNamespace

    from vlmctl.training.worker_steps import sft_kwargs

    cfg = _relative_set(tmp_path)
    cs = load_config_set(cfg, [f"train.hub_token={PLANTED_HUB}"])
    precision = SimpleNamespace(bf16=False, fp16=False, use_cpu=True)
    env: dict[str, str] = {}
    kw = sft_kwargs(cs, tmp_path / "run", precision, False, False, env=env)
    assert "hub_token" not in kw and PLANTED_HUB not in json.dumps(kw, default=str)
    assert env["HF_TOKEN"] == PLANTED_HUB


def _scan_cmdlines(stop: threading.Event, seen: list[str]) -> None:
    while not stop.is_set():
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue
            # The launcher and the workers; not the user's own `vlmctl train` command line.
            if "vlmctl.training.worker" in cmd or "accelerate" in cmd:
                seen.append(cmd)
        time.sleep(0.05)


@pytest.mark.slow
def test_planted_credentials_leave_no_trace_in_a_finished_run(tmp_path):
    """Every file of the run (checkpoints, training_args.bin, wandb), stdout/stderr, and the
    command lines of every vlmctl process while it ran: no planted credential anywhere."""
    from vlmctl.demo.colors import DemoOptions, write_color_dataset, write_config_set
    from vlmctl.testing.tiny import build_tiny_model

    model = build_tiny_model("qwen2_vl", tmp_path / "tiny")
    write_color_dataset(tmp_path / "data", 16, 0, seed=1)
    write_config_set(
        tmp_path / "config", str(model), DemoOptions(out=tmp_path, steps=4, batch_size=4)
    )
    env = dict(os.environ)
    env.update({"TMPDIR": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
                "NETRC": str(tmp_path / "no-netrc"), "WANDB_MODE": "offline"})  # fmt: skip
    for k in ("WANDB_API_KEY", "WANDB_DIR", "HF_TOKEN"):
        env.pop(k, None)
    env.update(PLANTED_ENV)
    stop, seen = threading.Event(), []
    scanner = threading.Thread(target=_scan_cmdlines, args=(stop, seen), daemon=True)
    scanner.start()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "vlmctl", "train", str(tmp_path / "config"),
             "--set", "train.report_to=[wandb]", "--set", "train.save_steps=2",
             "--set", "train.save_total_limit=null",
             "--set", f"train.hub_token={PLANTED_HUB}",
             "--set", f"model.processor_params.token={PLANTED_PROC}"],
            env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=400,
        )  # fmt: skip
    finally:
        stop.set()
        scanner.join()
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    files = [p for p in run.rglob("*") if p.is_file()]
    names = {p.relative_to(run).as_posix() for p in files}
    assert "training_args.bin" in names and any(n.startswith("checkpoint-2/") for n in names)
    assert any(n.startswith("wandb/") and n.endswith("output.log") for n in names), sorted(names)
    assert any(n.endswith("training_args.bin") and n.startswith("checkpoint-") for n in names)
    assert any("worker" in c for c in seen), "the scanner never saw the worker"
    texts = {"stdout": proc.stdout, "stderr": proc.stderr, "argv": "\n".join(seen)}
    # The run folder, and everything else left under the test's folder (TMPDIR: the private
    # status folder that carried the credentials to the worker is gone once the run ends).
    for p in [p for p in tmp_path.rglob("*") if p.is_file()]:
        texts[str(p)] = p.read_bytes().decode("latin-1")
    assert set(map(str, files)) <= set(texts)
    planted_all = [PLANTED_HUB, PLANTED_PROC, "PlantedHub", "PlantedProcessor", "PlantedWandb",
                   "PlantedEnv", *PLANTED_ENV.values()]  # fmt: skip
    for where, text in texts.items():
        for planted in planted_all:
            assert planted not in text, f"{planted} found in {where}"
    # The settings that merely contain "token" are still recorded.
    manifest = json.loads((run / "vlmctl-run.json").read_text())
    assert "mask_pad_token" in manifest["configs"]["collator"]["label_masking"]
    # The saved set, given back to train, is the run's settings exactly (minus credentials).
    again = load_config_set(run / "configs")
    assert mf.resolved_configs(again) == manifest["configs"]
    ran = load_config_set(tmp_path / "config", ["train.report_to=[wandb]", "train.save_steps=2",
                                                "train.save_total_limit=null"])  # fmt: skip
    assert mf.resolved_configs(again) == mf.resolved_configs(ran)
