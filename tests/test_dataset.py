"""Dataset loading (vlmctl/data/dataset.py): every source kind, splits, errors, helpers.

Generated data in tmp_path for the default tier; the `realdata` tier loads the three real
datasets in ../shared/data through the example config sets under examples/.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from _dataset_util import column_names
from PIL import Image
from ruamel.yaml import YAML

from vlmctl.config.collator import CollatorConfig
from vlmctl.config.model import ModelConfig
from vlmctl.config.peft import PeftSettings
from vlmctl.config.train import TrainConfig
from vlmctl.data import hub as dsmod
from vlmctl.data.dataset import iter_rows, load_splits
from vlmctl.data.messages import row_to_example
from vlmctl.errors import DataError
from vlmctl.media.paths import resolve_media_path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
EXAMPLES = REPO / "examples"


def cfg(**dataset) -> CollatorConfig:
    return CollatorConfig.model_validate({"dataset": dataset})


def one_line(exc: DataError) -> str:
    text = str(exc)
    assert len(text.splitlines()) == 1, text
    return text


def make_images(folder: Path, n: int, size=(6, 5)) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        Image.new("RGB", size, (i * 40 % 256, 10, 20)).save(folder / f"{i}.png")
        names.append(f"{i}.png")
    return names


# ---------------------------------------------------------------------------------------------
# the seed's scenarios, as written


def test_seed_scenario_1_columns_image_path_query_response_metadata(tmp_path):
    make_images(tmp_path / "data" / "imgs", 3)
    (tmp_path / "data" / "vqa.csv").write_text(
        "image_path,query,response,metadata\n"
        'imgs/0.png,What colour?,red,"{""src"": 1}"\n'
        "imgs/1.png,How many?,two,x\n"
        "imgs/2.png,Where?,inside,y\n"
    )
    c = CollatorConfig.model_validate(
        {
            "dataset": {"path": "data/vqa.csv"},
            "dataset_columns": {
                "image_column": "image_path",
                "question_column": "query",
                "answer_column": "response",
            },
        }
    )
    assert column_names(c, tmp_path) == ["image_path", "query", "response", "metadata"]
    data = load_splits(c, tmp_path)
    assert len(data.train) == 3 and data.eval is None
    assert data.media_dirs == [(tmp_path / "data").resolve()]
    rows = list(iter_rows(data.train))
    ex = row_to_example(rows[1][1], c, rows[1][0])
    assert ex.images == ["imgs/1.png"]
    assert ex.messages[-1] == {"role": "assistant", "content": [{"type": "text", "text": "two"}]}
    assert any(p.get("text") == "How many?" for p in ex.messages[0]["content"])
    for _, row in rows:
        path = resolve_media_path(row_to_example(row, c).images[0], data.media_dirs)
        assert path.is_file()


def test_seed_scenario_2_video_model(tmp_path):
    (tmp_path / "clips").mkdir()
    for i in range(2):
        (tmp_path / "clips" / f"{i}.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    (tmp_path / "videos.jsonl").write_text(
        "\n".join(
            json.dumps({"video_path": f"clips/{i}.mp4", "question": f"q{i}", "answer": f"a{i}"})
            for i in range(2)
        )
        + "\n"
    )
    c = CollatorConfig.model_validate(
        {
            "dataset": {"path": "videos.jsonl"},
            "data_processing": {"image_data": False, "video_data": True},
            "dataset_columns": {"video_column": "video_path"},
            "video_processing": {"frame_extraction": {"num_frames": 16}},
        }
    )
    assert c.video_processing.frame_extraction.num_frames == 16
    data = load_splits(c, tmp_path)
    assert len(data.train) == 2
    ex = row_to_example(data.train[1], c, 1)
    assert ex.videos == ["clips/1.mp4"] and ex.images == []
    assert {"type": "video"} in ex.messages[0]["content"]
    assert resolve_media_path(ex.videos[0], data.media_dirs).is_file()


# ---------------------------------------------------------------------------------------------
# source kinds


ROWS = [{"image": f"{i}.png", "question": f"q{i}", "answer": f"a{i}"} for i in range(4)]


def write_rows(path: Path, kind: str, rows=ROWS) -> None:
    if kind == "csv":
        lines = ["image,question,answer"] + [
            f"{r['image']},{r['question']},{r['answer']}" for r in rows
        ]
        path.write_text("\n".join(lines) + "\n")
    elif kind == "json":
        path.write_text(json.dumps(rows, indent=1))
    elif kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")  # trailing blank
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.mark.parametrize("kind", ["csv", "json", "jsonl", "parquet"])
def test_local_file_formats_by_extension(tmp_path, kind):
    write_rows(tmp_path / f"rows.{kind}", kind)
    c = cfg(path=f"rows.{kind}")
    data = load_splits(c, tmp_path)
    assert len(data.train) == 4
    assert data.train[2] == {"image": "2.png", "question": "q2", "answer": "a2"}
    assert data.kind == ("json" if kind == "jsonl" else kind)
    assert "4 train rows" in data.description
    assert column_names(c, tmp_path) == ["image", "question", "answer"]


def test_explicit_format_overrides_extension(tmp_path):
    write_rows(tmp_path / "rows.txt", "jsonl")
    data = load_splits(cfg(path="rows.txt", format="jsonl"), tmp_path)
    assert len(data.train) == 4
    with pytest.raises(DataError) as ei:
        load_splits(cfg(path="rows.txt"), tmp_path)
    assert "set dataset.format" in one_line(ei.value)


def test_folder_of_files_with_split_names(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_rows(folder / "train.jsonl", "jsonl")
    write_rows(folder / "test.jsonl", "jsonl", ROWS[:1])
    data = load_splits(cfg(path="data", eval_split="test"), tmp_path)
    assert len(data.train) == 4 and len(data.eval) == 1
    assert data.media_dirs == [folder.resolve()]
    with pytest.raises(DataError) as ei:
        load_splits(cfg(path="data", eval_split="validation"), tmp_path)
    msg = one_line(ei.value)
    assert "'validation' not in the dataset" in msg and "test" in msg and "train" in msg


@pytest.mark.parametrize("meta", ["csv", "jsonl"])
def test_imagefolder_with_metadata(tmp_path, meta):
    folder = tmp_path / "imgs"
    names = make_images(folder, 3)
    if meta == "csv":
        (folder / "metadata.csv").write_text(
            "file_name,question,answer\n" + "".join(f"{n},q{i},a{i}\n" for i, n in enumerate(names))
        )
    else:
        (folder / "metadata.jsonl").write_text(
            "".join(
                json.dumps({"file_name": n, "question": f"q{i}", "answer": f"a{i}"}) + "\n"
                for i, n in enumerate(names)
            )
        )
    c = cfg(path="imgs")
    assert column_names(c, tmp_path) == ["image", "question", "answer"]
    data = load_splits(c, tmp_path)
    assert data.kind == "imagefolder" and len(data.train) == 3
    row = data.train[1]
    # Not decoded: a {bytes, path} dict that vlmctl.media resolves.
    assert isinstance(row["image"], dict) and set(row["image"]) == {"bytes", "path"}
    assert Path(row["image"]["path"]).name == "1.png"
    ex = row_to_example(row, c, 1)
    assert ex.images == [row["image"]]


def test_load_from_disk_dataset_and_dataset_dict_with_image_features(tmp_path):
    import datasets

    imgs = [Image.new("RGB", (3, 2), (i, 0, 0)) for i in range(5)]
    ds = datasets.Dataset.from_dict(
        {
            "image": imgs,
            "pair": [[im, im] for im in imgs],
            "question": [f"q{i}" for i in range(5)],
            "answer": [f"a{i}" for i in range(5)],
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "pair": datasets.List(datasets.Image()),
                "question": datasets.Value("string"),
                "answer": datasets.Value("string"),
            }
        ),
    )
    ds.save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": ds, "validation": ds.select(range(2))}).save_to_disk(
        str(tmp_path / "dd")
    )

    single = load_splits(cfg(path="single"), tmp_path)
    assert single.kind == "disk" and len(single.train) == 5
    row = single.train[0]
    assert isinstance(row["image"]["bytes"], bytes)  # decode=False: bytes, not a PIL image
    assert all(isinstance(p["bytes"], bytes) for p in row["pair"])
    assert not single.train.features["image"].decode

    dd = load_splits(cfg(path="dd", eval_split="validation"), tmp_path)
    assert len(dd.train) == 5 and len(dd.eval) == 2
    assert not dd.eval.features["image"].decode
    assert column_names(cfg(path="dd"), tmp_path) == ["image", "pair", "question", "answer"]

    c = CollatorConfig.model_validate({"dataset": {"path": "single"}})
    ex = row_to_example(row, c, 0)
    assert ex.images == [row["image"]]


def test_parquet_with_embedded_image_feature(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (2, 2))], "question": ["q"], "answer": ["a"]},
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "question": datasets.Value("string"),
                "answer": datasets.Value("string"),
            }
        ),
    )
    ds.to_parquet(str(tmp_path / "emb.parquet"))
    data = load_splits(cfg(path="emb.parquet"), tmp_path)
    assert isinstance(data.train[0]["image"]["bytes"], bytes)


def test_json_with_mixed_string_and_list_media(tmp_path):
    rows = [
        {"image": "a.jpg", "conversations": [{"from": "human", "value": "<image>q"}]},
        {
            "image": ["a.jpg", "b.jpg"],
            "conversations": [{"from": "human", "value": "<image><image>q"}],
        },
    ]
    (tmp_path / "mixed.json").write_text(json.dumps(rows))
    data = load_splits(cfg(path="mixed.json"), tmp_path)
    assert data.train[0]["image"] == "a.jpg"
    assert data.train[1]["image"] == ["a.jpg", "b.jpg"]


def test_eval_size_holdout_is_seeded(tmp_path):
    rows = [{"image": f"{i}.png", "question": f"q{i}", "answer": f"a{i}"} for i in range(40)]
    write_rows(tmp_path / "rows.jsonl", "jsonl", rows)
    c = cfg(path="rows.jsonl", eval_size=0.25)
    a = load_splits(c, tmp_path)
    b = load_splits(c, tmp_path)
    other = load_splits(c, tmp_path, seed=7)
    assert (len(a.train), len(a.eval)) == (30, 10)
    assert a.eval["question"] == b.eval["question"]
    assert a.eval["question"] != other.eval["question"]
    assert set(a.train["question"]).isdisjoint(a.eval["question"])
    assert "eval_size 0.25, seed 42" in a.description


def test_eval_path_separate_file(tmp_path):
    write_rows(tmp_path / "train.json", "json")
    (tmp_path / "ev").mkdir()
    write_rows(tmp_path / "ev" / "eval.json", "json", ROWS[:2])
    data = load_splits(cfg(path="train.json", eval_path="ev/eval.json"), tmp_path)
    assert len(data.train) == 4 and len(data.eval) == 2
    # the eval file's folder is searched for media too (after the train file's)
    assert data.media_dirs == [tmp_path.resolve(), (tmp_path / "ev").resolve()]


def test_media_dirs_media_root_first_then_file_folder(tmp_path):
    (tmp_path / "d").mkdir()
    write_rows(tmp_path / "d" / "rows.csv", "csv")
    data = load_splits(cfg(path="d/rows.csv", media_root=["imgs", "vids"]), tmp_path)
    assert data.media_dirs == [
        (tmp_path / "imgs").resolve(),
        (tmp_path / "vids").resolve(),
        (tmp_path / "d").resolve(),
    ]
    data = load_splits(cfg(path="d/rows.csv", media_root="../media"), tmp_path)
    assert data.media_dirs[0] == (tmp_path.parent / "media").resolve()


# ---------------------------------------------------------------------------------------------
# errors: one line each, with the file/line when there is one


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as ei:
        load_splits(cfg(path="data/nope.csv"), tmp_path)
    msg = one_line(ei.value)
    assert "dataset not found" in msg and "nope.csv" in msg and "relative to the config" in msg


def test_no_dataset_path(tmp_path):
    with pytest.raises(DataError) as ei:
        load_splits(cfg(), tmp_path)
    assert "dataset.path" in one_line(ei.value)


def test_bad_csv_names_the_line(tmp_path):
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,4\n5,6,7\n")
    with pytest.raises(DataError) as ei:
        load_splits(cfg(path="bad.csv"), tmp_path)
    f = ei.value.findings[0]
    assert f.file.endswith("bad.csv") and f.line == 4
    assert "expected 2 fields, saw 3" in one_line(ei.value)


def test_bad_jsonl_and_json_name_the_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{"a": 2}\n{"a": 3\n')
    with pytest.raises(DataError) as ei:
        load_splits(cfg(path="bad.jsonl"), tmp_path)
    assert ei.value.findings[0].line == 3 and "invalid JSON" in one_line(ei.value)

    (tmp_path / "bad.json").write_text('[\n {"a": 1},\n {"a": }\n]\n')
    with pytest.raises(DataError) as ei:
        load_splits(cfg(path="bad.json"), tmp_path)
    assert ei.value.findings[0].line == 3 and "invalid JSON" in one_line(ei.value)


@pytest.mark.parametrize(
    "name,text", [("empty.csv", "a,b\n"), ("empty.json", "[]"), ("empty.jsonl", "\n")]
)
def test_empty_dataset(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError) as ei:
        load_splits(cfg(path=name), tmp_path)
    assert "no rows" in one_line(ei.value)


def test_single_file_eval_split_hint(tmp_path):
    write_rows(tmp_path / "rows.csv", "csv")
    with pytest.raises(DataError) as ei:
        load_splits(cfg(path="rows.csv", eval_split="test"), tmp_path)
    assert "eval_size or dataset.eval_path" in one_line(ei.value)


def test_missing_train_split(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_rows(folder / "train.csv", "csv")
    with pytest.raises(DataError) as ei:
        load_splits(cfg(path="data", train_split="training"), tmp_path)
    assert "train split 'training' not in the dataset (splits: train)" in one_line(ei.value)


def test_folder_without_data(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DataError) as ei:
        load_splits(cfg(path="empty"), tmp_path)
    assert "no data files" in one_line(ei.value)


def test_hub_id_offline_env_one_line_and_fast(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(DataError) as ei:
        load_splits(cfg(path="some-org/some-dataset"), tmp_path)
    assert time.monotonic() - t0 < 10
    msg = one_line(ei.value)
    assert "'some-org/some-dataset' not found locally and the hub is unreachable" in msg
    assert "dataset.path" in msg


def test_hub_id_without_offline_env_does_not_hang_on_retries(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE unset and no network: one quick probe, then cache only."""
    import datasets.config
    import huggingface_hub.constants as hc

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)

    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    t0 = time.monotonic()
    with pytest.raises(DataError) as ei:
        load_splits(cfg(path="some-org/some-dataset", format="hub"), tmp_path)
    assert time.monotonic() - t0 < 10
    assert "hub is unreachable (offline)" in one_line(ei.value)
    # the forced offline mode is undone
    assert datasets.config.HF_HUB_OFFLINE is False and hc.HF_HUB_OFFLINE is False


