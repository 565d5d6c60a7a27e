"""Issue #18, security and bad input: a config set from a pull request cannot run code, CI logs
never carry a file's contents, YAML bombs fail fast, and the smaller bad-input cases each give
one located line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _config_util import edit, line_of, write_set
from _validate_util import generated_rows, write_config_set, write_csv

from vlmctl.cli import run

REPO = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLMCTL_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def _py(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _plant(folder: Path, name: str, marker: Path) -> None:
    """A module that leaves `marker` behind if anything imports it."""
    (folder / f"{name}.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\nclass Evil:\n    pass\n"
    )


def _entry(model_id: str, import_path: str) -> str:
    return (
        "model_classes:\n"
        f'  "{model_id}":\n'
        '    model_class: "Qwen2VLForConditionalGeneration"\n'
        '    processor_class: "Qwen2VLProcessor"\n'
        f'    import_path: "{import_path}"\n'
    )


def _data_set(root: Path, model: Path | str, n: int = 4) -> Path:
    data = root / "data"
    rows = generated_rows(data / "images", n=n, n_images=2)
    write_csv(data / "data.csv", rows)
    return write_config_set(root / "set", data / "data.csv", model, media_root=data / "images")


def _errors(stderr_and_out: str) -> list[str]:
    return [ln.strip() for ln in stderr_and_out.splitlines() if ln.strip().startswith("error:")]


# ---- 1. a config can run code ----


def test_validate_in_an_untrusted_folder_never_imports_a_module_named_by_the_config(tmp_path):
    marker = tmp_path / "PWNED"
    _plant(tmp_path, "evilmod", marker)
    cfg = write_set(tmp_path / "set")
    edit(cfg / "vlm_model_config.yaml", 'import_path: "transformers"', 'import_path: "evilmod"')
    for args in (
        ["-m", "vlmctl", "validate", "set"],
        ["-m", "vlmctl", "validate", "--config-only", "set"],
    ):
        r = _py(args, tmp_path)
        assert not marker.exists(), (args, r.stdout, r.stderr)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        errors = _errors(r.stdout + r.stderr)
        assert len(errors) == 1, errors
        assert "import_path" in errors[0] and "evilmod" in errors[0] and "fix:" in errors[0]
        assert "Traceback" not in r.stderr


def test_precommit_entry_point_does_not_import_from_the_working_folder(tmp_path):
    marker = tmp_path / "PWNED"
    _plant(tmp_path, "evilmod", marker)
    cfg = write_set(tmp_path / "set")
    edit(cfg / "vlm_model_config.yaml", 'import_path: "transformers"', 'import_path: "evilmod"')
    r = _py(["-m", "vlmctl.precommit", "set/vlm_model_config.yaml"], tmp_path)
    assert not marker.exists(), (r.stdout, r.stderr)
    assert r.returncode == 1 and "evilmod" in r.stdout + r.stderr


def test_a_module_in_the_working_folder_cannot_shadow_what_vlmctl_imports(tmp_path):
    """`python -m` puts the cwd first on sys.path: a typer.py or subprocess.py there must not run."""
    marker = tmp_path / "PWNED"
    for name in ("typer", "ruamel", "pydantic", "subprocess", "json"):
        _plant(tmp_path, name, marker)
    write_set(tmp_path / "set")
    for args in (
        ["-m", "vlmctl", "validate", "--config-only", "set"],
        ["-m", "vlmctl.precommit", "set/train_config.yaml"],
    ):
        r = _py(args, tmp_path)
        assert not marker.exists(), (args, r.stdout, r.stderr)
        assert r.returncode == 0, (args, r.stdout, r.stderr)


def test_import_path_of_an_installed_stdlib_module_is_refused_without_importing_it(
    tmp_path, capsys
):
    cfg = write_set(tmp_path / "set")
    edit(cfg / "vlm_model_config.yaml", 'import_path: "transformers"', 'import_path: "this"')
    sys.modules.pop("this", None)
    code = run(["validate", "--config-only", str(cfg)])
    out = capsys.readouterr()
    assert "this" not in sys.modules
    assert "Beautiful is better" not in out.out + out.err
    assert code == 1
    errors = _errors(out.out)
    assert len(errors) == 1, out.out
    line = line_of(cfg / "vlm_model_config.yaml", 'import_path: "this"')
    assert f"vlm_model_config.yaml:{line}:" in errors[0]
    assert "VLMCTL_ALLOW_IMPORTS" in errors[0]


def test_an_allowed_installed_module_is_still_never_imported_by_validate(tmp_path, tiny_model_dir):
    """Allowed by whoever runs vlmctl (env), installed (not the cwd): validate still only reads."""
    model = tiny_model_dir("qwen2_vl")
    site = tmp_path / "site"
    site.mkdir()
    marker = tmp_path / "IMPORTED"
    _plant(site, "okpkg", marker)
    cfg = _data_set(tmp_path, model)
    with open(cfg / "vlm_model_config.yaml", "a") as f:
        f.write(_entry(str(model), "okpkg"))
    env = {"PYTHONPATH": f"{REPO}{os.pathsep}{site}", "VLMCTL_ALLOW_IMPORTS": "okpkg"}
    r = _py(["-m", "vlmctl", "validate", str(cfg)], tmp_path, **env)
    assert not marker.exists(), (r.stdout, r.stderr)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "not imported by validate" in r.stdout


def test_an_allowed_module_that_lives_in_the_working_folder_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    _plant(tmp_path, "evilmod", marker)
    cfg = write_set(tmp_path / "set")
    edit(cfg / "vlm_model_config.yaml", 'import_path: "transformers"', 'import_path: "evilmod"')
    r = _py(
        ["-m", "vlmctl", "validate", "--config-only", "set"],
        tmp_path,
        VLMCTL_ALLOW_IMPORTS="evilmod",
    )
    assert not marker.exists()
    assert r.returncode == 1
    errors = _errors(r.stdout)
    assert len(errors) == 1 and "not an installed module" in errors[0], r.stdout


def test_train_imports_an_allowed_module_from_where_it_is_installed_not_the_working_folder(
    tmp_path, monkeypatch
):
    """Even with the working folder on sys.path (PYTHONPATH=., a script run from there), the
    class `train`/`merge` import comes from the installed package, never a same-named file."""
    from vlmctl.models.resolve import _class

    site, work = tmp_path / "site", tmp_path / "work"
    site.mkdir()
    work.mkdir()
    marker = tmp_path / "PWNED"
    _plant(work, "okpkg", marker)
    (site / "okpkg.py").write_text("class Evil:\n    where = 'site'\n")
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "path", [str(work), "", str(site), *sys.path])
    monkeypatch.setenv("VLMCTL_ALLOW_IMPORTS", "okpkg")
    sys.modules.pop("okpkg", None)
    try:
        cls = _class("okpkg", "Evil")
        assert not marker.exists(), "imported the working folder's okpkg.py"
        assert cls.where == "site"
        assert sys.path[:2] == [str(work), ""]  # sys.path is given back as it was
    finally:
        sys.modules.pop("okpkg", None)


# ---- 3. file contents in error messages; media paths leaving the dataset folders ----

SECRET = "HF_TOKEN=hf_abcdefSECRET123456"


def test_a_text_file_given_as_an_image_is_never_quoted(tmp_path):
    from vlmctl.errors import DataError
    from vlmctl.media.images import probe_image

    (tmp_path / "secrets.env").write_text(SECRET + "\nOTHER=1\n")
    with pytest.raises(DataError) as info:
        probe_image("secrets.env", [tmp_path], row=4)
    text = info.value.findings[0].one_line()
    assert "hf_abc" not in text and "HF_TOKEN" not in text, text
    assert "not an image" in text and "text file" in text


def _secret_rows_set(tmp_path: Path, model: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    rows = generated_rows(data / "images", n=4, n_images=2)
    (tmp_path / "secrets.env").write_text(SECRET + "\n")
    rows[1].image_name = "../../secrets.env"
    write_csv(data / "data.csv", rows)
    cfg = write_config_set(tmp_path / "set", data / "data.csv", model, media_root=data / "images")
    return cfg, data


def test_validate_never_prints_the_contents_of_a_file_a_row_points_at(tmp_path, tiny_model_dir):
    cfg, _ = _secret_rows_set(tmp_path, tiny_model_dir("qwen2_vl"))
    for fmt in ("text", "json", "github"):
        r = _py(["-m", "vlmctl", "validate", "--format", fmt, str(cfg)], tmp_path)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "hf_abc" not in r.stdout + r.stderr, (fmt, r.stdout)
        assert "row 1" in r.stdout or '"row": 1' in r.stdout


def test_a_ci_job_can_confine_media_to_the_dataset_folders(tmp_path, tiny_model_dir):
    cfg, data = _secret_rows_set(tmp_path, tiny_model_dir("qwen2_vl"))
    r = _py(["-m", "vlmctl", "validate", str(cfg)], tmp_path, VLMCTL_CONFINE_MEDIA="1")
    assert r.returncode == 1
    errors = _errors(r.stdout)
    assert len(errors) == 1, r.stdout
    assert "row 1" in errors[0] and "outside" in errors[0] and "VLMCTL_CONFINE_MEDIA" in errors[0]
    # an absolute path and a symlink pointing out are refused the same way
    from vlmctl.errors import DataError
    from vlmctl.media.paths import resolve_media_path

    (data / "images" / "link.jpg").symlink_to(tmp_path / "secrets.env")
    os.environ["VLMCTL_CONFINE_MEDIA"] = "1"
    try:
        for value in ("/etc/passwd", "link.jpg", "../../secrets.env"):
            with pytest.raises(DataError, match="outside"):
                resolve_media_path(value, [data / "images", data], row=0)
        assert resolve_media_path("img0.jpg", [data / "images", data]).name == "img0.jpg"
    finally:
        del os.environ["VLMCTL_CONFINE_MEDIA"]
    assert resolve_media_path("/etc/passwd", [data]) == Path("/etc/passwd")  # default: allowed


# ---- 4. resource bombs ----


def _bomb(levels: int = 9, width: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        refs = ", ".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_fails_fast_in_one_line(tmp_path, capsys):
    cfg = write_set(tmp_path / "set")
    (cfg / "train_config.yaml").write_text(_bomb())
    start = time.monotonic()
    code = run(["validate", "--config-only", str(cfg)])
    elapsed = time.monotonic() - start
    out = capsys.readouterr().out
    assert code == 1 and elapsed < 5, elapsed
    errors = _errors(out)
    assert len(errors) == 1, out
    assert "train_config.yaml:" in errors[0] and "alias" in errors[0] and "fix:" in errors[0]


def test_a_huge_config_file_is_refused_before_parsing(tmp_path, capsys):
    cfg = write_set(tmp_path / "set")
    with open(cfg / "train_config.yaml", "a") as f:
        for i in range(400_000):
            f.write(f"# padding line {i:07d} ....\n")
    assert (cfg / "train_config.yaml").stat().st_size > 8 * 1024 * 1024
    start = time.monotonic()
    code = run(["validate", "--config-only", str(cfg)])
    elapsed = time.monotonic() - start
    out = capsys.readouterr().out
    assert code == 1 and elapsed < 3, elapsed
    errors = _errors(out)
    assert len(errors) == 1 and "train_config.yaml" in errors[0] and "MB" in errors[0], out


def test_a_config_symlinked_to_dev_zero_is_not_read_forever(tmp_path, capsys):
    cfg = write_set(tmp_path / "set")
    (cfg / "train_config.yaml").unlink()
    (cfg / "train_config.yaml").symlink_to("/dev/zero")
    code = run(["validate", "--config-only", str(cfg)])
    errors = _errors(capsys.readouterr().out)
    assert code == 1 and len(errors) == 1
    assert "not a regular file" in errors[0] and "/dev/zero" in errors[0], errors


# ---- smaller ----


def _validate_errors(cfg: Path, capsys, *extra: str) -> tuple[int, list[str]]:
    code = run(["validate", "--config-only", *extra, str(cfg)])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return code, _errors(out.out + out.err)


def test_an_unclosed_placeholder_is_an_error(tmp_path, capsys):
    cfg = write_set(tmp_path / "set", collator=('"{question_column}"', '"{question_column"'))
    code, errors = _validate_errors(cfg, capsys)
    line = line_of(cfg / "vlm_collator_config.yaml", '"{question_column"')
    assert code == 1 and len(errors) == 1, errors
    assert f"vlm_collator_config.yaml:{line}:" in errors[0] and "unclosed" in errors[0]


def test_a_media_root_that_does_not_exist_is_reported(tmp_path, capsys):
    cfg = write_set(tmp_path / "set", collator=("media_root: null ", "media_root: nowhere"))
    code = run(["validate", "--config-only", str(cfg)])
    out = capsys.readouterr().out
    line = line_of(cfg / "vlm_collator_config.yaml", "media_root: nowhere")
    assert any(
        f"vlm_collator_config.yaml:{line}:" in ln and "media_root" in ln and "not found" in ln
        for ln in out.splitlines()
        if ln.strip().startswith(("warning:", "error:"))
    ), out
    # with the dataset present, a missing media_root is an error
    (cfg / "data.csv").write_text("image,question,answer\na.jpg,q,a\n")
    edit(cfg / "vlm_collator_config.yaml", "path: null", 'path: "data.csv"')
    code, errors = _validate_errors(cfg, capsys)
    assert code == 1 and len(errors) == 1 and "media_root" in errors[0], errors


def test_a_local_model_path_that_does_not_exist_is_an_error(tmp_path, capsys):
    cfg = write_set(
        tmp_path / "set",
        model=(
            'model_name_or_path: "Qwen/Qwen2-VL-2B-Instruct"',
            'model_name_or_path: "./models/mine"',
        ),
    )
    code, errors = _validate_errors(cfg, capsys)
    assert code == 1 and len(errors) == 1, errors
    line = line_of(cfg / "vlm_model_config.yaml", "./models/mine")
    assert f"vlm_model_config.yaml:{line}:" in errors[0] and "not found" in errors[0]


def test_an_unclosed_quote_is_reported_on_its_own_line(tmp_path, capsys):
    cfg = write_set(tmp_path / "set")
    p = cfg / "train_config.yaml"
    # the last key (comments may follow it): its unclosed quote runs to the end of the file
    lines = p.read_text().splitlines()
    while lines and (not lines[-1].strip() or lines[-1].lstrip().startswith("#")):
        lines.pop()
    n = len(lines)
    lines[-1] = lines[-1].split(":")[0] + ': "oops'
    p.write_text("\n".join(lines) + "\n")
    code, errors = _validate_errors(cfg, capsys)
    assert code == 1 and len(errors) == 1, errors
    assert f"train_config.yaml:{n}:" in errors[0] and "unclosed" in errors[0], errors
    # one in the middle of the collator file
    cfg = write_set(tmp_path / "set2", collator=('"question" #', '"question #'))
    code, errors = _validate_errors(cfg, capsys)
    line = line_of(cfg / "vlm_collator_config.yaml", '"question #')
    assert code == 1 and len(errors) == 1, errors
    assert f"vlm_collator_config.yaml:{line}:" in errors[0] and "unclosed" in errors[0], errors


def test_an_unreadable_config_says_permission_denied(tmp_path, capsys, monkeypatch):
    """Tests run as root, who can read anything: the OS refusal is simulated at the open call."""
    cfg = write_set(tmp_path / "set")
    target = cfg / "train_config.yaml"
    real_open = Path.open

    def deny(self, *a, **k):
        if self == target:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *a, **k)

    monkeypatch.setattr(Path, "open", deny)
    code, errors = _validate_errors(cfg, capsys)
    assert code == 1 and len(errors) == 1, errors
    assert "train_config.yaml" in errors[0] and "permission denied" in errors[0], errors


def test_a_directory_or_device_in_place_of_a_config_is_named_as_such(tmp_path, capsys):
    cfg = write_set(tmp_path / "set")
    (cfg / "peft_config.yaml").unlink()
    (cfg / "peft_config.yaml").mkdir()
    code, errors = _validate_errors(cfg, capsys)
    assert code == 1 and len(errors) == 1 and "is a folder" in errors[0], errors


def test_a_media_symlink_to_a_device_is_not_file_not_found(tmp_path):
    from vlmctl.errors import DataError
    from vlmctl.media.paths import resolve_media_path

    (tmp_path / "z.jpg").symlink_to("/dev/zero")
    with pytest.raises(DataError) as info:
        resolve_media_path("z.jpg", [tmp_path], row=2)
    text = info.value.findings[0].one_line()
    assert "not found" not in text and "not a regular file" in text, text


def test_a_set_with_an_unknown_prefix_names_the_set(tmp_path, capsys):
    cfg = write_set(tmp_path / "set")
    code, errors = _validate_errors(cfg, capsys, "--set", "trian.learning_rate=1")
    assert code != 0 and len(errors) == 1, errors
    assert "--set trian.learning_rate=1" in errors[0] and "train" in errors[0], errors


def test_init_does_not_overwrite_the_schema_folder_without_force(tmp_path, capsys):
    folder = tmp_path / "set"
    (folder / ".vlmctl-schema").mkdir(parents=True)
    mine = folder / ".vlmctl-schema" / "train_config.schema.json"
    mine.write_text('{"mine": true}\n')
    code = run(["init", str(folder)])
    errors = _errors(capsys.readouterr().err)
    assert code == 1 and mine.read_text() == '{"mine": true}\n'
    assert len(errors) == 1 and "train_config.schema.json" in errors[0] and "--force" in errors[0]
    assert not (folder / "train_config.yaml").exists()  # nothing half-written
    assert run(["init", "--force", str(folder)]) == 0
    assert "mine" not in mine.read_text()
