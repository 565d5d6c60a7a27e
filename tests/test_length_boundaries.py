"""The max_length boundary, in the collator and in validate: a row of exactly max_length tokens
fits; one token more does not. Each policy at L-1, L and L+1 for a row of length L (a `<=` that
became `<`, or a `>` that became `>=`, changes what is trained and must fail here)."""

from __future__ import annotations

import pytest
import torch
from _collate_util import cfg, chat, encode_row, processor
from _validate_util import make_generated_set

from vlmctl.collate import VLMCollator
from vlmctl.errors import DataError

ANSWER = "red green blue yellow " * 3


def _col(model_dir, max_length: int, policy: str) -> VLMCollator:
    tp = {"max_length": max_length, "truncation_policy": policy, "truncation": True}
    c = cfg(text_processing=tp, label_masking={"mask_input_tokens": True})
    return VLMCollator(processor(model_dir), c, model_type="qwen2_vl")


@pytest.fixture(scope="module")
def qwen(tiny_model_dir):
    return tiny_model_dir("qwen2_vl")


@pytest.fixture(scope="module")
def full(qwen):
    """The untruncated encoding of the example row (its length is L)."""
    return _col(qwen, 100_000, "drop").encode_example(chat([ANSWER]))


@pytest.mark.parametrize("policy", ["drop", "truncate_text", "error"])
@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_collator_policy_at_l_minus_1_l_and_l_plus_1(qwen, full, policy, delta):
    length = full.length
    limit = length + delta
    col = _col(qwen, limit, policy)
    over = delta < 0
    # fits(): the decision validate reports (no row is dropped at or under the limit)
    assert col.fits(full) is (not over or policy == "truncate_text")
    if over and policy == "error":
        with pytest.raises(DataError) as exc:
            col.encode_example(chat([ANSWER]))
        assert exc.value.findings[0].code == "row-too-long"
        return
    enc = col.encode_example(chat([ANSWER]))
    if not over:
        assert enc.drop_reason is None and not enc.truncated
        assert enc.length == length
        assert torch.equal(enc.labels, full.labels)
        assert col.stats["dropped"] == 0 and col.stats["truncated"] == 0
    elif policy == "drop":
        assert enc.drop_reason == "too_long" and col.stats["dropped_too_long"] == 1
    else:  # truncate_text: exactly one token cut, the labels before the cut kept
        assert enc.drop_reason is None and enc.truncated and enc.length == limit
        assert torch.equal(enc.labels, full.labels[:limit])
        assert enc.num_supervised == int((full.labels[:limit] != -100).sum())


def test_truncate_text_cut_exactly_at_the_media_end_does_not_cut_media(qwen):
    """A cut at the first token after the image keeps the row's media whole (the row then has
    no label left: dropped for that reason); one token earlier cuts the image."""
    example = chat(["a long answer " * 8])
    full = _col(qwen, 100_000, "drop").encode_example(example)
    media_end = max(e for _, e in full.media_spans)

    at = _col(qwen, media_end, "truncate_text")
    assert at.fits(full) is True
    assert at.encode_example(example).drop_reason == "no_labels"

    inside = _col(qwen, media_end - 1, "truncate_text")
    assert inside.fits(full) is False
    assert inside.encode_example(example).drop_reason == "media_too_long"


def test_truncate_text_cut_exactly_at_the_media_start_drops_the_row(qwen):
    """A cut at the image's first token would keep no media token at all: the row is dropped
    for its media (not cut to a text-only row, which the model's media count would refuse)."""
    example = chat(["a long answer " * 8])
    full = _col(qwen, 100_000, "drop").encode_example(example)
    start = min(s for s, _ in full.media_spans)
    col = _col(qwen, start, "truncate_text")
    enc = col.encode_example(example)
    assert enc.drop_reason == "media_too_long" and not enc.truncated
    assert col.stats["truncated"] == 0 and col.stats["dropped_media_too_long"] == 1


