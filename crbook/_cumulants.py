"""The cross-entropy along a line on which the logits are affine: cumulants.

Walk from a point ``x`` along a direction ``u`` and suppose the logits move in a
straight line, ``z(t) = z + t v`` with ``v = J u`` (the *logit velocity*). A ReLU
network does exactly this until one of its ReLUs or max-pools switches. The
per-example cross-entropy with label ``y`` is then::

    ℓ(t) = logsumexp(z + t v) − (z_y + t v_y) = ℓ(0) + log E[exp(t D)],

where ``D`` is the random variable that takes the value ``v_c − v_y`` with the
softmax probability ``p_c`` of class ``c``. The right side is ``ℓ(0)`` plus the
cumulant generating function of ``D``, so ``dⁿℓ/dtⁿ`` at ``t = 0`` is the n-th
cumulant ``κ_n(D)`` for every ``n ≥ 1``.

:func:`softmax_cumulants` computes these cumulants from ``z`` and ``v`` with the
moment recursion, independently of Taylor mode. :func:`cumulant_split` writes the
curvature rate of the cumulants as a *scale term*, the mean of ``log s`` with
``s = ‖v − v̄‖`` the spread of the velocity over the classes, plus a *shape term*
that depends on the softmax probabilities (how confident, how large the margin)
and on the direction of ``v − v̄`` only. Sizes are raw (not divided by ``n!``).

See chapter 6, MNIST.

Limitations
-----------
The identity ``dⁿℓ/dtⁿ = κ_n(D)`` holds only where the logits are affine along
the line; for a network with smooth activations the network adds derivatives of
its own, and the cumulants are only the softmax's share. The moment recursion
loses relative accuracy when the cumulants are far smaller than the moments, at
orders well beyond the book's 1…4.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from crbook._rate import RateFit, fit_rate

__all__ = ["CumulantSplit", "cumulant_split", "softmax_cumulants"]


def _check_logits(logits: Tensor, velocity: Tensor, labels: Tensor | None) -> None:
    for name, value in (("logits", logits), ("velocity", velocity)):
        if not isinstance(value, Tensor) or not value.is_floating_point():
            raise TypeError(
                f"{name} must be a floating tensor of shape (B, classes), got "
                f"{type(value).__name__} {getattr(value, 'dtype', '')}"
            )
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(
            f"logits must have shape (B, classes) with at least 2 classes, got "
            f"{tuple(logits.shape)}"
        )
    if velocity.shape != logits.shape:
        raise ValueError(
            f"velocity must have the shape of logits {tuple(logits.shape)}, got "
            f"{tuple(velocity.shape)}"
        )
    if labels is None:
        return
    if not isinstance(labels, Tensor) or labels.dtype not in (torch.int64, torch.int32):
        raise TypeError(
            f"labels must be a tensor of integer labels, got {labels!r:.60}"
        )
    if labels.shape != logits.shape[:1]:
        raise ValueError(
            f"labels must hold one label per row, shape ({logits.shape[0]},), got "
            f"{tuple(labels.shape)}"
        )
    if labels.numel() and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(
            f"labels must lie in 0 … {logits.shape[1] - 1}, got values from "
            f"{int(labels.min())} to {int(labels.max())}"
        )


def softmax_cumulants(
    logits: Tensor, velocity: Tensor, order: int, labels: Tensor | None = None
) -> Tensor:
    """Derivatives of the cross-entropy along a line of affine logits.

    For ``ℓ(t) = logsumexp(z + t v) − (z_y + t v_y)`` returns ``dᵏℓ/dtᵏ`` at
    ``t = 0`` for ``k = 0 … order``: the loss itself for ``k = 0`` and the k-th
    cumulant of ``D = v_C − v_y``, ``C ~ softmax(z)``, for ``k ≥ 1``. Without
    ``labels`` the function is ``logsumexp(z + t v)`` and the cumulants are those
    of ``v_C``. (The two differ only at ``k = 0`` and ``k = 1``: cumulants of
    order two and more do not see a shift.)

    The cumulants come from the moments about the likeliest class,
    ``m_j = Σ_c p_c (v_c − v_top)^j``, by the recursion
    ``κ_n = m_n − Σ_{j=1}^{n−1} C(n−1, j−1) κ_j m_{n−j}``. No derivative is
    taken, so this is an independent check of Taylor mode.

    Parameters
    ----------
    logits:
        The logits ``z`` at ``t = 0``, shape ``(B, classes)``.
    velocity:
        Their rate of change ``v = J u`` along the line, shape ``(B, classes)``.
    order:
        The highest order ``k``.
    labels:
        Integer labels ``y``, shape ``(B,)``, or ``None``.

    Returns
    -------
    Tensor of shape ``(order + 1, B)``: raw derivatives (not divided by ``k!``),
    in the dtype of ``logits``.

    See chapter 6, MNIST.
    """
    _check_logits(logits, velocity, labels)
    if isinstance(order, bool) or not isinstance(order, int) or order < 0:
        raise ValueError(f"order must be a non-negative int, got {order!r}")
    velocity = velocity.to(logits.dtype)
    rows = torch.arange(logits.shape[0], device=logits.device)
    value = torch.logsumexp(logits, dim=1)
    if labels is not None:
        value = value - logits[rows, labels]
    if order == 0:
        return value[None]

    p = torch.softmax(logits, dim=1)  # (B, C)
    shift = velocity[rows, logits.argmax(1)]  # (B,): v of the likeliest class
    a = velocity - shift[:, None]  # (B, C): D up to a shift, 0 at the top class
    moments = []  # m_1 … m_order, each (B,)
    power = torch.ones_like(a)
    for _ in range(order):
        power = power * a
        moments.append((p * power).sum(1))
    cumulants: list[Tensor] = []
    for n in range(1, order + 1):
        k = moments[n - 1]
        for j in range(1, n):
            k = k - math.comb(n - 1, j - 1) * cumulants[j - 1] * moments[n - j - 1]
        cumulants.append(k)
    offset = shift if labels is None else shift - velocity[rows, labels]
    cumulants[0] = cumulants[0] + offset
    return torch.stack([value, *cumulants])  # (order + 1, B)


@dataclass(frozen=True, eq=False)
class CumulantSplit:
    """The result of :func:`cumulant_split`: λ = scale term + shape term.

    Attributes
    ----------
    lam : float
        Curvature rate of the cumulants: slope of the mean ``log |κ_n|`` over the
        rows against ``n`` (raw sizes).
    scale : float
        Mean over the rows of ``log s``, ``s = ‖v − v̄‖`` (the velocity's spread
        over the classes).
    shape : float
        ``lam − scale``: the slope of the mean ``log |κ_n| − n log s``, set by
        the softmax probabilities and the direction of ``v − v̄``.
    orders : numpy.ndarray
        The orders ``n``.
    mean_log : numpy.ndarray
        Mean ``log |κ_n|`` per order (after the clamp).
    mean_log_shape : numpy.ndarray
        ``mean_log − n · scale``: the same with the scale removed.
    fit : RateFit
        The straight-line fit behind ``lam``.
    log_abs : numpy.ndarray
        ``log |κ_n|`` of every row after the clamp, shape ``(orders, rows)``.
    log_scale : numpy.ndarray
        ``log s`` of every row, shape ``(rows,)``.
    margin : numpy.ndarray
        Logit margin of every row, ``z_y − max_{c ≠ y} z_c`` (negative where the
        row is misclassified), shape ``(rows,)``.
    clamped : numpy.ndarray
        Which ``|κ_n|`` were below the clamp and raised to it, ``(orders, rows)``.
    """

    lam: float
    scale: float
    shape: float
    orders: np.ndarray
    mean_log: np.ndarray
    mean_log_shape: np.ndarray
    fit: RateFit
    log_abs: np.ndarray
    log_scale: np.ndarray
    margin: np.ndarray
    clamped: np.ndarray

    @property
    def n_clamped(self) -> int:
        """How many ``|κ_n|`` were raised to the clamp."""
        return int(self.clamped.sum())

    @property
    def n_values(self) -> int:
        """How many ``|κ_n|`` there are: orders × rows."""
        return int(self.clamped.size)

    def restrict(self, rows: np.ndarray | Tensor) -> CumulantSplit:
        """The same split over a subset of the rows (a boolean mask or indices)."""
        rows = np.asarray(rows)
        if rows.dtype == bool and rows.shape != self.margin.shape:
            raise ValueError(
                f"a row mask must have shape {self.margin.shape}, got {rows.shape}"
            )
        picked = np.arange(self.margin.size)[rows]
        if picked.size == 0:
            raise ValueError("rows selects no row")
        return _split(
            self.orders,
            self.log_abs[:, picked],
            self.log_scale[picked],
            self.margin[picked],
            self.clamped[:, picked],
        )

    def __str__(self) -> str:
        return (
            f"λ = {self.lam:.4f} = scale {self.scale:.4f} + shape "
            f"{self.shape:.4f} ({self.margin.size} rows, {self.n_clamped} of "
            f"{self.n_values} values clamped)"
        )


def _split(
    orders: np.ndarray,
    log_abs: np.ndarray,
    log_scale: np.ndarray,
    margin: np.ndarray,
    clamped: np.ndarray,
) -> CumulantSplit:
    mean_log = log_abs.mean(1)
    scale = float(log_scale.mean())
    fit = fit_rate(np.exp(mean_log), orders)
    return CumulantSplit(
        lam=fit.lam,
        scale=scale,
        shape=fit.lam - scale,
        orders=orders,
        mean_log=mean_log,
        mean_log_shape=mean_log - orders * scale,
        fit=fit,
        log_abs=log_abs,
        log_scale=log_scale,
        margin=margin,
        clamped=clamped,
    )


def cumulant_split(
    logits: Tensor,
    velocity: Tensor,
    labels: Tensor,
    orders: Sequence[int] = (1, 2, 3, 4),
    clamp: float = 1e-12,
) -> CumulantSplit:
    """Split the curvature rate of the softmax cumulants into scale and shape.

    With ``s = ‖v − v̄‖`` (``v̄`` the mean of ``v`` over the classes) and
    ``W = D / s``, each cumulant factors as ``κ_n(D) = sⁿ κ_n(W)``, so::

        mean log |κ_n(D)| = n · mean log s + mean log |κ_n(W)|

    and the slope λ over the orders is ``mean log s`` (the scale term) plus the
    slope of ``mean log |κ_n(W)|`` (the shape term). ``W`` depends only on the
    softmax probabilities and the direction of ``v − v̄``. For a ReLU network
    λ here equals the network's curvature rate of the loss
    (:func:`crbook.curvature_rate`) on the same rows and directions.

    Parameters
    ----------
    logits, velocity:
        ``z`` and ``v = J u``, shape ``(rows, classes)``; one row per point and
        direction.
    labels:
        Integer labels, shape ``(rows,)``.
    orders:
        The orders ``n`` (positive, at least two distinct).
    clamp:
        ``|κ_n|`` below this is raised to it before the log, as in
        :func:`crbook.curvature_rate`; the shape term is computed from the
        clamped values, so ``lam = scale + shape`` always holds.

    Returns
    -------
    CumulantSplit

    Raises
    ------
    ValueError
        On bad shapes or orders, or when a row of ``v`` has no spread over the
        classes (``s = 0``, so the loss does not change along the line).

    See chapter 6, MNIST.
    """
    orders = list(orders)
    bad = [n for n in orders if isinstance(n, bool) or not isinstance(n, int)]
    if bad or not orders or min(orders) < 1:
        raise ValueError(f"orders must be positive ints, got {orders}")
    if len(set(orders)) < 2:
        raise ValueError(f"orders must hold at least 2 distinct values, got {orders}")
    if not clamp > 0:
        raise ValueError(f"clamp must be positive, got {clamp}")
    if labels is None:
        raise TypeError("labels are required: the split is of the per-example loss")
    d = softmax_cumulants(logits, velocity, max(orders), labels)
    size = d[orders].abs().double()  # (orders, rows)
    spread = (velocity - velocity.mean(1, keepdim=True)).double().norm(dim=1)
    if not bool((spread > 0).all()):
        rows = (spread == 0).nonzero().flatten().tolist()
        raise ValueError(
            f"velocity has no spread over the classes in rows {rows[:10]}: the loss "
            "is constant along those lines"
        )
    logits64 = logits.double()
    rows = torch.arange(logits.shape[0], device=logits.device)
    own = logits64[rows, labels]
    others = logits64.clone()
    others[rows, labels] = -torch.inf
    margin = own - others.amax(1)
    return _split(
        np.asarray(orders, dtype=float),
        size.clamp_min(clamp).log().cpu().numpy(),
        spread.log().cpu().numpy(),
        margin.cpu().numpy(),
        (size < clamp).cpu().numpy(),
    )
