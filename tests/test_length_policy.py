"""The pure length-policy decision (`vlmctl.collate.length_policy.decide`) at L-1, L and L+1.

The collator acts on this decision and validate reports it; tests/test_length_boundaries.py
checks that both agree on real encodings. Here: the rule itself, without a processor.
"""

from __future__ import annotations

import pytest

from vlmctl.collate.length_policy import LengthDecision, decide

L = 10


def _decide(length, policy, *, spans=(), labelled=None, truncation=True):
    """A row of `length` tokens whose supervised tokens sit at positions `labelled`."""
    labelled = set(range(length - 2, length)) if labelled is None else set(labelled)
    return decide(
        length,
        list(spans),
        len(labelled),
        lambda n: sum(1 for i in labelled if i < n),
        truncation=truncation,
        max_length=L,
        policy=policy,
    )


@pytest.mark.parametrize("policy", ["drop", "truncate_text", "error"])
@pytest.mark.parametrize("length", [L - 1, L])
def test_a_row_up_to_max_length_is_kept_whole(policy, length):
    d = _decide(length, policy)
    assert d == LengthDecision("keep", supervised=2)
    assert d.fits and not d.over_length


@pytest.mark.parametrize("policy", ["drop", "truncate_text", "error"])
def test_truncation_off_keeps_any_length(policy):
    assert _decide(L + 50, policy, truncation=False) == LengthDecision("keep", supervised=2)


def test_one_token_over_is_dropped_under_drop():
    d = _decide(L + 1, "drop")
    assert (d.action, d.reason, d.supervised, d.fits) == ("drop", "too_long", 0, False)
    assert d.over_length


def test_one_token_over_is_an_error_under_error():
    d = _decide(L + 1, "error")
    assert (d.action, d.reason, d.fits, d.over_length) == ("error", None, False, True)


def test_one_token_over_is_cut_at_max_length_keeping_the_labels_before_the_cut():
    # labels at 7, 8, 9, 10: the cut at 10 keeps 7-9
    d = _decide(L + 1, "truncate_text", labelled=[7, 8, 9, 10], spans=[(1, 5)])
    assert d == LengthDecision("cut", cut_at=L, supervised=3, over_length=True)
    assert d.fits


@pytest.mark.parametrize(
    ("media_end", "fits"),
    [(L - 1, True), (L, True), (L + 1, False)],
)
def test_truncate_text_never_cuts_inside_a_media_span(media_end, fits):
    d = _decide(L + 5, "truncate_text", spans=[(2, media_end)], labelled=[0])
    assert d.fits is fits
    if fits:
        assert (d.action, d.cut_at) == ("cut", L)
    else:
        assert (d.action, d.reason, d.cut_at) == ("drop", "media_too_long", None)


def test_a_cut_that_leaves_no_label_drops_the_row_but_still_fits_the_length_rule():
    d = _decide(L + 1, "truncate_text", labelled=[L])  # the only label is after the cut
    assert (d.action, d.reason, d.cut_at, d.supervised) == ("drop", "no_labels", L, 0)
    assert d.fits


def test_a_row_without_labels_is_dropped_whatever_its_length():
    d = _decide(L - 1, "drop", labelled=[])
    assert (d.action, d.reason, d.fits, d.over_length) == ("drop", "no_labels", True, False)


def test_supervised_upto_is_only_asked_for_a_cut():
    asked = []

    def upto(n):
        asked.append(n)
        return 1

    for length, policy in [(L, "truncate_text"), (L + 1, "drop"), (L + 1, "error")]:
        decide(length, [], 3, upto, truncation=True, max_length=L, policy=policy)
    assert asked == []
    decide(L + 1, [], 3, upto, truncation=True, max_length=L, policy="truncate_text")
    assert asked == [L]
