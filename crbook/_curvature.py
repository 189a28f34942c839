"""The curvature rate of a classifier, measured the way the source paper does.

For each test point ``x`` and each of ``K`` random unit directions ``u``, take the
per-example cross-entropy ``ℓ(x + t u)`` with the point's label and its derivatives
``d_n = dⁿℓ/dtⁿ`` at ``t = 0``. Average ``log |d_n|`` over points and directions for
each order ``n``; the least-squares slope of those means against ``n`` is λ (raw
normalisation: the derivatives are not divided by ``n!``). The derivatives come
from one Taylor-mode pass per direction.

See chapter 4, λ of a network.

Limitations
-----------
Values ``|d_n|`` below ``clamp`` (1e-12, the paper's choice) are raised to it before
the log; the result counts how many were, since many clamped values bias λ. Random
directions measure an average, not the steepest direction: in high dimension a
random unit direction is nearly orthogonal to the loss gradient, so λ measured
this way can differ in size, and even in sign, from λ along the worst direction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crbook._rate import RateFit, fit_rate
from crbook._taylor import directional_derivatives

_QUANTITIES = ("loss", "logit")


@dataclass(frozen=True, eq=False)
class CurvatureRate:
    """The result of :func:`curvature_rate`.

    Attributes
    ----------
    lam : float
        The curvature rate λ: slope of the mean ``log |d_n|`` against ``n``.
    orders : numpy.ndarray
        The orders ``n`` used.
    mean_log : numpy.ndarray
        The mean of ``log |d_n|`` over points and directions, one per order.
    fit : RateFit
        The straight-line fit behind ``lam`` (intercept, residuals, stderr).
    lam_per_direction : numpy.ndarray
        λ from each direction alone (the ``K`` slopes, averaging over points).
    lam_spread : float
        Standard deviation of ``lam_per_direction`` (0 for a single direction).
    n_clamped : int
        How many ``|d_n|`` were below ``clamp`` and raised to it.
    n_values : int
        How many ``|d_n|`` there were: points × directions × orders.
    n_points : int
        Number of points.
    directions : int
        Number of directions per point.
    """

    lam: float
    orders: np.ndarray
    mean_log: np.ndarray
    fit: RateFit
    lam_per_direction: np.ndarray
    lam_spread: float
    n_clamped: int
    n_values: int
    n_points: int
    directions: int

    def __str__(self) -> str:
        stderr = "" if self.fit.stderr is None else f" ± {self.fit.stderr:.3f}"
        return (
            f"λ = {self.lam:.4f}{stderr} over orders {self.orders.tolist()} "
            f"({self.n_points} points × {self.directions} directions; spread over "
            f"directions {self.lam_spread:.3f}; {self.n_clamped} of {self.n_values} "
            "values clamped)"
        )


def unit_directions(
    shape: Sequence[int],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Gaussian directions normalised to unit length over all but the first axis."""
    u = torch.randn(tuple(shape), dtype=dtype, device=device, generator=generator)
    norms = u.flatten(1).norm(dim=1).view((-1,) + (1,) * (u.dim() - 1))
    return u / norms


def _check_points(x: Tensor) -> None:
    """Raise unless ``x`` is a non-empty floating batch of shape ``(B, ...)``."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise TypeError(
            "x must be a floating tensor of shape (B, ...) with a batch axis, got "
            f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}"
        )
    if x.shape[0] == 0:
        raise ValueError("x holds no points")


def _check_labels(x: Tensor, y: Tensor) -> None:
    """Raise unless ``y`` holds one integer label per point of ``x``."""
    if not isinstance(y, Tensor) or y.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"y must be a tensor of integer labels, got {y!r:.60}")
    if y.shape != x.shape[:1]:
        raise ValueError(
            f"y must hold one label per point, shape ({x.shape[0]},), got "
            f"{tuple(y.shape)}"
        )


def _check(x: Tensor, y: Tensor | None, orders: Sequence[int], directions: int):
    _check_points(x)
    if y is not None:
        _check_labels(x, y)
    bad = [n for n in orders if isinstance(n, bool) or not isinstance(n, int)]
    if bad or any(n < 1 for n in orders):
        raise ValueError(f"orders must be positive ints, got {list(orders)}")
    if len(set(orders)) < 2:
        raise ValueError(
            f"orders must hold at least 2 distinct values, got {list(orders)}"
        )
    if isinstance(directions, bool) or not isinstance(directions, int):
        raise TypeError(f"directions must be an int, got {directions!r}")
    if directions < 1:
        raise ValueError(f"directions must be at least 1, got {directions}")


def _slope(orders: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Least-squares slopes of the columns of ``values`` against ``orders``."""
    centred = orders - orders.mean()
    return centred @ (values - values.mean(0)) / (centred @ centred)


