"""Tests for crbook.analytic: radii, singularities and exact Taylor coefficients.

References: radii worked out by hand or by brute force over the pole lattice,
coefficients from mpmath.taylor at 50 digits, function values from mpmath.
"""

import math

import mpmath
import numpy as np
import pytest

from crbook import analytic
from crbook.analytic import CATALOGUE, Singularity, get, plot_complex_plane

MP_FUNCS = {
    "1/(1-x)": lambda x: 1 / (1 - x),
    "1/(1-2x)": lambda x: 1 / (1 - 2 * x),
    "(1-x)^-3": lambda x: (1 - x) ** -3,
    "(1-x^3)^-1": lambda x: 1 / (1 - x**3),
    "1/(1+x^2)": lambda x: 1 / (1 + x**2),
    "log(1+x)": lambda x: mpmath.log(1 + x),
    "tanh": mpmath.tanh,
    "exp": mpmath.exp,
    "gaussian": lambda x: mpmath.exp(-(x**2)),
    "sin": mpmath.sin,
}


def test_catalogue_holds_the_required_functions():
    assert set(MP_FUNCS) <= set(CATALOGUE)
    for name, f in CATALOGUE.items():
        assert f.name == name
        assert f.latex


def test_get_unknown_name_lists_the_names():
    with pytest.raises(KeyError, match="1/\\(1\\+x\\^2\\)"):
        get("cosh")
    assert get("tanh") is CATALOGUE["tanh"]


@pytest.mark.parametrize("x0", [0.0, 0.5, -1.3, 3.0])
def test_radius_by_hand(x0):
    assert get("1/(1+x^2)").radius(x0) == pytest.approx(math.sqrt(1 + x0**2))
    tanh_r = math.sqrt(x0**2 + (math.pi / 2) ** 2)
    assert get("tanh").radius(x0) == pytest.approx(tanh_r)
    assert get("1/(1-x)").radius(x0) == pytest.approx(abs(1 - x0))
    assert get("1/(1-2x)").radius(x0) == pytest.approx(abs(0.5 - x0))
    if x0 > -1:  # x0 < -1 lies on the cut of the principal branch
        assert get("log(1+x)").radius(x0) == pytest.approx(abs(1 + x0))
    for name in ("exp", "gaussian", "sin"):
        assert get(name).radius(x0) == math.inf


def test_radius_of_three_poles():
    f = get("(1-x^3)^-1")
    assert f.radius(0.0) == pytest.approx(1.0)
    assert f.radius(-1.0) == pytest.approx(1.0)  # the pair at exp(±2πi/3)
    assert f.radius(0.5) == pytest.approx(0.5)
    assert len(f.nearest(0.0)) == 3
    assert len(f.nearest(-1.0)) == 2
    assert len(f.nearest(0.5)) == 1


@pytest.mark.parametrize("x0", [2 + 3j, -0.4 + 7.0j, 1j * math.pi, 5.0 - 20.3j])
def test_tanh_radius_matches_brute_force_over_the_lattice(x0):
    poles = 1j * math.pi * (np.arange(-200, 201) + 0.5)
    assert get("tanh").radius(x0) == pytest.approx(np.min(np.abs(x0 - poles)))


def test_tanh_ties_midway_between_two_poles():
    near = get("tanh").nearest(1j * math.pi)
    points = sorted(p.imag for p, _ in near)
    assert points == pytest.approx([math.pi / 2, 3 * math.pi / 2])


def test_tanh_poles_in_a_window():
    pts = get("tanh").singular_points((-1.0, 1.0), (-10.0, 10.0))
    expected = 1j * math.pi * (np.arange(-3, 3) + 0.5)  # |Im| <= 10: k = -3 … 2
    np.testing.assert_allclose(np.sort(pts.imag), np.sort(expected.imag))
    assert get("tanh").singular_points((0.5, 1.0), (-10.0, 10.0)).size == 0
    assert get("exp").singular_points((-5.0, 5.0), (-5.0, 5.0)).size == 0


