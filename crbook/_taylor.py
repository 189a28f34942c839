"""Univariate Taylor mode: every derivative of ``t -> f(x + t u)`` in one pass.

A :class:`Jet` carries the truncated Taylor polynomial ``c[0] + c[1] t + ... +
c[d] t**d`` of an intermediate value of ``f(x + t u)``. Handing a jet to ordinary
PyTorch code (a module, a function built from ``torch`` calls) pushes the polynomial
through every operation: linear maps act on each coefficient, products are Cauchy
products, smooth functions use the recurrences of :mod:`crbook._series`. The
derivatives are then ``k! * c[k]``. Nothing is nested, so the cost grows like
``order**2`` instead of exponentially.

Each jet remembers its degree ``d``. The input ``x + t u`` has degree one, and linear
maps, convolutions, ReLU and max-pooling keep the degree, so the piecewise-linear
start of a network pushes two coefficients, not ``order + 1``.

See chapter 1, Differentiation dynamics.

Limitations
-----------
Only the operations with a rule below are supported; any other raises
:class:`UnsupportedOperationError` naming the operation (and the layer, when ``f`` is
a module). Kinks (ReLU at 0, ties in max-pooling, ``abs`` at 0) follow the branch that
autograd takes, chosen from the value ``c[0]`` alone. BatchNorm is supported in
evaluation mode only: in training mode it couples the examples of a batch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import resolve_name

from crbook import _series as series

__all__ = ["Jet", "UnsupportedOperationError", "directional_derivatives"]


class UnsupportedOperationError(TypeError):
    """Raised when Taylor mode meets an operation it has no rule for."""


_RULES: dict[Callable, Callable] = {}
_LAYERS: list[str] = []  # the layers being run, innermost last, while tracking


def _rule(*funcs: Callable) -> Callable:
    def register(rule: Callable) -> Callable:
        for func in funcs:
            _RULES[func] = rule
        return rule

    return register


def _name(func: Callable) -> str:
    try:
        return resolve_name(func) or repr(func)
    except Exception:  # resolve_name fails on some builtins
        return getattr(func, "__qualname__", repr(func))


def _unsupported(what: str) -> UnsupportedOperationError:
    where = f" in layer {_LAYERS[-1]}" if _LAYERS else ""
    return UnsupportedOperationError(
        f"Taylor mode has no rule for {what}{where}; use method='autograd' for this "
        "function, or build it from supported operations (see crbook.Jet)"
    )


class Jet:
    """A truncated Taylor polynomial in ``t`` with tensor coefficients.

    Parameters
    ----------
    coeffs:
        Tensor of shape ``(d + 1, *shape)``; ``coeffs[k]`` multiplies ``t**k``. Higher
        coefficients, up to ``order``, are zero.
    order:
        The truncation order: products and smooth functions keep terms up to
        ``t**order``.
    """

    __slots__ = ("coeffs", "order")

    def __init__(self, coeffs: Tensor, order: int) -> None:
        if coeffs.dim() == 0 or coeffs.shape[0] > order + 1:
            raise ValueError(
                f"coeffs must have shape (d + 1, ...) with d <= order = {order}, "
                f"got {tuple(coeffs.shape)}"
            )
        self.coeffs = coeffs
        self.order = order

    # -- what code that inspects a tensor needs ------------------------------------
    @property
    def degree(self) -> int:
        return self.coeffs.shape[0] - 1

    @property
    def shape(self) -> torch.Size:
        return self.coeffs.shape[1:]

    @property
    def dtype(self) -> torch.dtype:
        return self.coeffs.dtype

    @property
    def device(self) -> torch.device:
        return self.coeffs.device

    @property
    def ndim(self) -> int:
        return self.coeffs.dim() - 1

    @property
    def is_cuda(self) -> bool:
        return self.coeffs.is_cuda

    def dim(self) -> int:
        return self.ndim

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return self.shape.numel()

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return (
            f"Jet(shape={tuple(self.shape)}, degree={self.degree}, "
            f"order={self.order}, dtype={self.dtype})"
        )

    def derivatives(self) -> Tensor:
        """The raw derivatives ``k! * c[k]``, ``k = 0 ... order``, stacked."""
        c = series.pad(self.coeffs, self.order)
        k = torch.arange(1, self.order + 1, dtype=c.dtype, device=c.device)
        fact = torch.cat([k.new_ones(1), torch.cumprod(k, 0)])
        return c * fact.view((-1,) + (1,) * self.ndim)

    # -- dispatch ------------------------------------------------------------------
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        rule = _RULES.get(func)
        if rule is None:
            raise _unsupported(_name(func))
        return rule(*args, **(kwargs or {}))

    def __getattr__(self, name: str) -> Any:
        method = getattr(torch.Tensor, name, None)
        if method is None or not callable(method):
            raise AttributeError(f"'Jet' object has no attribute {name!r}")
        if method not in _RULES:
            raise _unsupported(f"torch.Tensor.{name}")
        rule = _RULES[method]
        return lambda *args, **kwargs: rule(self, *args, **kwargs)

    def __add__(self, other):
        return _add(self, other)

    __radd__ = __add__

    def __sub__(self, other):
        return _add(self, _neg(other))

    def __rsub__(self, other):
        return _add(_neg(self), other)

    def __mul__(self, other):
        return _mul(self, other)

    __rmul__ = __mul__

    def __truediv__(self, other):
        return _div(self, other)

    def __rtruediv__(self, other):
        return _div(other, self)

    def __neg__(self):
        return _neg(self)

    def __pow__(self, exponent):
        return _pow(self, exponent)

    def __rpow__(self, base):
        return _exp(_mul(self, math.log(base)))

    def __matmul__(self, other):
        return _matmul(self, other)

    def __rmatmul__(self, other):
        return _matmul(other, self)

    def __getitem__(self, index):
        return _getitem(self, index)

    def __gt__(self, other):
        return torch.gt(self.coeffs[0], _value(other))

    def __ge__(self, other):
        return torch.ge(self.coeffs[0], _value(other))

    def __lt__(self, other):
        return torch.lt(self.coeffs[0], _value(other))

    def __le__(self, other):
        return torch.le(self.coeffs[0], _value(other))

    def __eq__(self, other):
        return torch.eq(self.coeffs[0], _value(other))

    def __ne__(self, other):
        return torch.ne(self.coeffs[0], _value(other))

    __hash__ = object.__hash__


def _value(x: Any) -> Any:
    """The value ``c[0]`` of a jet; anything else as it is."""
    return x.coeffs[0] if isinstance(x, Jet) else x


# -- helpers -----------------------------------------------------------------------


def _order(*values: Any) -> int:
    return max(v.order for v in values if isinstance(v, Jet))


def _coeffs(value: Any, ndim: int) -> Tensor | float:
    """The coefficients of a jet (aligned to ``ndim`` dims) or a constant as is."""
    if not isinstance(value, Jet):
        return value
    missing = ndim - value.ndim
    if missing <= 0:
        return value.coeffs
    c = value.coeffs
    return c.view((c.shape[0],) + (1,) * missing + tuple(c.shape[1:]))


def _out_ndim(*values: Any) -> int:
    return max((v.ndim if isinstance(v, (Jet, Tensor)) else 0) for v in values)


def _map(x: Jet, op: Callable[[Tensor], Tensor]) -> Jet:
    """Apply a linear map that acts on a batch axis to every coefficient at once."""
    c = x.coeffs
    out = op(c.reshape((-1,) + tuple(c.shape[2:])))  # ((d+1)*B, ...)
    return Jet(out.reshape((c.shape[0], c.shape[1]) + tuple(out.shape[1:])), x.order)


def _shift_dim(dim: int) -> int:
    return dim + 1 if dim >= 0 else dim


def _shift_dims(dim: Any) -> Any:
    if dim is None:
        return None
    if isinstance(dim, (tuple, list)):
        return tuple(_shift_dim(d) for d in dim)
    return _shift_dim(dim)


def _add_to_value(x: Jet, const: Any) -> Jet:
    """``x + const`` where ``const`` does not depend on ``t``."""
    c = x.coeffs
    ndim = _out_ndim(x, const)
    c = _coeffs(x, ndim)
    head = c[:1] + const
    if c.shape[0] == 1:
        return Jet(head, x.order)
    rest = c[1:].expand((c.shape[0] - 1,) + tuple(head.shape[1:]))
    return Jet(torch.cat([head, rest]), x.order)


def _check_param(value: Any, what: str) -> None:
    if isinstance(value, Jet):
        raise _unsupported(f"a {what} that depends on the input")


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
    if not isinstance(a, Jet):
        ca = torch.as_tensor(ca, dtype=b.dtype, device=b.device)[None]
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
    return _log(_add(x, 1.0))


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


def _masked(x: Jet, mask: Tensor) -> Jet:
    return Jet(x.coeffs * mask.to(x.dtype), x.order)


@_rule(torch.relu, torch.Tensor.relu, F.relu)
def _relu(x, inplace=False):
    return _masked(x, x.coeffs[0] > 0)


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


# -- linear layers -----------------------------------------------------------------


def _add_bias(out: Jet, bias: Tensor | None, shape: tuple[int, ...]) -> Jet:
    """Add ``bias`` to the value ``c[0]`` of ``out``, a jet this module just made.

    Writing into the fresh output is safe for autograd: the linear maps that made it
    do not save their output for the backward pass.
    """
    if bias is not None:
        out.coeffs[0].add_(bias.view(shape))
    return out


@_rule(F.linear)
def _linear(x, weight, bias=None):
    _check_param(weight, "weight")
    _check_param(bias, "bias")
    out = Jet(F.linear(x.coeffs, weight), x.order)
    return _add_bias(out, bias, (-1,))


def _conv(conv: Callable, dims: int) -> Callable:
    def rule(x, weight, bias=None, *args, **kwargs):
        _check_param(weight, "weight")
        _check_param(bias, "bias")
        out = _map(x, lambda c: conv(c, weight, None, *args, **kwargs))
        return _add_bias(out, bias, (-1,) + (1,) * dims)

    return rule


_rule(F.conv1d)(_conv(F.conv1d, 1))
_rule(F.conv2d)(_conv(F.conv2d, 2))
_rule(F.conv3d)(_conv(F.conv3d, 3))


def _linear_map(op: Callable) -> Callable:
    def rule(x, *args, **kwargs):
        return _map(x, lambda c: op(c, *args, **kwargs))

    return rule


for _op in (
    F.avg_pool1d,
    F.avg_pool2d,
    F.avg_pool3d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d,
):
    _rule(_op)(_linear_map(_op))


def _max_pool(pool: Callable, dims: int) -> Callable:
    def rule(
        x,
        kernel_size,
        stride=None,
        padding=0,
        dilation=1,
        ceil_mode=False,
        return_indices=False,
    ):
        c = x.coeffs
        value, index = pool(
            c[0], kernel_size, stride, padding, dilation, ceil_mode, return_indices=True
        )
        flat = c.flatten(-dims)  # (d+1, B, C, H*W)
        idx = index.flatten(-dims).expand(
            (c.shape[0],) + tuple(index.flatten(-dims).shape)
        )
        picked = flat.gather(-1, idx).view((c.shape[0],) + tuple(value.shape))
        out = Jet(picked, x.order)
        return (out, index) if return_indices else out

    return rule


_rule(F.max_pool1d)(_max_pool(F.max_pool1d, 1))
_rule(F.max_pool2d)(_max_pool(F.max_pool2d, 2))
_rule(F.max_pool3d)(_max_pool(F.max_pool3d, 3))


def _dropout_rule(dropout: Callable) -> Callable:
    def rule(x, p=0.5, training=True, inplace=False):
        if not training or p == 0:
            return x
        mask = dropout(torch.ones_like(x.coeffs[0]), p, True)
        return Jet(x.coeffs * mask, x.order)

    return rule


for _op in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout):
    _rule(_op)(_dropout_rule(_op))


@_rule(F.batch_norm)
def _batch_norm(
    x,
    running_mean,
    running_var,
    weight=None,
    bias=None,
    training=False,
    momentum=0.1,
    eps=1e-5,
):
    if training or running_mean is None:
        raise _unsupported(
            "batch_norm in training mode (batch statistics couple the examples); "
            "call model.eval() first"
        )
    scale = torch.rsqrt(running_var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -running_mean * scale
    if bias is not None:
        shift = shift + bias
    shape = (-1,) + (1,) * (x.ndim - 2)
    out = Jet(x.coeffs * scale.view(shape), x.order)
    return _add_bias(out, shift, shape)


@_rule(F.layer_norm)
def _layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(-len(normalized_shape), 0))
    centred = _sub(x, _mean(x, dims, keepdim=True))
    var = _mean(_mul(centred, centred), dims, keepdim=True)
    out = _mul(centred, _pow(_add(var, eps), -0.5))
    if weight is not None:
        out = _mul(out, weight)
    return _add(out, bias) if bias is not None else out


# -- reductions, losses ------------------------------------------------------------


@_rule(torch.sum, torch.Tensor.sum)
def _sum(x, dim=None, keepdim=False, *, dtype=None):
    if dim is None:
        return Jet(x.coeffs.flatten(1).sum(1, dtype=dtype), x.order)
    return Jet(x.coeffs.sum(_shift_dims(dim), keepdim=keepdim, dtype=dtype), x.order)


@_rule(torch.mean, torch.Tensor.mean)
def _mean(x, dim=None, keepdim=False, *, dtype=None):
    if dim is None:
        return Jet(x.coeffs.flatten(1).mean(1, dtype=dtype), x.order)
    return Jet(x.coeffs.mean(_shift_dims(dim), keepdim=keepdim, dtype=dtype), x.order)


@_rule(torch.logsumexp, torch.Tensor.logsumexp)
def _logsumexp(x, dim, keepdim=False):
    c = x.coeffs
    d = _shift_dims(dim)
    top = c[0].detach().amax(dim=dim, keepdim=True)
    shifted = _add_to_value(x, -top)
    total = series.exp(shifted.coeffs, x.order).sum(d, keepdim=True)
    out = series.log(total, x.order)
    out = _add_to_value(Jet(out, x.order), top)
    if not keepdim:
        out = Jet(out.coeffs.squeeze(d), x.order)
    return out


@_rule(torch.log_softmax, torch.Tensor.log_softmax, F.log_softmax)
def _log_softmax(x, dim=None, _stacklevel=3, dtype=None):
    if dim is None:
        raise _unsupported("log_softmax without an explicit dim")
    return _sub(x, _logsumexp(x, dim, keepdim=True))


@_rule(torch.softmax, torch.Tensor.softmax, F.softmax)
def _softmax(x, dim=None, _stacklevel=3, dtype=None):
    return _exp(_log_softmax(x, dim))


def _pick(logp: Jet, target: Tensor) -> Jet:
    """``logp[i, target[i]]``: the entry of each example's target along axis 1."""
    c = logp.coeffs  # (d+1, B, C, ...)
    index = target.unsqueeze(1)  # (B, 1, ...)
    index = index.unsqueeze(0).expand((c.shape[0],) + tuple(index.shape))
    return Jet(c.gather(2, index).squeeze(2), logp.order)