def curvature_rate(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None,
    orders: Sequence[int] = (1, 2, 3, 4),
    directions: int = 2,
    generator: torch.Generator | None = None,
    *,
    quantity: str = "loss",
    clamp: float = 1e-12,
    method: str = "taylor",
    compile: bool = False,
) -> CurvatureRate:
    """The paper's curvature rate λ of ``model`` at the points ``x``.

    Parameters
    ----------
    model:
        A classifier returning logits of shape ``(B, classes)``. It is put in
        evaluation mode for the measurement and restored afterwards.
    x:
        Points, shape ``(B, ...)``.
    y:
        Integer labels, shape ``(B,)``; ``None`` uses the model's predicted labels.
    orders:
        Derivative orders ``n`` (positive, at least two distinct).
    directions:
        Random unit directions per point (``K``); each is used for every order.
    generator:
        Random generator for the directions (on ``x``'s device), for
        reproducibility.
    quantity:
        ``"loss"``: the per-example cross-entropy (the paper's choice);
        ``"logit"``: the logit of the labelled class.
    clamp:
        ``|d_n|`` below this is raised to it before the log, and counted.
    method:
        ``"taylor"`` or ``"autograd"``, passed to
        :func:`crbook.directional_derivatives`.
    compile:
        Compile the Taylor pass (:func:`crbook.directional_derivatives`'s
        ``compile``): seconds for the first call of each order, then faster
        calls at deep orders; worth it when λ is measured many times.

    Returns
    -------
    CurvatureRate

    See chapter 4, λ of a network.
    """
    orders = list(orders)
    _check(x, y, orders, directions)
    if quantity not in _QUANTITIES:
        raise ValueError(f"quantity must be one of {_QUANTITIES}, got {quantity!r}")
    if not clamp > 0:
        raise ValueError(f"clamp must be positive, got {clamp}")

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            labels = model(x).argmax(1) if y is None else y.to(x.device)
        count = x.shape[0]
        u = unit_directions(
            (directions * count,) + tuple(x.shape[1:]),
            dtype=x.dtype,
            device=x.device,
            generator=generator,
        )  # (K*B, ...): direction k of point i is row k*B + i
        xs = x.repeat((directions,) + (1,) * (x.dim() - 1))
        ys = labels.repeat(directions)

        def f(z):
            logits = model(z)
            if quantity == "loss":
                return F.cross_entropy(logits, ys, reduction="none")
            return logits[torch.arange(ys.shape[0], device=ys.device), ys]

        with torch.no_grad():
            d = directional_derivatives(
                f, xs, u, max(orders), method=method, compile=compile
            )
    finally:
        model.train(was_training)

    size = d[orders].abs().double().view(len(orders), directions, count)
    clamped = size < clamp
    logs = size.clamp_min(clamp).log().cpu().numpy()  # (orders, K, B)
    n = np.asarray(orders, dtype=float)
    mean_log = logs.mean(axis=(1, 2))
    fit = fit_rate(np.exp(mean_log), n)
    per_direction = _slope(n, logs.mean(axis=2))
    spread = float(per_direction.std(ddof=1)) if directions > 1 else 0.0
    return CurvatureRate(
        lam=fit.lam,
        orders=n,
        mean_log=mean_log,
        fit=fit,
        lam_per_direction=per_direction,
        lam_spread=spread,
        n_clamped=int(clamped.sum()),
        n_values=int(size.numel()),
        n_points=count,
        directions=directions,
    )