@pytest.mark.parametrize("name", [n for n in MP_FUNCS if not CATALOGUE[n].is_entire])
def test_listed_singularities_are_singular(name):
    # |f| grows like eps^-p next to a pole of order p and like log(1/eps) next
    # to a log branch point; compare two distances.
    f = get(name)
    for s in f.singular_points((-3.0, 3.0), (-3.0, 3.0)):
        direction = np.exp(0.3j)
        big, small = (abs(f(s + eps * direction)) for eps in (1e-4, 1e-2))
        p = f.nearest(s + 1e-9)[0][1].order
        if p is None:
            assert big / small == pytest.approx(math.log(1e4) / math.log(1e2), rel=0.05)
        else:
            assert big / small == pytest.approx(100.0**p, rel=0.05)


def test_kind_and_kappa():
    assert get("1/(1-x)").nearest_kind() == ("pole", 1)
    assert get("(1-x)^-3").nearest_kind() == ("pole", 3)
    assert get("(1-x)^-3").expected_kappa() == 2.0
    assert get("1/(1-2x)").expected_kappa(0.3) == 0.0
    assert get("log(1+x)").nearest_kind() == ("log", None)
    assert get("log(1+x)").expected_kappa(2.0) == -1.0
    assert get("tanh").expected_kappa(1.0) == 0.0
    assert get("exp").nearest_kind() == ("none", None)
    assert get("gaussian").expected_kappa() is None


def _mp_coefficients(name, x0, order):
    with mpmath.workdps(50):
        cs = mpmath.taylor(MP_FUNCS[name], mpmath.mpmathify(x0), order)
        return np.array([complex(c) for c in cs])


POINTS = {
    "1/(1-x)": [0.0, -0.6, 2.5, 0.3 + 0.4j],
    "1/(1-2x)": [0.0, 0.2, -1.0],
    "(1-x)^-3": [0.0, -0.5, 0.2j],
    "(1-x^3)^-1": [0.0, 0.4, -1.1, 1.5],
    "1/(1+x^2)": [0.0, 0.5, -2.0, 0.3 + 0.2j],
    "log(1+x)": [0.0, 1.0, -0.5, 0.5j],
    "tanh": [0.0, 0.7, -1.5, 0.2 + 0.5j],
    "exp": [0.0, 1.5, -2.0 + 1.0j],
    "gaussian": [0.0, 0.8, -1.7, 0.5 + 0.5j],
    "sin": [0.0, 1.0, -2.0, 0.3j],
}


@pytest.mark.parametrize(
    ("name", "x0"), [(n, x) for n, xs in POINTS.items() for x in xs]
)
def test_exact_coefficients_match_mpmath(name, x0):
    order = 24
    got = get(name).exact_coefficients(order, x0)
    ref = _mp_coefficients(name, x0, order)
    if isinstance(x0, float):
        assert got.dtype == np.float64
        ref = ref.real
    # compare against the size of the nearby coefficients, so those that vanish
    # by symmetry (every second or third one) are checked too, to round-off
    mag = np.concatenate([[0.0, 0.0], np.abs(ref)])
    scale = np.maximum(np.maximum(mag[2:], mag[1:-1]), mag[:-2])
    np.testing.assert_array_less(np.abs(got - ref), 1e-12 * scale + 1e-300)


def test_exact_coefficients_closed_forms_at_zero():
    n = np.arange(31)
    np.testing.assert_array_equal(get("1/(1-x)").exact_coefficients(30), 1.0)
    np.testing.assert_allclose(get("1/(1-2x)").exact_coefficients(30), 2.0**n)
    np.testing.assert_allclose(
        get("(1-x)^-3").exact_coefficients(30), (n + 1) * (n + 2) / 2
    )
    three = get("(1-x^3)^-1").exact_coefficients(30)
    np.testing.assert_allclose(three, (n % 3 == 0).astype(float), atol=1e-14)
    log_c = get("log(1+x)").exact_coefficients(30)
    np.testing.assert_allclose(log_c[1:], (-1.0) ** (n[1:] + 1) / n[1:])
    assert log_c[0] == 0.0


