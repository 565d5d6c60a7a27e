"""`vlmctl init`, `validate`, `schema` through the real CLI: messages, locations, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from _config_util import line_of, write_set
from typer.testing import CliRunner

from vlmctl.cli import app
from vlmctl.config import FILES

VLMCTL = [sys.executable, "-m", "vlmctl"]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run(*args):
    """Run the CLI in-process (fast); `run_subprocess` checks the real entry point."""
    r = CliRunner().invoke(app, [str(a) for a in args])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return Result(r.exit_code, r.stdout, r.stderr)


def run_subprocess(*args):
    """The installed entry point in a subprocess: real stderr, real exit code."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([*VLMCTL, *map(str, args)], capture_output=True, text=True, env=env)


def _snapshot(d: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_version_and_help():
    r = run_subprocess("--version")
    assert r.returncode == 0 and r.stdout.strip().startswith("vlmctl ")
    r = run_subprocess("--help")
    assert r.returncode == 0
    for verb in ("init", "validate", "preview", "train", "merge", "demo", "schema"):
        assert verb in r.stdout


def test_init_then_validate_passes(tmp_path):
    d = tmp_path / "cfg"
    r = run("init", d)
    assert r.returncode == 0, r.stderr
    for name in FILES.values():
        text = (d / name).read_text(encoding="utf-8")
        schema = name.removesuffix(".yaml") + ".schema.json"
        assert text.startswith(f"# yaml-language-server: $schema=./.vlmctl-schema/{schema}\n")
        assert json.loads((d / ".vlmctl-schema" / schema).read_text())["title"] == name
    r = run("validate", d)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "dataset.path is not set" in r.stdout  # a warning, not a failure
    r = run("validate", d, "--strict")
    assert r.returncode == 1


def test_init_refuses_to_overwrite(tmp_path):
    d = tmp_path / "cfg"
    assert run("init", d).returncode == 0
    (d / "peft_config.yaml").write_text("r: 8\n", encoding="utf-8")
    before = _snapshot(d)
    r = run("init", d, "--model", "llava-hf/llava-1.5-7b-hf")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 4
    for name in FILES.values():
        assert any(line.startswith(f"error: {d / name}: already exists") for line in lines)
    assert all("--force" in line for line in lines)
    assert _snapshot(d) == before
    r = run("init", d, "--model", "llava-hf/llava-1.5-7b-hf", "--force")
    assert r.returncode == 0
    assert (
        'model_name_or_path: "llava-hf/llava-1.5-7b-hf"'
        in (d / "vlm_model_config.yaml").read_text()
    )
    assert run("validate", d).returncode == 0


def test_init_model_keeps_comment(tmp_path):
    d = tmp_path / "c"
    assert run("init", d, "--model", 'my org/odd "name"').returncode == 0
    line = next(
        x
        for x in (d / "vlm_model_config.yaml").read_text().splitlines()
        if x.startswith("model_name_or_path:")
    )
    assert line == 'model_name_or_path: "my org/odd \\"name\\""'
    from vlmctl.config.load import load_config_set

    assert load_config_set(d).model.model_name_or_path == 'my org/odd "name"'


# (file_key, old, new, expected stderr/stdout fragment, needle for the line, col)
BAD = {
    "unknown_key": (
        "train",
        "learning_rate:",
        "learning_rat:",
        "(learning_rat): learning_rat: unknown key (fix: did you mean 'learning_rate'?)",
        "learning_rat:",
        1,
    ),
    "r_words": (
        "peft",
        "r: 64 ",
        'r: "sixty-four" ',
        "(r): r: expected a positive integer, got 'sixty-four'",
        "sixty-four",
        1,
    ),
    "num_frames": (
        "collator",
        "num_frames: 8",
        "num_frames: -1",
        "num_frames: expected a positive integer, got -1",
        "num_frames: -1",
        9,
    ),
    "resize_mode": (
        "collator",
        'resize_mode: "keep_aspect"',
        "resize_mode: squash",
        "resize_mode: expected one of keep_aspect, crop, stretch, got 'squash'",
        "resize_mode: squash",
        5,
    ),
    "placeholder": (
        "collator",
        "{question_column}",
        "{questoin_column}",
        "{questoin_column} is not a key of dataset_columns nor system_prompt "
        "(fix: did you mean {question_column}?)",
        "{questoin_column}",
        17,
    ),
    "precision": (
        "train",
        "fp16: false",
        "fp16: true",
        "bf16 and fp16 are both true",
        "fp16: true",
        1,
    ),
    "no_media": (
        "collator",
        "\n    image_data: true",
        "\n    image_data: false",
        "image_data and video_data are both false",
        "data_processing:",
        1,
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_validate_bad_value(tmp_path, case):
    key, old, new, fragment, needle, col = BAD[case]
    d = write_set(tmp_path / "s", **{key: (old, new)})
    before = _snapshot(d)
    r = run("validate", d)
    assert r.returncode == 1, r.stdout
    path = d / FILES[key]
    where = f"{path}:{line_of(path, needle)}:{col}"
    line = next(x for x in r.stdout.splitlines() if x.strip().startswith("error:"))
    assert where in line and fragment in line, line
    assert _snapshot(d) == before  # validate writes nothing


def test_validate_torch_dtype_injection_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    payload = f"__import__('os').system('id; touch {marker}')"
    d = write_set(
        tmp_path / "s", model=('torch_dtype: "torch.bfloat16"', f'torch_dtype: "{payload}"')
    )
    r = run("validate", d, "--format", "json")
    assert r.returncode == 1
    assert "uid=" not in r.stdout + r.stderr  # `id` never ran
    assert not marker.exists()
    doc = json.loads(r.stdout)
    (f,) = [x for x in doc["config_sets"][0]["findings"] if x["severity"] == "error"]
    assert f["key"] == "loading_params.torch_dtype" and "unknown dtype" in f["message"]
    assert f["line"] == line_of(d / "vlm_model_config.yaml", "torch_dtype:") and f["col"] == 5


@pytest.mark.parametrize(
    ("content", "fragment", "line", "col"),
    [
        (b"r: 8\nlora_alpha: [16\n", "YAML syntax error", None, None),
        (b"r: 8\nbias:\n\t- none\n", "tab character in the indentation", 3, 1),
        (b"r: 8\nr: 16\n", "duplicate key 'r' (first at line 1)", 2, 1),
        (b"", "file is empty", None, None),
        (b"- r: 8\n", "the file holds a list", 1, 1),
        (b"r: 8\nbias: n\xf6ne\n", "not UTF-8 text: byte 0xf6", 2, 8),
    ],
    ids=["syntax", "tab", "duplicate", "empty", "list", "non-utf8"],
)
def test_validate_unreadable_file(tmp_path, content, fragment, line, col):
    d = write_set(tmp_path / "s")
    path = d / "peft_config.yaml"
    path.write_bytes(content)
    before = _snapshot(d)
    r = run("validate", d)
    assert r.returncode == 1
    (err,) = [x for x in r.stdout.splitlines() if x.strip().startswith("error:")]
    assert fragment in err
    if line is not None:
        assert f"{path}:{line}:{col}:" in err
    else:
        assert str(path) in err
    if "syntax" in fragment:
        assert f"{path}:2:" in err or f"{path}:3:" in err
    assert _snapshot(d) == before


def test_validate_missing_file(tmp_path):
    d = write_set(tmp_path / "s")
    (d / "train_config.yaml").unlink()
    r = run_subprocess("validate", d)
    assert r.returncode == 1
    assert f"error: {d / 'train_config.yaml'}: file not found (fix: run `vlmctl init" in r.stdout


def test_validate_many_sets_json_and_github(tmp_path):
    good = write_set(tmp_path / "good")
    bad = write_set(tmp_path / "bad", train=("fp16: false", "fp16: true"))
    r = run("validate", good, bad, "--format", "json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert [s["dir"] for s in doc["config_sets"]] == [str(good), str(bad)]
    assert [s["ok"] for s in doc["config_sets"]] == [True, False]
    assert doc["summary"]["errors"] == 1 and doc["summary"]["ok"] is False
    assert set(doc["config_sets"][1]["findings"][0]) >= {
        "severity",
        "message",
        "file",
        "line",
        "col",
        "key",
        "code",
        "text",
    }
    r = run("validate", good, bad, "--format", "github")
    assert r.returncode == 1
    line = f"{line_of(bad / 'train_config.yaml', 'fp16: true')}"
    assert (
        f"::error file={bad / 'train_config.yaml'},line={line},col=1,title=vlmctl%3A fp16::"
        "bf16 and fp16 are both true"
    ) in r.stdout
    assert "::warning file=" in r.stdout and "::notice file=" in r.stdout
    r = run("validate", good, "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout)["summary"]["ok"] is True


def test_validate_overrides(tmp_path):
    d = write_set(tmp_path / "s")
    r = run("validate", d, "--set", "train.learning_rat=2e-4", "--set", "peft.r=8")
    assert r.returncode == 1
    assert (
        "error: --set train.learning_rat=2e-4 (learning_rat): learning_rat: unknown key "
        "(fix: did you mean 'learning_rate'?)"
    ) in r.stdout
    assert run("validate", d, "--set", "learning_rate=2e-4").returncode == 0
    r = run_subprocess("validate", d, "--set", "learning_rate")
    assert r.returncode == 2 and "expected KEY=VALUE" in r.stderr
    assert run("validate", d, "--format", "yaml").returncode == 2


def test_schema_command(tmp_path):
    r = run("schema", "--file", "peft")
    assert r.returncode == 0
    schema = json.loads(r.stdout)
    assert schema["title"] == "peft_config.yaml" and "lora_alpha" in schema["properties"]
    r = run("schema")
    assert set(json.loads(r.stdout)) == set(FILES.values())
    r = run("schema", "--out", tmp_path / "s")
    assert r.returncode == 0
    train = json.loads((tmp_path / "s" / "train_config.schema.json").read_text())
    assert "max_steps" in train["properties"] and train["additionalProperties"] is False
