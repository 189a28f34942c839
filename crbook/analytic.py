"""A catalogue of analytic test functions that know their own singularities.

Each entry of :data:`CATALOGUE` is an :class:`AnalyticFunction`: a vectorised
numpy callable of one complex variable, a LaTeX formula, and the exact list of
its complex singularities. From that list the radius of convergence of the
Taylor series at an expansion point ``x0``,

.. math::

    R(x_0) = \\min_s |x_0 - s|,

is computed, never typed in, and so is the exponent ``κ`` of the power-law
factor in the coefficients' asymptotics ``|a_n| ≈ C n^κ R^{-n}``: ``κ = p - 1``
next to a pole of order ``p`` and ``κ = -1`` next to a logarithmic branch
point. Every entry also carries its Taylor coefficients
``a_n = f^{(n)}(x0) / n!`` in closed form (or by an exact recurrence), the
independent reference that the book's Cauchy-integral coefficients are checked
against.

An infinite family of singularities, such as the poles ``iπ(k + 1/2)`` of
``tanh``, is one :class:`Singularity` with a ``period``: the points
``point + k * period`` for every integer ``k``. Its distance to ``x0`` is found
exactly by projecting ``x0`` onto the line of the family, and
:meth:`Singularity.points_in` lists the members that fall in a window of the
complex plane.

See chapter 2, Radius of convergence.

Limitations
-----------
Closed-form coefficients are evaluated in float64. Those of entire functions
fall like ``1/n!`` and underflow to zero beyond order 170 or so; those of
functions with ``R < 1`` grow like ``R^{-n}`` and overflow once ``R^{-n}``
passes ``1e308``. Coefficients that vanish by symmetry (the odd ones of an even
function at 0, all but every third one of ``(1 - x^3)^{-1}`` at 0) come out as
exact zeros or as round-off, so a fit of ``log |a_n|`` over every order is
meaningless there; fit the sizes from :func:`hankel_envelope` instead. The
callables use numpy's principal branches: ``log(1+x)`` has its branch cut on
``(-inf, -1]``, and an expansion point on the cut is rejected (the function
is not analytic there, although its continuation is). :func:`taylor_rate`
hands ``n! · size_n`` to :func:`crbook.fit_rate`, which overflows float64 when
``n! R^{-n}`` passes ``1e308`` (near ``n = 170`` for ``R = 1``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from scipy.special import binom, gammaln

from crbook._cauchy import taylor_coefficients
from crbook._rate import RateFit, fit_rate

__all__ = [
    "CATALOGUE",
    "AnalyticFunction",
    "Singularity",
    "hankel_envelope",
    "plot_complex_plane",
    "taylor_rate",
    "get",
]

_KINDS = ("pole", "log")
_TIE_RTOL = 1e-12


@dataclass(frozen=True)
class Singularity:
    """A singular point of an analytic function, or an infinite periodic family.

    Parameters
    ----------
    point
        The singular point (for a family: the member with ``k = 0``).
    kind
        ``"pole"`` or ``"log"`` (a logarithmic branch point).
    order
        The order ``p`` of a pole; ``None`` for a branch point.
    period
        ``None`` for an isolated point. Otherwise the family is every point
        ``point + k * period`` for integer ``k``.
    cut
        For a branch point: the direction of the branch cut that the
        catalogue's callable uses, the ray ``point + t * cut``, ``t >= 0``.

    See chapter 2, Radius of convergence.
    """

    point: complex
    kind: str
    order: int | None = None
    period: complex | None = None
    cut: complex | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}")
        if self.kind == "pole" and (self.order is None or self.order < 1):
            raise ValueError(f"a pole needs an order >= 1, got {self.order!r}")
        if self.kind != "pole" and self.order is not None:
            raise ValueError(f"only a pole has an order, got order={self.order!r}")
        if self.period is not None and self.period == 0:
            raise ValueError("period must be non-zero, or None for an isolated point")
        if self.cut is not None and (self.kind == "pole" or self.cut == 0):
            raise ValueError("only a branch point has a cut, with a non-zero direction")

    @property
    def kappa(self) -> float:
        """The exponent κ of ``n^κ`` in the coefficients it produces.

        ``p - 1`` for a pole of order ``p``: the coefficients of
        ``(1 - x/s)^{-p}`` are ``binom(n + p - 1, n) s^{-n}``, a polynomial of
        degree ``p - 1`` in ``n``. ``-1`` for a logarithmic branch point: those
        of ``log(1 - x/s)`` are ``-s^{-n} / n``.
        """
        if self.kind == "pole":
            return float(self.order - 1)
        return -1.0

    def on_cut(self, x0: complex) -> bool:
        """True when ``x0`` lies on this singularity's branch cut."""
        if self.cut is None:
            return False
        t = (complex(x0) - self.point) / self.cut
        return t.real > 0 and abs(t.imag) <= 1e-15 * max(1.0, abs(t.real))

    def _nearest_k(self, x0: complex) -> list[int]:
        """The one or two family indices ``k`` whose members lie nearest ``x0``."""
        t = ((x0 - self.point) / self.period).real
        return sorted({math.floor(t), math.ceil(t)})

    def distance(self, x0: complex) -> float:
        """Distance from ``x0`` to the point, or to the nearest member of the family."""
        if self.period is None:
            return abs(complex(x0) - self.point)
        return min(abs(x0 - self.point - k * self.period) for k in self._nearest_k(x0))

    def nearest_points(self, x0: complex) -> tuple[complex, ...]:
        """The member(s) of the family at :meth:`distance` from ``x0``."""
        if self.period is None:
            return (complex(self.point),)
        points = [complex(self.point + k * self.period) for k in self._nearest_k(x0)]
        d = min(abs(x0 - p) for p in points)
        return tuple(p for p in points if abs(x0 - p) <= d * (1 + _TIE_RTOL))

    def points_in(
        self, real: tuple[float, float], imag: tuple[float, float]
    ) -> np.ndarray:
        """The points of this singularity inside a rectangle of the complex plane.

        Parameters
        ----------
        real, imag
            ``(low, high)`` bounds of the real and imaginary parts, inclusive.

        Returns
        -------
        numpy.ndarray
            Complex array, sorted by the family index; empty if none falls inside.
        """
        (re_lo, re_hi), (im_lo, im_hi) = real, imag
        if re_lo > re_hi or im_lo > im_hi:
            raise ValueError(f"window bounds must be (low, high), got {real}, {imag}")
        if self.period is None:
            candidates = np.array([complex(self.point)])
        else:
            corners = [complex(a, b) for a in real for b in imag]
            ts = [((c - self.point) / self.period).real for c in corners]
            ks = np.arange(math.floor(min(ts)), math.ceil(max(ts)) + 1)
            candidates = self.point + ks * self.period
        inside = (
            (candidates.real >= re_lo)
            & (candidates.real <= re_hi)
            & (candidates.imag >= im_lo)
            & (candidates.imag <= im_hi)
        )
        return candidates[inside]


