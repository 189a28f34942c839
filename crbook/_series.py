"""Arithmetic on truncated Taylor series with tensor coefficients.

A series is a tensor ``x`` of shape ``(d + 1, *S)``: ``x[k]`` is the coefficient of
``t**k`` of an elementwise function of ``t``, and the coefficients above the degree
``d`` are zero. Every function here returns the series of its result truncated after
``t**order``. The elementary functions follow from the ordinary differential equation
each one satisfies (``y' = y x'`` for ``y = exp(x)``, ``y' = (1 - y**2) x'`` for
``tanh``, ...): matching the coefficients of ``t**(k - 1)`` gives ``y[k]`` from
``y[0], ..., y[k - 1]`` in ``O(k)`` operations, ``O(order**2)`` in all. This is
univariate Taylor mode (Griewank and Walther, *Evaluating Derivatives*, chapter 13).

Where the coefficients go. When autograd is not recording (``torch.no_grad()``, or
no input requires a gradient), each coefficient is written straight into one tensor
allocated up front, and every sum accumulates in place there: no per-coefficient
tensors, no final ``torch.stack``. Under autograd that is not allowed (a later write
into the shared tensor would invalidate slices saved for the backward pass), so each
coefficient is a fresh tensor and the coefficients are stacked at the end. Both ways
run the same arithmetic in the same order and give the same numbers. While
:func:`torch.compile` traces a Taylor pass (``directional_derivatives(...,
compile=True)``) the functional way is taken too: the compiler fuses it better.

See chapter 1, Differentiation dynamics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

try:
    from torch.compiler import is_compiling as _is_compiling
except ImportError:  # torch < 2.3: no tracing to detect

    def _is_compiling() -> bool:
        return False


def degree(x: Tensor) -> int:
    """The degree of the series ``x``: its number of stored coefficients minus one."""
    return x.shape[0] - 1


def _writable(*tensors: Tensor) -> bool:
    """Whether results may be written into preallocated tensors (autograd is off).

    Not while :func:`torch.compile` traces: a functional graph fuses better.
    """
    if _is_compiling():
        return False
    if not torch.is_grad_enabled():
        return True
    return not any(isinstance(t, Tensor) and t.requires_grad for t in tensors)


class _Coefficients:
    """The coefficients ``y[0], y[1], ...`` that a recurrence produces in turn.

    ``out()`` is where the next one should be written (``None`` under autograd:
    then operations make fresh tensors), ``append`` records it, ``series()`` returns
    them all as one tensor of shape ``(n, *shape)``.
    """

    __slots__ = ("_buffer", "_items")

    def __init__(
        self, count: int, shape: Sequence[int], like: Tensor, writable: bool, *more
    ) -> None:
        dtype = like.dtype
        for other in more:
            dtype = torch.promote_types(dtype, other.dtype)
        shape = (count, *shape)
        self._buffer = like.new_empty(shape, dtype=dtype) if writable else None
        self._items: list[Tensor] = []

    def out(self) -> Tensor | None:
        return None if self._buffer is None else self._buffer[len(self._items)]

    def append(self, value: Tensor) -> None:
        self._items.append(value)

    def __getitem__(self, k: int) -> Tensor:
        return self._items[k]

    def series(self) -> Tensor:
        if self._buffer is not None:
            return self._buffer[: len(self._items)]
        return torch.stack(self._items)


def _zeros(out: Tensor | None, like: Tensor) -> Tensor:
    return like.new_zeros(like.shape) if out is None else out.zero_()


def _dot(
    x: Tensor,
    zs: Sequence[Tensor],
    k: int,
    weights: Sequence[float] | None = None,
    out: Tensor | None = None,
) -> Tensor:
    """``sum_{j=1}^{min(k, deg x)} w[j] * x[j] * zs[k - j]`` (``w[j] = 1`` if None).

    ``zs`` holds at least ``k`` terms. The sum accumulates in place, into ``out``
    when given, otherwise into a fresh tensor (which autograd allows).
    """
    hi = min(k, degree(x))
    if hi == 0:
        return _zeros(out, zs[0])
    acc = torch.mul(x[1], zs[k - 1], out=out)
    if weights is not None and weights[1] != 1.0:
        acc.mul_(weights[1])
    for j in range(2, hi + 1):
        acc.addcmul_(x[j], zs[k - j], value=1.0 if weights is None else weights[j])
    return acc


def _ramp(k: int, scale: float) -> list[float]:
    """The weights ``j * scale`` for ``j = 0 ... k``."""
    return [j * scale for j in range(k + 1)]


def _square_coefficient(
    ys: Sequence[Tensor], k: int, scale: float = 1.0, out: Tensor | None = None
) -> Tensor:
    """``scale`` times coefficient ``k`` of the square of the series ``ys``."""
    acc = torch.mul(ys[0], ys[k], out=out)
    for i in range(1, (k + 1) // 2):
        acc.addcmul_(ys[i], ys[k - i])
    acc.mul_(2.0 * scale)
    if k % 2 == 0:
        acc.addcmul_(ys[k // 2], ys[k // 2], value=scale)
    return acc


def pad(x: Tensor, new_degree: int) -> Tensor:
    """``x`` with zero coefficients appended up to ``new_degree``."""
    missing = new_degree - degree(x)
    if missing <= 0:
        return x
    zeros = x.new_zeros((missing,) + tuple(x.shape[1:]))
    return torch.cat([x, zeros])


def _shape(*series: Tensor) -> tuple[int, ...]:
    return tuple(torch.broadcast_shapes(*(s.shape[1:] for s in series)))


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
    ys = _Coefficients(top + 1, _shape(a, b), a, _writable(a, b), b)
    for k in range(top + 1):
        lo, hi = max(0, k - db), min(k, da)
        acc = torch.mul(a[lo], b[k - lo], out=ys.out())
        for j in range(lo + 1, hi + 1):
            acc.addcmul_(a[j], b[k - j])
        ys.append(acc)
    return ys.series()


def div(a: Tensor, b: Tensor, order: int) -> Tensor:
    """The series of ``a / b``: ``y[k] = (a[k] - sum_j b[j] y[k - j]) / b[0]``."""
    if degree(b) == 0:
        return a / b[0]
    inv_b0 = 1.0 / b[0]
    ys = _Coefficients(order + 1, _shape(a, b), b, _writable(a, b), a)
    first = ys.out()
    if first is None:
        ys.append((a[0] * inv_b0).expand(_shape(a, b)))
    else:
        ys.append(torch.mul(a[0], inv_b0, out=first))
    for k in range(1, order + 1):
        acc = _dot(b, ys, k, out=ys.out())
        if k <= degree(a):
            acc.sub_(a[k]).neg_()
        else:
            acc.neg_()
        ys.append(acc.mul_(inv_b0))
    return ys.series()


def exp(x: Tensor, order: int) -> Tensor:
    """``exp(x)``: from ``y' = y x'``."""
    if degree(x) == 0:
        return torch.exp(x[:1])
    ys = _Coefficients(order + 1, x.shape[1:], x, _writable(x))
    ys.append(torch.exp(x[0], out=ys.out()))
    for k in range(1, order + 1):
        ys.append(_dot(x, ys, k, _ramp(k, 1.0 / k), out=ys.out()))
    return ys.series()


def log(x: Tensor, order: int, plus_one: bool = False) -> Tensor:
    """``log(x)``: from ``x y' = x'``, so ``y[k] = (x[k] - sum_j j y[j] x[k - j] / k)
    / x[0]`` over ``j = 1 ... k - 1``.

    With ``plus_one``, ``log(1 + x)``: the value comes from ``log1p``, which keeps
    its digits when ``x[0]`` is small.
    """
    value = torch.log1p if plus_one else torch.log
    if degree(x) == 0:
        return value(x[:1])
    writable = _writable(x)
    inv_x0 = 1.0 / (x[0] + 1.0) if plus_one else 1.0 / x[0]
    ys = _Coefficients(order + 1, x.shape[1:], x, writable)
    ys.append(value(x[0], out=ys.out()))
    for k in range(1, order + 1):
        # sum_{j=1}^{k-1} j y[j] x[k-j] = sum_{i=1}^{k-1} (k - i) x[i] y[k-i]
        hi = min(k - 1, degree(x))
        out = ys.out()
        if hi == 0:
            acc = _zeros(out, x[0])
        else:
            acc = torch.mul(x[1], ys[k - 1], out=out)
            acc.mul_(-(k - 1) / k)
            for i in range(2, hi + 1):
                acc.addcmul_(x[i], ys[k - i], value=-(k - i) / k)
        if k <= degree(x):
            acc.add_(x[k])
        ys.append(acc.mul_(inv_x0))
    return ys.series()


def sin_cos(x: Tensor, order: int) -> tuple[Tensor, Tensor]:
    """``(sin(x), cos(x))``: from ``s' = c x'`` and ``c' = -s x'``."""
    if degree(x) == 0:
        return torch.sin(x[:1]), torch.cos(x[:1])
    writable = _writable(x)
    ss = _Coefficients(order + 1, x.shape[1:], x, writable)
    cs = _Coefficients(order + 1, x.shape[1:], x, writable)
    ss.append(torch.sin(x[0], out=ss.out()))
    cs.append(torch.cos(x[0], out=cs.out()))
    for k in range(1, order + 1):
        ss.append(_dot(x, cs, k, _ramp(k, 1.0 / k), out=ss.out()))
        cs.append(_dot(x, ss, k, _ramp(k, -1.0 / k), out=cs.out()))
    return ss.series(), cs.series()


def _riccati(x: Tensor, order: int, shift: bool) -> Tensor:
    """Series of ``y`` with ``y' = z x'`` and ``z = (1 if shift else y) - y**2``.

    ``tanh`` is ``z = 1 - y**2``; the logistic sigmoid is ``z = y - y**2``.
    """
    value = torch.tanh if shift else torch.sigmoid
    if degree(x) == 0:
        return value(x[:1])
    writable = _writable(x)
    ys = _Coefficients(order + 1, x.shape[1:], x, writable)
    zs = _Coefficients(order, x.shape[1:], x, writable)
    y0 = value(x[0], out=ys.out())
    ys.append(y0)
    z0 = torch.mul(y0, y0, out=zs.out()).neg_()
    zs.append(z0.add_(1.0) if shift else z0.add_(y0))
    for k in range(1, order + 1):
        ys.append(_dot(x, zs, k, _ramp(k, 1.0 / k), out=ys.out()))
        if k < order:
            zk = _square_coefficient(ys, k, -1.0, out=zs.out())
            zs.append(zk if shift else zk.add_(ys[k]))
    return ys.series()


def tanh(x: Tensor, order: int) -> Tensor:
    """``tanh(x)``: from ``y' = (1 - y**2) x'``."""
    return _riccati(x, order, shift=True)


def sigmoid(x: Tensor, order: int) -> Tensor:
    """The logistic function: from ``y' = y (1 - y) x'``."""
    return _riccati(x, order, shift=False)


def integrate(x: Tensor, dy: Tensor, y0: Tensor, order: int) -> Tensor:
    """Series of ``y`` with ``y(0) = y0`` and ``y' = dy * x'`` (``dy`` a series)."""
    if degree(x) == 0:
        return y0[None]
    shape = _shape(x, dy)
    ys = _Coefficients(order + 1, shape, x, _writable(x, dy, y0))
    first = ys.out()
    ys.append(y0.expand(shape) if first is None else first.copy_(y0))
    for k in range(1, order + 1):
        ys.append(_dot(x, dy, k, _ramp(k, 1.0 / k), out=ys.out()))
    return ys.series()


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
    """``x**p`` for a real exponent: from ``x y' = p y x'``, so ``y[k] = sum_j
    ((p + 1) j / k - 1) x[j] y[k - j] / x[0]``.

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
    if degree(x) == 0:
        return torch.pow(x[:1], p)
    inv_x0 = 1.0 / x[0]
    ys = _Coefficients(order + 1, x.shape[1:], x, _writable(x))
    ys.append(torch.pow(x[0], p, out=ys.out()))
    for k in range(1, order + 1):
        weights = [(p + 1) * j / k - 1.0 for j in range(k + 1)]
        ys.append(_dot(x, ys, k, weights, out=ys.out()).mul_(inv_x0))
    return ys.series()
