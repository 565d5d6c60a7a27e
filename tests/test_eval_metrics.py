"""`vlmctl eval`'s metrics against values computed by hand (Unicode answers included)."""

from __future__ import annotations

import pytest

from vlmctl import metrics as M


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Red.", "red"),
        ("  a   BIG, red  ball! ", "big red ball"),
        ("don't", "dont"),  # SQuAD deletes punctuation
        ("Straße", "strasse"),  # casefold: ß -> ss
        ("ＲＥＤ　ｃａｒ", "red car"),  # NFKC: full-width letters and the ideographic space
        ("«Ελληνικά»", "ελληνικά"),  # Unicode punctuation (guillemets), Greek lower-cased
        ("東京、大阪。", "東京大阪"),  # CJK punctuation removed
        ("Café", "café"),  # accents are kept: é is not e
        ("An apple and the pear", "apple and pear"),
    ],
)
def test_normalize_answer(text, expected):
    assert M.normalize_answer(text) == expected


def test_exact_match():
    assert M.exact_match("The red.", "red") == 1.0
    assert M.exact_match("STRASSE", "Straße") == 1.0
    assert M.exact_match("ｂｌｕｅ", "blue") == 1.0
    assert M.exact_match("red car", "red") == 0.0
    assert M.exact_match("cafe", "café") == 0.0
    assert M.exact_match("blue", ["red", "Blue!"]) == 1.0  # several references: any


def test_token_f1_hand_computed():
    # pred {red, car}, ref {red, big, car, door}: common 2 -> P 2/2, R 2/4 -> F1 2/3
    assert M.token_f1("the red car", "a big red car door") == pytest.approx(2 / 3)
    # repeated words count as a bag: pred red red, ref red -> common 1, P 1/2, R 1 -> 2/3
    assert M.token_f1("red red", "red") == pytest.approx(2 / 3)
    assert M.token_f1("green", "red") == 0.0
    assert M.token_f1("", "") == 1.0 and M.token_f1("", "red") == 0.0
    # Greek: pred {μεγάλο, σπίτι}, ref {σπίτι}: P 1/2, R 1 -> 2/3
    assert M.token_f1("Μεγάλο σπίτι", "σπίτι") == pytest.approx(2 / 3)


def test_rouge_l_hand_computed():
    # tokens pred: cat sat on mat (4), ref: cat on mat (3); LCS 3: P 3/4, R 1 -> 6/7
    assert M.rouge_l("the cat sat on the mat", "the cat on mat") == pytest.approx(6 / 7)
    # order matters (unlike F1): pred "mat on cat", ref "cat on mat": LCS 1 (any one
    # word), P = R = 1/3 -> 1/3; token F1 is 1
    assert M.rouge_l("mat on cat", "cat on mat") == pytest.approx(1 / 3)
    assert M.token_f1("mat on cat", "cat on mat") == 1.0
    assert M.lcs_length(list("abcbdab"), list("bdcaba")) == 4
    # Japanese words (space-separated): pred 赤い 大きい 車, ref 赤い 車: LCS 2, P 2/3, R 1 -> 0.8
    assert M.rouge_l("赤い 大きい 車", "赤い 車") == pytest.approx(0.8)


def test_levenshtein_and_anls_hand_computed():
    assert M.levenshtein("kitten", "sitting") == 3
    assert M.levenshtein("", "abc") == 3
    assert M.levenshtein("日本語", "日本") == 1  # code points, not bytes
    # "tokyo" vs "tokio": distance 1, longest 5 -> 1 - 0.2 = 0.8 (case ignored)
    assert M.anls("Tokyo", "tokio") == pytest.approx(0.8)
    # distance 3 of 7 = 0.43 < 0.5 -> 1 - 3/7
    assert M.anls("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    # at or above the threshold the answer scores 0: "abc" vs "xyz" distance 3/3
    assert M.anls("abc", "xyz") == 0.0
    # "ab" vs "ad": distance 1 of 2 = exactly 0.5 -> 0 (nl < 0.5 is required)
    assert M.anls("ab", "ad") == 0.0
    assert M.anls("  München ", "münchen") == 1.0
    # "Zürich" vs "Zurich": one substitution of 6 -> 5/6
    assert M.anls("Zürich", "Zurich") == pytest.approx(5 / 6)
    assert M.anls("", "") == 1.0
    assert M.anls("x", ["abc", "x"]) == 1.0  # the best reference


def test_boxes_and_iou_hand_computed():
    assert M.parse_box("[10, 20, 30, 40]") == (10, 20, 30, 40)
    assert M.parse_box("(10,20),(30,40)") == (10, 20, 30, 40)
    assert M.parse_box("30 40 10 20") == (10, 20, 30, 40)  # corners in any order
    assert M.parse_box("red") is None and M.parse_box("[1, 2, 3]") is None
    # [0,0,10,10] and [5,5,15,15]: intersection 25, union 100 + 100 - 25 = 175
    assert M.iou("[0,0,10,10]", "[5,5,15,15]") == pytest.approx(25 / 175)
    assert M.iou("[0,0,10,10]", "[0,0,10,10]") == 1.0
    assert M.iou("[0,0,1,1]", "[2,2,3,3]") == 0.0
    assert M.iou("no box here", "[0,0,1,1]") == 0.0
    assert M.answers_are_boxes(["[0,0,1,1]", "[0.1, 0.2, 0.3, 0.4]"])
    assert not M.answers_are_boxes(["[0,0,1,1]", "red"])
    row = M.score_row("[0,0,10,10]", "[5,5,15,15]", boxes=True)
    assert row["iou"] == pytest.approx(25 / 175) and row["exact_match"] == 0.0
    assert "iou" not in M.score_row("red", "red")


def test_aggregate_is_the_mean():
    rows = [M.score_row("red", "red"), M.score_row("blue", "red")]
    agg = M.aggregate(rows)
    assert agg["exact_match"] == 0.5 and agg["anls"] == 0.5
    assert set(agg) == set(M.TEXT_METRICS)