def test_hub_reachable_probe_is_false_without_network(monkeypatch):
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.setattr(
        socket, "create_connection", lambda *a, **k: (_ for _ in ()).throw(OSError())
    )
    assert dsmod.hub_reachable() is False


# ---------------------------------------------------------------------------------------------
# helpers for validate


def test_iter_rows_all_and_sampled_in_batches(tmp_path):
    rows = [{"image": f"{i}.png", "question": f"q{i}", "answer": f"a{i}"} for i in range(600)]
    write_rows(tmp_path / "rows.jsonl", "jsonl", rows)
    train = load_splits(cfg(path="rows.jsonl"), tmp_path).train
    everything = list(iter_rows(train))
    assert [i for i, _ in everything] == list(range(600))
    assert everything[599][1]["question"] == "q599"  # past the batch boundary
    sample = list(iter_rows(train, sample=50, seed=1))
    assert len(sample) == 50 and sample == list(iter_rows(train, sample=50, seed=1))
    assert all(row["question"] == f"q{i}" for i, row in sample)  # indices match rows
    assert sample != list(iter_rows(train, sample=50, seed=2))
    assert len(list(iter_rows(train, sample=10_000))) == 600


def test_iter_rows_on_iterable_dataset(tmp_path):
    write_rows(tmp_path / "rows.jsonl", "jsonl")
    import datasets

    it = datasets.load_dataset(
        "json", data_files=str(tmp_path / "rows.jsonl"), split="train", streaming=True
    )
    assert [i for i, _ in iter_rows(it)] == [0, 1, 2, 3]
    assert len(list(iter_rows(it, sample=2))) == 2