CoefficientRule = Callable[[int, complex], np.ndarray]


@dataclass(frozen=True)
class AnalyticFunction:
    """An analytic test function that knows its singularities.

    Attributes
    ----------
    name
        The catalogue key, a plain-text formula such as ``"1/(1+x^2)"``.
    latex
        The formula in LaTeX, without dollar signs.
    func
        Vectorised numpy callable; accepts real or complex arrays.
    singularities
        Every singular point in the finite complex plane (an empty tuple for an
        entire function); a periodic family counts as one entry.
    notes
        What is special about the function, in a sentence or two.

    See chapter 2, Radius of convergence.
    """

    name: str
    latex: str
    func: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    singularities: tuple[Singularity, ...]
    coefficient_rule: CoefficientRule = field(repr=False)
    notes: str = ""

    def __call__(self, x: np.ndarray | complex) -> np.ndarray:
        """Evaluate the function (elementwise, complex input allowed)."""
        return self.func(np.asarray(x))

    def _check_expansion_point(self, x0: complex) -> complex:
        x0 = _check_point(x0)
        for s in self.singularities:
            if s.on_cut(x0):
                raise ValueError(
                    f"x0 = {x0} lies on the branch cut of {self.name} (the ray from "
                    f"{s.point} in the direction {s.cut}); the callable is not "
                    "analytic there"
                )
        return x0

    @property
    def is_entire(self) -> bool:
        """True when the function has no singularity in the finite plane."""
        return not self.singularities

    def radius(self, x0: complex = 0.0) -> float:
        """Radius of convergence of the Taylor series at ``x0``.

        The distance from ``x0`` to the nearest singularity; ``math.inf`` for an
        entire function. ``x0`` may be complex.

        See chapter 2, Radius of convergence.
        """
        x0 = self._check_expansion_point(x0)
        if self.is_entire:
            return math.inf
        return min(s.distance(x0) for s in self.singularities)

    def nearest(self, x0: complex = 0.0) -> tuple[tuple[complex, Singularity], ...]:
        """The singular points on the circle of convergence at ``x0``.

        Returns
        -------
        tuple of (complex, Singularity)
            Each point at distance :meth:`radius` from ``x0`` together with the
            singularity (or family) it belongs to; empty for an entire function.
            Several points come back when they tie, as the poles ``±i`` of
            ``1/(1+x^2)`` do for every real ``x0``.
        """
        x0 = self._check_expansion_point(x0)
        if self.is_entire:
            return ()
        r = self.radius(x0)
        return tuple(
            (p, s)
            for s in self.singularities
            for p in s.nearest_points(x0)
            if abs(x0 - p) <= r * (1 + _TIE_RTOL)
        )

    def nearest_kind(self, x0: complex = 0.0) -> tuple[str, int | None]:
        """Kind and order of the nearest singularity: ``("pole", p)``,
        ``("log", None)``, or ``("none", None)`` for an entire function."""
        near = self.nearest(x0)
        if not near:
            return ("none", None)
        dominant = max((s for _, s in near), key=lambda s: s.kappa)
        return (dominant.kind, dominant.order)

    def expected_kappa(self, x0: complex = 0.0) -> float | None:
        """κ in ``|a_n| ≈ C n^κ R^{-n}``, from the nearest singularity.

        ``p - 1`` for a pole of order ``p``, ``-1`` for a logarithmic branch
        point, the largest of these when several singularities tie. ``None``
        for an entire function, whose coefficients fall faster than any
        geometric sequence and have no such form.

        When several points tie on the circle of convergence their
        contributions interfere: the coefficients carry an oscillating factor
        and some may vanish (``(1 - x^3)^{-1}`` at 0 has ``1, 0, 0, 1, 0, 0,
        …``). κ still describes the envelope, the coefficients at the peaks;
        :func:`hankel_envelope` removes the oscillation before a fit.

        See chapter 2, Radius of convergence.
        """
        near = self.nearest(x0)
        if not near:
            return None
        return max(s.kappa for _, s in near)

    def exact_coefficients(self, order: int, x0: complex = 0.0) -> np.ndarray:
        """Taylor coefficients ``a_n = f^{(n)}(x0) / n!`` for ``n = 0 … order``.

        Computed from a closed form or an exact recurrence, independently of the
        Cauchy-integral coefficients of :func:`crbook.taylor_coefficients`.

        Returns
        -------
        numpy.ndarray
            Shape ``(order + 1,)``; float64 when ``x0`` is real, complex128
            otherwise.

        See chapter 2, Radius of convergence.
        """
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)):
            raise TypeError(f"order must be an int, got {type(order).__name__}")
        if order < 0:
            raise ValueError(f"order must be >= 0, got {order}")
        x0 = self._check_expansion_point(x0)
        for p, _ in self.nearest(x0):
            if abs(x0 - p) == 0:
                raise ValueError(f"x0 = {x0} is a singular point of {self.name}")
        coeffs = np.asarray(self.coefficient_rule(int(order), x0), dtype=complex)
        if x0.imag == 0:
            return coeffs.real.copy()
        return coeffs

    def singular_points(
        self, real: tuple[float, float], imag: tuple[float, float]
    ) -> np.ndarray:
        """All singular points inside a rectangle of the complex plane, for plots."""
        if self.is_entire:
            return np.zeros(0, dtype=complex)
        return np.concatenate([s.points_in(real, imag) for s in self.singularities])