def test_a_text_only_row_over_the_limit_is_cut_not_dropped(qwen):
    """No media to protect: truncate_text keeps a text-only row (fits, and is cut)."""
    example = chat([ANSWER], n_images=0)
    full = _col(qwen, 100_000, "drop").encode_example(example)
    assert full.media_spans == []
    col = _col(qwen, full.length - 2, "truncate_text")
    assert col.fits(full) is True
    enc = col.encode_example(example)
    assert enc.drop_reason is None and enc.truncated and enc.length == full.length - 2


def test_a_truncated_row_keeps_every_per_token_array_aligned(qwen, full):
    """ids, labels, token kinds and the processor's per-token arrays are all cut at the limit,
    and each cut row is counted once."""
    limit = full.length - 3
    col = _col(qwen, limit, "truncate_text")
    enc = col.encode_example(chat([ANSWER]))
    assert enc.truncated and enc.original_length == full.length
    assert torch.equal(enc.input_ids, full.input_ids[:limit])
    assert torch.equal(enc.kinds, full.kinds[:limit])
    assert enc.token_extras.keys() == full.token_extras.keys() and enc.token_extras
    for key, value in enc.token_extras.items():
        assert torch.equal(value, full.token_extras[key][:limit]), key
    assert enc.num_media_tokens == full.num_media_tokens
    assert col.stats["truncated"] == 1 and col.stats["dropped"] == 0
    col.encode_example(chat([ANSWER]))
    assert col.stats["truncated"] == 2  # counted per row, not set


def test_the_error_policy_names_the_row_its_length_and_the_fix(qwen, full):
    limit = full.length - 1
    with pytest.raises(DataError) as exc:
        _col(qwen, limit, "error").encode_example(chat([ANSWER]))
    (f,) = exc.value.findings
    assert f.severity == "error" and f.row == 7 and f.key == "text_processing.max_length"
    assert f.message == (
        f"row is {full.length} tokens ({full.num_media_tokens} media), longer than "
        f"text_processing.max_length={limit}"
    )
    assert f.hint == "raise max_length, or set truncation_policy: drop or truncate_text"


# --------------------------------------------------------------------------- validate's JSON


def _lengths(config) -> dict[int, int]:
    """Each row's token length, as the collator measures it (the code validate must agree with)."""
    from vlmctl.config.load import load_config_set
    from vlmctl.data.dataset import iter_rows, load_splits

    cs = load_config_set(config)
    loaded = load_splits(cs.collator, cs.dir)
    col = VLMCollator(processor(cs.model.model_name_or_path), cs.collator, loaded.media_dirs)
    return {i: encode_row(col, row, i).length for i, row in iter_rows(loaded.train)}


@pytest.fixture(scope="module")
def generated(tmp_path_factory, qwen):
    root = tmp_path_factory.mktemp("bounds")
    config = make_generated_set(root, qwen, faults=False, n=10)
    return config, _lengths(config)


def _set_limit(config, limit: int, policy: str) -> None:
    path = config / "vlm_collator_config.yaml"
    text = path.read_text().splitlines()
    text = [
        f"  max_length: {limit}"
        if ln.startswith("  max_length:")
        else f'  truncation_policy: "{policy}"'
        if ln.startswith("  truncation_policy:")
        else ln
        for ln in text
    ]
    path.write_text("\n".join(text) + "\n")


LENGTH_CODES = {"row-too-long", "row-text-cut", "media-span-cut", "no-supervised-tokens"}