def test_column_names_reads_only_the_csv_header(tmp_path):
    # A broken row further down proves the body is not parsed.
    (tmp_path / "big.csv").write_text("image_path,query,response\na,b,c\n1,2,3,4,5\n")
    assert column_names(cfg(path="big.csv"), tmp_path) == ["image_path", "query", "response"]


# ---------------------------------------------------------------------------------------------
# real data (../shared/data) through the example config sets

realdata = pytest.mark.realdata
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"real datasets not present at {SHARED} (see shared/data/README.md)"
)


def load_example(name: str) -> tuple[CollatorConfig, Path]:
    folder = EXAMPLES / name
    yaml = YAML(typ="safe")
    files = {
        "vlm_model_config.yaml": ModelConfig,
        "vlm_collator_config.yaml": CollatorConfig,
        "train_config.yaml": TrainConfig,
        "peft_config.yaml": PeftSettings,
    }
    models = {}
    for fname, cls in files.items():
        models[fname] = cls.model_validate(yaml.load((folder / fname).read_text()) or {})
    return models["vlm_collator_config.yaml"], folder


def all_examples(data, c):
    for split in (data.train, data.eval):
        if split is not None:
            for i, row in iter_rows(split):
                yield i, row_to_example(row, c, i)


def assert_media_resolve(data, examples) -> int:
    n = 0
    for i, ex in examples:
        for ref in [*ex.images, *ex.videos]:
            assert resolve_media_path(ref, data.media_dirs, row=i).is_file()
            n += 1
    return n


