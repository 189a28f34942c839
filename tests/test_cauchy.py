"""Tests of crbook.taylor_coefficients against closed forms and mpmath."""

import math

import mpmath
import numpy as np
import pytest

from crbook import taylor_coefficients
from crbook._cauchy import CauchyInfo

K = 60
k = np.arange(K + 1)
factorials = np.array([float(math.factorial(i)) for i in k])


def _tanh_reference() -> np.ndarray:
    # tanh x = sum_{n>=1} 2^(2n) (2^(2n) - 1) B_(2n) x^(2n-1) / (2n)!, in mpmath.
    mpmath.mp.dps = 30
    out = np.zeros(K + 1)
    for i in range(1, K + 1, 2):
        n2 = i + 1
        out[i] = float(
            2**n2 * (2**n2 - 1) * mpmath.bernoulli(n2) / mpmath.factorial(n2)
        )
    return out


TANH = _tanh_reference()
# The even coefficients vanish: measure their error against their neighbours.
TANH_SCALE = np.abs(TANH) + np.abs(np.roll(TANH, 1)) + np.abs(np.roll(TANH, -1))
# 1/(1+x^2) = Im 1/(x - i); at x = 1 + t its coefficients are
# (-1)^k Im (1 - i)^-(k+1) = (-1)^k 2^-(k+1)/2 sin(pi (k+1) / 4).
LORENTZ_AT_1 = (-1.0) ** k * 2.0 ** (-(k + 1) / 2) * np.sin(np.pi * (k + 1) / 4)
GAUSS = np.where(k % 2 == 0, (-1.0) ** (k // 2) / factorials[k // 2], 0.0)
LOG1P = np.r_[0.0, (-1.0) ** (k[1:] + 1) / k[1:]]

# (f, x0, exact a_k, scale for the error (None: |a_k|), bound)
CASES = {
    "1/(1-x)": (lambda z: 1 / (1 - z), 0.0, np.ones(K + 1), None, 1e-12),
    "1/(1-2x)": (lambda z: 1 / (1 - 2 * z), 0.0, 2.0**k, None, 1e-12),
    "(1-x)^-3": (lambda z: (1 - z) ** -3, 0.0, (k + 1) * (k + 2) / 2, None, 1e-12),
    "1/(1-x^3)": (
        lambda z: 1 / (1 - z**3),
        0.0,
        (k % 3 == 0) * 1.0,
        np.ones(K + 1),
        1e-12,
    ),
    "log(1+x)": (np.log1p, 0.0, LOG1P, np.r_[1.0, 1.0 / k[1:]], 1e-11),
    "1/(1+x^2) at 0": (
        lambda z: 1 / (1 + z * z),
        0.0,
        np.where(k % 2 == 0, (-1.0) ** (k // 2), 0.0),
        np.ones(K + 1),
        1e-12,
    ),
    "1/(1+x^2) at 1": (
        lambda z: 1 / (1 + z * z),
        1.0,
        LORENTZ_AT_1,
        2.0 ** (-(k + 1) / 2),
        1e-12,
    ),
    "tanh": (np.tanh, 0.0, TANH, TANH_SCALE, 1e-12),
    "exp at 0": (np.exp, 0.0, 1 / factorials, None, 1e-13),
    "exp at 1": (np.exp, 1.0, math.e / factorials, None, 1e-13),
    "exp(-x^2)": (
        lambda z: np.exp(-z * z),
        0.0,
        GAUSS,
        1 / factorials[k // 2],
        1e-13,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_accuracy_up_to_order_60(name):
    f, x0, exact, scale, bound = CASES[name]
    a, info = taylor_coefficients(f, x0, K, return_info=True)
    assert a.dtype == np.float64 and a.shape == (K + 1,)
    scale = np.abs(exact) if scale is None else scale
    error = np.abs(a - exact)
    assert np.max(error / scale) <= bound
    # The error estimate is not optimistic by more than a small factor.
    assert np.all(error <= 10 * info.abs_error)


def test_references_agree_with_mpmath_taylor():
    # Guards the closed forms used above with mpmath's own Taylor expansion.
    mpmath.mp.dps = 30
    lorentz = [float(c) for c in mpmath.taylor(lambda x: 1 / (1 + x * x), 1, 20)]
    np.testing.assert_allclose(lorentz, LORENTZ_AT_1[:21], rtol=0, atol=1e-15)
    tanh = [float(c) for c in mpmath.taylor(mpmath.tanh, 0, 20)]
    np.testing.assert_allclose(tanh, TANH[:21], rtol=1e-14, atol=1e-20)


def test_radius_adapts_to_the_order_and_to_singularities():
    _, info = taylor_coefficients(np.exp, 0.0, K, return_info=True)
    assert isinstance(info, CauchyInfo)
    # For exp the best circle for order k has radius about k.
    assert 30 <= info.radius[K] <= 120
    assert info.radius[5] < info.radius[30] < info.radius[K]
    _, info = taylor_coefficients(lambda z: 1 / (1 - z), 0.0, K, return_info=True)
    assert np.all(info.radius < 1.0)
    assert np.all(info.rel_error < 1e-10)


def test_weak_pole_inside_the_unit_disc_is_detected():
    # A pole at 0.6 (not on the grid of radii, so no node hits it) with residue
    # 1e-10 sets the radius of convergence to 0.6:
    # a_k = 1 - 1e-10 / 0.6^(k+1). Circles between 0.6 and 1 must be rejected.
    a, info = taylor_coefficients(
        lambda z: 1 / (1 - z) + 1e-10 / (z - 0.6), 0.0, K, return_info=True
    )
    exact = 1 - 1e-10 / 0.6 ** (k + 1.0)
    assert np.all(info.radius < 0.6)
    # Circles inside 0.6 see mostly the 1/(1-z) part, so the high coefficients
    # (about -3.5e3 at k = 60) carry its roundoff; a missed pole would give 1.
    error = np.abs(a - exact)
    assert np.max(error / np.abs(exact)) <= 1e-4
    assert np.all(error <= 10 * info.abs_error)


def test_noisy_function_near_x0_is_handled():
    # (e^z - 1)/z by cancellation is noisy on small circles; a_k = 1/(k+1)!.
    a = taylor_coefficients(lambda z: (np.exp(z) - 1) / z, 0.0, 20)
    exact = 1 / np.array([float(math.factorial(i + 1)) for i in range(21)])
    np.testing.assert_allclose(a, exact, rtol=1e-12)


def test_given_radius():
    # One circle: roundoff grows like r^-k, as the error estimate says.
    a, info = taylor_coefficients(
        lambda z: 1 / (1 - z), 0.0, 30, radius=0.5, return_info=True
    )
    assert np.all(info.radius == 0.5) and info.radii_tried == 1
    np.testing.assert_allclose(a[:10], np.ones(10), rtol=1e-13)
    assert np.all(np.abs(a - 1) <= 10 * info.abs_error)
    assert info.abs_error[30] > 1e4 * info.abs_error[10]
    a = taylor_coefficients(np.exp, 1.0, 20, radius=8.0)
    np.testing.assert_allclose(a, math.e / factorials[:21], rtol=1e-12)


def test_given_radius_hitting_the_pole_is_rejected():
    # Node 0 of the circle of radius 1 is z = 1, the pole of 1/(1-z).
    with pytest.raises(ValueError, match="reaches a singularity of f"):
        taylor_coefficients(lambda z: 1 / (1 - z), 0.0, 10, radius=1.0)


def test_given_radius_enclosing_the_pole_warns():
    with pytest.warns(RuntimeWarning, match="does not look clean"):
        a = taylor_coefficients(lambda z: 1 / (1 - z), 0.0, 10, radius=2.0)
    assert np.max(np.abs(a - 1)) > 0.5  # the Laurent part is wrong, as warned


def test_complex_x0_and_complex_valued_f():
    x0 = 0.3 + 0.4j
    a = taylor_coefficients(lambda z: 1 / (1 - z), x0, K)
    assert a.dtype == np.complex128
    exact = (1 - x0) ** -(k + 1.0)
    assert np.max(np.abs(a - exact) / np.abs(exact)) <= 1e-12
    a = taylor_coefficients(np.exp, x0, 30)
    np.testing.assert_allclose(a, np.exp(x0) / factorials[:31], rtol=1e-12)
    # exp(i z) at a real point: complex coefficients i^k / k!.
    a = taylor_coefficients(lambda z: np.exp(1j * z), 0.0, 30)
    assert a.dtype == np.complex128
    np.testing.assert_allclose(a, 1j ** k[:31] / factorials[:31], atol=1e-15)


def test_polynomial_and_order_zero():
    a = taylor_coefficients(lambda z: 3 - 2 * z + z**4, 0.5, 6)
    exact = np.polynomial.Polynomial([3, -2, 0, 0, 1])
    derivs = [exact.deriv(i)(0.5) / math.factorial(i) for i in range(7)]
    np.testing.assert_allclose(a, derivs, rtol=1e-13, atol=1e-13)
    assert taylor_coefficients(np.cos, 2.0, 0) == pytest.approx(np.cos(2.0), 1e-15)


def test_bad_functions():
    with pytest.raises(TypeError, match="vectorised"):
        taylor_coefficients(math.exp, 0.0, 3)
    with pytest.raises(ValueError, match="same shape"):
        taylor_coefficients(lambda z: 1.0, 0.0, 3)
    with pytest.raises(ValueError, match="same shape"):
        taylor_coefficients(lambda z: z[:3], 0.0, 3)
    with pytest.raises(ValueError, match="no circle"):
        taylor_coefficients(lambda z: 1 / z, 0.0, 3)
    with pytest.raises(ValueError, match="not finite on the circle"):
        taylor_coefficients(np.exp, 1000.0, 3)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"order": -1}, ValueError, "non-negative"),
        ({"order": 2.0}, TypeError, "must be an int"),
        ({"order": True}, TypeError, "must be an int"),
        ({"x0": float("nan")}, ValueError, "finite"),
        ({"x0": complex(0, float("inf"))}, ValueError, "finite"),
        ({"x0": np.zeros(2)}, TypeError, "number"),
        ({"radius": 0.0}, ValueError, "positive"),
        ({"radius": float("inf")}, ValueError, "positive"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = {"f": np.exp, "x0": 0.0, "order": 3} | kwargs
    with pytest.raises(error, match=match):
        taylor_coefficients(**args)
