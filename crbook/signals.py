"""Bandlimited signals on a periodic grid, and their derivatives by FFT.

A signal sampled at ``N`` points of a periodic grid of length ``L`` is a finite
sum of exponentials ``f(x) = sum_k F_k exp(i ω_k x)`` with ``ω_k = 2π k / L``.
When every ``F_k`` with ``|ω_k| > Ω`` vanishes the signal is *bandlimited* with
*spectral cutoff* ``Ω``, and Bernstein's inequality bounds every raw
derivative,

.. math::

    \\|f^{(n)}\\| \\le Ω^n \\|f\\|,

so the curvature rate of raw L2 norms is ``λ = log Ω`` when the spectrum
reaches the edge. :func:`random_phase_signal` builds the paper's test signal,
:func:`spectral_derivatives` differentiates samples exactly (for a
bandlimited signal) by multiplying the FFT by ``(i ω)^n``, and :func:`l2_norms`
is the grid's L2 norm ``sqrt(dx · sum |f|^2)``.

See chapter 3, Spectral cutoff.

Limitations
-----------
:func:`spectral_derivatives` multiplies every Fourier mode by ``ω^n``. Modes
above the cutoff that hold only round-off (about ``1e-16`` of the signal) are
multiplied too, by up to ``(π / dx)^n``: for a signal far below the grid's
Nyquist frequency and a high order, that amplified round-off can dominate the
result. Pass ``cutoff`` to zero those modes first. A function that is not
bandlimited, such as a Gaussian, has true modes all the way to the Nyquist
frequency and beyond, so its FFT derivatives of high order are unreliable on any
grid; use :func:`gaussian_derivatives` for it. Sizes are float64: raw norms
overflow once ``Ω^n ‖f‖`` passes ``1e308`` (``n ≈ 115`` for ``Ω ≈ 450``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "BandlimitedSignal",
    "gaussian_derivatives",
    "l2_norms",
    "random_phase_signal",
    "spectral_derivatives",
]


@dataclass(frozen=True)
class BandlimitedSignal:
    """A real bandlimited signal sampled on a periodic grid.

    Attributes
    ----------
    x
        Grid points ``x_j = a + j · dx``, ``j = 0 … N-1``, shape ``(N,)``.
    values
        Real samples ``f(x_j)``, shape ``(N,)``.
    dx
        Grid spacing ``L / N``.
    cutoff
        The spectral cutoff ``Ω`` in radians per unit: the largest ``|ω_k|``
        whose amplitude is non-zero.
    frequencies
        ``ω_k`` in numpy's FFT order, shape ``(N,)``.
    spectrum
        ``F_k`` in FFT order with ``f(x) = sum_k F_k exp(i ω_k x)``.

    See chapter 3, Spectral cutoff.
    """

    x: np.ndarray = field(repr=False)
    values: np.ndarray = field(repr=False)
    dx: float
    cutoff: float
    frequencies: np.ndarray = field(repr=False)
    spectrum: np.ndarray = field(repr=False)

    def norms_from_spectrum(self, order: int) -> np.ndarray:
        """``‖f^{(n)}‖`` for ``n = 0 … order`` from Parseval's identity.

        On the grid, ``dx · sum_j |f^{(n)}(x_j)|^2 = L · sum_k ω_k^{2n} |F_k|^2``,
        so the norms follow from the spectrum without differentiating samples:
        an independent check of :func:`spectral_derivatives` and
        :func:`l2_norms`.

        See chapter 3, Spectral cutoff.
        """
        _check_order(order)
        length = self.dx * self.x.size
        power = np.abs(self.spectrum) ** 2  # (N,)
        top = float(np.max(np.abs(self.frequencies[power > 0]), initial=0.0))
        if top == 0.0:  # a constant: every derivative vanishes
            return np.concatenate([[math.sqrt(length * power.sum())], np.zeros(order)])
        # scaled by the top frequency so that only the final Ω^n can overflow
        w2 = (self.frequencies / top) ** 2
        n = np.arange(order + 1)
        sums = np.sum(w2 ** n[:, None] * power, axis=1)  # (order + 1,)
        return np.sqrt(length * sums) * top ** n.astype(float)


def random_phase_signal(
    n_points: int = 8192,
    domain: tuple[float, float] = (-10.0, 10.0),
    cutoff_fraction: float = 0.35,
    seed: int = 123,
    edge_power: float = 0.0,
) -> BandlimitedSignal:
    """The paper's bandlimited test signal: random phases up to a cutoff.

    Every frequency ``ω_k = 2π k / L`` with ``|ω_k| <= cutoff_fraction · π / dx``
    (a fraction of the grid's Nyquist frequency ``π / dx``) gets a coefficient
    of amplitude ``A(ω_k)`` and a phase drawn uniformly from ``[0, 2π)``; the
    negative frequencies get the complex conjugates, so the signal is real, and
    the constant mode is ``A(0) = 1``. Let ``K`` be the largest kept ``k``; then

    .. math::

        A(ω_k) = (1 - |k| / (K + 1))^p,

    with ``p = edge_power``. ``p = 0`` is the paper's flat, unit-magnitude
    spectrum; larger ``p`` moves spectral mass away from the edge while every
    kept frequency, the top one included, keeps a non-zero amplitude, so the
    cutoff stays ``Ω = 2π K / L``.

    Parameters
    ----------
    n_points
        Number of grid points ``N`` (at least 4).
    domain
        ``(a, b)``: the periodic grid is ``[a, b)``.
    cutoff_fraction
        The band edge as a fraction of the Nyquist frequency, in ``(0, 1)``.
    seed
        Seed of ``numpy.random.default_rng`` for the phases.
    edge_power
        The exponent ``p >= 0`` of the amplitude profile.

    Returns
    -------
    BandlimitedSignal

    Examples
    --------
    >>> sig = random_phase_signal()
    >>> round(sig.cutoff, 1)  # Ω ≈ 0.35 × π / dx
    450.2

    See chapter 3, Spectral cutoff.
    """
    if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)):
        raise TypeError(f"n_points must be an int, got {type(n_points).__name__}")
    if n_points < 4:
        raise ValueError(f"n_points must be >= 4, got {n_points}")
    a, b = (float(v) for v in domain)
    if not (math.isfinite(a) and math.isfinite(b) and b > a):
        raise ValueError(f"domain must be (a, b) with finite a < b, got {domain}")
    if not 0 < cutoff_fraction < 1:
        raise ValueError(f"cutoff_fraction must lie in (0, 1), got {cutoff_fraction}")
    if not (math.isfinite(edge_power) and edge_power >= 0):
        raise ValueError(f"edge_power must be a finite number >= 0, got {edge_power}")

    length = b - a
    dx = length / n_points
    k = np.fft.fftfreq(n_points, d=1.0 / n_points)  # integer wavenumbers, FFT order
    omega = 2 * np.pi * k / length
    k_max = int(np.floor(cutoff_fraction * (n_points / 2) + 1e-9))
    if k_max < 1:
        raise ValueError(
            f"cutoff_fraction={cutoff_fraction} keeps no frequency above 0 on a grid "
            f"of {n_points} points; increase either"
        )

    rng = np.random.default_rng(seed)
    phases = rng.uniform(0.0, 2 * np.pi, size=k_max)
    pos = np.arange(1, k_max + 1)
    amp = (1 - pos / (k_max + 1)) ** edge_power
    spectrum = np.zeros(n_points, dtype=complex)
    spectrum[0] = 1.0
    spectrum[pos] = amp * np.exp(1j * phases)
    spectrum[-pos] = np.conj(spectrum[pos])

    x = a + dx * np.arange(n_points)
    # f(x_j) = sum_k F_k exp(i ω_k x_j); the shift by a is a phase per mode.
    shifted = spectrum * np.exp(1j * omega * a)
    values = np.fft.ifft(shifted).real * n_points
    return BandlimitedSignal(
        x=x,
        values=values,
        dx=dx,
        cutoff=float(2 * np.pi * k_max / length),
        frequencies=omega,
        spectrum=spectrum,
    )


def spectral_derivatives(
    values: np.ndarray, dx: float, order: int, cutoff: float | None = None
) -> np.ndarray:
    """Raw derivatives of orders ``0 … order`` of periodic samples, by FFT.

    Each Fourier mode ``F_k`` is multiplied by ``(i ω_k)^n``. For an even number
    of points the Nyquist mode ``ω = π / dx`` is the samples of
    ``cos(π x / dx)`` (times a constant), whose odd derivatives vanish on the
    grid and whose even derivatives are ``(-1)^{n/2} (π/dx)^n`` times it: it is
    zeroed for odd ``n`` and kept, with that real factor, for even ``n``. For a
    trigonometric polynomial below the Nyquist frequency the result is exact to
    round-off.

    Parameters
    ----------
    values
        Samples on a periodic grid, shape ``(N,)``, real or complex.
    dx
        Grid spacing (> 0).
    order
        Highest derivative order (>= 0).
    cutoff
        If given, modes with ``|ω| > cutoff`` are set to zero first (a low-pass
        that keeps amplified round-off out of high orders; see Limitations).

    Returns
    -------
    numpy.ndarray
        Shape ``(order + 1, N)``; row ``n`` is ``f^{(n)}`` on the grid. Real when
        ``values`` is real.

    See chapter 3, Spectral cutoff.
    """
    values = np.asarray(values)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(
            f"values must be 1-D with at least 2 samples, got shape {values.shape}"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError("values must be finite")
    if not (math.isfinite(dx) and dx > 0):
        raise ValueError(f"dx must be a finite number > 0, got {dx}")
    _check_order(order)
    if cutoff is not None and not cutoff >= 0:
        raise ValueError(f"cutoff must be >= 0 or None, got {cutoff}")

    n_pts = values.size
    real = not np.iscomplexobj(values)
    omega = 2 * np.pi * np.fft.fftfreq(n_pts, d=dx)  # (N,)
    spec = np.fft.fft(values)
    if cutoff is not None:
        # a relative slack so that a mode computed exactly at the cutoff stays
        spec = np.where(np.abs(omega) > cutoff * (1 + 1e-12), 0.0, spec)
    nyquist = n_pts // 2 if n_pts % 2 == 0 else None
    if nyquist is not None:
        omega[nyquist] = np.pi / dx  # fftfreq returns -π/dx; the sign is moot

    out = np.empty((order + 1, n_pts), dtype=float if real else complex)
    factor = np.ones(n_pts, dtype=complex)
    for n in range(order + 1):
        mult = factor.copy()
        if nyquist is not None and n % 2 == 1:
            mult[nyquist] = 0.0
        deriv = np.fft.ifft(spec * mult)
        out[n] = deriv.real if real else deriv
        factor = factor * (1j * omega)
    return out


def l2_norms(values: np.ndarray, dx: float) -> np.ndarray:
    """The grid's L2 norm ``sqrt(dx · sum_j |f_j|^2)`` along the last axis.

    Parameters
    ----------
    values
        Shape ``(..., N)``, for example the ``(order + 1, N)`` output of
        :func:`spectral_derivatives`.
    dx
        Grid spacing (> 0).

    Returns
    -------
    numpy.ndarray
        Shape ``(...)``.

    See chapter 3, Spectral cutoff.
    """
    values = np.asarray(values)
    if values.ndim == 0 or values.shape[-1] == 0:
        raise ValueError(f"values must have a non-empty last axis, got {values.shape}")
    if not (math.isfinite(dx) and dx > 0):
        raise ValueError(f"dx must be a finite number > 0, got {dx}")
    return np.sqrt(dx * np.sum(np.abs(values) ** 2, axis=-1))


def gaussian_derivatives(x: np.ndarray, order: int) -> np.ndarray:
    """Raw derivatives of ``G(x) = exp(-x^2)`` of orders ``0 … order``.

    Uses ``G^{(n)}(x) = (-1)^n H_n(x) exp(-x^2)`` with the physicists' Hermite
    polynomials, built by the stable recurrence
    ``H_{n+1} = 2x H_n - 2n H_{n-1}``. The Gaussian is not bandlimited, so
    FFT derivatives of high order are spoilt by amplified round-off; this closed
    form is the reference the book uses instead.

    Returns
    -------
    numpy.ndarray
        Shape ``(order + 1,) + x.shape``.

    See chapter 3, Spectral cutoff.
    """
    x = np.asarray(x, dtype=float)
    _check_order(order)
    g = np.exp(-(x**2))
    out = np.empty((order + 1,) + x.shape)
    h_prev, h = np.zeros_like(x), np.ones_like(x)
    for n in range(order + 1):
        out[n] = (-1) ** n * h * g
        h_prev, h = h, 2 * x * h - 2 * n * h_prev
    return out


def _check_order(order: int) -> None:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)):
        raise TypeError(f"order must be an int, got {type(order).__name__}")
    if order < 0:
        raise ValueError(f"order must be >= 0, got {order}")
