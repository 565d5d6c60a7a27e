"""The published pre-commit hook (`.pre-commit-hooks.yaml` + `vlmctl.precommit`).

The slow tests run pre-commit itself against a sample repository that uses this repository's
committed HEAD as its hook repo, exactly as a user's `.pre-commit-config.yaml` would: pre-commit
clones HEAD and installs vlmctl into its own environment, so only committed files count.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vlmctl.precommit import split_args

REPO = Path(__file__).resolve().parents[1]


# --- fast: argument mapping -------------------------------------------------------------------


def test_config_files_map_to_their_folders_once(tmp_path):
    options, dirs = split_args(
        [
            "configs/a/train_config.yaml",
            "configs/a/peft_config.yaml",
            "configs/b/vlm_model_config.yaml",
            "vlm_collator_config.yaml",
        ]
    )
    assert options == []
    assert dirs == [".", "configs/a", "configs/b"]


def test_options_pass_through_and_other_files_are_not_folders():
    options, dirs = split_args(["--format", "github", "--", "x/train_config.yaml", "README.md"])
    assert options == ["--format", "github", "README.md"]
    assert dirs == ["x"]


def test_folder_argument_counts_when_it_holds_a_config_file(tmp_path):
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "train_config.yaml").write_text("learning_rate: 1e-4\n")
    (tmp_path / "empty").mkdir()
    options, dirs = split_args([str(tmp_path / "set"), str(tmp_path / "empty")])
    assert dirs == [str(tmp_path / "set")]
    assert options == [str(tmp_path / "empty")]


def test_no_config_files_means_nothing_to_run(monkeypatch):
    import vlmctl.precommit as precommit

    def boom(cmd):
        raise AssertionError(f"validate must not run without a config set: {cmd}")

    monkeypatch.setattr(precommit.subprocess, "call", boom)
    assert precommit.main(["README.md", "--format", "github"]) == 0
    assert precommit.main([]) == 0


def test_validate_runs_once_over_all_folders(monkeypatch):
    import vlmctl.precommit as precommit

    calls = []
    monkeypatch.setattr(precommit.subprocess, "call", lambda cmd: calls.append(cmd) or 1)
    assert precommit.main(["b/train_config.yaml", "a/peft_config.yaml", "b/peft_config.yaml"]) == 1
    safe = ["-P"] if sys.version_info >= (3, 11) else []  # never the working folder's modules
    assert calls == [[sys.executable, *safe, "-m", "vlmctl", "validate", "a", "b"]]


# --- slow: pre-commit itself --------------------------------------------------------------------


def _pre_commit_cmd() -> list[str]:
    try:
        import pre_commit  # noqa: F401
    except ImportError:
        r = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "pre-commit"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if r.returncode != 0:  # pre-commit is a dev extra: failing to get it is a broken install
            pytest.fail(
                "pre-commit is not installed and `pip install pre-commit` failed: "
                + (r.stderr or r.stdout).strip()[-500:]
            )
    return [sys.executable, "-m", "pre_commit"]


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def hook_env(tmp_path_factory):
    """pre-commit command, environment and a config that points at this repo's HEAD.

    One PRE_COMMIT_HOME for the module, so the hook environment (vlmctl and its dependencies,
    several GB) is installed once and removed at the end instead of piling up in ~/.cache.
    """
    if shutil.which("git") is None:
        pytest.skip("git is not installed: pre-commit needs it")
    if not (REPO / ".git").exists():
        pytest.skip(f"{REPO} is not a git checkout: pre-commit clones the hook repo from git")
    cmd = _pre_commit_cmd()
    head = _git("rev-parse", "HEAD", cwd=REPO)
    committed = _git("ls-tree", "-r", "--name-only", head, cwd=REPO).splitlines()
    for needed in (".pre-commit-hooks.yaml", "vlmctl/precommit.py"):
        assert needed in committed, f"{needed} is not committed at HEAD {head[:12]}"
    home = tmp_path_factory.mktemp("pre-commit-home")
    env = dict(os.environ)
    env.update(PRE_COMMIT_HOME=str(home), PRE_COMMIT_COLOR="never", HF_HUB_OFFLINE="1")
    env.pop("PRE_COMMIT", None)
    config = f"repos:\n  - repo: {REPO}\n    rev: {head}\n    hooks:\n      - id: vlmctl-validate\n"
    yield cmd, env, config
    shutil.rmtree(home, ignore_errors=True)


def _init_config_set(folder: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "vlmctl", "init", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, f"vlmctl init failed:\n{r.stdout}\n{r.stderr}"
    assert (folder / "train_config.yaml").is_file()


def _sample_repo(root: Path, config: str, sets: dict[str, bool]) -> Path:
    """A git repo with one config set per name; value True puts the typo in train_config.yaml."""
    root.mkdir()
    _git("init", "-q", cwd=root)
    (root / ".pre-commit-config.yaml").write_text(config)
    for name, typo in sets.items():
        folder = root / "configs" / name
        _init_config_set(folder)
        if typo:
            train = folder / "train_config.yaml"
            text = train.read_text()
            if "learning_rate:" in text:
                text = text.replace("learning_rate:", "learning_rat:", 1)
            else:
                text += "learning_rat: 0.0001\n"
            train.write_text(text)
            assert "learning_rat:" in train.read_text()
    _git("add", "-A", cwd=root)
    return root


def _run_hook(cmd: list[str], env: dict[str, str], repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*cmd, "run", "vlmctl-validate", "--all-files"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )


@pytest.mark.slow
def test_hook_passes_on_a_clean_config_set(hook_env, tmp_path):
    cmd, env, config = hook_env
    repo = _sample_repo(tmp_path / "clean", config, {"clean": False})
    r = _run_hook(cmd, env, repo)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "vlmctl validate" in out and "Passed" in out, out


@pytest.mark.slow
def test_hook_fails_and_names_the_typo(hook_env, tmp_path):
    cmd, env, config = hook_env
    repo = _sample_repo(tmp_path / "typo", config, {"clean": False, "typo": True})
    r = _run_hook(cmd, env, repo)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "Failed" in out, out
    assert "train_config.yaml" in out, out
    assert "learning_rat" in out, out
    # the typo is reported against the folder that has it, not the clean one
    assert "configs/typo" in out, out


@pytest.mark.slow
def test_hook_installs_only_the_light_package(hook_env, tmp_path):
    """pre-commit's environment gets vlmctl without torch/transformers (#16), and the hook checks
    the configs only, so a set whose dataset is not in the repository still passes."""
    cmd, env, config = hook_env
    repo = _sample_repo(tmp_path / "light", config, {"clean": False})
    collator = repo / "configs" / "clean" / "vlm_collator_config.yaml"
    text = collator.read_text()
    assert "    path: null" in text
    collator.write_text(text.replace("    path: null", '    path: "data/train.csv"', 1))
    _git("add", "-A", cwd=repo)
    r = _run_hook(cmd, env, repo)
    assert r.returncode == 0, r.stdout + r.stderr
    home = Path(env["PRE_COMMIT_HOME"])
    installed = {p.name for p in home.glob("*/py_env-*/lib/python*/site-packages/*")}
    assert "vlmctl" in installed, sorted(installed)[:50]
    heavy = installed & {"torch", "transformers", "trl", "peft", "datasets", "PIL", "numpy"}
    assert not heavy, heavy