@pytest.mark.parametrize("policy", ["drop", "truncate_text", "error"])
@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_validate_reports_exactly_the_rows_over_max_length(generated, policy, delta):
    import json

    from typer.testing import CliRunner

    from vlmctl.cli import app

    config, lengths = generated
    longest = max(lengths.values())
    at_max = {i for i, n in lengths.items() if n == longest}
    limit = longest + delta
    _set_limit(config, limit, policy)
    r = CliRunner().invoke(app, ["validate", str(config), "--format", "json"])
    doc = json.loads(r.stdout)
    s = doc["config_sets"][0]
    flagged = {
        f["row"] for f in s["findings"] if f["row"] is not None and f["code"] in LENGTH_CODES
    }
    over = {i for i, n in lengths.items() if n > limit}
    assert over == (at_max if delta < 0 else set())
    assert flagged == over
    trunc = s["data"]["truncation"]
    assert trunc["over_max_length"] == len(over)
    counted = {"drop": "dropped_too_long", "error": "errors", "truncate_text": "cut_text"}[policy]
    assert trunc[counted] == len(over)
    assert r.exit_code == (1 if over and policy == "error" else 0)


def _encoded(config) -> dict[int, tuple[int, int, int]]:
    """Each row's (tokens, media tokens, supervised tokens), as the collator encodes it."""
    from vlmctl.config.load import load_config_set
    from vlmctl.data.dataset import iter_rows, load_splits

    cs = load_config_set(config)
    loaded = load_splits(cs.collator, cs.dir)
    col = VLMCollator(processor(cs.model.model_name_or_path), cs.collator, loaded.media_dirs)
    out = {}
    for i, row in iter_rows(loaded.train):
        enc = encode_row(col, row, i)
        out[i] = (enc.length, enc.num_media_tokens, enc.num_supervised)
    return out


@pytest.mark.parametrize(
    ("policy", "severity", "says", "hint"),
    [
        ("drop", "warning", "dropped (truncation_policy: drop)", "use truncation_policy"),
        ("error", "error", "train stops with an error (truncation_policy: error)", "drop or"),
    ],
)
def test_validate_says_how_long_the_row_is_and_counts_no_supervision_for_it(
    generated, policy, severity, says, hint
):
    """The finding for a row one token over max_length: its size split into text and media,
    the limit, what train does, a hint and the key to change; the row adds no supervised tokens
    to the totals (train never sees it)."""
    import json

    from typer.testing import CliRunner

    from vlmctl.cli import app

    config, lengths = generated
    enc = _encoded(config)
    assert {i: n for i, (n, _, _) in enc.items()} == lengths
    limit = max(lengths.values()) - 1
    _set_limit(config, limit, policy)
    r = CliRunner().invoke(app, ["validate", str(config), "--format", "json"])
    s = json.loads(r.stdout)["config_sets"][0]
    found = [f for f in s["findings"] if f["code"] == "row-too-long"]
    assert found, s["findings"]
    for f in found:
        n, media, _ = enc[f["row"]]
        assert f["severity"] == severity
        assert f["message"] == (
            f"{n} tokens ({n - media} text + {media} media) "
            f"> text_processing.max_length={limit}: {says}"
        )
        assert f["key"] == "text_processing.max_length"
        assert f["hint"].startswith("raise max_length") and hint in f["hint"]
    kept = sum(sup for n, _, sup in enc.values() if n <= limit)
    assert s["data"]["supervised"]["tokens_checked"] == kept


def _encodings(config) -> dict:
    """Each row's full encoding (labels, media spans), as the collator encodes it untruncated."""
    from vlmctl.config.load import load_config_set
    from vlmctl.data.dataset import iter_rows, load_splits

    cs = load_config_set(config)
    loaded = load_splits(cs.collator, cs.dir)
    col = VLMCollator(processor(cs.model.model_name_or_path), cs.collator, loaded.media_dirs)
    return {i: encode_row(col, row, i) for i, row in iter_rows(loaded.train)}


def _set_masking(config, mask_inputs: bool) -> None:
    path = config / "vlm_collator_config.yaml"
    old, new = ("false", "true") if mask_inputs else ("true", "false")
    text = path.read_text().replace(f"mask_input_tokens: {old}", f"mask_input_tokens: {new}")
    path.write_text(text)


