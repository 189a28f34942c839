"""Taylor-mode rules for pointwise mathematics.

Sums, products, quotients and powers of jets; smooth elementwise functions through
the recurrences of :mod:`crbook._series`; piecewise-linear functions (ReLU, abs,
clamp), whose branch is chosen from the value ``c[0]``, as autograd chooses it;
comparisons, which see the value only.

See chapter 1, Differentiation dynamics.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from crbook import _series as series
from crbook._jet import (
    Jet,
    _add_to_value,
    _coeffs,
    _order,
    _out_ndim,
    _rule,
    _unsupported,
    _value,
)

# -- arithmetic --------------------------------------------------------------------


@_rule(torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__)
def _add(a, b, *, alpha=1, out=None):
    if alpha != 1:
        b = _mul(b, alpha)
    if not isinstance(a, Jet):
        a, b = b, a
    if not isinstance(b, Jet):
        return _add_to_value(a, b)
    ndim = _out_ndim(a, b)
    ca, cb = _coeffs(a, ndim), _coeffs(b, ndim)
    if ca.shape[0] < cb.shape[0]:
        ca, cb = cb, ca
    head = ca[: cb.shape[0]] + cb
    if ca.shape[0] == cb.shape[0]:
        return Jet(head, _order(a, b))
    rest = ca[cb.shape[0] :]
    rest = rest.expand((rest.shape[0],) + tuple(head.shape[1:]))
    return Jet(torch.cat([head, rest]), _order(a, b))


@_rule(torch.neg, torch.Tensor.neg, torch.Tensor.__neg__)
def _neg(a):
    return Jet(-a.coeffs, a.order) if isinstance(a, Jet) else -a


@_rule(torch.sub, torch.Tensor.sub, torch.Tensor.__sub__)
def _sub(a, b, *, alpha=1, out=None):
    return _add(a, _neg(b), alpha=alpha)


@_rule(torch.Tensor.__rsub__)
def _rsub(a, b):
    return _add(b, _neg(a))


@_rule(torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__)
def _mul(a, b, *, out=None):
    if not isinstance(a, Jet):
        a, b = b, a
    if not isinstance(b, Jet):
        ndim = _out_ndim(a, b)
        return Jet(_coeffs(a, ndim) * b, a.order)
    order = _order(a, b)
    ndim = _out_ndim(a, b)
    return Jet(series.mul(_coeffs(a, ndim), _coeffs(b, ndim), order), order)


@_rule(
    torch.div,
    torch.true_divide,
    torch.Tensor.div,
    torch.Tensor.__truediv__,
    torch.Tensor.true_divide,
)
def _div(a, b, *, rounding_mode=None, out=None):
    if rounding_mode is not None:
        raise _unsupported(f"division with rounding_mode={rounding_mode!r}")
    if not isinstance(b, Jet):
        ndim = _out_ndim(a, b)
        return Jet(_coeffs(a, ndim) / b, a.order)
    order = _order(a, b)
    ndim = _out_ndim(a, b)
    ca = _coeffs(a, ndim)
    if isinstance(a, Tensor):
        ca = a[None]
    elif not isinstance(a, Jet):  # a number: filled on the device, not copied there
        ca = torch.full((1,), a, dtype=b.dtype, device=b.device)
    return Jet(series.div(ca, _coeffs(b, ndim), order), order)


@_rule(torch.Tensor.__rtruediv__, torch.Tensor.__rdiv__)
def _rdiv(a, b):
    return _div(b, a)


@_rule(torch.pow, torch.Tensor.pow, torch.Tensor.__pow__)
def _pow(a, exponent):
    if isinstance(exponent, Jet) or isinstance(exponent, Tensor):
        if not isinstance(a, Jet) and not isinstance(a, Tensor):
            return _exp(_mul(exponent, math.log(a)))
        raise _unsupported("a power whose exponent is a tensor or depends on t")
    return Jet(series.power(a.coeffs, exponent, a.order), a.order)


@_rule(torch.Tensor.__rpow__)
def _rpow(a, base):
    return _exp(_mul(a, math.log(base)))


@_rule(torch.square, torch.Tensor.square)
def _square(a):
    return _mul(a, a)


@_rule(torch.sqrt, torch.Tensor.sqrt)
def _sqrt(a):
    return _pow(a, 0.5)


@_rule(torch.rsqrt, torch.Tensor.rsqrt)
def _rsqrt(a):
    return _pow(a, -0.5)


@_rule(torch.reciprocal, torch.Tensor.reciprocal)
def _reciprocal(a):
    return _div(1.0, a)


@_rule(
    torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__
)
def _matmul(a, b):
    if isinstance(a, Jet) and isinstance(b, Jet):
        raise _unsupported("a matrix product of two values that both depend on t")
    if isinstance(a, Jet):
        if b.dim() > max(a.ndim, 2):
            raise _unsupported("a matrix product with more batch axes on the right")
        return Jet(torch.matmul(a.coeffs, b), a.order)
    if a.dim() > max(b.ndim, 2):
        raise _unsupported("a matrix product with more batch axes on the left")
    if b.ndim == 1:
        return Jet(torch.matmul(a, b.coeffs.unsqueeze(-1)).squeeze(-1), b.order)
    return Jet(torch.matmul(a, b.coeffs), b.order)


# -- smooth elementwise functions --------------------------------------------------


def _smooth(fn: Callable[[Tensor, int], Tensor]) -> Callable:
    def rule(x, *args, **kwargs):
        return Jet(fn(x.coeffs, x.order), x.order)

    return rule


_exp = _rule(torch.exp, torch.Tensor.exp)(_smooth(series.exp))
_log = _rule(torch.log, torch.Tensor.log)(_smooth(series.log))
_rule(torch.tanh, torch.Tensor.tanh, F.tanh)(_smooth(series.tanh))
_sigmoid = _rule(torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid)(
    _smooth(series.sigmoid)
)
_rule(torch.erf, torch.Tensor.erf)(_smooth(series.erf))
_rule(torch.sin, torch.Tensor.sin)(_smooth(lambda c, k: series.sin_cos(c, k)[0]))
_rule(torch.cos, torch.Tensor.cos)(_smooth(lambda c, k: series.sin_cos(c, k)[1]))


@_rule(torch.log1p, torch.Tensor.log1p)
def _log1p(x):
    return Jet(series.log(x.coeffs, x.order, plus_one=True), x.order)


@_rule(torch.expm1, torch.Tensor.expm1)
def _expm1(x):
    return _add(_exp(x), -1.0)


@_rule(torch.sinh, torch.Tensor.sinh)
def _sinh(x):
    return _mul(_sub(_exp(x), _exp(_neg(x))), 0.5)


@_rule(torch.cosh, torch.Tensor.cosh)
def _cosh(x):
    return _mul(_add(_exp(x), _exp(_neg(x))), 0.5)


@_rule(F.softplus)
def _softplus(x, beta=1.0, threshold=20.0):
    return Jet(series.softplus(x.coeffs, x.order, beta, threshold), x.order)


@_rule(F.logsigmoid)
def _logsigmoid(x):
    return _neg(_softplus(_neg(x)))


@_rule(F.silu)
def _silu(x, inplace=False):
    return _mul(x, _sigmoid(x))


@_rule(F.gelu)
def _gelu(x, approximate="none"):
    if approximate == "tanh":
        inner = _mul(_add(x, _mul(_pow(x, 3), 0.044715)), math.sqrt(2.0 / math.pi))
        return _mul(
            _mul(x, 0.5), _add(Jet(series.tanh(inner.coeffs, x.order), x.order), 1.0)
        )
    cdf = _mul(
        _add(Jet(series.erf(x.coeffs / math.sqrt(2.0), x.order), x.order), 1.0), 0.5
    )
    return _mul(x, cdf)


# -- piecewise-linear functions: the branch is chosen by the value c[0] ------------


def _positive(c0: Tensor) -> Tensor:
    """``1.0`` where ``c0 > 0``, else ``0.0``, in ``c0``'s dtype.

    A float mask, made in one pass: a bool one would be converted again in the
    backward pass, and ``torch.where`` is slower still on a CPU.
    """
    if series._is_compiling():
        return (c0 > 0).to(c0.dtype)
    return torch.gt(c0, 0, out=torch.empty_like(c0))


@_rule(torch.relu, torch.Tensor.relu, F.relu)
def _relu(x, inplace=False):
    return Jet(x.coeffs * _positive(x.coeffs[0]), x.order)


@_rule(F.leaky_relu)
def _leaky_relu(x, negative_slope=0.01, inplace=False):
    c0 = x.coeffs[0]
    slope = (c0 > 0).to(x.dtype) * (1.0 - negative_slope) + negative_slope
    return Jet(x.coeffs * slope, x.order)


@_rule(torch.abs, torch.Tensor.abs)
def _abs(x):
    return Jet(x.coeffs * torch.sign(x.coeffs[0]), x.order)


@_rule(torch.clamp, torch.Tensor.clamp, torch.clip, torch.Tensor.clip)
def _clamp(x, min=None, max=None):
    c0 = x.coeffs[0]
    inside = torch.ones_like(c0, dtype=torch.bool)
    if min is not None:
        inside = inside & (c0 >= min)
    if max is not None:
        inside = inside & (c0 <= max)
    value = torch.clamp(c0, min, max)
    rest = x.coeffs[1:] * inside.to(x.dtype)
    return Jet(torch.cat([value[None], rest]), x.order)


@_rule(F.hardtanh)
def _hardtanh(x, min_val=-1.0, max_val=1.0, inplace=False):
    return _clamp(x, min_val, max_val)


@_rule(F.relu6)
def _relu6(x, inplace=False):
    return _clamp(x, 0.0, 6.0)


# -- comparisons and constants: they see the value c[0] only ----------------------


def _compare(op: Callable) -> Callable:
    def rule(a, b):
        return op(_value(a), _value(b))

    return rule


for _name_, _op in (
    ("gt", torch.gt),
    ("ge", torch.ge),
    ("lt", torch.lt),
    ("le", torch.le),
    ("eq", torch.eq),
    ("ne", torch.ne),
):
    _rule(
        _op,
        getattr(torch.Tensor, _name_),
        getattr(torch.Tensor, f"__{_name_}__"),
    )(_compare(_op))


def _like(op: Callable) -> Callable:
    def rule(x, *args, **kwargs):
        return op(x.coeffs[0], *args, **kwargs)

    return rule


for _op in (torch.zeros_like, torch.ones_like, torch.full_like, torch.empty_like):
    _rule(_op)(_like(_op))
for _op in (torch.randn_like, torch.rand_like):
    _rule(_op)(_like(_op))
