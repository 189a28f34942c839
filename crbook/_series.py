"""Arithmetic on truncated Taylor series with tensor coefficients.

A series is a tensor ``x`` of shape ``(d + 1, *S)``: ``x[k]`` is the coefficient of
``t**k`` of an elementwise function of ``t``, and the coefficients above the degree
``d`` are zero. Every function here returns the series of its result truncated after
``t**order``. The elementary functions follow from the ordinary differential equation
each one satisfies (``y' = y x'`` for ``y = exp(x)``, ``y' = (1 - y**2) x'`` for
``tanh``, ...): matching the coefficients of ``t**(k - 1)`` gives ``y[k]`` from
``y[0], ..., y[k - 1]`` in ``O(k)`` operations, ``O(order**2)`` in all. This is
univariate Taylor mode (Griewank and Walther, *Evaluating Derivatives*, chapter 13).

See chapter 1, Differentiation dynamics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def degree(x: Tensor) -> int:
    """The degree of the series ``x``: its number of stored coefficients minus one."""
    return x.shape[0] - 1


def _dot(x: Tensor, zs: Sequence[Tensor], k: int, scale: float = 1.0) -> Tensor:
    """``scale * sum_{j=1}^{min(k, deg x)} j * x[j] * zs[k - j]``.

    ``zs`` holds at least ``k`` terms. The sum accumulates in place into a fresh
    tensor, which autograd allows, so no stacked copies of ``zs`` are made.
    """
    hi = min(k, degree(x))
    if hi == 0:
        return torch.zeros_like(zs[0])
    acc = torch.mul(x[1], zs[k - 1])
    for j in range(2, hi + 1):
        acc.addcmul_(x[j], zs[k - j], value=j)
    return acc.mul_(scale) if scale != 1.0 else acc


def _plain_dot(x: Tensor, zs: Sequence[Tensor], k: int) -> Tensor:
    """``sum_{j=1}^{min(k, deg x)} x[j] * zs[k - j]`` (no weights ``j``)."""
    hi = min(k, degree(x))
    if hi == 0:
        return torch.zeros_like(zs[0])
    acc = torch.mul(x[1], zs[k - 1])
    for j in range(2, hi + 1):
        acc.addcmul_(x[j], zs[k - j])
    return acc


def _square_coefficient(ys: Sequence[Tensor], k: int) -> Tensor:
    """Coefficient ``k`` of the square of the series ``ys`` (which holds ``k + 1``)."""
    acc = torch.mul(ys[0], ys[k])
    for i in range(1, (k + 1) // 2):
        acc.addcmul_(ys[i], ys[k - i])
    acc.mul_(2.0)
    if k % 2 == 0:
        acc.addcmul_(ys[k // 2], ys[k // 2])
    return acc


def pad(x: Tensor, new_degree: int) -> Tensor:
    """``x`` with zero coefficients appended up to ``new_degree``."""
    missing = new_degree - degree(x)
    if missing <= 0:
        return x
    zeros = x.new_zeros((missing,) + tuple(x.shape[1:]))
    return torch.cat([x, zeros])


def mul(a: Tensor, b: Tensor, order: int) -> Tensor:
    """The Cauchy product ``a * b`` truncated after ``t**order``.

    ``a`` and ``b`` must broadcast against each other after their leading axis.
    """
    da, db = degree(a), degree(b)
    if da == 0:
        return a[0] * b
    if db == 0:
        return a * b[0]
    top = min(order, da + db)
    brev = b.flip(0)
    terms = []
    for k in range(top + 1):
        lo, hi = max(0, k - db), min(k, da)
        lo_b = db - k + lo
        terms.append((a[lo : hi + 1] * brev[lo_b : lo_b + hi - lo + 1]).sum(0))
    return torch.stack(terms)


def div(a: Tensor, b: Tensor, order: int) -> Tensor:
    """The series of ``a / b``: ``y[k] = (a[k] - sum_j b[j] y[k - j]) / b[0]``."""
    if degree(b) == 0:
        return a / b[0]
    top = order
    inv_b0 = 1.0 / b[0]
    shape = torch.broadcast_shapes(a.shape[1:], b.shape[1:])
    ys = [(a[0] * inv_b0).expand(shape)]
    for k in range(1, top + 1):
        ak = a[k] if k <= degree(a) else 0.0
        ys.append((ak - _plain_dot(b, ys, k)) * inv_b0)
    return torch.stack(ys)


def exp(x: Tensor, order: int) -> Tensor:
    """``exp(x)``: from ``y' = y x'``."""
    ys = [torch.exp(x[0])]
    if degree(x) == 0:
        return ys[0][None]
    for k in range(1, order + 1):
        ys.append(_dot(x, ys, k, 1.0 / k))
    return torch.stack(ys)


def log(x: Tensor, order: int) -> Tensor:
    """``log(x)``: from ``x y' = x'``."""
    y0 = torch.log(x[0])
    if degree(x) == 0:
        return y0[None]
    inv_x0 = 1.0 / x[0]
    ys, wys = [y0], [torch.zeros_like(y0)]  # wys[j] = j * ys[j]
    for k in range(1, order + 1):
        xk = x[k] if k <= degree(x) else 0.0
        yk = (xk - _plain_dot(x, wys, k) / k) * inv_x0
        ys.append(yk)
        wys.append(k * yk)
    return torch.stack(ys)


def sin_cos(x: Tensor, order: int) -> tuple[Tensor, Tensor]:
    """``(sin(x), cos(x))``: from ``s' = c x'`` and ``c' = -s x'``."""
    ss, cs = [torch.sin(x[0])], [torch.cos(x[0])]
    if degree(x) == 0:
        return ss[0][None], cs[0][None]
    for k in range(1, order + 1):
        ss.append(_dot(x, cs, k, 1.0 / k))
        cs.append(_dot(x, ss, k, -1.0 / k))
    return torch.stack(ss), torch.stack(cs)


def _riccati(x: Tensor, order: int, y0: Tensor, shift: bool) -> Tensor:
    """Series of ``y`` with ``y' = z x'`` and ``z = (1 if shift else y) - y**2``.

    ``tanh`` is ``z = 1 - y**2``; the logistic sigmoid is ``z = y - y**2``.
    """
    ys = [y0]
    zs = [(1.0 if shift else y0) - y0 * y0]
    for k in range(1, order + 1):
        ys.append(_dot(x, zs, k, 1.0 / k))
        if k < order:
            zk = -_square_coefficient(ys, k)
            zs.append(zk if shift else ys[k] + zk)
    return torch.stack(ys)


def tanh(x: Tensor, order: int) -> Tensor:
    """``tanh(x)``: from ``y' = (1 - y**2) x'``."""
    y0 = torch.tanh(x[0])
    if degree(x) == 0:
        return y0[None]
    return _riccati(x, order, y0, shift=True)


def sigmoid(x: Tensor, order: int) -> Tensor:
    """The logistic function: from ``y' = y (1 - y) x'``."""
    y0 = torch.sigmoid(x[0])
    if degree(x) == 0:
        return y0[None]
    return _riccati(x, order, y0, shift=False)


def integrate(x: Tensor, dy: Tensor, y0: Tensor, order: int) -> Tensor:
    """Series of ``y`` with ``y(0) = y0`` and ``y' = dy * x'`` (``dy`` a series)."""
    if degree(x) == 0:
        return y0[None]
    dys = list(dy)
    ys = [y0]
    for k in range(1, order + 1):
        ys.append(_dot(x, dys, k, 1.0 / k))
    return torch.stack(ys)


def erf(x: Tensor, order: int) -> Tensor:
    """The error function: ``y' = (2 / sqrt(pi)) exp(-x**2) x'``."""
    y0 = torch.erf(x[0])
    if degree(x) == 0:
        return y0[None]
    dy = exp(-mul(x, x, order - 1), order - 1) * (2.0 / math.sqrt(math.pi))
    return integrate(x, dy, y0, order)


def softplus(x: Tensor, order: int, beta: float, threshold: float) -> Tensor:
    """``log(1 + exp(beta x)) / beta``, linear where ``beta x > threshold``."""
    y0 = torch.nn.functional.softplus(x[0], beta, threshold)
    if degree(x) == 0:
        return y0[None]
    dy = sigmoid(beta * x[: order + 1], order - 1)
    y = integrate(x, dy, y0, order)
    linear = (beta * x[0] > threshold).expand_as(y)
    return torch.where(linear, pad(x, order)[: order + 1], y)


def power(x: Tensor, p: float, order: int) -> Tensor:
    """``x**p`` for a real exponent: from ``x y' = p y x'``.

    Non-negative integer exponents use repeated products, exact at ``x[0] = 0``.
    """
    if float(p).is_integer() and p >= 0:
        result, base, n = None, x, int(p)
        while n:
            if n & 1:
                result = base if result is None else mul(result, base, order)
            n >>= 1
            if n:
                base = mul(base, base, order)
        return torch.ones_like(x[:1]) if result is None else result
    y0 = torch.pow(x[0], p)
    if degree(x) == 0:
        return y0[None]
    inv_x0 = 1.0 / x[0]
    ys = [y0]
    for k in range(1, order + 1):
        total = _dot(x, ys, k, (p + 1) / k) - _plain_dot(x, ys, k)
        ys.append(total * inv_x0)
    return torch.stack(ys)