def hankel_envelope(
    coefficients: np.ndarray, k: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Sizes ``|H_n^{(k)}|^{1/k}`` of Hankel determinants of Taylor coefficients.

    With ``k`` singular points on the circle of convergence, the coefficients
    are a sum of ``k`` geometric sequences of equal modulus ``R^{-n}`` and
    different phases: they oscillate, and some may vanish (``1/(1+x^2)`` at
    ``x0 = 1`` has ``a_3 = a_7 = … = 0``). A least-squares fit of ``log |a_n|``
    is then dragged down by the dips. Hadamard's theorem on the determinants

    .. math::

        H_n^{(k)} = \\det\\,[a_{n+i+j}]_{i,j=0}^{k-1}

    says that ``limsup |H_n^{(k)}|^{1/n} = R^{-k}`` when exactly ``k`` poles (counted
    with multiplicity) lie on the circle and the next one is further out: the
    ``k`` phases cancel in the determinant. For ``k = 2`` and a conjugate pair
    of simple poles, ``a_m^2 - a_{m-1} a_{m+1}`` is even an exact geometric
    sequence. The ``k``-th root brings the sizes back to the scale of one
    coefficient, so their rate is ``-log R`` like that of ``|a_n|``.

    Parameters
    ----------
    coefficients
        Taylor coefficients ``a_0 … a_N``, shape ``(N + 1,)``, real or complex.
    k
        Size of the determinants: the number of singular points on the circle
        of convergence (``len(f.nearest(x0))`` for a catalogue entry). ``k = 1``
        returns ``|a_n|`` unchanged. A ``k`` larger than the number of poles on
        the circle gives determinants that vanish in exact arithmetic.

    Returns
    -------
    (orders, sizes)
        ``sizes[i] = |H_n^{(k)}|^{1/k}`` attributed to the middle order
        ``orders[i] = n + k - 1`` of the determinant, for
        ``n = 0 … N - 2(k - 1)``.

    See chapter 2, Radius of convergence.
    """
    a = np.asarray(coefficients)
    if a.ndim != 1:
        raise ValueError(f"coefficients must be 1-D, got shape {a.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    count = a.size - 2 * (k - 1)
    if count < 1:
        raise ValueError(
            f"k = {k} needs at least {2 * k - 1} coefficients, got {a.size}"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError("coefficients must be finite")
    offsets = np.arange(k)
    idx = np.arange(count)[:, None, None] + offsets[:, None] + offsets[None, :]
    dets = np.linalg.det(a[idx]) if k > 1 else a[:count]  # (count,)
    return np.arange(count) + (k - 1), np.abs(dets) ** (1.0 / k)


def taylor_rate(
    f: AnalyticFunction | Callable[[np.ndarray], np.ndarray],
    x0: complex = 0.0,
    orders: Any = range(2, 61),
    *,
    k: int = 1,
    correction: str | None = "log",
    weights: Any = "paper",
) -> RateFit:
    """Curvature rate of ``f`` at ``x0`` with Taylor normalisation.

    The steps of chapter 2 in one call: the Taylor coefficients ``a_n`` from
    :func:`crbook.taylor_coefficients`, their sizes (``|a_n|`` for ``k = 1``,
    the Hankel envelope of :func:`hankel_envelope` for ``k > 1``), the raw
    sizes ``n! · size_n``, and :func:`crbook.fit_rate` with
    ``normalization="taylor"``, which divides the ``n!`` out again. By
    Cauchy–Hadamard ``exp(-fit.lam)`` estimates the radius of convergence.

    Parameters
    ----------
    f
        A catalogue entry or any vectorised callable of a complex array.
    x0
        The expansion point.
    orders
        The orders to fit, distinct non-negative integers (at least ``k - 1``).
        The default ``2 … 60`` is the source paper's.
    k
        Number of singular points on the circle of convergence; see
        :func:`hankel_envelope`.
    correction
        ``"log"`` (default, the paper's ``κ log n`` term) or ``None``.
    weights
        ``"paper"`` for the paper's ``1 / (1 + 0.02 n)``, ``None`` for an
        unweighted fit, or an array with one weight per order.

    Returns
    -------
    RateFit
        The fit; ``exp(-fit.lam)`` is the estimated radius ``R̂``.

    See chapter 2, Radius of convergence.
    """
    func = f.func if isinstance(f, AnalyticFunction) else f
    n = np.asarray(list(orders) if isinstance(orders, range) else orders)
    if n.ndim != 1 or n.size == 0 or not np.issubdtype(n.dtype, np.integer):
        raise ValueError(f"orders must be a non-empty 1-D sequence of ints, got {n!r}")
    if np.unique(n).size != n.size:
        raise ValueError("orders must be distinct")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if n.min() < k - 1:
        raise ValueError(
            f"with k = {k} the smallest order is {k - 1}, got {int(n.min())}"
        )
    if isinstance(weights, str):
        if weights != "paper":
            raise ValueError(
                f"weights must be 'paper', None or an array, got {weights!r}"
            )
        weights = 1.0 / (1.0 + 0.02 * n)

    coeffs = taylor_coefficients(func, x0, int(n.max()) + k - 1)
    env_orders, sizes = hankel_envelope(coeffs, k)
    size_at = sizes[n - env_orders[0]]  # env_orders is consecutive from k - 1
    with np.errstate(over="ignore"):
        raw = size_at * np.exp(gammaln(n + 1.0))  # n! · size_n
    return fit_rate(
        raw, n, normalization="taylor", correction=correction, weights=weights
    )


def plot_complex_plane(
    f: AnalyticFunction,
    x0: complex = 0.0,
    ax: Any = None,
    window: float | None = None,
) -> Any:
    """Draw the singularities of ``f`` and its disc of convergence at ``x0``.

    Poles are crosses, branch points open circles with their cut dashed; the
    disc ``|z - x0| < R(x0)`` is shaded and a segment joins ``x0`` to each
    nearest singularity. For an entire function only ``x0`` is drawn.

    Parameters
    ----------
    f
        A catalogue entry.
    x0
        The expansion point.
    ax
        A matplotlib ``Axes`` to draw on; a new figure is made when ``None``.
    window
        Half-width of the square window around ``x0``; by default
        ``max(2, 1.5 R)`` (3 for an entire function).

    Returns
    -------
    matplotlib.axes.Axes

    See chapter 2, Radius of convergence.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    x0 = f._check_expansion_point(x0)
    r = f.radius(x0)
    if window is None:
        window = 3.0 if math.isinf(r) else max(2.0, 1.5 * r)
    if not (math.isfinite(window) and window > 0):
        raise ValueError(f"window must be a finite number > 0, got {window}")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.8, 4.8))
    re_lim = (x0.real - window, x0.real + window)
    im_lim = (x0.imag - window, x0.imag + window)

    if math.isfinite(r):
        ax.add_patch(Circle((x0.real, x0.imag), r, color="C0", alpha=0.15, lw=0))
        ax.add_patch(Circle((x0.real, x0.imag), r, fill=False, color="C0", lw=1.2))
        for p, _ in f.nearest(x0):
            ax.plot([x0.real, p.real], [x0.imag, p.imag], color="C0", lw=1)
    for s in f.singularities:
        pts = s.points_in(re_lim, im_lim)
        if s.kind == "pole":
            ax.plot(pts.real, pts.imag, "x", color="C3", ms=9, mew=2, ls="none")
        else:
            ax.plot(pts.real, pts.imag, "o", mfc="white", mec="C3", ms=8, mew=2)
            if s.cut is not None:
                end = s.point + 4 * window * s.cut / abs(s.cut)
                ax.plot(
                    [s.point.real, end.real], [s.point.imag, end.imag], "--", color="C3"
                )
    ax.plot([x0.real], [x0.imag], "o", color="k", ms=5)
    ax.axhline(0.0, color="0.7", lw=0.8, zorder=0)
    ax.set_xlim(*re_lim)
    ax.set_ylim(*im_lim)
    ax.set_aspect("equal")
    ax.set_xlabel("Re z")
    ax.set_ylabel("Im z")
    label = "R = inf" if math.isinf(r) else f"R = {r:.4g}"
    point = f"{x0.real:g}" if x0.imag == 0 else f"{x0:g}"
    ax.set_title(f"${f.latex}$ at $x_0$ = {point}: {label}")
    return ax