def test_exact_coefficients_rejects_bad_input():
    with pytest.raises(ValueError, match="singular point"):
        get("1/(1-x)").exact_coefficients(5, 1.0)
    with pytest.raises(ValueError, match="order must be >= 0"):
        get("exp").exact_coefficients(-1)
    with pytest.raises(TypeError, match="order must be an int"):
        get("exp").exact_coefficients(2.5)


@pytest.mark.parametrize("name", list(MP_FUNCS))
def test_callables_accept_complex_arrays(name):
    rng = np.random.default_rng(0)
    z = rng.uniform(-0.45, 0.45, 7) + 1j * rng.uniform(-0.45, 0.45, 7)
    got = get(name)(z)
    ref = np.array([complex(MP_FUNCS[name](mpmath.mpc(v))) for v in z])
    assert got.shape == z.shape
    np.testing.assert_allclose(got, ref, rtol=1e-13)


def test_callables_against_numpy_on_the_real_line():
    x = np.linspace(-0.9, 3.0, 11)
    np.testing.assert_allclose(get("tanh")(x), np.tanh(x))
    np.testing.assert_allclose(get("log(1+x)")(x), np.log(1 + x))
    np.testing.assert_allclose(get("gaussian")(x), np.exp(-x * x))


def test_hankel_envelope_removes_the_oscillation_of_a_pair():
    # 1/(1+x^2) at x0: a_n = (-1)^n Im((x0 - i)^(-n-1)) = (-1)^n r^(-n-1)
    # sin((n+1)θ) with x0 - i = r e^(-iθ), so a_m^2 - a_(m-1) a_(m+1)
    # = r^(-2m-2) sin^2 θ exactly; its square root is geometric.
    x0 = 1.0
    r, theta = math.hypot(x0, 1.0), math.atan2(1.0, x0)
    a = get("1/(1+x^2)").exact_coefficients(30, x0)
    assert np.min(np.abs(a)) < 1e-12  # a_3 = a_7 = ... = 0: log|a_n| breaks
    orders, sizes = analytic.hankel_envelope(a, 2)
    np.testing.assert_array_equal(orders, np.arange(1, 30))
    np.testing.assert_allclose(
        sizes, r ** (-orders - 1.0) * math.sin(theta), rtol=1e-12
    )


def test_hankel_envelope_three_poles_and_k_one():
    a = get("(1-x^3)^-1").exact_coefficients(20)  # 1, 0, 0, 1, 0, 0, ...
    orders, sizes = analytic.hankel_envelope(a, 3)
    np.testing.assert_array_equal(orders, np.arange(2, 19))
    np.testing.assert_allclose(sizes, 1.0, rtol=1e-12)
    orders, sizes = analytic.hankel_envelope(-a, 1)
    np.testing.assert_array_equal(orders, np.arange(21))
    np.testing.assert_array_equal(sizes, np.abs(a))


def test_hankel_envelope_rejects_bad_input():
    with pytest.raises(ValueError, match="k must be >= 1"):
        analytic.hankel_envelope(np.ones(4), 0)
    with pytest.raises(ValueError, match="needs at least 5 coefficients"):
        analytic.hankel_envelope(np.ones(4), 3)
    with pytest.raises(ValueError, match="1-D"):
        analytic.hankel_envelope(np.ones((2, 4)), 1)
    with pytest.raises(ValueError, match="finite"):
        analytic.hankel_envelope(np.array([1.0, np.inf, 1.0]), 2)


