"""Tests of crbook.fit_rate against closed forms and independent solvers."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from crbook import RateFit, fit_rate


def test_geometric_sequence_is_recovered_exactly():
    n = np.arange(1, 11)
    lam, c = -0.7, 1.3
    fit = fit_rate(np.exp(c + lam * n), n)
    assert isinstance(fit, RateFit)
    assert fit.lam == pytest.approx(lam, abs=1e-12)
    assert fit.intercept == pytest.approx(c, abs=1e-12)
    assert fit.kappa == 0.0
    assert fit.stderr == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(fit.residuals, 0.0, atol=1e-12)
    np.testing.assert_allclose(fit.log_values, c + lam * n, rtol=0, atol=1e-13)
    assert fit.predict(20) == pytest.approx(c + 20 * lam, abs=1e-11)
    # The sign of the values does not matter: only |v_n| is used.
    alternating = fit_rate((-1.0) ** n * np.exp(c + lam * n), n)
    assert alternating.lam == pytest.approx(lam, abs=1e-12)


def test_lists_and_torch_tensors_are_accepted():
    n = [1, 2, 3, 4]
    v = [2.0**i for i in n]
    expected = math.log(2.0)
    assert fit_rate(v, n).lam == pytest.approx(expected, abs=1e-12)
    tensor = torch.tensor(v, dtype=torch.float32, requires_grad=True)
    fit = fit_rate(tensor, torch.tensor(n))
    assert fit.lam == pytest.approx(expected, abs=1e-6)
    assert fit.orders.dtype == np.float64


def test_log_correction_recovers_power_prefactor():
    n = np.arange(2, 41)
    lam, kappa, c = 0.4, -1.5, 2.0
    values = math.exp(c) * n**kappa * np.exp(lam * n)
    fit = fit_rate(values, n, correction="log")
    assert fit.lam == pytest.approx(lam, abs=1e-12)
    assert fit.kappa == pytest.approx(kappa, abs=1e-11)
    assert fit.intercept == pytest.approx(c, abs=1e-11)
    np.testing.assert_allclose(
        fit.predict(n), c + lam * n + kappa * np.log(n), rtol=0, atol=1e-11
    )
    # Without the correction the slope is biased, as the power law bends the line.
    assert abs(fit_rate(values, n).lam - lam) > 0.01


def test_taylor_normalisation_gives_minus_log_radius():
    r = 0.37
    n = np.arange(0, 31)
    derivatives = np.array([math.factorial(i) * r ** (-i) for i in n])
    fit = fit_rate(derivatives, n, normalization="taylor")
    assert fit.lam == pytest.approx(-math.log(r), abs=1e-12)
    assert fit.intercept == pytest.approx(0.0, abs=1e-11)
    assert math.exp(-fit.lam) == pytest.approx(r, rel=1e-12)
    # Raw normalisation of the same numbers grows without bound (n log n).
    assert fit_rate(derivatives, n).lam > fit.lam + 1.0


def _wls_reference(y, design, w):
    sw = np.sqrt(w)
    params, *_ = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)
    normal = np.linalg.solve(design.T @ (w[:, None] * design), design.T @ (w * y))
    np.testing.assert_allclose(params, normal, rtol=1e-10)
    return params


def test_weights_match_independent_wls():
    n = np.arange(2, 61)
    # Taylor coefficients of (1 - x)^-3: a_n = (n+1)(n+2)/2, so lam -> 0 slowly.
    values = (n + 1.0) * (n + 2.0) / 2
    w = 1 / (1 + 0.02 * n)
    fit = fit_rate(values, n, weights=w)
    design = np.stack([np.ones_like(n, dtype=float), n], axis=1)
    intercept, lam = _wls_reference(np.log(values), design, w)
    assert fit.lam == pytest.approx(lam, abs=1e-12)
    assert fit.intercept == pytest.approx(intercept, abs=1e-12)
    np.testing.assert_allclose(fit.weights, w)

    fit_log = fit_rate(values, n, correction="log", weights=w)
    design = np.stack([np.ones_like(n, dtype=float), n, np.log(n)], axis=1)
    expected = _wls_reference(np.log(values), design, w)
    np.testing.assert_allclose(
        [fit_log.intercept, fit_log.lam, fit_log.kappa], expected, atol=1e-10
    )
    # The log term absorbs most of the power law, moving lam towards its true
    # value 0 (a_n grows like n^2, which is sub-exponential).
    assert 0 < fit_log.kappa < 2.5
    assert abs(fit_log.lam) < abs(fit.lam) / 3


def test_weights_move_the_slope_towards_the_favoured_orders():
    # log v_n is concave in n, so the local slope falls with n. Favouring low
    # orders must raise the fitted slope, favouring high orders must lower it.
    n = np.arange(1, 21)
    values = n**3.0
    plain = fit_rate(values, n).lam
    low = fit_rate(values, n, weights=1 / (1 + 0.5 * n)).lam
    high = fit_rate(values, n, weights=n**2.0).lam
    assert low > plain > high
    # Scaling all weights changes nothing.
    scaled = fit_rate(values, n, weights=7.0 / (1 + 0.5 * n))
    assert scaled.lam == pytest.approx(low, abs=1e-13)


def test_stderr_matches_textbook_formula():
    rng = np.random.default_rng(0)
    n = np.arange(1, 16, dtype=float)
    y = 0.5 - 0.3 * n + 0.05 * rng.standard_normal(n.size)
    fit = fit_rate(np.exp(y), n)
    resid = y - (fit.intercept + fit.lam * n)
    textbook = math.sqrt(np.sum(resid**2) / (n.size - 2) / np.sum((n - n.mean()) ** 2))
    assert fit.stderr == pytest.approx(textbook, rel=1e-10)
    reference = stats.linregress(n, y)
    assert fit.lam == pytest.approx(reference.slope, abs=1e-12)
    assert fit.stderr == pytest.approx(reference.stderr, rel=1e-10)
    assert fit.dof == n.size - 2

    # Weighted: s^2 = sum w r^2 / dof, cov = s^2 (X^T W X)^-1.
    w = 1 / (1 + 0.02 * n)
    fit = fit_rate(np.exp(y), n, weights=w)
    design = np.stack([np.ones_like(n), n], axis=1)
    resid = y - design @ np.array([fit.intercept, fit.lam])
    s2 = np.sum(w * resid**2) / (n.size - 2)
    cov = s2 * np.linalg.inv(design.T @ (w[:, None] * design))
    assert fit.stderr == pytest.approx(math.sqrt(cov[1, 1]), rel=1e-10)
    np.testing.assert_allclose(fit.covariance, cov, rtol=1e-10)


def test_no_residual_dof_gives_no_stderr():
    fit = fit_rate([1.0, 0.5], [1, 2])
    assert fit.stderr is None and fit.covariance is None and fit.dof == 0
    assert fit.lam == pytest.approx(-math.log(2), abs=1e-14)
    assert "n/a" in fit.summary()
    fit = fit_rate([1.0, 2.0, 5.0], [1, 2, 3], correction="log")
    assert fit.stderr is None


def test_repeated_orders_are_allowed():
    fit = fit_rate([1.0, 3.0, 2.0, 6.0], [1, 1, 2, 2])
    assert fit.lam == pytest.approx(math.log(2.0), abs=1e-12)
    assert fit.dof == 2 and fit.stderr is not None


def test_result_is_frozen_and_readable():
    fit = fit_rate([4.0, 2.0, 1.0], [1, 2, 3], normalization="raw")
    with pytest.raises(AttributeError):
        fit.lam = 0.0
    with pytest.raises(ValueError):
        fit.residuals[0] = 1.0
    text = repr(fit)
    assert "lam=-0.693147" in text and "normalization='raw'" in text
    assert "lambda" in str(fit)
    with pytest.raises(ValueError, match="positive"):
        fit_rate([4.0, 2.0, 1.0], [1, 2, 3], correction="log").predict(0)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (([[1.0, 2.0]], [[1, 2]]), {}, "values must be 1-D"),
        (([1.0, 2.0], [[1, 2]]), {}, "orders must be 1-D"),
        (([1.0, 2.0, 3.0], [1, 2]), {}, "same length"),
        (([1.0, 2.0], [3, 3]), {}, r"at least 2 distinct values.*\[3\]"),
        (([1.0, 2.0, 4.0], [1, 2, 2]), {"correction": "log"}, "at least 3"),
        (([1.0, np.nan, 2.0], [1, 2, 3]), {}, r"1 non-finite.*\[2\]"),
        (([1.0, np.inf, 2.0], [1, 2, 3]), {}, "finite"),
        (([1.0, 0.0, 2.0, 0.0], [1, 2, 3, 4]), {}, r"2 zero value.*\[2, 4\]"),
        (([1.0, 2.0, 3.0], [-1, 0, 1]), {"normalization": "taylor"}, "integers"),
        (([1.0, 2.0, 3.0], [0.5, 1, 2]), {"normalization": "taylor"}, r"\[0.5\]"),
        (([1.0, 2.0, 3.0], [0, 1, 2]), {"correction": "log"}, "positive"),
        (([1.0, 2.0, 3.0], [1, np.nan, 2]), {}, "orders must be finite"),
        (([1.0, 2.0, 3.0], [1, 2, 3]), {"weights": [1, 0, 1]}, "weights"),
        (([1.0, 2.0, 3.0], [1, 2, 3]), {"weights": [1, -1, 1]}, "weights"),
        (([1.0, 2.0, 3.0], [1, 2, 3]), {"weights": [1, np.inf, 1]}, "weights"),
        (([1.0, 2.0, 3.0], [1, 2, 3]), {"weights": [1, 1]}, "one entry per"),
        (([1.0, 2.0], [1, 2]), {"normalization": "Taylor"}, r"\['raw', 'taylor'\]"),
        (([1.0, 2.0], [1, 2]), {"correction": "linear"}, r"\[None, 'log'\]"),
    ],
)
def test_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_rate(*args, **kwargs)
