"""Tests for crbook.signals: FFT derivatives, norms and the random-phase signal.

References: closed-form derivatives of trigonometric polynomials, Parseval's
identity on the spectrum, scipy's Hermite polynomials, and Bernstein's
inequality.
"""

import math

import numpy as np
import pytest
from scipy.special import eval_hermite

from crbook import signals
from crbook.signals import (
    gaussian_derivatives,
    l2_norms,
    random_phase_signal,
    spectral_derivatives,
)


def _trig_derivative(x, n, a, w, b, v):
    # d^n/dx^n [a sin(w x) + b cos(v x)]
    return a * w**n * np.sin(w * x + n * np.pi / 2) + b * v**n * np.cos(
        v * x + n * np.pi / 2
    )


@pytest.mark.parametrize(("n_pts", "domain"), [(32, (0.0, 2 * np.pi)), (64, (-10, 10))])
def test_derivatives_of_trig_polynomials_to_round_off(n_pts, domain):
    a, b = domain
    length = b - a
    x = a + length / n_pts * np.arange(n_pts)
    w, v = 2 * np.pi * 3 / length, 2 * np.pi * 7 / length
    f = 1.3 * np.sin(w * x) - 0.4 * np.cos(v * x)
    d = spectral_derivatives(f, length / n_pts, 8)
    assert d.shape == (9, n_pts) and d.dtype == np.float64
    for n in range(9):
        ref = _trig_derivative(x, n, 1.3, w, -0.4, v)
        np.testing.assert_allclose(d[n], ref, atol=1e-13 * max(w, v) ** n)


def test_nyquist_mode():
    # 16 points on [0, 2π): cos(8x) is the Nyquist mode, (-1)^j on the grid.
    # Its odd derivatives vanish on the grid, its even ones are (-64)^(n/2) cos(8x).
    x = 2 * np.pi / 16 * np.arange(16)
    d = spectral_derivatives(np.cos(8 * x), 2 * np.pi / 16, 4)
    np.testing.assert_allclose(d[1], 0.0, atol=1e-12)
    np.testing.assert_allclose(d[3], 0.0, atol=1e-9)
    np.testing.assert_allclose(d[2], -64 * np.cos(8 * x), atol=1e-11)
    np.testing.assert_allclose(d[4], 64**2 * np.cos(8 * x), atol=1e-9)


def test_complex_input_stays_complex():
    x = 2 * np.pi / 16 * np.arange(16)
    d = spectral_derivatives(np.exp(3j * x), 2 * np.pi / 16, 2)
    assert np.iscomplexobj(d)
    np.testing.assert_allclose(d[1], 3j * np.exp(3j * x), atol=1e-13)
    np.testing.assert_allclose(d[2], -9 * np.exp(3j * x), atol=1e-12)


def test_l2_norm_closed_form():
    n_pts = 64
    x = 2 * np.pi / n_pts * np.arange(n_pts)
    dx = 2 * np.pi / n_pts
    # ‖sin(3x)‖² = π and ‖1‖² = 2π on [0, 2π); exact on the grid
    assert l2_norms(np.sin(3 * x), dx) == pytest.approx(math.sqrt(math.pi))
    both = l2_norms(np.stack([np.ones(n_pts), np.sin(3 * x)]), dx)
    np.testing.assert_allclose(both, [math.sqrt(2 * math.pi), math.sqrt(math.pi)])


def test_paper_signal_settings():
    sig = random_phase_signal()
    nyquist = math.pi / sig.dx
    assert sig.x.size == 8192
    assert sig.x[0] == -10.0 and sig.x[-1] == pytest.approx(10.0 - sig.dx)
    assert sig.dx == pytest.approx(20 / 8192)
    # the kept band edge: the largest 2πk/L not above 0.35 × Nyquist
    assert sig.cutoff <= 0.35 * nyquist < sig.cutoff + 2 * np.pi / 20
    assert sig.values.dtype == np.float64


@pytest.mark.parametrize("edge_power", [0.0, 1.0, 3.0])
def test_cutoff_is_the_largest_frequency_present(edge_power):
    sig = random_phase_signal(n_points=1024, edge_power=edge_power)
    spec = np.fft.fft(sig.values)
    omega = np.abs(2 * np.pi * np.fft.fftfreq(sig.x.size, d=sig.dx))
    present = np.abs(spec) > 1e-9 * np.abs(spec).max()
    assert sig.cutoff == pytest.approx(omega[present].max(), rel=1e-12)


def test_spectrum_reproduces_the_samples_and_the_profile():
    sig = random_phase_signal(n_points=512, domain=(-3.0, 5.0), edge_power=2.0)
    direct = np.real(np.exp(1j * np.outer(sig.x, sig.frequencies)) @ sig.spectrum)
    np.testing.assert_allclose(sig.values, direct, atol=1e-10)
    k_max = round(sig.cutoff * 8.0 / (2 * np.pi))
    k = np.arange(1, k_max + 1)
    np.testing.assert_allclose(np.abs(sig.spectrum[k]), (1 - k / (k_max + 1)) ** 2)
    np.testing.assert_allclose(sig.spectrum[-k], np.conj(sig.spectrum[k]))