@realdata
@needs_shared
def test_real_abo_vqa_csv():
    c, folder = load_example("abo_vqa")
    assert column_names(c, folder) == ["image_name", "question", "answer"]
    data = load_splits(c, folder)
    assert (len(data.train), len(data.eval)) == (950, 50)
    examples = list(all_examples(data, c))
    assert len(examples) == 1000
    assert all(len(ex.images) == 1 and ex.videos == [] for _, ex in examples)
    assert all([m["role"] for m in ex.messages] == ["user", "assistant"] for _, ex in examples)
    answers = [ex.messages[1]["content"][0]["text"] for _, ex in examples]
    assert all(a == a.lower() and " " not in a for a in answers)  # one lowercase word
    assert len(set(answers)) == 319
    assert assert_media_resolve(data, examples) == 1000
    assert len({ex.images[0] for _, ex in examples}) == 200


@realdata
@needs_shared
def test_real_llamafactory_mllm_images():
    c, folder = load_example("llamafactory_mllm")
    data = load_splits(c, folder)
    assert len(data.train) == 6 and data.eval is None
    examples = list(all_examples(data, c))
    assert [len(ex.images) for _, ex in examples] == [2, 1, 1, 2, 1, 1]
    for _, ex in examples:
        assert [m["role"] for m in ex.messages] == ["user", "assistant"] * 2
        assert ex.videos == []
    # row 0: the second <image> is at the END of the second user turn
    ex0 = examples[0][1]
    assert ex0.messages[2]["content"][-1] == {"type": "image"}
    assert ex0.images == ["mllm_demo_data/1.jpg", "mllm_demo_data/1.jpg"]
    assert assert_media_resolve(data, examples) == 8


