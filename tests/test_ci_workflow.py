"""The example GitHub Actions workflow's validate step, run for real in a sample repository.

The step's shell script is taken from `docs/ci/github-actions-validate.yml` as written (only the
install step is GitHub's business), and run with bash in a git repo holding config sets: a clean
set passes; a typo fails with a GitHub annotation on the right file and line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

WORKFLOW = Path(__file__).resolve().parents[1] / "docs" / "ci" / "github-actions-validate.yml"


def _validate_step() -> str:
    wf = YAML(typ="safe").load(WORKFLOW.read_text())
    steps = wf["jobs"]["validate-pip"]["steps"]
    (script,) = [s["run"] for s in steps if s.get("name") == "Validate every config set"]
    return script


def _run(repo: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    # `python` in the step is the job's interpreter: here, this test's.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
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


def test_workflow_step_passes_on_clean_config_sets(tmp_path):
    proc = _run(_git_repo(tmp_path, {"a": None, "b": None}))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "::error" not in proc.stdout


def test_workflow_step_fails_with_an_annotation_on_the_typo(tmp_path):
    repo = _git_repo(tmp_path, {"clean": None, "typo": "learning_rat"})
    proc = _run(repo)
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