def test_seed_determinism():
    a = random_phase_signal(n_points=256, seed=7)
    b = random_phase_signal(n_points=256, seed=7)
    c = random_phase_signal(n_points=256, seed=8)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.allclose(a.values, c.values)
    assert a.cutoff == c.cutoff


@pytest.mark.parametrize("edge_power", [0.0, 2.0])
def test_bernstein_inequality_and_parseval(edge_power):
    sig = random_phase_signal(n_points=2048, edge_power=edge_power)
    d = spectral_derivatives(sig.values, sig.dx, 30, cutoff=sig.cutoff)
    norms = l2_norms(d, sig.dx)
    n = np.arange(31)
    assert np.all(norms <= sig.cutoff**n * norms[0] * (1 + 1e-12))
    # the ratio of successive norms approaches Ω as the continuum limit of
    # Parseval predicts: Ω sqrt((2n+1)(2n+2) / ((2n+2p+2)(2n+2p+3))), n = 29
    m, p = 29, edge_power
    factor = math.sqrt(
        (2 * m + 1) * (2 * m + 2) / ((2 * m + 2 * p + 2) * (2 * m + 2 * p + 3))
    )
    assert norms[30] / norms[29] == pytest.approx(sig.cutoff * factor, rel=1e-2)
    np.testing.assert_allclose(norms, sig.norms_from_spectrum(30), rtol=1e-12)


def test_paper_signal_unfiltered_derivatives():
    # without the low-pass, round-off above Ω is amplified by up to
    # (Nyquist/Ω)^30 ≈ 5e13, yet at the paper's 8192 points it stays small
    sig = random_phase_signal()
    norms = l2_norms(spectral_derivatives(sig.values, sig.dx, 30), sig.dx)
    np.testing.assert_allclose(norms, sig.norms_from_spectrum(30), rtol=1e-3)


def test_lowpass_cutoff_removes_amplified_round_off():
    sig = random_phase_signal(n_points=2048, cutoff_fraction=0.2)
    exact = sig.norms_from_spectrum(30)
    filtered = spectral_derivatives(sig.values, sig.dx, 30, cutoff=sig.cutoff * 1.001)
    np.testing.assert_allclose(l2_norms(filtered, sig.dx), exact, rtol=1e-12)


def test_gaussian_derivatives_against_hermite_and_fft():
    x = np.linspace(-4, 4, 9)
    d = gaussian_derivatives(x, 12)
    for n in range(13):
        ref = (-1) ** n * eval_hermite(n, x) * np.exp(-(x**2))
        np.testing.assert_allclose(d[n], ref, rtol=1e-12, atol=1e-300)
    # low orders on a fine periodic grid, where FFT derivatives are accurate
    grid = -10 + 20 / 256 * np.arange(256)
    fft = spectral_derivatives(np.exp(-(grid**2)), 20 / 256, 4)
    np.testing.assert_allclose(gaussian_derivatives(grid, 4), fft, atol=1e-10)


def test_gaussian_norm_closed_form():
    # ‖G^(n)‖² = sqrt(π/2) (2n-1)!! on the real line; [-10, 10) loses nothing
    grid = -10 + 20 / 4096 * np.arange(4096)
    norms = l2_norms(gaussian_derivatives(grid, 10), 20 / 4096)
    double_fact = [math.prod(range(2 * n - 1, 0, -2)) for n in range(11)]
    ref = np.sqrt(math.sqrt(math.pi / 2) * np.array(double_fact, dtype=float))
    np.testing.assert_allclose(norms, ref, rtol=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="dx must be"):
        spectral_derivatives(np.ones(8), 0.0, 2)
    with pytest.raises(ValueError, match="1-D"):
        spectral_derivatives(np.ones((2, 8)), 0.1, 2)
    with pytest.raises(ValueError, match="order must be >= 0"):
        spectral_derivatives(np.ones(8), 0.1, -1)
    with pytest.raises(ValueError, match="finite"):
        spectral_derivatives(np.array([1.0, np.nan]), 0.1, 1)
    with pytest.raises(ValueError, match="cutoff_fraction"):
        random_phase_signal(cutoff_fraction=1.5)
    with pytest.raises(ValueError, match="keeps no frequency"):
        random_phase_signal(n_points=8, cutoff_fraction=0.1)
    with pytest.raises(ValueError, match="edge_power"):
        random_phase_signal(edge_power=-1.0)
    with pytest.raises(ValueError, match="domain"):
        random_phase_signal(domain=(1.0, 1.0))
    with pytest.raises(ValueError, match="non-empty"):
        l2_norms(np.ones(0), 0.1)


def test_module_docstring_states_limitations():
    assert "Limitations" in signals.__doc__
