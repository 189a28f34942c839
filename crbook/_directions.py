"""The worst direction: the unit ``u`` that maximises ``|Dⁿℓ(x)[u, …, u]|``.

The paper measures the derivatives of the loss along random directions. The
largest value over all unit directions is the *spectral norm* of the symmetric
derivative tensor ``Dⁿℓ(x)``, and a direction that attains it is a worst
direction. It is found by a higher-order power iteration. The function
``d(u) = Dⁿℓ(x)[u, …, u]`` is a homogeneous polynomial of degree ``n`` in ``u``;
its gradient is ``g(u) = n · Dⁿℓ(x)[u, …, u, ·]`` (obtained here by autograd
through :func:`crbook.directional_derivatives`), and ``g · u = n d(u)``. The
shifted power step

    u ← normalise(s · g(u) + α u),     s = sign d(u),   α ≥ 0,

has as fixed points the directions where ``g`` is parallel to ``u``: the
stationary points of ``|d|`` on the unit sphere (Z-eigenvectors of the tensor).
With ``α = 0`` and ``n = 2`` it is the ordinary power iteration on the Hessian;
Kolda and Mayo (2011) showed that a large enough fixed shift makes it monotone for
any symmetric tensor, at the price of slow steps.

Every shifted step, for every ``α``, lands on the great circle through ``u`` and
``g``. So instead of guessing a shift, each iteration here searches that circle
exactly: along ``u(θ) = cos θ u + sin θ w``, with ``w`` the unit component of
``g`` orthogonal to ``u``, ``d(u(θ))`` is a homogeneous trigonometric polynomial
of degree ``n``, fixed by its values at ``n + 1`` angles (one batched Taylor-mode
pass), and its largest ``|d|`` is found on a fine grid of angles refined three
times. The step is kept only when the recomputed ``|d|`` does not decrease. Hence
each step gains at least as much as the shifted power step with the best shift,
``|d|`` never decreases, and the iteration stops where ``g`` is parallel to ``u``.
When ``x`` has two coordinates the circle is the whole sphere, and one step finds
the global maximum.

See chapter 4, λ of a network.

Limitations
-----------
The iteration finds a local maximum of ``|d|`` on the sphere, not necessarily the
global one: several random starts are run and the best is kept, but nothing
proves that the best is global (for ``n = 2`` the local maxima are the two
extreme eigenvectors, and a few starts find the larger one in practice). Each
iteration costs a Taylor-mode pass over ``n + 2`` copies of the batch and one
backward pass, per start; one order is handled per call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crbook._curvature import _check_labels, _check_points, unit_directions
from crbook._taylor import directional_derivatives

__all__ = ["WorstDirection", "worst_direction"]

_QUANTITIES = ("loss", "logit", "output")
_GRID = 256  # angles in [0, π) for the first search on the circle
_REFINE = 3  # refinements, each 16 times finer, around the best angle


@dataclass(frozen=True, eq=False)
class WorstDirection:
    """The result of :func:`worst_direction`.

    Attributes
    ----------
    directions : Tensor
        Unit directions ``u``, shape ``(B, ...)`` like ``x``. For odd orders each
        is oriented so that its value is positive.
    values : Tensor
        ``Dⁿℓ(x)[u, …, u]`` along each direction, shape ``(B,)`` (raw: not divided
        by ``n!``).
    iterations : Tensor
        Iterations of the kept start until it stopped, int64, ``(B,)``: until
        its residual fell below ``tol`` or no step increased ``|d|`` any more
        (``iterations`` when neither happened).
    converged : Tensor
        True where the final residual is below ``tol``, bool, ``(B,)``.
    residual : Tensor
        ``|g − (g·u) u| / |g·u|`` at the final direction, ``(B,)``: the sine of
        the angle between the gradient and ``u``, zero at a stationary point.
    history : Tensor
        ``|d|`` of the kept start after each iteration, ``(iterations + 1, B)``;
        row 0 is its random start. Non-decreasing down each column.
    order : int
        The order ``n``.
    starts : int
        The number of random starts per point.
    """

    directions: Tensor
    values: Tensor
    iterations: Tensor
    converged: Tensor
    residual: Tensor
    history: Tensor
    order: int
    starts: int

    def __repr__(self) -> str:
        done = int(self.converged.sum())
        return (
            f"WorstDirection(order {self.order}, {self.values.numel()} points, "
            f"{self.starts} starts: {done} converged, at most "
            f"{int(self.iterations.max())} iterations, largest residual "
            f"{float(self.residual.max()):.1e})"
        )


def _check(model, x, y, order, iterations, starts, tol, quantity) -> None:
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    _check_points(x)
    if quantity not in _QUANTITIES:
        raise ValueError(f"quantity must be one of {_QUANTITIES}, got {quantity!r}")
    if quantity == "output":
        if y is not None:
            raise ValueError("quantity='output' uses no labels: y must be None")
    elif y is not None:
        _check_labels(x, y)
    for name, value, low in (
        ("order", order, 1),
        ("iterations", iterations, 1),
        ("starts", starts, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise ValueError(f"tol must be a positive number, got {tol!r}")


def worst_direction(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None,
    order: int,
    iterations: int = 50,
    generator: torch.Generator | None = None,
    *,
    starts: int = 4,
    tol: float | None = None,
    quantity: str = "loss",
) -> WorstDirection:
    """The unit direction of largest ``|Dⁿℓ(x)[u, …, u]|`` at each point.

    Runs the monotone power iteration of the module docstring from ``starts``
    random unit directions per point and keeps, per point, the start that ends
    with the largest ``|d|``. ``|d|`` at the result is the spectral norm of the
    symmetric tensor ``Dⁿℓ(x)`` when the global maximum was found.

    Parameters
    ----------
    model:
        A classifier returning logits ``(B, classes)``; with
        ``quantity="output"``, any callable returning one value per example,
        ``(B,)``. A module is put in evaluation mode and restored afterwards.
    x:
        Points, shape ``(B, ...)``.
    y:
        Integer labels ``(B,)``; ``None`` uses the predicted labels (and must be
        ``None`` for ``quantity="output"``).
    order:
        The order ``n >= 1``. For ``n = 1`` the answer is the normalised
        gradient, found in one iteration.
    iterations:
        Largest number of iterations.
    generator:
        Random generator for the starting directions.
    starts:
        Random starts per point.
    tol:
        Convergence threshold on the residual ``|g − (g·u) u| / |g·u|``. Default
        1e-3 for float32 (rounding in the gradient leaves residuals of about
        1e-4, where ``|d|`` has settled to about six digits) and 1e-7 for
        float64.
    quantity:
        ``"loss"`` (per-example cross-entropy, as in
        :func:`crbook.curvature_rate`), ``"logit"`` (logit of the labelled class)
        or ``"output"`` (the model's own per-example output).

    Returns
    -------
    WorstDirection

    See chapter 4, λ of a network.
    """
    if tol is None and isinstance(x, Tensor) and x.is_floating_point():
        tol = 1e-7 if torch.finfo(x.dtype).eps < 1e-10 else 1e-3
    _check(model, x, y, order, iterations, starts, tol, quantity)
    is_module = isinstance(model, nn.Module)
    was_training = model.training if is_module else False
    if is_module:
        model.eval()
    try:
        return _iterate(
            model, x, y, order, iterations, generator, starts, tol, quantity
        )
    finally:
        if is_module:
            model.train(was_training)


def _quantity(model, quantity: str, labels: Tensor | None):
    """The per-example function ``z -> (rows,)`` for labels repeated to fit."""

    def f(z: Tensor) -> Tensor:
        if quantity == "output":
            return model(z)
        logits = model(z)
        ys = labels.repeat(z.shape[0] // labels.shape[0])
        if quantity == "loss":
            return F.cross_entropy(logits, ys, reduction="none")
        return logits[torch.arange(ys.shape[0], device=ys.device), ys]

    return f


def _monomials(theta: Tensor, order: int) -> Tensor:
    """``cos^(n-k) θ · sin^k θ`` for ``k = 0 … n``: shape ``(*θ.shape, n + 1)``."""
    k = torch.arange(order + 1, dtype=theta.dtype, device=theta.device)
    c, s = theta.cos().unsqueeze(-1), theta.sin().unsqueeze(-1)
    return c ** (order - k) * s**k


def _slopes(theta: Tensor, order: int) -> Tensor:
    """Derivatives in ``θ`` of :func:`_monomials`, same shape."""
    k = torch.arange(order + 1, dtype=theta.dtype, device=theta.device)
    c, s = theta.cos().unsqueeze(-1), theta.sin().unsqueeze(-1)
    a = order - k  # the power of cos; exponents clamped where the factor is 0
    return -a * c ** (a - 1).clamp_min(0) * s ** (k + 1) + k * c ** (a + 1) * s ** (
        k - 1
    ).clamp_min(0)


def _best_angle(coeffs: Tensor, order: int) -> Tensor:
    """The angle in ``[0, π)`` of largest ``|p(θ)|``, per column of ``coeffs``.

    ``p(θ) = Σ_k coeffs[k] cos^(n-k) θ sin^k θ``; ``coeffs`` is ``(n + 1, M)``,
    float64. Since ``p(θ + π) = ±p(θ)``, half a turn covers every direction. A
    grid, refined around its best angle, brackets the maximum; secant steps on
    ``p'(θ) = 0`` then place it to rounding accuracy.
    """
    step = math.pi / _GRID
    grid = torch.arange(_GRID, dtype=coeffs.dtype, device=coeffs.device) * step
    values = _monomials(grid, order) @ coeffs  # (G, M)
    best = grid[values.abs().argmax(0)]  # (M,)
    offsets = torch.linspace(-1.0, 1.0, 33, dtype=coeffs.dtype, device=coeffs.device)
    for _ in range(_REFINE):
        trial = best[None, :] + step * offsets[:, None]  # (33, M)
        values = (_monomials(trial, order) * coeffs.T[None]).sum(-1)  # (33, M)
        best = trial.gather(0, values.abs().argmax(0)[None])[0]
        step /= 16

    def value(t: Tensor) -> Tensor:
        return (_monomials(t, order) * coeffs.T).sum(-1)

    def slope(t: Tensor) -> Tensor:
        return (_slopes(t, order) * coeffs.T).sum(-1)

    a, b = best, best + step
    fa, fb = slope(a), slope(b)
    for _ in range(3):
        gap = fb - fa
        ok = gap != 0
        c = torch.where(ok, b - fb * (b - a) / torch.where(ok, gap, 1.0), b)
        a, fa, b, fb = b, fb, c, slope(c)
    # Keep the secant's angle only where it is at least as good as the grid's.
    return torch.where(value(b).abs() >= value(best).abs(), b, best)


def _iterate(model, x, y, order, iterations, generator, starts, tol, quantity):
    count = x.shape[0]
    shape = (-1,) + (1,) * (x.dim() - 1)
    xs = x.detach().repeat((starts,) + (1,) * (x.dim() - 1))  # (S*B, ...)
    rows = xs.shape[0]
    labels = None
    if quantity != "output":
        with torch.no_grad():
            labels = model(x).argmax(1) if y is None else y.to(x.device)
    f = _quantity(model, quantity, labels)

    # d(u(θ_j)) at θ_j = jπ/(n+1) fixes the n + 1 coefficients of p(θ).
    angles = torch.arange(order + 1, dtype=torch.float64) * math.pi / (order + 1)
    solve = torch.linalg.inv(_monomials(angles, order)).to(x.device)
    angles = angles.to(x.device, x.dtype)
    xs_plane = xs.repeat((order + 1,) + (1,) * (x.dim() - 1))  # ((n+1)*S*B, ...)

    def flat_dot(a: Tensor, b: Tensor) -> Tensor:
        return (a.flatten(1) * b.flatten(1)).sum(1)

    def value_and_gradient(u: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            u = u.detach().requires_grad_(True)
            d = directional_derivatives(f, xs, u, order)[order]  # (S*B,)
            if d.shape != (rows,):
                raise ValueError(
                    "the differentiated quantity must have one value per example, "
                    f"shape ({rows},), got {tuple(d.shape)}"
                )
            (g,) = torch.autograd.grad(d.sum(), u)
        return d.detach(), g.detach()

    def split(u: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        """The unit tangent ``w`` along ``g`` and the residual at ``u``."""
        along = flat_dot(g, u)  # n · d(u), by Euler's theorem for homogeneous d
        tangent = g - along.view(shape) * u
        size = tangent.flatten(1).norm(dim=1)
        tiny = torch.finfo(u.dtype).tiny
        w = tangent / size.clamp_min(tiny).view(shape)
        return w, size / along.abs().clamp_min(tiny)

    u = unit_directions(xs.shape, dtype=x.dtype, device=x.device, generator=generator)
    d, g = value_and_gradient(u)
    w, residual = split(u, g)
    done = residual < tol  # converged, or no step increases |d| any more
    used = torch.full((rows,), iterations, dtype=torch.int64, device=x.device)
    used[done] = 0
    history = [d.abs()]
    for step in range(1, iterations + 1):
        active = ~done
        if not active.any():
            history.append(d.abs())
            continue
        c = angles.cos().view((-1, 1) + (1,) * (x.dim() - 1))
        s = angles.sin().view((-1, 1) + (1,) * (x.dim() - 1))
        plane = (c * u[None] + s * w[None]).flatten(0, 1)  # ((n+1)*S*B, ...)
        with torch.no_grad():
            samples = directional_derivatives(f, xs_plane, plane, order)[order]
        coeffs = solve @ samples.view(order + 1, rows).double()  # (n+1, S*B)
        theta = _best_angle(coeffs, order).to(x.dtype)
        proposal = theta.cos().view(shape) * u + theta.sin().view(shape) * w
        proposal = proposal / proposal.flatten(1).norm(dim=1).view(shape)
        d_new, g_new = value_and_gradient(proposal)
        accept = active & (d_new.abs() >= d.abs())
        u = torch.where(accept.view(shape), proposal, u)
        d = torch.where(accept, d_new, d)
        g = torch.where(accept.view(shape), g_new, g)
        w, residual = split(u, g)
        newly = active & ((residual < tol) | ~accept)
        used[newly] = step
        done = done | newly
        history.append(d.abs())
    converged = residual < tol

    # Keep, for each point, the start with the largest |d|.
    best = d.abs().view(starts, count).argmax(0)  # (B,)
    pick = best * count + torch.arange(count, device=x.device)
    u, d = u[pick], d[pick]
    if order % 2 == 1:  # d(-u) = -d(u): orient to a positive value
        flip = torch.where(d < 0, -1.0, 1.0).to(x.dtype)
        u, d = u * flip.view(shape), d * flip
    return WorstDirection(
        directions=u,
        values=d,
        iterations=used[pick],
        converged=converged[pick],
        residual=residual[pick],
        history=torch.stack(history)[:, pick],  # (iterations + 1, B)
        order=order,
        starts=starts,
    )
