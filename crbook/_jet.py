"""The jet: a truncated Taylor polynomial that PyTorch code can run on.

A :class:`Jet` carries the truncated Taylor polynomial ``c[0] + c[1] t + ... +
c[d] t**d`` of an intermediate value of ``f(x + t u)``. It implements PyTorch's
``__torch_function__`` protocol, so handing it to ordinary code (a module, a function
built from ``torch`` calls) runs the rule registered for each operation. The rules
live in :mod:`crbook._ops` (pointwise mathematics) and :mod:`crbook._layers` (layers,
losses and shapes); an operation without a rule raises
:class:`UnsupportedOperationError` with its name.

See chapter 1, Differentiation dynamics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.overrides import resolve_name

from crbook import _series as series


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
        return _RULES[torch.add](self, other)

    __radd__ = __add__

    def __sub__(self, other):
        return _RULES[torch.sub](self, other)

    def __rsub__(self, other):
        return _RULES[torch.Tensor.__rsub__](self, other)

    def __mul__(self, other):
        return _RULES[torch.mul](self, other)

    __rmul__ = __mul__

    def __truediv__(self, other):
        return _RULES[torch.div](self, other)

    def __rtruediv__(self, other):
        return _RULES[torch.div](other, self)

    def __neg__(self):
        return _RULES[torch.neg](self)

    def __pow__(self, exponent):
        return _RULES[torch.pow](self, exponent)

    def __rpow__(self, base):
        return _RULES[torch.Tensor.__rpow__](self, base)

    def __matmul__(self, other):
        return _RULES[torch.matmul](self, other)

    def __rmatmul__(self, other):
        return _RULES[torch.matmul](other, self)

    def __getitem__(self, index):
        return _RULES[torch.Tensor.__getitem__](self, index)

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
    c = _coeffs(x, _out_ndim(x, const))
    head = c[:1] + const
    if c.shape[0] == 1:
        return Jet(head, x.order)
    rest = c[1:].expand((c.shape[0] - 1,) + tuple(head.shape[1:]))
    return Jet(torch.cat([head, rest]), x.order)


def _check_param(value: Any, what: str) -> None:
    if isinstance(value, Jet):
        raise _unsupported(f"a {what} that depends on the input")


def _lift(value: Any, like: Jet) -> Jet:
    """``value`` as a jet of degree zero (numbers take ``like``'s dtype and device)."""
    if isinstance(value, Jet):
        return value
    if not isinstance(value, Tensor):
        value = torch.full((), value, dtype=like.dtype, device=like.device)
    return Jet(value[None], like.order)