# --- coefficient rules ----------------------------------------------------------


def _check_point(x0: complex) -> complex:
    try:
        z = complex(x0)
    except TypeError:
        raise TypeError(f"x0 must be a number, got {type(x0).__name__}") from None
    if not (math.isfinite(z.real) and math.isfinite(z.imag)):
        raise ValueError(f"x0 must be finite, got {x0!r}")
    return z


def _partial_fractions(
    terms: tuple[tuple[complex, int, complex], ...],
) -> CoefficientRule:
    """Coefficients of ``sum c * (x - s)^{-p}`` over ``terms = ((s, p, c), …)``.

    Around ``x0``: ``(x0 - s + h)^{-p} = sum_n (-1)^n binom(n + p - 1, n)
    (x0 - s)^{-p-n} h^n``.
    """

    def rule(order: int, x0: complex) -> np.ndarray:
        n = np.arange(order + 1)
        out = np.zeros(order + 1, dtype=complex)
        for s, p, c in terms:
            d = x0 - s
            out += c * (-1.0) ** n * binom(n + p - 1, n) * d ** (-p - n)
        return out

    return rule


def _log1p_rule(order: int, x0: complex) -> np.ndarray:
    # log(1 + x0 + h) = log(1 + x0) + sum_{n>=1} (-1)^{n+1} h^n / (n (1 + x0)^n)
    n = np.arange(1, order + 1)
    b = 1 + x0
    head = np.log(b) if x0.imag or b.real < 0 else math.log(b.real)
    return np.concatenate([[head], (-1.0) ** (n + 1) / (n * b**n)])