def _reduce(loss: Jet, reduction: str) -> Jet:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return _sum(loss)
    if reduction == "mean":
        return _mean(loss)
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


@_rule(F.nll_loss)
def _nll_loss(
    x,
    target,
    weight=None,
    size_average=None,
    ignore_index=-100,
    reduce=None,
    reduction="mean",
):
    if weight is not None or size_average is not None or reduce is not None:
        raise _unsupported("nll_loss with weight, size_average or reduce")
    keep = target != ignore_index
    loss = _mul(_neg(_pick(x, torch.where(keep, target, 0))), keep.to(x.dtype))
    if reduction == "mean":
        return _div(_sum(loss), keep.sum().to(x.dtype))
    return _reduce(loss, reduction)


@_rule(F.cross_entropy)
def _cross_entropy(
    x,
    target,
    weight=None,
    size_average=None,
    ignore_index=-100,
    reduce=None,
    reduction="mean",
    label_smoothing=0.0,
):
    if label_smoothing != 0.0 or target.is_floating_point():
        raise _unsupported("cross_entropy with label smoothing or soft targets")
    return _nll_loss(
        _log_softmax(x, 1),
        target,
        weight,
        size_average,
        ignore_index,
        reduce,
        reduction,
    )


@_rule(F.mse_loss)
def _mse_loss(x, target, size_average=None, reduce=None, reduction="mean", weight=None):
    diff = _sub(x, target)
    return _reduce(_mul(diff, diff), reduction)


