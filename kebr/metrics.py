"""Regression-to-sentiment metrics as the MMSA framework (and the KEBR reference) compute them.

KEBR-SPEC.md section 7. p = predictions, y = labels in [-3, 3]:
- mae = mean |p - y|; corr = Pearson(p, y), nan when either side is constant (undefined).
- acc7 / acc5 / acc3: clip both to [-3, 3] / [-2, 2] / [-1, 1], round to integers with np.round
  (half to even, as MMSA: 2.5 -> 2, -0.5 -> -0), accuracy.
- Has0 ("negative / non-negative"): y >= 0 vs p >= 0 over all samples.
- Non0 ("negative / positive"): samples with y == 0 dropped; y > 0 vs p > 0. nan when every label is 0.
- F1 is sklearn's weighted F1 (ill-defined per-class scores count as 0, MMSA's default behaviour).
Accuracies and F1 are fractions in [0, 1]; tables turn them into percent with ``format_has0_non0``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import f1_score

METRIC_KEYS = ("acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc7", "acc5", "acc3", "mae", "corr")


def _clipped_accuracy(p: np.ndarray, y: np.ndarray, bound: float) -> float:
    return float(np.mean(np.round(np.clip(p, -bound, bound)) == np.round(np.clip(y, -bound, bound))))


def _binary_scores(truth: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(accuracy, weighted F1) of two boolean arrays; (nan, nan) when empty."""
    if truth.size == 0:
        return float("nan"), float("nan")
    f1 = f1_score(truth, pred, average="weighted", zero_division=0)
    return float(np.mean(truth == pred)), float(f1)


def _pearson(p: np.ndarray, y: np.ndarray) -> float:
    if np.ptp(p) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(p, y)[0, 1])


def regression_metrics(preds: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """All metrics of section 7 for one set of predictions; keys are ``METRIC_KEYS``.

    Raises ValueError on empty, mismatched or non-finite input: a nan prediction means a diverged
    model, and silently counting it as a wrong answer would hide that.
    """
    p = np.asarray(preds, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"{p.size} predictions but {y.size} labels")
    if p.size == 0:
        raise ValueError("no predictions to evaluate")
    if not (np.isfinite(p).all() and np.isfinite(y).all()):
        raise ValueError("predictions or labels contain nan or inf")

    acc2_has0, f1_has0 = _binary_scores(y >= 0, p >= 0)
    non0 = y != 0
    acc2_non0, f1_non0 = _binary_scores(y[non0] > 0, p[non0] > 0)
    return {
        "acc2_has0": acc2_has0,
        "f1_has0": f1_has0,
        "acc2_non0": acc2_non0,
        "f1_non0": f1_non0,
        "acc7": _clipped_accuracy(p, y, 3),
        "acc5": _clipped_accuracy(p, y, 2),
        "acc3": _clipped_accuracy(p, y, 1),
        "mae": float(np.mean(np.abs(p - y))),
        "corr": _pearson(p, y),
    }


def format_has0_non0(has0: float, non0: float) -> str:
    """Two fractions as the paper's table cell, in percent: (0.844, 0.872) -> "84.40/87.20"."""
    return f"{100 * has0:.2f}/{100 * non0:.2f}"


def evaluate_predictions_csv(path: str | Path) -> dict[str, float]:
    """``regression_metrics`` of a CSV with a header and columns ``prediction`` and ``label``
    (any other columns, e.g. clip_id, are ignored)."""
    preds, labels = [], []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"prediction", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            try:
                preds.append(float(row["prediction"]))
                labels.append(float(row["label"]))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{line}: not a number: {exc}") from None
    return regression_metrics(preds, labels)
