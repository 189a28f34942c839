"""Fitting the curvature rate: the slope of ``log |v_n|`` against the order ``n``.

Given sizes ``v_n`` of the derivatives of a function at a few orders ``n``, the
curvature rate λ is estimated as the least-squares slope of

    log |v_n| = intercept + λ n            (correction=None)
    log |v_n| = intercept + λ n + κ log n  (correction="log")

The sizes are used either as they are (*raw* normalisation: ``v_n = ‖Dⁿf‖``,
right for bandlimited signals, where λ → log Ω) or divided by ``n!`` first
(*Taylor* normalisation: ``v_n / n!`` are Taylor coefficients, right for analytic
functions, where λ → −log R). Optional weights give a weighted least-squares fit,
such as the source paper's ``1 / (1 + 0.02 n)``.

Limitations
-----------
A least-squares slope over a finite window of orders is not the ``limsup`` that
defines λ: it depends on which orders are used, and sub-exponential factors
(``n^κ``, oscillations such as the zeros of an even function's odd coefficients)
bias it; the ``"log"`` correction removes only a pure power ``n^κ``, and with few
or closely spaced orders its κ and λ are strongly correlated. The standard error
treats the residuals as independent noise with a common scale (weights are
relative, not inverse variances); when the residuals are systematic, as they are
for exact derivatives, it measures misfit, not statistical uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import gammaln

_NORMALIZATIONS = ("raw", "taylor")
_CORRECTIONS = (None, "log")


@dataclass(frozen=True, eq=False, repr=False)
class RateFit:
    """The result of :func:`fit_rate`.

    Attributes
    ----------
    lam : float
        The fitted curvature rate λ (slope per order, natural log).
    intercept : float
        The fitted intercept (the value of the fitted line at ``n = 0``, without
        the κ term).
    kappa : float
        The coefficient κ of ``log n``; ``0.0`` when ``correction`` is ``None``,
        so that :meth:`predict` needs no special case.
    stderr : float or None
        Standard error of λ from the weighted least-squares covariance
        ``s² (XᵀWX)⁻¹`` with ``s² = Σ wᵢ rᵢ² / dof``; ``None`` when there are no
        residual degrees of freedom (as many points as parameters).
    covariance : numpy.ndarray or None
        The full parameter covariance, ordered (intercept, λ[, κ]); ``None``
        together with ``stderr``.
    dof : int
        Residual degrees of freedom: number of points minus number of parameters.
    residuals : numpy.ndarray
        ``log_values`` minus the fitted values (unweighted).
    orders : numpy.ndarray
        The orders ``n`` (float64).
    log_values : numpy.ndarray
        The fitted ``y``: ``log |v_n|``, minus ``log n!`` for Taylor
        normalisation.
    weights : numpy.ndarray or None
        The weights used, or ``None`` for an unweighted fit.
    normalization : str
        ``"raw"`` or ``"taylor"``.
    correction : str or None
        ``None`` or ``"log"``.
    """

    lam: float
    intercept: float
    kappa: float
    stderr: float | None
    covariance: np.ndarray | None
    dof: int
    residuals: np.ndarray
    orders: np.ndarray
    log_values: np.ndarray
    weights: np.ndarray | None
    normalization: str
    correction: str | None

    def predict(self, n: Any) -> Any:
        """Return the fitted ``log |v_n|`` (after normalisation) at orders ``n``.

        ``n`` may be a number or an array; a number gives a float. With the
        ``"log"`` correction every ``n`` must be positive.
        """
        n_arr = np.asarray(n, dtype=np.float64)
        if self.correction == "log":
            if not np.all(n_arr > 0):
                raise ValueError(
                    "predict: orders must be positive with correction='log', "
                    f"got {np.ravel(n_arr)[np.ravel(n_arr) <= 0].tolist()}"
                )
            y = self.intercept + self.lam * n_arr + self.kappa * np.log(n_arr)
        else:
            y = self.intercept + self.lam * n_arr
        return float(y) if y.ndim == 0 else y

    def summary(self) -> str:
        """Return a short multi-line description of the fit."""
        se = "n/a (no residual degrees of freedom)"
        if self.stderr is not None:
            se = f"{self.stderr:.4g}"
        orders = np.unique(self.orders)
        lines = [
            f"curvature rate fit ({self.normalization} normalisation"
            + (", log correction" if self.correction == "log" else "")
            + (", weighted" if self.weights is not None else "")
            + ")",
            f"  lambda    = {self.lam:.6g}  (stderr {se})",
            f"  intercept = {self.intercept:.6g}",
        ]
        if self.correction == "log":
            lines.append(f"  kappa     = {self.kappa:.6g}")
        lines += [
            f"  orders    = {orders[0]:g}..{orders[-1]:g} "
            f"({self.orders.size} points, dof {self.dof})",
            f"  max |residual| = {np.max(np.abs(self.residuals)):.3g}",
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        se = "None" if self.stderr is None else f"{self.stderr:.4g}"
        kappa = f", kappa={self.kappa:.6g}" if self.correction == "log" else ""
        return (
            f"RateFit(lam={self.lam:.6g}, stderr={se}, "
            f"intercept={self.intercept:.6g}{kappa}, "
            f"normalization={self.normalization!r}, "
            f"correction={self.correction!r}, n_points={self.orders.size}, "
            f"weighted={self.weights is not None})"
        )

    __str__ = summary


def _as_1d_float(x: Any, name: str, *, allow_complex: bool = False) -> np.ndarray:
    """Convert a 1-D array-like (list, numpy array, torch tensor) to numpy."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a 1-D array of numbers: {err}") from err
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if np.iscomplexobj(arr) and allow_complex:
        return np.abs(arr.astype(np.complex128))
    try:
        return arr.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must hold real numbers, got dtype {arr.dtype}: {err}"
        ) from err


