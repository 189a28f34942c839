"""The metrics on small tables worked out by hand."""

import math

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

import crbook
from crbook import metrics

matplotlib.use("Agg")

# Six points, three classes, 4 bins of width 0.25. Per row: confidence, correct?, bin.
PROBS = np.array(
    [
        [0.60, 0.30, 0.10],  # 0.60  right  bin 2
        [0.05, 0.90, 0.05],  # 0.90  wrong  bin 3
        [0.45, 0.35, 0.20],  # 0.45  wrong  bin 1
        [0.00, 0.00, 1.00],  # 1.00  right  bin 3 (the top edge goes to the last bin)
        [0.40, 0.30, 0.30],  # 0.40  right  bin 1
        [0.30, 0.35, 0.35],  # 0.35  right  bin 1 (tie of classes 1, 2: class 1)
    ]
)
LABELS = np.array([0, 2, 1, 2, 0, 1])
# bin 1: 3 points, accuracy 2/3, confidence (0.45 + 0.40 + 0.35) / 3 = 0.40
# bin 2: 1 point,  accuracy 1,   confidence 0.60
# bin 3: 2 points, accuracy 1/2, confidence (0.90 + 1.00) / 2 = 0.95
# ECE = 3/6 · |2/3 − 0.4| + 1/6 · |1 − 0.6| + 2/6 · |0.5 − 0.95| = 2/15 + 1/15 + 0.15
ECE = 0.35


def test_accuracy_on_numpy_and_torch():
    assert metrics.accuracy(PROBS, LABELS) == pytest.approx(4 / 6)
    logits = torch.log(torch.tensor(PROBS) + 1e-9)  # same argmax as the probabilities
    assert metrics.accuracy(logits, torch.tensor(LABELS)) == pytest.approx(4 / 6)