@realdata
@needs_shared
def test_real_llamafactory_video():
    c, folder = load_example("llamafactory_video")
    assert c.use_video and not c.use_images
    data = load_splits(c, folder)
    examples = list(all_examples(data, c))
    assert [ex.videos for _, ex in examples] == [
        ["mllm_demo_data/1.mp4"],
        ["mllm_demo_data/2.avi"],
        ["mllm_demo_data/3.mp4"],
    ]
    assert all(ex.messages[0]["content"][0] == {"type": "video"} for _, ex in examples)
    assert assert_media_resolve(data, examples) == 3


@realdata
@needs_shared
def test_real_llamafactory_v1_openai_style_jsonl():
    c, folder = load_example("llamafactory_mllm")
    lf = "../../../shared/data/llamafactory"
    c = c.model_copy(
        update={
            "dataset": c.dataset.model_copy(
                update={"path": f"{lf}/data/v1_multimodal_demo.jsonl", "media_root": lf}
            )
        }
    )
    data = load_splits(c, folder)
    assert len(data.train) == 24  # 6 conversations x 4, file ends with a blank line
    examples = list(all_examples(data, c))
    assert [len(ex.images) for _, ex in examples[:6]] == [2, 1, 1, 2, 1, 1]
    assert examples[0][1].images == ["data/mllm_demo_data/1.jpg"] * 2
    assert assert_media_resolve(data, examples) == 32  # resolved from llamafactory/, not data/


