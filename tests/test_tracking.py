"""Tests of crbook.tracking: the λ callback, percentile bands and correlations."""

import dataclasses

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

import crbook
from crbook import tracking
from crbook.data import two_moons
from crbook.models import MLP
from crbook.train import fit

# -- the callback ----------------------------------------------------------------


def test_cache_key_holds_every_setting_and_is_deterministic():
    base = tracking.LambdaTracker()
    assert base.cache_key == tracking.LambdaTracker().cache_key
    assert "0x" not in repr(base.cache_key)  # no memory address
    changed = {
        "points": "fixed",
        "band": (0.4, 0.6),
        "fallback": 100,
        "n_points": 50,
        "orders": (1, 2, 3),
        "directions": 4,
        "labels": "predicted",
        "quantity": "logit",
        "clamp": 1e-20,
        "seed": 3,
    }
    for name, value in changed.items():
        other = dataclasses.replace(base, **{name: value})
        assert other.cache_key != base.cache_key, name
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.seed = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"points": "all"}, ValueError, "points must be one of"),
        ({"labels": "noisy"}, ValueError, "labels must be one of"),
        ({"quantity": "margin"}, ValueError, "quantity must be one of"),
        ({"band": (0.7, 0.5)}, ValueError, "band must be"),
        ({"band": "wide"}, TypeError, "band must be a pair"),
        ({"orders": (2,)}, ValueError, "at least 2 distinct"),
        ({"directions": 0}, ValueError, "directions must be at least 1"),
        ({"seed": 1.5}, TypeError, "seed must be an int"),
        ({"clamp": 0.0}, ValueError, "clamp must be a positive"),
    ],
)
def test_bad_settings_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        tracking.LambdaTracker(**kwargs)


@pytest.fixture(scope="module")
def small_data():
    return two_moons(n=300, label_noise=0.2, seed=1)


@pytest.mark.parametrize("points", ["boundary", "fixed"])
def test_tracker_records_lambda_each_epoch_and_reuses_the_cache(
    points, small_data, tmp_path
):
    tracker = tracking.LambdaTracker(points=points, n_points=40, seed=5)
    torch.manual_seed(0)
    first = fit(
        MLP((2, 8, 2)), small_data, epochs=3, seed=0, callback=tracker,
        cache=tmp_path, progress=False,
    )  # fmt: skip
    assert set(first.metrics) == {
        "lam",
        "lam_stderr",
        "mean_log",
        "n_points",
        "used_fallback",
        "n_clamped",
        "clean_test_error",
    }
    assert all(len(v) == 3 for v in first.metrics.values())

    # The last epoch's numbers, recomputed by hand on the trained model.
    model = first.model
    x, y, _ = tracker.select(model, small_data)
    if points == "fixed":
        assert x.shape[0] == 40
    rate = crbook.curvature_rate(
        model, x, y, directions=2, generator=torch.Generator().manual_seed(5)
    )
    assert first.metrics["lam"][-1] == pytest.approx(rate.lam, abs=1e-12)
    assert first.metrics["n_points"][-1] == x.shape[0]
    with torch.no_grad():
        predicted = model(small_data.x_test).argmax(1)
    error = (predicted != small_data.y_test_clean).double().mean().item()
    assert first.metrics["clean_test_error"][-1] == pytest.approx(error)

    torch.manual_seed(0)
    second = fit(
        MLP((2, 8, 2)), small_data, epochs=3, seed=0, callback=tracker,
        cache=tmp_path, progress=False,
    )  # fmt: skip
    assert second.cached
    assert second.metrics["lam"] == first.metrics["lam"]


def test_measure_gives_the_number_the_callback_records(small_data):
    tracker = tracking.LambdaTracker(directions=3, seed=2)
    torch.manual_seed(4)
    model = MLP((2, 8, 2))
    rate = tracker.measure(model, small_data)
    assert isinstance(rate, crbook.CurvatureRate)
    recorded = tracker(1, model, small_data)
    assert recorded["lam"] == rate.lam
    assert recorded["n_points"] == rate.n_points
    assert torch.equal(recorded["mean_log"], torch.as_tensor(rate.mean_log))


def test_fixed_points_and_directions_do_not_change_between_epochs(small_data):
    tracker = tracking.LambdaTracker(points="fixed", n_points=30)
    model = MLP((2, 8, 2))
    first = tracker(1, model, small_data)
    again = tracker(2, model, small_data)  # same model: same λ exactly
    assert first["lam"] == again["lam"]
    assert torch.equal(tracker.select(model, small_data)[0], first_points(tracker))


def first_points(tracker):
    data = two_moons(n=300, label_noise=0.2, seed=1)
    chosen = torch.randperm(
        data.x_test.shape[0], generator=torch.Generator().manual_seed(tracker.seed)
    )[: tracker.n_points]
    return data.x_test[chosen.sort().values]


# -- percentile bands ------------------------------------------------------------