def _truncate_text_expected(enc, limit: int) -> tuple[str, str, int] | None:
    """(code, message tail, supervised tokens kept) that truncate_text gives a row at `limit`."""
    n = enc.length
    if n <= limit:
        return None
    where = f"> text_processing.max_length={limit}"
    if any(s < limit < e for s, e in enc.media_spans) or any(e > limit for _, e in enc.media_spans):
        spans = ", ".join(f"{s}-{e}" for s, e in enc.media_spans)
        return (
            "media-span-cut",
            f"{where}: the cut would fall inside or before a media span (tokens {spans}): "
            "dropped (truncation_policy: truncate_text)",
            0,
        )
    kept = int((enc.labels[:limit] != -100).sum())
    if kept == 0:
        return ("no-supervised-tokens", f"{where}: cutting the text leaves no supervised "
                "token: dropped", 0)  # fmt: skip
    return (
        "row-text-cut",
        f"{where}: text cut by {n - limit} tokens, {kept} supervised tokens left "
        "(truncation_policy: truncate_text)",
        kept,
    )


TRUNCATE_HINTS = {
    "media-span-cut": "raise max_length, or shrink the media (image_processing.max_size, "
    "fewer frames)",
    "no-supervised-tokens": "raise max_length",
    "row-text-cut": "raise max_length to keep the whole answer",
}


@pytest.mark.parametrize("where", ["one-under-longest", "media-end", "inside-media"])
def test_validate_truncate_text_findings_say_what_the_cut_does(generated, where):
    """truncate_text, row by row: a cut after the media keeps the labels before it
    (row-text-cut, with the tokens cut and the supervised tokens left), a cut inside or before
    a media span drops the row (media-span-cut, naming the spans), a cut that leaves no label
    drops it (no-supervised-tokens); the totals count what is kept."""
    import json

    from typer.testing import CliRunner

    from vlmctl.cli import app

    config, _ = generated
    _set_limit(config, 100_000, "drop")  # encode every row whole
    # prompts masked, so a cut right after the media leaves no label (no-supervised-tokens)
    _set_masking(config, where == "media-end")
    encs = _encodings(config)
    longest = max(encs.values(), key=lambda e: e.length)
    media_end = max(e for _, e in longest.media_spans)
    if where == "media-end":  # a row whose labels all follow its media: cut right after it
        first_label = {i: int((e.labels != -100).nonzero()[0]) for i, e in encs.items()}
        ends = [
            max(end for _, end in e.media_spans)
            for i, e in encs.items()
            if e.media_spans and first_label[i] >= max(end for _, end in e.media_spans)
        ]
        media_end = max(ends)
    limit = {
        "one-under-longest": longest.length - 1,
        "media-end": media_end,
        "inside-media": media_end - 1,
    }[where]
    _set_limit(config, limit, "truncate_text")
    r = CliRunner().invoke(app, ["validate", str(config), "--format", "json"])
    s = json.loads(r.stdout)["config_sets"][0]
    got = {f["row"]: f for f in s["findings"] if f["code"] in LENGTH_CODES}
    expected = {i: _truncate_text_expected(e, limit) for i, e in encs.items()}
    expected = {i: x for i, x in expected.items() if x is not None}
    assert set(got) == set(expected)
    for i, (code, tail, _) in expected.items():
        f, enc = got[i], encs[i]
        n, media = enc.length, enc.num_media_tokens
        assert f["code"] == code
        assert f["severity"] == "warning"
        assert f["message"] == f"{n} tokens ({n - media} text + {media} media) {tail}"
        assert f["hint"] == TRUNCATE_HINTS[code]
        assert f["key"] == "text_processing.max_length"
    assert expected, "the limit must cut at least one row"
    codes = {x[0] for x in expected.values()}
    assert {"media-end": "no-supervised-tokens", "inside-media": "media-span-cut"}.get(
        where, "row-text-cut"
    ) in codes
    kept = sum(e.num_supervised for e in encs.values() if e.length <= limit)
    kept += sum(x[2] for x in expected.values())
    assert s["data"]["supervised"]["tokens_checked"] == kept
    trunc = s["data"]["truncation"]
    assert trunc["cut_text"] == sum(x[0] == "row-text-cut" for x in expected.values())