# -- shapes ------------------------------------------------------------------------


def _per_coefficient(method: str) -> Callable:
    """A rule for a shape operation that acts on each coefficient the same way."""

    def rule(x, *args, **kwargs):
        fn = getattr(torch.Tensor, method)
        return Jet(torch.vmap(lambda c: fn(c, *args, **kwargs))(x.coeffs), x.order)

    return rule


for _method in (
    "permute",
    "transpose",
    "expand",
    "expand_as",
    "repeat",
    "narrow",
    "select",
    "flip",
    "roll",
    "movedim",
    "chunk",
    "split",
    "unbind",
    "unflatten",
    "t",
    "diagonal",
    "tile",
    "index_select",
    "gather",
):
    _rule(getattr(torch.Tensor, _method), getattr(torch, _method, None))(
        _per_coefficient(_method)
    )
_RULES.pop(None, None)


@_rule(torch.Tensor.view, torch.Tensor.reshape, torch.reshape)
def _reshape(x, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
        shape = tuple(shape[0])
    return Jet(x.coeffs.reshape((x.coeffs.shape[0],) + tuple(shape)), x.order)


@_rule(torch.Tensor.flatten, torch.flatten)
def _flatten(x, start_dim=0, end_dim=-1):
    if x.ndim == 0:
        return _reshape(x, (1,))
    return Jet(x.coeffs.flatten(_shift_dim(start_dim), _shift_dim(end_dim)), x.order)


@_rule(torch.Tensor.unsqueeze, torch.unsqueeze)
def _unsqueeze(x, dim):
    return Jet(x.coeffs.unsqueeze(dim + 1 if dim >= 0 else dim), x.order)


@_rule(torch.Tensor.squeeze, torch.squeeze)
def _squeeze(x, dim=None):
    if dim is None:
        keep = [0] + [i + 1 for i, s in enumerate(x.shape) if s != 1]
        shape = [x.coeffs.shape[i] for i in keep]
        return Jet(x.coeffs.reshape(shape), x.order)
    return Jet(x.coeffs.squeeze(_shift_dims(dim)), x.order)


@_rule(torch.Tensor.contiguous)
def _contiguous(x, memory_format=torch.contiguous_format):
    return Jet(x.coeffs.contiguous(), x.order)


@_rule(torch.Tensor.to, torch.Tensor.type_as)
def _to(x, *args, **kwargs):
    return Jet(x.coeffs.to(*args, **kwargs), x.order)


@_rule(torch.Tensor.float)
def _float(x, memory_format=torch.preserve_format):
    return Jet(x.coeffs.float(), x.order)


@_rule(torch.Tensor.double)
def _double(x, memory_format=torch.preserve_format):
    return Jet(x.coeffs.double(), x.order)


@_rule(torch.Tensor.detach)
def _detach(x):
    return Jet(x.coeffs.detach(), x.order)


@_rule(torch.Tensor.__getitem__)
def _getitem(x, index):
    if not isinstance(index, tuple):
        index = (index,)
    tensors = sum(isinstance(i, (Tensor, list)) for i in index)
    if tensors <= 1:
        return Jet(x.coeffs[(slice(None),) + index], x.order)
    return Jet(torch.vmap(lambda c: c[index])(x.coeffs), x.order)


@_rule(torch.cat, torch.concat, torch.concatenate)
def _cat(tensors, dim=0, *, out=None):
    order = _order(*tensors)
    top = max(t.degree if isinstance(t, Jet) else 0 for t in tensors)
    parts = []
    for t in tensors:
        c = t.coeffs if isinstance(t, Jet) else t[None]
        parts.append(series.pad(c, top))
    return Jet(torch.cat(parts, _shift_dim(dim)), order)


@_rule(torch.stack)
def _stack(tensors, dim=0, *, out=None):
    return _cat([_unsqueeze(_lift(t, _order(*tensors)), dim) for t in tensors], dim)


def _lift(value: Any, order: int) -> Jet:
    if isinstance(value, Jet):
        return value
    return Jet(torch.as_tensor(value)[None], order)


@_rule(torch.where)
def _where(condition, input, other):
    order = _order(input, other)
    a, b = _lift(input, order), _lift(other, order)
    top = max(a.degree, b.degree)
    ca, cb = series.pad(a.coeffs, top), series.pad(b.coeffs, top)
    return Jet(torch.where(condition, ca, cb), order)


# -- the public entry point --------------------------------------------------------


@contextlib.contextmanager
def _tracking_layers(f: Any) -> Iterator[None]:
    """Record which layer of ``f`` is running, to name it in error messages."""
    if not isinstance(f, nn.Module):
        yield
        return
    names = {id(m): name or type(m).__name__ for name, m in f.named_modules()}

    def enter(module, args):
        _LAYERS.append(f"'{names.get(id(module), '?')}' ({type(module).__name__})")

    def leave(module, args, output):
        _LAYERS.pop()

    pre = nn.modules.module.register_module_forward_pre_hook(enter)
    post = nn.modules.module.register_module_forward_hook(leave)
    depth = len(_LAYERS)
    try:
        yield
    finally:
        pre.remove()
        post.remove()
        del _LAYERS[depth:]


def _check_inputs(x: Tensor, u: Tensor, order: int) -> None:
    for name, value in (("x", x), ("u", u)):
        if not isinstance(value, Tensor):
            raise TypeError(
                f"{name} must be a torch.Tensor, got {type(value).__name__}"
            )
        if not value.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype, got {value.dtype}")
    if x.shape != u.shape:
        raise ValueError(
            f"x and u must have the same shape (one direction per example), got "
            f"{tuple(x.shape)} and {tuple(u.shape)}"
        )
    if x.dim() == 0:
        raise ValueError("x must have a batch axis: shape (B, ...), got a scalar")
    if x.dtype != u.dtype or x.device != u.device:
        raise ValueError(
            f"x and u must share dtype and device, got {x.dtype} on {x.device} and "
            f"{u.dtype} on {u.device}"
        )
    if isinstance(order, bool) or not isinstance(order, int) or order < 0:
        raise ValueError(f"order must be a non-negative int, got {order!r}")


def _check_finite_inputs(x: Tensor, u: Tensor) -> None:
    for name, value in (("x", x), ("u", u)):
        if not torch.isfinite(value).all():
            raise ValueError(f"{name} has non-finite entries (nan or inf)")


def directional_derivatives(
    f: Callable[[Any], Any],
    x: Tensor,
    u: Tensor,
    order: int,
    method: str = "taylor",
    *,
    check_finite: bool = True,
) -> Tensor:
    """Derivatives ``d^k/dt^k f(x + t u)`` at ``t = 0`` for ``k = 0 ... order``.

    Parameters
    ----------
    f:
        A module or a function of a batch ``(B, ...)``, built from operations that
        Taylor mode supports (see :class:`Jet`); example ``i`` of the output must
        depend on example ``i`` of the input only.
    x, u:
        Points and directions, both of shape ``(B, ...)``: one direction per example.
    order:
        The highest derivative order.
    method:
        ``"taylor"`` (default): one pass of univariate Taylor mode, ``O(order**2)``.
        ``"autograd"``: nested reverse-mode autograd, the reference; its cost grows
        exponentially with the order.
    check_finite:
        Raise ``ValueError`` when an input or a derivative is not finite (this
        synchronises with the device; switch it off inside training loops).

    Returns
    -------
    Tensor of shape ``(order + 1, *f(x).shape)``: raw derivatives, not divided by
    ``k!``. It is differentiable with respect to the parameters of ``f``.

    See chapter 1, Differentiation dynamics.
    """
    _check_inputs(x, u, order)
    if check_finite:
        _check_finite_inputs(x, u)
    if method == "taylor":
        with _tracking_layers(f):
            out = f(Jet(torch.stack([x, u]) if order > 0 else x[None], order))
        if isinstance(out, Tensor):  # f does not depend on its input
            out = Jet(out[None], order)
        if not isinstance(out, Jet):
            raise TypeError(f"f must return a tensor, got {type(out).__name__}")
        result = out.derivatives()
    elif method == "autograd":
        from crbook._nested import nested_derivatives

        result = nested_derivatives(f, x, u, order)
    else:
        raise ValueError(f"method must be 'taylor' or 'autograd', got {method!r}")
    if check_finite and not torch.isfinite(result).all():
        bad = (~torch.isfinite(result)).flatten(1).any(1).nonzero().flatten().tolist()
        raise ValueError(
            f"derivatives of orders {bad} are not finite: f is not smooth at x, or "
            f"they overflow {result.dtype} (try float64 or a lower order)"
        )
    return result
