"""The light install (`pip install vlmctl`, no extras): config-level work runs, heavy verbs answer
with one line naming their extra.

Fast tests use `_light_env.make_light_venv` (the light dependencies linked into a pip-less venv);
`test_real_light_install` (slow) builds a real one with `pip install <checkout>`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from tests._light_env import REPO, light_distributions, make_light_venv

HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "PIL", "numpy")


@pytest.fixture(scope="module")
def light_py(tmp_path_factory) -> Path:
    return make_light_venv(tmp_path_factory.mktemp("light"))


@pytest.fixture(scope="module")
def light_set(light_py, tmp_path_factory) -> Path:
    """A folder holding config set `x`, written by the light install's `init`."""
    work = tmp_path_factory.mktemp("light-work")
    r = _run(light_py, "init", "x", cwd=work)
    assert r.returncode == 0, r.stderr
    return work


def _run(py: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VLMCTL_DEBUG")}
    return subprocess.run(
        [str(py), "-m", "vlmctl", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_light_environment_really_lacks_the_heavy_libraries(light_py):
    code = f"import importlib.util as u; print([m for m in {HEAVY!r} if u.find_spec(m)])"
    out = subprocess.run([str(light_py), "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_light_dependencies_are_the_light_ones():
    deps = light_distributions()
    assert {"typer", "rich", "pydantic", "ruamel-yaml"} <= deps
    for heavy in ("torch", "transformers", "pillow", "numpy", "trl", "datasets"):
        assert heavy not in deps, heavy
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert {"data", "train", "all", "dev"} <= set(extras)
    assert any(r.startswith("torch") for r in extras["data"])
    assert "vlmctl[data]" in extras["train"]


def test_init_and_config_only_validate_work_without_extras(light_py, tmp_path):
    r = _run(light_py, "init", "x", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = _run(light_py, "validate", "x", "--config-only", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    # The Qwen2-VL class resolves from the snapshot (transformers is not installed).
    assert "model_classes entry -> transformers.Qwen2VLForConditionalGeneration" in r.stdout
    # json and github formats; a TRL key (from the snapshot) passes, a typo is caught.
    train = tmp_path / "x" / "train_config.yaml"
    train.write_text(train.read_text() + "dataloader_num_workers: 2\nlearning_rat: 0.1\n")
    r = _run(light_py, "validate", "x", "--config-only", "--format", "json", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    errors = [
        f for f in json.loads(r.stdout)["config_sets"][0]["findings"] if f["severity"] == "error"
    ]
    assert [f["key"] for f in errors] == ["learning_rat"], errors
    assert "learning_rate" in errors[0]["hint"]
    r = _run(light_py, "validate", "x", "--config-only", "--format", "github", cwd=tmp_path)
    assert r.returncode == 1
    assert [ln for ln in r.stdout.splitlines() if ln.startswith("::error ")][0].startswith(
        "::error file=x/train_config.yaml,line="
    )


def test_schema_lists_trl_fields_from_the_snapshot(light_py, light_set):
    r = _run(light_py, "schema", "--file", "train", cwd=light_set)
    assert r.returncode == 0, r.stderr
    props = json.loads(r.stdout)["properties"]
    assert "dataloader_num_workers" in props and "train_sampling_strategy" in props


def test_precommit_helper_runs_in_the_light_environment(light_py, light_set):
    r = subprocess.run(
        [str(light_py), "-m", "vlmctl.precommit", "--config-only", "x/train_config.yaml"],
        cwd=light_set,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["train", "x", "--dry-run"], "train"),
        (["merge", "x"], "train"),
        (["demo", "--out", "d"], "train"),
        (["preview", "x"], "data"),
        (["validate", "x", "--set", "collator.dataset.path=data.csv"], "data"),
        # eval: answered before --model is looked at (a model folder cannot help without torch)
        (["eval", "x", "--model", "no-such-model", "--out", "d"], "data"),
    ],
)
def test_a_verb_without_its_extra_says_so_in_one_line(light_py, light_set, args, extra):
    r = _run(light_py, *args, cwd=light_set)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: vlmctl {args[0]} needs the {extra} extra"), lines[0]
    assert f'pip install "vlmctl[{extra}]"' in lines[0]
    assert not (light_set / "d").exists() and not (light_set / "outputs").exists()


def test_an_unchecked_import_of_an_extra_is_one_line_too(light_py, tmp_path):
    """The CLI boundary's safety net: a verb that imports torch without `require` first."""
    code = (
        "import sys, typer\n"
        "from vlmctl import cli\n"
        "def newverb():\n"
        "    '''A verb that forgot to check its extra.'''\n"
        "    import torch  # noqa\n"
        "cli.app.command()(cli.error_boundary(newverb))\n"
        "sys.exit(cli.run(['newverb']))\n"
    )
    r = subprocess.run([str(light_py), "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "error: vlmctl newverb needs the data extra (not installed: torch) "
        '(fix: pip install "vlmctl[data]")'
    ]


def test_only_a_truly_missing_module_of_an_extra_is_called_missing(monkeypatch):
    from vlmctl import extras

    monkeypatch.setitem(extras.EXTRA_MODULES, "train", ("peft", "not_installed_xyz"))
    err = extras.missing_extra_error(
        ModuleNotFoundError("x", name="not_installed_xyz.sub"), "train"
    )
    assert err is not None and err.findings[0].code == "missing-extra"
    assert "vlmctl[train]" in err.findings[0].one_line()
    # installed (here) but failing inside: a real bug, not a missing extra
    assert extras.missing_extra_error(ModuleNotFoundError("x", name="peft")) is None
    assert extras.missing_extra_error(ModuleNotFoundError("x", name="notalib")) is None
    assert extras.missing_extra_error(ImportError("x", name="not_installed_xyz")) is None


@pytest.mark.slow
def test_real_light_install(tmp_path):
    """`pip install <checkout>` in a fresh venv: small, no torch, and init + validate work."""
    if shutil.which("git") is None:
        pytest.skip("git is needed to copy the checkout")
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    if r.returncode != 0 and "Could not find a version" in r.stderr:
        pytest.skip(f"pip cannot reach a package index here: {r.stderr.strip()[-300:]}")
    assert r.returncode == 0, r.stderr
    listed = subprocess.run(
        [str(py), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True, env=env
    )
    names = {d["name"].lower() for d in json.loads(listed.stdout)}
    assert not names & {"torch", "transformers", "pillow", "numpy", "trl"}, names
    vlmctl = env_dir / "bin" / "vlmctl"
    work = tmp_path / "work"
    work.mkdir()
    assert subprocess.run([str(vlmctl), "init", "x"], cwd=work, env=env).returncode == 0
    r = subprocess.run(
        [str(vlmctl), "validate", "x", "--config-only"], cwd=work, env=env, capture_output=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
    size = sum(f.stat().st_size for f in env_dir.rglob("*") if f.is_file() and not f.is_symlink())
    assert size < 100e6, f"light venv is {size / 1e6:.0f} MB"
