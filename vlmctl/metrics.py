"""Answer metrics of `vlmctl eval`: exact match, token F1, ROUGE-L, ANLS and box IoU.

The standard formulas, written out here (pure Python, no dependency): no maintained library
for them is installed in vlmctl's environment, and the usual ones are either heavy
(`evaluate` pulls `datasets` metrics scripts from the hub at run time, which fails offline) or
English/ASCII-only (`rouge_score`'s tokenizer drops every non-[a-z0-9] character, so a
Japanese or Greek answer scores 0 against itself). Each follows its reference definition:

- exact match and token F1: SQuAD v1.1's `normalize_answer` (lowercase, drop punctuation, drop
  the articles a/an/the, collapse whitespace), made Unicode-aware: NFKC (full-width digits
  and letters become their plain forms), `casefold` (German ß == ss), and every Unicode
  punctuation character (category P*) removed, not only ASCII's;
- ROUGE-L: the F-measure (beta = 1) of the longest common subsequence of the normalised tokens
  (Lin 2004), as `rouge_score`'s `rougeL` reports `fmeasure`;
- ANLS: 1 - normalised Levenshtein distance (over characters, after lowercasing and collapsing
  whitespace), set to 0 at or above the 0.5 threshold (Biten et al. 2019, DocVQA/ST-VQA);
  several references: the best one;
- IoU: intersection over union of two `[x1, y1, x2, y2]` boxes in the dataset's own coordinate
  convention (the reference decides: when every reference parses as one box, IoU is reported).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

ANLS_THRESHOLD = 0.5
TEXT_METRICS = ("exact_match", "token_f1", "rouge_l", "anls")
_ARTICLES = frozenset(("a", "an", "the"))
_ASCII_PUNCT = frozenset(string.punctuation)
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_BOX_RE = re.compile(
    rf"^\s*[\[(]?\s*({_NUMBER})\s*[,;\s]\s*[\[(]?\s*({_NUMBER})\s*[\])]?\s*[,;\s]\s*[\[(]?\s*"
    rf"({_NUMBER})\s*[,;\s]\s*({_NUMBER})\s*[\])]?\s*[\])]?\s*$"
)


def _is_punct(ch: str) -> bool:
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation, Unicode-aware: NFKC, casefold, no punctuation/articles, one space.

    Punctuation is deleted, as SQuAD deletes it ("don't" -> "dont", "3.5" -> "35").
    """
    text = unicodedata.normalize("NFKC", str(text)).casefold()
    text = "".join(ch for ch in text if not _is_punct(ch))
    return " ".join(w for w in text.split() if w not in _ARTICLES)


def tokens(text: str) -> list[str]:
    """The normalised answer's words (what F1 and ROUGE-L count)."""
    return normalize_answer(text).split()


def exact_match(prediction: str, reference: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised reference, else 0.0."""
    pred = " ".join(tokens(prediction))
    return max(float(pred == " ".join(tokens(ref))) for ref in _refs(reference))


def token_f1(prediction: str, reference: str | Sequence[str]) -> float:
    """SQuAD token F1: harmonic mean of word precision and recall (bag of words)."""
    return max(_f1(tokens(prediction), tokens(ref)) for ref in _refs(reference))


def _f1(pred: list[str], ref: list[str]) -> float:
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, O(len(a) * len(b)))."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str | Sequence[str]) -> float:
    """ROUGE-L F-measure over normalised words: 2PR/(P+R) with P, R from the LCS."""
    best = 0.0
    pred = tokens(prediction)
    for ref in _refs(reference):
        r = tokens(ref)
        if not pred or not r:
            best = max(best, float(pred == r))
            continue
        lcs = lcs_length(pred, r)
        if lcs:
            p, rc = lcs / len(pred), lcs / len(r)
            best = max(best, 2 * p * rc / (p + rc))
    return best


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute; each costs 1) over Unicode code points."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _anls_norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", str(text)).casefold().split())


def anls(
    prediction: str, reference: str | Sequence[str], threshold: float = ANLS_THRESHOLD
) -> float:
    """Average Normalised Levenshtein Similarity of one answer (the best reference)."""
    pred = _anls_norm(prediction)
    best = 0.0
    for ref in _refs(reference):
        r = _anls_norm(ref)
        longest = max(len(pred), len(r))
        nl = levenshtein(pred, r) / longest if longest else 0.0
        best = max(best, 1.0 - nl if nl < threshold else 0.0)
    return best


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    """`[x1, y1, x2, y2]` (also `(x1,y1),(x2,y2)` or four numbers) -> a box, else None."""
    m = _BOX_RE.match(str(text))
    if not m:
        return None
    x1, y1, x2, y2 = (float(v) for v in m.groups())
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two `[x1, y1, x2, y2]` boxes (0 when they do not overlap)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else float(tuple(a) == tuple(b))


def iou(prediction: str, reference: str | Sequence[str]) -> float:
    """IoU of the predicted box with the (best) reference box; 0 when the answer is no box."""
    pred = parse_box(prediction)
    if pred is None:
        return 0.0
    boxes = [b for b in (parse_box(r) for r in _refs(reference)) if b is not None]
    return max((box_iou(pred, b) for b in boxes), default=0.0)


def answers_are_boxes(references: Iterable[str | Sequence[str]]) -> bool:
    """Whether every reference is a box: then IoU is reported beside the text metrics."""
    refs = list(references)
    return bool(refs) and all(parse_box(r) is not None for ref in refs for r in _refs(ref))


def score_row(prediction: str, reference: str | Sequence[str], boxes: bool = False) -> dict:
    """Every metric for one answer (IoU only when the answers are boxes)."""
    out = {
        "exact_match": exact_match(prediction, reference),
        "token_f1": token_f1(prediction, reference),
        "rouge_l": rouge_l(prediction, reference),
        "anls": anls(prediction, reference),
    }
    if boxes:
        out["iou"] = iou(prediction, reference)
    return out


def aggregate(rows: Sequence[dict]) -> dict:
    """Mean of each per-row metric (what the report's table shows)."""
    if not rows:
        return {k: 0.0 for k in TEXT_METRICS}
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return {k: sum(r.get(k, 0.0) for r in rows) / len(rows) for k in keys}


def _refs(reference: str | Sequence[str]) -> list[str]:
    if isinstance(reference, str):
        return [reference]
    refs = [str(r) for r in reference]
    return refs or [""]
