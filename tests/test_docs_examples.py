"""Every YAML example of the README and docs/DATASETS.md runs: each block names the shape of
data it is for (`# worked example: SHAPE`), a small dataset of that shape is generated where the
block's `dataset.path` points, the block is merged into a config set written from `vlmctl
init`'s templates (tiny Qwen2-VL twin), `vlmctl validate` must pass with no warning, and
`vlmctl preview` must render every row with its media tokens and trained answer tokens."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
from _mixed_util import write_config_set, write_media, write_shape
from ruamel.yaml import YAML
from typer.testing import CliRunner

from vlmctl.cli import app

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "docs" / "DATASETS.md"]
BLOCK_RE = re.compile(r"```yaml\n(.*?)```", re.S)
LABEL_RE = re.compile(r"^# worked example: (\S+)", re.M)


def yaml_blocks() -> list[tuple[str, str, str]]:
    """(doc name, shape label, YAML text) of every ```yaml block of the docs."""
    out = []
    for doc in DOCS:
        for text in BLOCK_RE.findall(doc.read_text(encoding="utf-8")):
            m = LABEL_RE.search(text)
            out.append((doc.name, m.group(1) if m else "", text))
    return out


BLOCKS = yaml_blocks()


def test_every_block_is_labelled_and_every_shape_has_one():
    assert len(BLOCKS) >= 7
    assert all(label for _, label, _ in BLOCKS), [t[:60] for _, label, t in BLOCKS if not label]
    labels = {label for _, label, _ in BLOCKS}
    assert {"flat", "llava", "sharegpt", "internlm", "content_parts"} <= labels
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "docs/DATASETS.md" in readme  # the worked examples are linked


def _flat_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def generate(shape: str, block: dict, config: Path) -> None:
    """A small dataset of `shape` at the block's dataset.path (media beside it)."""
    target = config / block["dataset"]["path"]
    folder = target.parent
    if shape == "flat":
        root = config / block["dataset"]["media_root"]
        write_media(root.parent / "tmp-media")
        root.mkdir(parents=True, exist_ok=True)
        for name in ("a.jpg", "b.png"):
            shutil.copy(root.parent / "tmp-media" / "media" / name, root / name)
        rows = [
            ["a.jpg" if i % 2 else "b.png", f"What is item {i}?", f"thing {i}"] for i in range(4)
        ]
        _flat_csv(target, ["image_name", "question", "answer"], rows)
    elif shape == "flat-vqa":
        write_media(folder)
        rows = [["media/a.jpg", f"What is item {i}?", f"thing {i}", "{}"] for i in range(4)]
        _flat_csv(target, ["image_path", "query", "response", "metadata"], rows)
    elif shape == "flat-video":
        write_media(folder)
        rows = [["media/clip.mp4", f"What happens {i}?", f"it fades {i}"] for i in range(3)]
        _flat_csv(target, ["video_path", "question", "answer"], rows)
    else:
        written = write_shape(shape, folder)
        if written != target:
            written.rename(target)


@pytest.mark.slow
@pytest.mark.parametrize(
    "doc,label,text", BLOCKS, ids=[f"{d}:{label or i}" for i, (d, label, _) in enumerate(BLOCKS)]
)
def test_doc_example_validates_clean(doc, label, text, tiny_model_dir, tmp_path):
    block = YAML(typ="safe").load(text)
    config = tmp_path / "config"
    write_config_set(config, tiny_model_dir("qwen2_vl"), {})
    generate(label, block, config)
    yaml = YAML()
    path = config / "vlm_collator_config.yaml"
    data = yaml.load(path.read_text())

    def merge(into, new):
        for k, v in new.items():
            if isinstance(v, dict) and isinstance(into.get(k), dict):
                merge(into[k], v)
            else:
                into[k] = v

    merge(data, block)
    with path.open("w") as f:
        yaml.dump(data, f)
    r = CliRunner().invoke(app, ["validate", str(config), "--format", "json"])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    doc_json = json.loads(r.stdout)
    s = doc_json["config_sets"][0]
    bad = [f["text"] for f in s["findings"] if f["severity"] != "info"]
    assert r.exit_code == 0 and bad == [], bad
    assert s["data"]["rows"]["checked"] >= 2 and s["data"]["rows"]["with_errors"] == 0
    media = s["data"]["media"]
    assert media["images"] + media["videos"] > 0

    # The example runs: the collated batch the trainer would get, row by row.
    rows = s["data"]["rows"]["checked"]
    r = CliRunner().invoke(app, ["preview", str(config), "--rows", f"0-{rows - 1}",
                                 "--format", "json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    samples = json.loads(r.stdout)["samples"]
    assert len(samples) == rows
    assert [x["dropped"] for x in samples] == [None] * rows, samples
    assert all(x["supervised_tokens"] > 0 for x in samples)
    with_media = max(media["rows_with_images"], media["rows_with_videos"])
    assert sum(x["media_tokens"] > 0 for x in samples) >= with_media > 0


FRAGMENT_RE = re.compile(r"```\n(# (\w+\.yaml)\n.*?)```", re.S)


def test_every_config_fragment_of_the_docs_loads(tmp_path):
    """Unfenced-language blocks that start with `# <one of the four files>` (the README's
    `generation_eval:` example): merged into a fresh set, they load and keep their values."""
    from _config_util import write_set

    from vlmctl.config import FILES
    from vlmctl.config.load import collect_config_set

    fragments = [m.groups() for doc in DOCS for m in FRAGMENT_RE.finditer(doc.read_text())]
    assert any(name == "train_config.yaml" for _, name in fragments), fragments
    by_name = {name: key for key, name in FILES.items()}
    for i, (text, name) in enumerate(fragments):
        config = write_set(tmp_path / f"set{i}")
        with (config / name).open("a", encoding="utf-8") as f:
            f.write("\n" + text)
        cs, findings = collect_config_set(config, [])
        assert cs is not None, [x.one_line() for x in findings if x.severity == "error"]
        section = getattr(cs, by_name[name]).model_dump(mode="json")
        for key, value in YAML(typ="safe").load(text).items():
            assert section[key] == value, (name, key)