def _exp_rule(order: int, x0: complex) -> np.ndarray:
    # e^{x0} / n!, by a running product so that nothing overflows before n ~ 170.
    inv_fact = np.cumprod(np.concatenate([[1.0], 1.0 / np.arange(1, order + 1)]))
    return np.exp(x0) * inv_fact


def _sin_rule(order: int, x0: complex) -> np.ndarray:
    # sin^{(n)}(x0) = sin(x0 + n π/2); the phase is reduced mod 4 exactly.
    n = np.arange(order + 1)
    cycle = np.array([np.sin(x0), np.cos(x0), -np.sin(x0), -np.cos(x0)])
    inv_fact = np.cumprod(np.concatenate([[1.0], 1.0 / np.arange(1, order + 1)]))
    return cycle[n % 4] * inv_fact


def _gaussian_rule(order: int, x0: complex) -> np.ndarray:
    # y = exp(-x^2) solves y' = -2 x y; with x = x0 + h this gives
    # (n + 1) a_{n+1} = -2 (x0 a_n + a_{n-1}), the Hermite recurrence scaled by
    # 1/n! (a_n = (-1)^n H_n(x0) e^{-x0^2} / n!), which is stable forwards.
    a = np.zeros(order + 1, dtype=complex)
    a[0] = np.exp(-(x0**2))
    if order >= 1:
        a[1] = -2 * x0 * a[0]
    for n in range(1, order):
        a[n + 1] = -2 * (x0 * a[n] + a[n - 1]) / (n + 1)
    return a


