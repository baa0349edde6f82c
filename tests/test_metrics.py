"""Metrics on small hand-computed arrays (MMSA convention, KEBR-SPEC.md section 7)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kebr.metrics import METRIC_KEYS, evaluate_predictions_csv, format_has0_non0, regression_metrics

# Two zero labels (indices 2 and 5) and rounding/clipping edge cases.
Y = [1.5, -0.6, 0.0, 2.4, -2.0, 0.0, 0.8, -0.5]
P = [2.5, -0.4, 0.3, 3.7, -1.0, -0.2, -0.1, 0.0]


@pytest.fixture(scope="module")
def metrics() -> dict[str, float]:
    return regression_metrics(P, Y)


def test_keys(metrics):
    assert tuple(metrics) == METRIC_KEYS
    assert set(METRIC_KEYS) == {"acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc7", "acc5", "acc3", "mae", "corr"}


def test_has0(metrics):
    # y >= 0: [T, F, T, T, F, T, T, F]   (5 T, 3 F)
    # p >= 0: [T, F, T, T, F, F, F, T]   (p = 0.0 counts as non-negative)
    # agree at 0, 1, 2, 3, 4 -> 5 / 8 = 0.625
    assert metrics["acc2_has0"] == pytest.approx(5 / 8)
    # class T: TP 3 (0, 2, 3), FP 1 (7), FN 2 (5, 6): F1 = 2*3 / (2*3 + 1 + 2) = 2/3, support 5
    # class F: TP 2 (1, 4), FP 2 (5, 6), FN 1 (7):   F1 = 2*2 / (2*2 + 2 + 1) = 4/7, support 3
    # weighted: (5 * 2/3 + 3 * 4/7) / 8 = (70/21 + 36/21) / 8 = 106/168 = 53/84 = 0.6309524
    assert metrics["f1_has0"] == pytest.approx(53 / 84)


def test_non0_drops_zero_labels(metrics):
    # kept: indices 0, 1, 3, 4, 6, 7 (6 samples; the two y == 0 are dropped)
    # y > 0: [T, F, T, F, T, F]
    # p > 0: [T, F, T, F, F, F]   (p = 0.0 is not positive)
    # agree at all but index 6 -> 5 / 6; had the zero labels been kept, no count would be over 6
    assert metrics["acc2_non0"] == pytest.approx(5 / 6)
    # class T: TP 2, FP 0, FN 1: F1 = 4/5, support 3; class F: TP 3, FP 1, FN 0: F1 = 6/7, support 3
    # weighted: (3 * 4/5 + 3 * 6/7) / 6 = (28/35 + 30/35) / 2 = 29/35 = 0.8285714
    assert metrics["f1_non0"] == pytest.approx(29 / 35)


def test_clipped_rounded_accuracies(metrics):
    # np.round rounds half to even: 1.5 -> 2, 2.5 -> 2, -0.5 -> -0 (== 0).
    # acc7, clip [-3, 3]:  y -> [2, -1, 0, 2, -2, 0, 1, -0]
    #                      p -> [2, -0, 0, 3, -1, -0, -0, 0]   (3.7 -> 3)
    #   agree at 0 (2 = 2, only because 2.5 rounds to even), 2, 5, 7 -> 4 / 8
    assert metrics["acc7"] == pytest.approx(4 / 8)
    # acc5, clip [-2, 2]:  y -> [2, -1, 0, 2, -2, 0, 1, -0]
    #                      p -> [2, -0, 0, 2, -1, -0, -0, 0]   (3.7 -> 2)
    #   agree at 0, 2, 3, 5, 7 -> 5 / 8
    assert metrics["acc5"] == pytest.approx(5 / 8)
    # acc3, clip [-1, 1]:  y -> [1, -1, 0, 1, -1, 0, 1, -0]
    #                      p -> [1, -0, 0, 1, -1, -0, -0, 0]
    #   agree at all but 1 and 6 -> 6 / 8
    assert metrics["acc3"] == pytest.approx(6 / 8)


def test_acc7_rounding_boundaries():
    # 0.49 -> 0 vs 0.51 -> 1 (differ); 1.5 -> 2 vs 2.5 -> 2 (agree); -2.5 -> -2 vs -1.5 -> -2 (agree);
    # 3.4 -> clip 3 vs 2.6 -> 3 (agree); -9 -> clip -3 vs -3 (agree) -> 4 / 5
    m = regression_metrics([0.51, 2.5, -1.5, 3.4, -9.0], [0.49, 1.5, -2.5, 2.6, -3.0])
    assert m["acc7"] == pytest.approx(4 / 5)


def test_mae_and_corr(metrics):
    # |p - y| = [1.0, 0.2, 0.3, 1.3, 1.0, 0.2, 0.9, 0.5], sum 5.4 -> 5.4 / 8 = 0.675
    assert metrics["mae"] == pytest.approx(0.675)
    p, y = np.array(P), np.array(Y)
    pc, yc = p - p.mean(), y - y.mean()
    assert metrics["corr"] == pytest.approx((pc @ yc) / math.sqrt((pc @ pc) * (yc @ yc)))
    assert metrics["corr"] == pytest.approx(np.corrcoef(p, y)[0, 1])


def test_f1_is_weighted_not_macro():
    # Imbalanced: 3 non-negative, 1 negative label, all predicted non-negative.
    # class T: TP 3, FP 1 -> F1 = 6/7, support 3; class F: TP 0 -> F1 = 0, support 1.
    # weighted = 3/4 * 6/7 = 18/28 = 0.6428571 (macro would be 3/7 = 0.4285714)
    m = regression_metrics([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 0.5, -1.0])
    assert m["f1_has0"] == pytest.approx(18 / 28)
    assert m["acc2_has0"] == pytest.approx(3 / 4)


def test_undefined_cases_are_nan():
    # Constant predictions: Pearson is undefined.
    m = regression_metrics([0.5, 0.5, 0.5], [1.0, -1.0, 2.0])
    assert math.isnan(m["corr"])
    # Every label 0: nothing left for Non0.
    m = regression_metrics([1.0, -1.0], [0.0, 0.0])
    assert math.isnan(m["acc2_non0"]) and math.isnan(m["f1_non0"])
    assert m["acc2_has0"] == pytest.approx(1 / 2)


@pytest.mark.parametrize(
    "preds,labels",
    [([], []), ([1.0, 2.0], [1.0]), ([float("nan"), 1.0], [1.0, 2.0])],
)
def test_bad_input(preds, labels):
    with pytest.raises(ValueError):
        regression_metrics(preds, labels)


def test_format_has0_non0():
    assert format_has0_non0(0.844, 0.872) == "84.40/87.20"
    assert format_has0_non0(53 / 84, 29 / 35) == "63.10/82.86"


def test_evaluate_predictions_csv(tmp_path, metrics):
    path = tmp_path / "predictions.csv"
    rows = "\n".join(f"clip{i},{y},{p}" for i, (p, y) in enumerate(zip(P, Y)))
    path.write_text("clip_id,label,prediction\n" + rows + "\n")
    assert evaluate_predictions_csv(path) == pytest.approx(metrics)

    bad = tmp_path / "bad.csv"
    bad.write_text("clip_id,pred,label\na,1,2\n")
    with pytest.raises(ValueError, match="prediction"):
        evaluate_predictions_csv(bad)