def test_reliability_table():
    table = metrics.reliability(PROBS, LABELS, bins=4)
    np.testing.assert_allclose(table.edges, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(table.counts, [0, 3, 1, 2])
    np.testing.assert_allclose(table.accuracy[1:], [2 / 3, 1, 0.5], rtol=1e-15)
    np.testing.assert_allclose(table.confidence[1:], [0.4, 0.6, 0.95], rtol=1e-15)
    assert np.isnan(table.accuracy[0]) and np.isnan(table.confidence[0])
    assert table.ece == pytest.approx(ECE, rel=1e-14)
    assert table.bins == 4


def test_ece_on_numpy_and_torch_float32():
    assert metrics.ece(PROBS, LABELS, bins=4) == pytest.approx(ECE, rel=1e-14)
    as_torch = torch.tensor(PROBS, dtype=torch.float32)
    got = metrics.ece(as_torch, torch.tensor(LABELS), bins=4)
    assert got == pytest.approx(ECE, rel=1e-6)


def test_confidence_one_goes_to_the_last_bin_and_one_bin_is_the_accuracy_gap():
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    labels = np.array([0, 0, 1])
    table = metrics.reliability(probs, labels, bins=10)
    assert table.counts[9] == 2 and table.counts[5] == 1 and table.counts.sum() == 3
    # one bin: ECE = |accuracy − mean confidence| = |1/3 − 2.5/3|
    assert metrics.ece(probs, labels, bins=1) == pytest.approx(0.5)


def test_least_confident_accuracy():
    # confidences in rising order: rows 5 (0.35, right), 4 (0.40, right),
    # 2 (0.45, wrong), 0 (0.60, right), 1 (0.90, wrong), 3 (1.00, right)
    acc = metrics.least_confident_accuracy
    assert acc(PROBS, LABELS, 0.25) == pytest.approx(1.0)  # k = ⌊1.5 + ½⌋ = 2
    assert acc(PROBS, LABELS, 0.5) == pytest.approx(2 / 3)  # k = 3
    assert acc(PROBS, LABELS, 0.01) == pytest.approx(1.0)  # k = 1 at least
    assert acc(PROBS, LABELS, 1.0) == pytest.approx(4 / 6)


def test_least_confident_ties_take_the_earlier_rows():
    probs = np.array([[0.5, 0.5], [0.5, 0.5], [0.9, 0.1]])
    # both tied rows predict class 0; only the first is wrong
    assert metrics.least_confident_accuracy(probs, [1, 0, 0], 1 / 3) == 0.0
    assert metrics.least_confident_accuracy(probs, [0, 1, 0], 1 / 3) == 1.0


def test_pair_confusion_rate():
    preds = np.array([4, 9, 9, 4, 9, 3, 4])
    labels = np.array([4, 4, 9, 9, 9, 9, 1])
    # pair points: the first six; swapped: rows 1 (4 → 9) and 3 (9 → 4); row 5
    # (9 → 3) counts in the denominator only; row 6 is not of the pair
    assert metrics.pair_confusion_rate(preds, labels, 4, 9) == pytest.approx(2 / 6)
    assert metrics.pair_confusion_rate(preds, labels, 9, 4) == pytest.approx(2 / 6)
    scores = torch.nn.functional.one_hot(torch.tensor(preds), 10).double()
    got = metrics.pair_confusion_rate(scores, torch.tensor(labels), 4, 9)
    assert got == pytest.approx(2 / 6)


def _identity_classifier():
    """Logits equal to the inputs, so each point's probabilities are set by hand."""
    model = nn.Linear(3, 3, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
    return model


def test_pair_curvature_rate_selects_the_uncertain_points_of_the_pair():
    x = torch.tensor(
        [
            [0.0, 0.0, 0.0],  # top 1/3            label 0: kept
            [3.0, 0.0, 0.0],  # top e³/(e³+2) ≈ .91 label 0: too confident
            [0.0, 1.0, 0.0],  # top e/(e+2) ≈ .58  label 1: kept
            [0.0, 0.0, 1.0],  # top ≈ .58          label 2: not of the pair
            [1.0, 0.0, 0.0],  # top ≈ .58          label 1: kept
        ],
        dtype=torch.float64,
    )
    y = np.array([0, 0, 1, 2, 1])
    model = _identity_classifier().train()
    got = metrics.pair_curvature_rate(
        model, x, y, 0, 1, generator=torch.Generator().manual_seed(0)
    )
    assert model.training  # mode restored
    assert got.n_points == 3 and not got.empty and got.band == (0.3, 0.7)
    want = crbook.curvature_rate(
        model,
        x[[0, 2, 4]],
        torch.tensor([0, 1, 1]),
        generator=torch.Generator().manual_seed(0),
    )
    assert got.lam == want.lam and got.rate.n_points == 3


def test_pair_curvature_rate_flags_an_empty_band():
    x = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    with pytest.warns(UserWarning, match="only 1 point"):
        got = metrics.pair_curvature_rate(
            _identity_classifier(), x, torch.tensor([0, 1]), 0, 1
        )
    assert got.empty and got.rate is None and got.n_points == 1
    assert math.isnan(got.lam)


def test_plot_reliability_draws_bars_and_the_diagonal():
    table = metrics.reliability(PROBS, LABELS, bins=4)
    ax = metrics.plot_reliability(table, title="hand table")
    assert len(ax.patches) == 3  # one bar per filled bin
    heights = sorted(p.get_height() for p in ax.patches)
    np.testing.assert_allclose(heights, [0.5, 2 / 3, 1.0])
    diagonal = [line for line in ax.lines if list(line.get_xdata()) == [0, 1]]
    assert diagonal and list(diagonal[0].get_ydata()) == [0, 1]
    assert "confidence" in ax.get_xlabel() and ax.get_ylabel() == "accuracy"
    assert "hand table" in ax.get_title()
    matplotlib.pyplot.close(ax.figure)
    with pytest.raises(TypeError, match="Reliability"):
        metrics.plot_reliability(PROBS)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: metrics.ece(PROBS[0], LABELS), ValueError, "shape"),
        (lambda: metrics.ece(PROBS * 2, LABELS), ValueError, r"in \[0, 1\]"),
        (lambda: metrics.ece(PROBS * 0.9, LABELS), ValueError, "sum to 1"),
        (lambda: metrics.ece(PROBS - 0.5, LABELS), ValueError, r"in \[0, 1\]"),
        (lambda: metrics.ece(PROBS, LABELS[:3]), ValueError, r"shape \(6,\)"),
        (lambda: metrics.ece(PROBS, LABELS + 3), ValueError, "below 3"),
        (lambda: metrics.ece(PROBS, LABELS * 1.0), TypeError, "integer"),
        (lambda: metrics.ece(PROBS, LABELS, bins=0), ValueError, "bins must be >= 1"),
        (lambda: metrics.ece(PROBS, LABELS, bins=2.0), TypeError, "bins must be"),
        (lambda: metrics.ece("probs", LABELS), TypeError, "numpy array"),
        (lambda: metrics.accuracy(PROBS * np.nan, LABELS), ValueError, "non-finite"),
        (
            lambda: metrics.least_confident_accuracy(PROBS, LABELS, 0.0),
            ValueError,
            r"fraction must be in \(0, 1\]",
        ),
        (
            lambda: metrics.least_confident_accuracy(PROBS, LABELS, 1.5),
            ValueError,
            "fraction",
        ),
        (
            lambda: metrics.pair_confusion_rate(PROBS, LABELS, 1, 1),
            ValueError,
            "two different classes",
        ),
        (
            lambda: metrics.pair_confusion_rate(PROBS, LABELS, 0, 5),
            ValueError,
            "below 3",
        ),
        (
            lambda: metrics.pair_confusion_rate([1, 1], [1, 1], 2, 3),
            ValueError,
            "no point is labelled 2 or 3",
        ),
        (
            lambda: metrics.pair_curvature_rate(
                _identity_classifier(),
                torch.zeros(2, 3, dtype=torch.float64),
                [0, 1],
                0,
                1,
                band=(0.8, 0.2),
            ),
            ValueError,
            "band must be",
        ),
    ],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
