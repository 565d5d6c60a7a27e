"""Merge's verify decision: figures that must fail do fail, and a deliberately wrong merge (the
LoRA delta doubled) exits 1 and writes no output folder. A loosened tolerance or a verify that
always passes would write and report a wrong model as verified."""

from __future__ import annotations

import pytest
from test_merge import cli, make_run, stderr_of

from vlmctl.merge.verify import judge


def _figures(
    dlogit: float,
    top1: float = 1.0,
    scale: float = 10.0,
    base_dlogit: float = 0.5,
    beyond_ties: float | None = None,
):
    return {
        "adapter_vs_merged": {
            "max_abs_dlogit": dlogit,
            "top1_agreement": top1,
            "top1_agreement_beyond_ties": top1 if beyond_ties is None else beyond_ties,
            "tokens": 100,
            "max_abs_logit": scale,
        },
        "merged_vs_base": {"max_abs_dlogit": base_dlogit},
    }


@pytest.mark.parametrize(
    ("dlogit", "top1", "scale", "passed"),
    [
        (0.0, 1.0, 10.0, True),
        (0.01, 1.0, 10.0, True),  # exactly 1e-3 * max |logit|
        (0.0101, 1.0, 10.0, False),  # just over the tolerance
        (0.02, 1.0, 10.0, False),
        (0.001, 1.0, 0.5, True),  # small logits: the tolerance floor is 1e-3
        (0.0011, 1.0, 0.5, False),
        (0.0, 0.99, 10.0, False),  # fp32 needs every top-1 to agree
    ],
)
def test_fp32_judgement(dlogit, top1, scale, passed):
    ok, noop = judge(_figures(dlogit, top1, scale), "float32")
    assert ok is passed
    assert noop is False


def test_fp32_near_tie_flips_do_not_fail_verify():
    """A top-1 flip between two near-tied tokens (seen on the SmolVLM kit: |dlogit| 4.8e-7 and
    one flipped token) passes; a flip that is not a tie still fails, in fp32 only."""
    flipped_tie = _figures(5e-7, top1=0.999, beyond_ties=1.0)
    assert judge(flipped_tie, "float32")[0] is True
    assert judge(_figures(5e-7, top1=1.0, beyond_ties=0.999), "float32")[0] is False
    assert judge(_figures(5.0, top1=0.85, beyond_ties=1.0), "bfloat16")[0] is False


def test_compare_counts_near_ties_apart_from_real_flips():
    """Tie tolerance is twice the fp32 tolerance of the first model's scale (2e-3 at scale 1),
    counted over every probe (the second probe's tokens add to the first's)."""
    from vlmctl.merge.verify import compare

    # margins in `a`: 1e-7 and 0.0015 are ties; 0.01 and 0.0025 are not (2.5x the tolerance)
    a = [
        _logits([1.0, 1.0 - 1e-7, 0.0], [0.5, 0.4985, 0.0], [0.25, 0.24, 0.0], [0.75, 0.7475, 0.0]),
        _logits([0.0, 0.1, 0.0]),
    ]
    b = [
        _logits([1.0 - 1e-7, 1.0, 0.0], [0.4985, 0.5, 0.0], [0.24, 0.25, 0.0], [0.7475, 0.75, 0.0]),
        _logits([0.0, 0.1, 0.0]),
    ]
    fig = compare(a, b)
    assert fig["top1_agreement"] == pytest.approx(1 / 5)
    assert fig["top1_agreement_beyond_ties"] == pytest.approx(3 / 5)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize(
    ("top1", "passed"), [(1.0, True), (0.9, True), (0.89, False), (0.5, False)]
)
def test_half_precision_judgement(dtype, top1, passed):
    ok, _ = judge(_figures(5.0, top1), dtype)
    assert ok is passed


@pytest.mark.parametrize(("base_dlogit", "noop"), [(0.0, True), (1e-9, False), (0.3, False)])
def test_noop_is_exactly_equal_logits(base_dlogit, noop):
    assert judge(_figures(0.0, base_dlogit=base_dlogit), "float32")[1] is noop


@pytest.mark.parametrize("factor", [2.0, 1.05])
def test_a_wrong_merge_fails_verify_and_writes_nothing(
    tiny_model_dir, tmp_path, monkeypatch, factor
):
    """The streamed merge's own arithmetic, made wrong on purpose: delta * factor."""
    import vlmctl.merge.streaming as streaming

    run = make_run(tiny_model_dir("qwen2_vl"), tmp_path / "run", "qwen2_vl")
    right = streaming.merge_lora_tensor

    def wrong(weight, layer, out_dtype):
        w = weight.to(out_dtype)
        return (w + (right(weight, layer, out_dtype) - w) * factor).to(out_dtype)

    monkeypatch.setattr(streaming, "merge_lora_tensor", wrong)
    result = cli(str(run), "--low-memory", "--dtype", "fp32")
    assert result.exit_code == 1, result.output
    assert "verify failed" in stderr_of(result)
    assert not (run / "merged").exists()
    assert not list(run.glob(".merged*"))

    monkeypatch.setattr(streaming, "merge_lora_tensor", right)
    result = cli(str(run), "--low-memory", "--dtype", "fp32")
    assert result.exit_code == 0, stderr_of(result)
    assert (run / "merged" / "merge-report.json").is_file()


def _logits(*rows):
    import torch

    return torch.tensor(rows, dtype=torch.float32)


def test_compare_figures_over_several_probes():
    """The figures verify judges: the LARGEST |dlogit| over every probe (not the first probe's,
    not a sum), top-1 agreement over all tokens, the token count, and max |logit| of the first
    model; zip is strict, so probes lost on one side are an error, not a silently short check."""
    from vlmctl.merge.verify import compare

    a = [_logits([1.0, 5.0, 0.0], [2.0, 0.0, 0.0]), _logits([0.0, 0.0, -7.0])]
    b = [_logits([1.0, 4.5, 0.0], [0.0, 3.0, 0.0]), _logits([0.0, 0.25, -7.0])]
    fig = compare(a, b)
    # per token: |d| = 0.5, 3.0, 0.25; argmax: (1,1) agree, (0,1) differ, (0,1) differ
    assert fig == {
        "max_abs_dlogit": 3.0,
        "top1_agreement": 1 / 3,
        # the third token is an exact tie in `a` (0.0 vs 0.0): a flip there is not a merge error
        "top1_agreement_beyond_ties": 2 / 3,
        "tokens": 3,
        "max_abs_logit": 7.0,
    }
    assert compare(a, a)["top1_agreement"] == 1.0
    assert compare(a, a)["max_abs_dlogit"] == 0.0
    with pytest.raises(ValueError):
        compare(a, b[:1])