def test_taylor_rate_recovers_exact_radii():
    # geometric coefficients: every fit is exact
    fit = analytic.taylor_rate(get("1/(1-2x)"), 0.0)
    assert math.exp(-fit.lam) == pytest.approx(0.5, rel=1e-10)
    assert fit.normalization == "taylor" and fit.correction == "log"
    # 1/(1+x^2) at x0 = 1: the k = 2 envelope is exactly geometric
    fit = analytic.taylor_rate(get("1/(1+x^2)"), 1.0, k=2)
    assert math.exp(-fit.lam) == pytest.approx(math.sqrt(2), rel=1e-9)


def test_taylor_rate_matches_a_fit_of_exact_coefficients():
    from crbook import fit_rate

    n = np.arange(2, 61)
    a = get("(1-x)^-3").exact_coefficients(60)[2:]
    w = 1 / (1 + 0.02 * n)
    ref = fit_rate(a, n, "raw", "log", w)  # the a_n themselves, no n! involved
    got = analytic.taylor_rate(get("(1-x)^-3"))
    assert got.lam == pytest.approx(ref.lam, abs=1e-9)
    assert got.kappa == pytest.approx(ref.kappa, abs=1e-8)
    plain = analytic.taylor_rate(lambda z: (1 - z) ** -3, correction=None, weights=None)
    ref = fit_rate(a, n, "raw")
    assert plain.lam == pytest.approx(ref.lam, abs=1e-9)


def test_taylor_rate_rejects_bad_input():
    with pytest.raises(ValueError, match="smallest order is 1"):
        analytic.taylor_rate(get("tanh"), 0.0, range(0, 10), k=2)
    with pytest.raises(ValueError, match="weights must be"):
        analytic.taylor_rate(get("tanh"), 0.0, weights="flat")
    with pytest.raises(ValueError, match="distinct"):
        analytic.taylor_rate(get("tanh"), 0.0, [2, 2, 3, 4])


def test_log_branch_cut():
    f = get("log(1+x)")
    with pytest.raises(ValueError, match="branch cut"):
        f.radius(-3.0)
    with pytest.raises(ValueError, match="branch cut"):
        f.exact_coefficients(4, -2.0)
    # just off the cut the continuation's radius is still |1 + x0|
    assert f.radius(-3.0 + 0.1j) == pytest.approx(abs(-2.0 + 0.1j))


def test_singularity_validation():
    with pytest.raises(ValueError, match="kind must be one of"):
        Singularity(1.0, "essential")
    with pytest.raises(ValueError, match="a pole needs an order"):
        Singularity(1.0, "pole")
    with pytest.raises(ValueError, match="only a branch point has a cut"):
        Singularity(1.0, "pole", 1, cut=-1.0)
    with pytest.raises(ValueError, match="period must be non-zero"):
        Singularity(1.0, "pole", 1, period=0)
    with pytest.raises(ValueError, match="finite"):
        get("tanh").radius(math.nan)


def test_plot_complex_plane_draws_disc_and_poles():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    f = get("tanh")
    ax = plot_complex_plane(f, 1.0, window=6.0)
    circles = [p for p in ax.patches if isinstance(p, Circle)]
    assert circles and all(c.radius == pytest.approx(f.radius(1.0)) for c in circles)
    crosses = [ln for ln in ax.lines if ln.get_marker() == "x"]
    plotted = np.concatenate([ln.get_ydata() for ln in crosses])
    # poles i(π/2 + kπ) with |Im| <= 6: ±π/2, ±3π/2
    np.testing.assert_allclose(
        np.sort(plotted), np.pi * np.array([-1.5, -0.5, 0.5, 1.5])
    )
    assert ax.get_xlim() == (-5.0, 7.0)
    plt.close(ax.figure)
    ax = plot_complex_plane(get("exp"))
    assert not [p for p in ax.patches if isinstance(p, Circle)]
    plt.close(ax.figure)


def test_module_docstring_states_limitations():
    assert "Limitations" in analytic.__doc__
