"""The example GitHub Actions workflow's validate step, run for real in a sample repository.

The step's shell script is taken from `docs/ci/github-actions-validate.yml` as written (only the
install step is GitHub's business), and run with bash in a git repo holding config sets, with
`python` from a light environment (what the install step's `pip install vlmctl` gives: no torch,
no transformers): a clean set passes; a typo fails with a GitHub annotation on the right file and
line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests._light_env import make_light_venv

WORKFLOW = Path(__file__).resolve().parents[1] / "docs" / "ci" / "github-actions-validate.yml"


def _validate_step() -> str:
    wf = YAML(typ="safe").load(WORKFLOW.read_text())
    steps = wf["jobs"]["validate-pip"]["steps"]
    (script,) = [s["run"] for s in steps if s.get("name") == "Validate every config set"]
    return script


@pytest.fixture(scope="module")
def light_bin(tmp_path_factory) -> Path:
    """The bin folder of a light environment (the workflow's install step installs no extras)."""
    return make_light_venv(tmp_path_factory.mktemp("light")).parent


def _run(repo: Path, bin_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    # `python` in the step is the job's interpreter: here, the light environment's.
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        ["bash", "-e", "-c", _validate_step()],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _git_repo(tmp_path: Path, sets: dict[str, str | None]) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    for name, typo in sets.items():
        target = repo / "configs" / name
        subprocess.run(
            [sys.executable, "-m", "vlmctl", "init", str(target)],
            check=True,
            capture_output=True,
        )
        if typo:
            train = target / "train_config.yaml"
            train.write_text(train.read_text().replace("learning_rate:", f"{typo}:", 1))
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    return repo


def test_workflow_step_passes_on_clean_config_sets(tmp_path, light_bin):
    repo = _git_repo(tmp_path, {"a": None, "b": None})
    # A dataset that is not in the repository: the step checks the configs only.
    collator = repo / "configs" / "a" / "vlm_collator_config.yaml"
    collator.write_text(collator.read_text().replace("    path: null", '    path: "x.csv"', 1))
    proc = _run(repo, light_bin)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "::error" not in proc.stdout


def test_workflow_step_fails_with_an_annotation_on_the_typo(tmp_path, light_bin):
    repo = _git_repo(tmp_path, {"clean": None, "typo": "learning_rat"})
    proc = _run(repo, light_bin)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [ln for ln in proc.stdout.splitlines() if ln.startswith("::error ")]
    assert len(errors) == 1, proc.stdout
    line = (repo / "configs/typo/train_config.yaml").read_text().splitlines()
    expected_line = next(i for i, t in enumerate(line, 1) if t.startswith("learning_rat:"))
    assert f"file=configs/typo/train_config.yaml,line={expected_line}," in errors[0]
    assert "learning_rate" in errors[0]  # the did-you-mean


@pytest.mark.parametrize("job", ["validate-pip", "validate-container"])
def test_both_jobs_annotate_for_github(job):
    wf = YAML(typ="safe").load(WORKFLOW.read_text())
    runs = " ".join(s.get("run", "") for s in wf["jobs"][job]["steps"])
    assert "--format github" in runs and "vlmctl.precommit" in runs


def test_the_pip_job_installs_the_light_package_and_checks_configs_only():
    wf = YAML(typ="safe").load(WORKFLOW.read_text())
    install = " ".join(
        s.get("run", "")
        for s in wf["jobs"]["validate-pip"]["steps"]
        if "Install" in s.get("name", "")
    )
    assert 'pip install "$VLMCTL_PIP_SPEC"' in install
    assert "torch" not in install and "[" not in wf["env"]["VLMCTL_PIP_SPEC"]
    for job in ("validate-pip", "validate-container"):
        runs = " ".join(s.get("run", "") for s in wf["jobs"][job]["steps"])
        assert "--config-only" in runs, job
    assert "vlmctl-validate" in wf["env"]["VLMCTL_VALIDATE_IMAGE"]
