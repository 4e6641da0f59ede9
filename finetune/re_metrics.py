"""Relation-extraction scores as BioBERT reports them, as pure functions of gold and predicted label names.

Labels are compared by NAME, never by index or sort order, so a label map cannot silently change a score.
  * GAD / EU-ADR: precision, recall and F1 of the positive class ("1"), plus accuracy.
  * ChemProt: micro precision/recall/F1 over the five CPR classes with the negative class ("False")
    excluded: a False->CPR:x prediction is a false positive, CPR:x->False a false negative, and
    CPR:3->CPR:4 both (a false positive for CPR:4 and a false negative for CPR:3). This equals
    sklearn's `precision_recall_fscore_support(average="micro", labels=CPR classes)`, BioBERT's scorer.
All scores are percentages; a ratio with a zero denominator is 0 (sklearn's `zero_division=0`).
"""

from __future__ import annotations

from collections.abc import Sequence


def _ratio(num: int, den: int) -> float:
    return 100.0 * num / den if den else 0.0


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def _check(gold: Sequence[str], pred: Sequence[str]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{len(pred)} predictions for {len(gold)} gold labels")


def binary_scores(gold: Sequence[str], pred: Sequence[str], positive: str = "1") -> dict:
    """P/R/F1 of the `positive` class, accuracy, and the confusion counts behind them."""
    _check(gold, pred)
    tp = sum(g == positive and p == positive for g, p in zip(gold, pred))
    fp = sum(g != positive and p == positive for g, p in zip(gold, pred))
    fn = sum(g == positive and p != positive for g, p in zip(gold, pred))
    correct = sum(g == p for g, p in zip(gold, pred))
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {
        "precision": precision,
        "recall": recall,
        "f1": _f1(precision, recall),
        "accuracy": _ratio(correct, len(gold)),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": len(gold) - tp - fp - fn,
        "examples": len(gold),
    }


def micro_scores(gold: Sequence[str], pred: Sequence[str], classes: Sequence[str], negative: str = "False") -> dict:
    """Micro P/R/F1 over `classes` (the negative class excluded), accuracy over all labels, per class."""
    _check(gold, pred)
    if negative in classes:
        raise ValueError(f"the negative class {negative!r} must not be among the scored classes {list(classes)}")
    scored = set(classes)
    per_class = {}
    for c in classes:
        tp = sum(g == c and p == c for g, p in zip(gold, pred))
        n_pred, n_gold = sum(p == c for p in pred), sum(g == c for g in gold)
        precision, recall = _ratio(tp, n_pred), _ratio(tp, n_gold)
        per_class[c] = {
            "precision": precision,
            "recall": recall,
            "f1": _f1(precision, recall),
            "tp": tp,
            "predicted": n_pred,
            "support": n_gold,
        }
    tp = sum(v["tp"] for v in per_class.values())
    n_pred = sum(p in scored for p in pred)
    n_gold = sum(g in scored for g in gold)
    precision, recall = _ratio(tp, n_pred), _ratio(tp, n_gold)
    return {
        "precision": precision,
        "recall": recall,
        "f1": _f1(precision, recall),
        "accuracy": _ratio(sum(g == p for g, p in zip(gold, pred)), len(gold)),
        "tp": tp,
        "fp": n_pred - tp,
        "fn": n_gold - tp,
        "examples": len(gold),
        "per_class": per_class,
    }
