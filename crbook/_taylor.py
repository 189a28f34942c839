"""Univariate Taylor mode: every derivative of ``t -> f(x + t u)`` in one pass.

A :class:`~crbook.Jet` carries the truncated Taylor polynomial ``c[0] + c[1] t +
... + c[d] t**d`` of an intermediate value of ``f(x + t u)``. Handing a jet to
ordinary PyTorch code (a module, a function built from ``torch`` calls) pushes the
polynomial through every operation: linear maps act on each coefficient, products
are Cauchy products, smooth functions use the recurrences of :mod:`crbook._series`.
The derivatives are then ``k! * c[k]``. Nothing is nested, so the cost grows like
``order**2`` instead of exponentially.

Each jet remembers its degree ``d``. The input ``x + t u`` has degree one, and linear
maps, convolutions, ReLU and max-pooling keep the degree, so the piecewise-linear
start of a network pushes two coefficients, not ``order + 1``.

See chapter 1, Differentiation dynamics.

Limitations
-----------
Only the operations with a rule in :mod:`crbook._ops` or :mod:`crbook._layers` are
supported; any other raises
:class:`UnsupportedOperationError` naming the operation (and the layer, when ``f`` is
a module). Kinks (ReLU at 0, ties in max-pooling, ``abs`` at 0) follow the branch that
autograd takes, chosen from the value ``c[0]`` alone. BatchNorm is supported in
evaluation mode only: in training mode it couples the examples of a batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from crbook import _fused, _layers, _ops  # noqa: F401  (_layers, _ops: the rules)
from crbook._jet import _LAYERS, Jet, UnsupportedOperationError

__all__ = ["Jet", "UnsupportedOperationError", "directional_derivatives"]


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


def _taylor_pass(f: Callable[[Any], Any], x: Tensor, u: Tensor, order: int) -> Tensor:
    """The raw derivatives of ``f`` at ``x`` along ``u``: one pass of Taylor mode."""
    out = f(Jet(torch.stack([x, u]) if order > 0 else x[None], order))
    if isinstance(out, Tensor):  # f does not depend on its input
        out = Jet(out[None], order)
    if not isinstance(out, Jet):
        raise TypeError(f"f must return a tensor, got {type(out).__name__}")
    return out.derivatives()


def directional_derivatives(
    f: Callable[[Any], Any],
    x: Tensor,
    u: Tensor,
    order: int,
    method: str = "taylor",
    *,
    check_finite: bool = True,
    compile: bool = False,
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
    compile:
        Compile the whole Taylor pass with :func:`torch.compile` (Taylor mode
        only). The first call for each order compiles, which takes seconds; later
        calls, with any batch size, run several times faster on a CPU at deep
        orders. Worth it when the same model is differentiated many times. See
        :mod:`crbook._fused` for what changes (dropout masks, for one).

    Returns
    -------
    Tensor of shape ``(order + 1, *f(x).shape)``: raw derivatives, not divided by
    ``k!``. It is differentiable with respect to the parameters of ``f``.

    See chapter 1, Differentiation dynamics.
    """
    _check_inputs(x, u, order)
    if not isinstance(compile, bool):
        raise TypeError(f"compile must be True or False, got {compile!r}")
    if compile and method != "taylor":
        raise ValueError("compile=True applies to method='taylor' only")
    if check_finite:
        _check_finite_inputs(x, u)
    if method == "taylor":
        if compile:  # no layer-tracking hooks: they would be traced too
            result = _fused.run(_taylor_pass, f, x, u, order)
        else:
            with _tracking_layers(f):
                result = _taylor_pass(f, x, u, order)
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