def _list_some(a: np.ndarray, limit: int = 10) -> str:
    """Format up to ``limit`` numbers of ``a`` for an error message."""
    items = [f"{v:g}" for v in a[:limit]]
    if a.size > limit:
        items.append(f"... ({a.size - limit} more)")
    return "[" + ", ".join(items) + "]"


def fit_rate(
    values: Any,
    orders: Any,
    normalization: str = "raw",
    correction: str | None = None,
    weights: Any = None,
) -> RateFit:
    """Fit the curvature rate λ: the slope of ``log |v_n|`` against ``n``.

    Solves the (weighted) least-squares problem::

        log |v_n| − c_n = intercept + λ n [+ κ log n],

    where ``c_n = log n!`` for Taylor normalisation and ``0`` for raw.
    For Taylor coefficients of an analytic function, ``exp(-λ)`` estimates the
    radius of convergence R; for derivative norms of a bandlimited signal,
    ``exp(λ)`` estimates the spectral cutoff Ω.
    See chapter 1, Differentiation dynamics, and chapter 2, Radius of convergence.

    Parameters
    ----------
    values : array-like, shape (m,)
        Sizes ``v_n`` (numpy array, list or torch tensor). Only ``|v_n|`` is
        used; complex values are allowed. Must be finite and non-zero.
    orders : array-like, shape (m,)
        The order ``n`` of each value. Repeats are allowed, but at least 2
        distinct orders (3 with ``correction="log"``) are required. With Taylor
        normalisation they must be non-negative integers; with the log
        correction they must be positive.
    normalization : {"raw", "taylor"}
        ``"raw"`` fits ``log |v_n|``; ``"taylor"`` fits ``log(|v_n| / n!)``,
        i.e. treats ``values`` as raw derivatives and turns them into Taylor
        coefficients.
    correction : {None, "log"}
        ``"log"`` adds a ``κ log n`` term, which absorbs a power-law prefactor
        ``n^κ`` (the source paper's finite-domain correction).
    weights : array-like, shape (m,), optional
        Positive finite weights, one per value (relative weights: their overall
        scale does not change λ or its standard error).

    Returns
    -------
    RateFit
        λ, intercept, κ, the standard error of λ and the fit's data.

    Raises
    ------
    ValueError
        On wrongly shaped, non-finite or zero values, unsuitable orders,
        non-positive weights, or an unknown ``normalization``/``correction``.
    """
    if normalization not in _NORMALIZATIONS:
        raise ValueError(
            f"normalization must be one of {list(_NORMALIZATIONS)}, "
            f"got {normalization!r}"
        )
    if correction not in _CORRECTIONS:
        raise ValueError(
            f"correction must be one of {list(_CORRECTIONS)}, got {correction!r}"
        )

    v = np.abs(_as_1d_float(values, "values", allow_complex=True))
    n = _as_1d_float(orders, "orders")
    if v.shape != n.shape:
        raise ValueError(
            f"values and orders must have the same length, got {v.size} values "
            f"and {n.size} orders"
        )
    if not np.all(np.isfinite(n)):
        raise ValueError(f"orders must be finite, got {_list_some(n[~np.isfinite(n)])}")

    n_params = 3 if correction == "log" else 2
    distinct = np.unique(n)
    if distinct.size < n_params:
        raise ValueError(
            f"orders must hold at least {n_params} distinct values to fit "
            f"{n_params} parameters, got {_list_some(distinct)}"
        )
    if normalization == "taylor":
        bad = (n < 0) | (n != np.round(n))
        if np.any(bad):
            raise ValueError(
                "orders must be non-negative integers with normalization='taylor' "
                f"(n! is divided out), got {_list_some(n[bad])}"
            )
    if correction == "log" and np.any(n <= 0):
        raise ValueError(
            "orders must be positive with correction='log' (log n is undefined "
            f"at n <= 0), got {_list_some(n[n <= 0])}"
        )

    bad = ~np.isfinite(v)
    if np.any(bad):
        raise ValueError(
            f"values must be finite, got {int(bad.sum())} non-finite value(s) "
            f"at orders {_list_some(n[bad])}"
        )
    zero = v == 0
    if np.any(zero):
        raise ValueError(
            f"values must be non-zero (log 0 = -inf), got {int(zero.sum())} zero "
            f"value(s) at orders {_list_some(n[zero])}"
        )

    w = None
    if weights is not None:
        w = _as_1d_float(weights, "weights")
        if w.shape != n.shape:
            raise ValueError(
                f"weights must have one entry per order ({n.size}), got {w.size}"
            )
        bad = ~np.isfinite(w) | (w <= 0)
        if np.any(bad):
            raise ValueError(
                "weights must be positive and finite, got "
                f"{_list_some(w[bad])} at orders {_list_some(n[bad])}"
            )

    y = np.log(v)
    if normalization == "taylor":
        y = y - gammaln(n + 1.0)

    columns = [np.ones_like(n), n]
    if correction == "log":
        columns.append(np.log(n))
    design = np.stack(columns, axis=1)  # (m, p)

    # Weighted least squares through a QR factorisation of the sqrt(w)-scaled
    # system, which avoids squaring the condition number of the design.
    sw = np.ones_like(n) if w is None else np.sqrt(w)
    q, r = np.linalg.qr(design * sw[:, None])
    params = np.linalg.solve(r, q.T @ (y * sw))

    fitted = design @ params
    residuals = y - fitted
    dof = int(n.size - n_params)
    covariance = None
    stderr = None
    if dof > 0:
        scale2 = float(np.sum((sw * residuals) ** 2)) / dof
        r_inv = np.linalg.inv(r)
        covariance = scale2 * (r_inv @ r_inv.T)
        stderr = float(np.sqrt(covariance[1, 1]))

    for arr in (residuals, n, y, w, covariance):
        if arr is not None:
            arr.setflags(write=False)
    return RateFit(
        lam=float(params[1]),
        intercept=float(params[0]),
        kappa=float(params[2]) if correction == "log" else 0.0,
        stderr=stderr,
        covariance=covariance,
        dof=dof,
        residuals=residuals,
        orders=n,
        log_values=y,
        weights=w,
        normalization=normalization,
        correction=correction,
    )