def test_percentile_band_of_41_seeds_hits_order_statistics():
    # With 41 seeds, numpy's linear interpolation puts the 2.5th percentile
    # exactly on the 2nd smallest value (0.025 * 40 = 1) and the 97.5th on the
    # 2nd largest.
    rng = np.random.default_rng(0)
    curves = rng.normal(size=(41, 6))
    band = tracking.percentile_band(curves)
    ordered = np.sort(curves, axis=0)
    assert np.array_equal(band.low, ordered[1])
    assert np.array_equal(band.median, ordered[20])
    assert np.array_equal(band.high, ordered[39])
    assert band.seeds == 41
    assert band.label() == "2.5–97.5 percentiles of 41 seeds"


def test_percentile_band_of_one_value_per_seed():
    band = tracking.percentile_band([3.0, 1.0, 2.0], q_low=0, q_high=100)
    assert (band.low, band.median, band.high) == (1.0, 2.0, 3.0)


@pytest.mark.parametrize(
    ("curves", "kwargs", "message"),
    [
        ([[1.0, 2.0]], {}, "at least 2 seeds"),
        ([[1.0, np.nan], [1.0, 2.0]], {}, "finite"),
        ([[1.0], [2.0]], {"q_low": 50, "q_high": 40}, "q_low < q_high"),
        (np.zeros((2, 2, 2)), {}, "shape"),
    ],
)
def test_bad_percentile_input_is_refused(curves, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tracking.percentile_band(curves, **kwargs)


# -- correlations ----------------------------------------------------------------


def test_correlation_against_numpy_and_ranks():
    rng = np.random.default_rng(1)
    x = rng.normal(size=30)
    y = np.exp(2 * x) + 0.1 * rng.normal(size=30)
    result = tracking.correlation(x, y)
    assert result.pearson == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    ranks = np.corrcoef(rankdata(x), rankdata(y))[0, 1]
    assert result.spearman == pytest.approx(ranks, abs=1e-12)
    assert result.n == 30
    assert 0 < result.pearson_p < 1e-3 and 0 < result.spearman_p < 1e-3


def test_monotone_but_curved_relation():
    x = np.linspace(0.1, 3, 20)
    result = tracking.correlation(x, np.exp(3 * x))
    assert result.spearman == pytest.approx(1.0)
    assert result.pearson < 0.9


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        ([1.0, 2.0], [1.0, 2.0], "at least 3 pairs"),
        ([1.0, 2.0, 3.0], [1.0, 2.0], "same length"),
        ([1.0, 1.0, 1.0], [1.0, 2.0, 3.0], "x is constant"),
        ([1.0, 2.0, np.inf], [1.0, 2.0, 3.0], "finite"),
    ],
)
def test_undefined_correlations_are_refused(x, y, message):
    with pytest.raises(ValueError, match=message):
        tracking.correlation(x, y)


def test_grouped_correlation_separates_confounding_by_group():
    # Inside each group x and y are independent; the group shifts both.
    rng = np.random.default_rng(2)
    groups = np.repeat([0.0, 0.3, 0.45], 25)
    x = 10 * groups + rng.normal(size=75)
    y = 10 * groups + rng.normal(size=75)
    result = tracking.grouped_correlation(x, y, groups.tolist())
    assert result.pooled.pearson > 0.7
    for label in (0.0, 0.3, 0.45):
        members = groups == label
        expected = np.corrcoef(x[members], y[members])[0, 1]
        assert result.within[label].pearson == pytest.approx(expected, abs=1e-12)
        assert result.within[label].n == 25
    xc, yc = x.copy(), y.copy()
    for label in (0.0, 0.3, 0.45):
        members = groups == label
        xc[members] -= x[members].mean()
        yc[members] -= y[members].mean()
    assert result.centred.pearson == pytest.approx(np.corrcoef(xc, yc)[0, 1])
    assert abs(result.centred.pearson) < 0.3


def test_grouped_correlation_needs_groups_of_three():
    with pytest.raises(ValueError, match="each needs at least 3"):
        tracking.grouped_correlation(
            [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 5.0], "aabbb"
        )
    with pytest.raises(ValueError, match="at least 2 groups"):
        tracking.grouped_correlation([1.0, 2.0, 3.0], [2.0, 1.0, 3.0], "aaa")


def test_stack_metric_reads_builtins_and_callback_values(small_data):
    class Fake:
        def __init__(self, lam):
            self.metrics = {"lam": lam}
            self.test_accuracy = [0.5, 0.6]

    rows = tracking.stack_metric([Fake([1.0, 2.0]), Fake([3.0, 4.0])], "lam")
    assert np.array_equal(rows, [[1.0, 2.0], [3.0, 4.0]])
    acc = tracking.stack_metric([Fake([1.0, 2.0])] * 2, "test_accuracy")
    assert acc.shape == (2, 2)
    with pytest.raises(KeyError, match="no metric 'error'"):
        tracking.stack_metric([Fake([1.0])], "error")
    with pytest.raises(ValueError, match="different numbers of epochs"):
        tracking.stack_metric([Fake([1.0]), Fake([1.0, 2.0])], "lam")