@realdata
@needs_shared
def test_real_lmms_finetune_celeba_with_eval_file():
    c, folder = load_example("lmms_finetune_llava")
    data = load_splits(c, folder)
    assert (len(data.train), len(data.eval)) == (90, 10)
    examples = list(all_examples(data, c))
    assert all(len(ex.images) == 1 for _, ex in examples)
    assert all([m["role"] for m in ex.messages] == ["user", "assistant"] for _, ex in examples)
    assert examples[0][1].messages[0]["content"] == [
        {"type": "image"},
        {"type": "text", "text": "Describe the person's appearance."},
    ]
    assert assert_media_resolve(data, examples) == 100


@realdata
@needs_shared
@pytest.mark.parametrize(
    "fname,images,videos,systems",
    [
        ("single_image.json", [1, 1], [0, 0], [True, False]),
        (
            "single_image_has_text_only.json",
            [1, 1, 0, 0],
            [0, 0, 0, 0],
            [True, False, False, False],
        ),
        ("multi_images.json", [2, 4], [0, 0], [True, True]),
        ("video.json", [1, 0], [0, 0], [True, False]),
    ],
)
def test_real_lmms_finetune_other_files(fname, images, videos, systems):
    c, folder = load_example("lmms_finetune_llava")
    base = "../../../shared/data/lmms_finetune/example_data"
    c = c.model_copy(
        update={
            "dataset": c.dataset.model_copy(update={"path": f"{base}/{fname}", "eval_path": None})
        }
    )
    data = load_splits(c, folder)
    examples = list(all_examples(data, c))
    assert [len(ex.images) for _, ex in examples] == images
    assert [len(ex.videos) for _, ex in examples] == videos
    assert [ex.messages[0]["role"] == "system" for _, ex in examples] == systems
    assert assert_media_resolve(data, examples) == sum(images) + sum(videos)
    if fname == "video.json":  # image + video in one sample: video off here, so dropped
        assert any("1 video(s) dropped" in n for n in examples[0][1].notes)
        vc = c.model_copy(
            update={"data_processing": c.data_processing.model_copy(update={"video_data": True})}
        )
        vex = [row_to_example(row, vc, i) for i, row in iter_rows(data.train)]
        assert [ex.videos for ex in vex] == [["bm_teaser.mp4"], ["curry_vs_thunder.mp4"]]
        assert vex[0].images == ["bm.jpg"] and not vex[0].notes  # both kept, per row
        assert assert_media_resolve(data, enumerate(vex)) == 3


@pytest.mark.parametrize(
    "name", ["abo_vqa", "llamafactory_mllm", "llamafactory_video", "lmms_finetune_llava"]
)
def test_example_config_sets_load_with_the_config_loader(name):
    """Config-only: the shipped example sets are valid (no data needed)."""
    from vlmctl.config.load import load_config_set

    cs = load_config_set(EXAMPLES / name)
    assert cs.collator.dataset.path and cs.model.model_name_or_path
    assert (cs.collator.conversation is None) == (name == "abo_vqa")
