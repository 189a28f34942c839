"""crbook.compare against metrics recomputed by hand and seed tables worked out."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import crbook
from crbook import compare

D = torch.float64
PAIRS = ((1, 2), (0, 3))


def _model_and_points(count=400, seed=0):
    """A linear 4-class classifier with dropout, and points around its boundaries."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, 4)).to(D)
    with torch.no_grad():
        model[2].weight.mul_(4.0)
    x = torch.randn(count, 1, 2, 2, dtype=D)
    y = torch.randint(4, (count,))
    return model, x, y


def _reference(model, x, y, bins, fraction, band):
    """Every number of an Evaluation, from float64 numpy loops."""
    weight = model[2].weight.detach().numpy()
    bias = model[2].bias.detach().numpy()
    logits = x.reshape(len(x), -1).numpy() @ weight.T + bias  # dropout off
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    labels = y.numpy()
    conf, pred = probs.max(1), probs.argmax(1)
    right = pred == labels
    ece = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = (conf >= low) & ((conf < high) | ((b == bins - 1) & (conf <= 1)))
        if inside.any():
            gap = abs(right[inside].mean() - conf[inside].mean())
            ece += inside.sum() / len(conf) * gap
    order = sorted(range(len(conf)), key=lambda i: (conf[i], i))
    k = max(1, math.floor(fraction * len(conf) + 0.5))
    least = right[order[:k]].mean()
    counts = {}
    for a, b in PAIRS:
        mask = np.isin(labels, (a, b)) & (conf >= band[0]) & (conf <= band[1])
        counts[(a, b)] = mask
    return probs, right.mean(), ece, least, counts


def test_evaluate_matches_a_float64_recomputation():
    model, x, y = _model_and_points()
    model.train()  # evaluate must switch dropout off, then restore the mode
    band = (0.3, 0.7)
    got = compare.evaluate(
        model, x, y, pairs=PAIRS, band=band, bins=7, fraction=0.25, seed=5
    )
    assert model.training
    probs, acc, ece, least, masks = _reference(model, x, y, 7, 0.25, band)
    np.testing.assert_allclose(got.probs, probs, rtol=1e-12, atol=1e-15)
    assert got.accuracy == pytest.approx(acc, rel=1e-15)
    assert got.ece == pytest.approx(ece, rel=1e-12)
    assert got.reliability.bins == 7 and got.reliability.counts.sum() == len(x)
    assert got.least_confident_accuracy == pytest.approx(least, rel=1e-15)
    for pair, mask in masks.items():
        assert mask.sum() >= 2  # the data are built so that λ is measured
        assert got.pair_points(*pair) == mask.sum()
        keep = torch.from_numpy(mask)
        want = crbook.curvature_rate(
            model,
            x[keep],
            y[keep],
            generator=torch.Generator().manual_seed(5),
        )
        assert got.pair_lam(*pair) == pytest.approx(want.lam, rel=1e-12)


def test_a_pair_without_uncertain_points_is_nan_and_silent(recwarn):
    model, x, y = _model_and_points()
    got = compare.evaluate(model, x, y, pairs=PAIRS, band=(0.999, 1.0))
    for pair in PAIRS:
        assert got.pair_points(*pair) < 2 and math.isnan(got.pair_lam(*pair))
    assert not recwarn.list


def test_a_pair_absent_from_the_test_set_has_no_points():
    model, x, y = _model_and_points()
    keep = (y != 3) & (y != 0)
    got = compare.evaluate(model, x[keep], y[keep], pairs=((0, 3), (1, 2)))
    assert got.pair_points(0, 3) == 0 and math.isnan(got.pair_lam(0, 3))
    assert got.pairs[(0, 3)].band == (0.3, 0.7)


def test_evaluate_refuses_bad_input():
    model, x, y = _model_and_points(count=20)
    with pytest.raises(TypeError, match="pass seed="):
        compare.evaluate(model, x, y, generator=torch.Generator())
    with pytest.raises(ValueError, match="one per point"):
        compare.evaluate(model, x, y[:5])
    with pytest.raises(ValueError, match="repeat a pair"):
        compare.evaluate(model, x, y, pairs=((1, 2), (1, 2)))
    with pytest.raises(TypeError, match="class pairs"):
        compare.evaluate(model, x, y, pairs=(1, 2))
    with pytest.raises(ValueError, match="two different classes"):
        compare.evaluate(model, x, y, pairs=((1, 1),))
    with pytest.raises(ValueError, match="classes 0 to 3"):
        compare.evaluate(model, x, y, pairs=((1, 4),))
    with pytest.raises(ValueError, match="band must be"):
        compare.evaluate(model, x, y, band=(0.7, 0.3))
    with pytest.raises(ValueError, match="batch_size"):
        compare.evaluate(model, x, y, batch_size=0)


def test_paired_difference_beyond_noise():
    # per seed: 0.10, 0.09, 0.10; ranges 0.02 and 0.03
    got = compare.paired_difference([0.90, 0.92, 0.91], [0.80, 0.83, 0.81])
    np.testing.assert_allclose(got.differences, [0.10, 0.09, 0.10], atol=1e-15)
    assert got.mean == pytest.approx(0.29 / 3, rel=1e-14)
    # deviations 1/300, -2/300, 1/300: variance (6/90000)/2, over 3 seeds
    assert got.stderr == pytest.approx(math.sqrt(3 / 90000 / 3), rel=1e-12)
    assert got.spread_a == pytest.approx(0.02) and got.spread_b == pytest.approx(0.03)
    assert got.noise == pytest.approx(0.03)
    assert got.consistent and got.beyond_noise and got.seeds == 3
    assert "beyond seed noise" in str(got)


@pytest.mark.parametrize(
    ("a", "b", "consistent"),
    [
        ([0.90, 0.95], [0.92, 0.91], False),  # the seeds disagree on the sign
        ([0.90, 0.96], [0.89, 0.95], True),  # same sign, but 0.01 < range 0.06
        (torch.tensor([2.0, 2.0]), torch.tensor([2.0, 1.0]), False),  # a zero
    ],
)
def test_paired_difference_within_noise(a, b, consistent):
    got = compare.paired_difference(a, b)
    assert got.consistent is consistent and not got.beyond_noise
    assert "within seed noise" in str(got)


def test_one_seed_cannot_be_judged():
    got = compare.paired_difference([0.5], [0.1])
    assert got.mean == pytest.approx(0.4) and math.isnan(got.stderr)
    assert got.consistent and not got.beyond_noise and "one seed" in str(got)


@pytest.mark.parametrize(
    ("a", "b", "error", "message"),
    [
        ([0.1, float("nan")], [0.1, 0.2], ValueError, "non-finite"),
        ([0.1, 0.2], [0.1, 0.2, 0.3], ValueError, "same seeds"),
        ([[0.1, 0.2]], [[0.1, 0.2]], ValueError, "1-D"),
        ([], [], ValueError, "non-empty"),
        (["x"], [0.1], TypeError, "numbers"),
    ],
)
def test_paired_difference_refuses_bad_input(a, b, error, message):
    with pytest.raises(error, match=message):
        compare.paired_difference(a, b)