def _tanh_rule(order: int, x0: complex) -> np.ndarray:
    # y = tanh solves y' = 1 - y^2; matching powers of h gives
    # (n + 1) a_{n+1} = [n == 0] - sum_{j=0}^{n} a_j a_{n-j}.
    a = np.zeros(order + 1, dtype=complex)
    a[0] = np.tanh(x0)
    for n in range(order):
        conv = np.dot(a[: n + 1], a[n::-1])
        a[n + 1] = ((1.0 if n == 0 else 0.0) - conv) / (n + 1)
    return a


def _gaussian(x: np.ndarray) -> np.ndarray:
    return np.exp(-(x**2))


def _build() -> dict[str, AnalyticFunction]:
    cube_roots = (
        1.0 + 0j,
        complex(-0.5, math.sqrt(3) / 2),
        complex(-0.5, -math.sqrt(3) / 2),
    )
    half_pi_i = 0.5j * np.pi
    entries = [
        AnalyticFunction(
            name="1/(1-x)",
            latex=r"\frac{1}{1-x}",
            func=lambda x: 1 / (1 - x),
            singularities=(Singularity(1.0, "pole", 1),),
            coefficient_rule=_partial_fractions(((1.0, 1, -1.0),)),
            notes="The geometric series: a_n = 1 at x0 = 0.",
        ),
        AnalyticFunction(
            name="1/(1-2x)",
            latex=r"\frac{1}{1-2x}",
            func=lambda x: 1 / (1 - 2 * x),
            singularities=(Singularity(0.5, "pole", 1),),
            coefficient_rule=_partial_fractions(((0.5, 1, -0.5),)),
            notes="A geometric series with ratio 2: a_n = 2^n at x0 = 0, R = 1/2.",
        ),
        AnalyticFunction(
            name="(1-x)^-3",
            latex=r"(1-x)^{-3}",
            func=lambda x: (1 - x) ** -3,
            singularities=(Singularity(1.0, "pole", 3),),
            coefficient_rule=_partial_fractions(((1.0, 3, -1.0),)),
            notes=(
                "A triple pole: a_n = (n+1)(n+2)/2 at x0 = 0, so log a_n grows "
                "like 2 log n although R = 1. The paper's code used this "
                "function where its text names (1-x^3)^-1."
            ),
        ),
        AnalyticFunction(
            name="(1-x^3)^-1",
            latex=r"\frac{1}{1-x^{3}}",
            func=lambda x: 1 / (1 - x**3),
            singularities=tuple(Singularity(c, "pole", 1) for c in cube_roots),
            coefficient_rule=_partial_fractions(
                tuple((c, 1, -c / 3) for c in cube_roots)
            ),
            notes=(
                "Three simple poles on the unit circle. At x0 = 0 they interfere "
                "to give a_n = 1, 0, 0, 1, 0, 0, ...: only every third order "
                "carries a coefficient, so a fit of log|a_n| must use the "
                "orders n = 0, 3, 6, ..., or hankel_envelope with k = 3."
            ),
        ),
        AnalyticFunction(
            name="1/(1+x^2)",
            latex=r"\frac{1}{1+x^{2}}",
            func=lambda x: 1 / (1 + x**2),
            singularities=(Singularity(1j, "pole", 1), Singularity(-1j, "pole", 1)),
            coefficient_rule=_partial_fractions(((1j, 1, 1 / 2j), (-1j, 1, -1 / 2j))),
            notes=(
                "Smooth on the whole real line, yet R(x0) = sqrt(1 + x0^2): the "
                "poles at +-i are invisible from the real axis."
            ),
        ),
        AnalyticFunction(
            name="log(1+x)",
            latex=r"\log(1+x)",
            func=np.log1p,
            singularities=(Singularity(-1.0, "log", cut=-1.0),),
            coefficient_rule=_log1p_rule,
            notes="A logarithmic branch point at -1: a_n = (-1)^(n+1)/n, κ = -1.",
        ),
        AnalyticFunction(
            name="tanh",
            latex=r"\tanh x",
            func=np.tanh,
            singularities=(Singularity(half_pi_i, "pole", 1, period=1j * np.pi),),
            coefficient_rule=_tanh_rule,
            notes=(
                "Simple poles at i(pi/2 + k pi) for every integer k, so "
                "R(x0) = sqrt(x0^2 + (pi/2)^2) for real x0."
            ),
        ),
        AnalyticFunction(
            name="exp",
            latex=r"e^{x}",
            func=np.exp,
            singularities=(),
            coefficient_rule=_exp_rule,
            notes="Entire: a_n = e^{x0}/n!, R = inf.",
        ),
        AnalyticFunction(
            name="gaussian",
            latex=r"e^{-x^{2}}",
            func=_gaussian,
            singularities=(),
            coefficient_rule=_gaussian_rule,
            notes=(
                "Entire: a_{2m} = (-1)^m/m! at x0 = 0. Its Taylor-normalised "
                "rate is -inf and its raw rate +inf, never the paper's 0."
            ),
        ),
        AnalyticFunction(
            name="sin",
            latex=r"\sin x",
            func=np.sin,
            singularities=(),
            coefficient_rule=_sin_rule,
            notes="Entire: a_n = sin(x0 + n pi/2)/n!.",
        ),
    ]
    return {f.name: f for f in entries}


CATALOGUE: Mapping[str, AnalyticFunction] = MappingProxyType(_build())
"""Every test function, by name (read-only)."""


def get(name: str) -> AnalyticFunction:
    """Return the catalogue entry called ``name``.

    Raises
    ------
    KeyError
        If there is no such entry; the message lists the valid names.

    See chapter 2, Radius of convergence.
    """
    try:
        return CATALOGUE[name]
    except KeyError:
        names = ", ".join(repr(k) for k in CATALOGUE)
        raise KeyError(
            f"no test function called {name!r}; choose one of {names}"
        ) from None
