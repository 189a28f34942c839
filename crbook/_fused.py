"""Compiled Taylor-mode recurrences: ``directional_derivatives(..., compile=True)``.

In eager mode each recurrence of :mod:`crbook._series` runs one small kernel per
term, ``O(order**2)`` of them, and every kernel streams its operands through
memory. :func:`torch.compile` turns a whole recurrence into one loop over the
elements that keeps the coefficients of an element in registers, which is several
times faster on a CPU (see ``benchmarks/README.md``).

The compiled functions below run the same arithmetic as the eager ones, term by
term. Each (function, order, input degree) pair is compiled once per process, the
first time it is met, which takes seconds (on a 2-core CPU about 5 to 20 s, less
when TorchInductor's on-disk cache already holds it); the element count is a
dynamic dimension, so new batch or layer sizes do not recompile.

Limitations
-----------
Only ``tanh``, ``sigmoid``, ``exp`` and ``log`` (which the cross-entropy's
log-sum-exp uses) are compiled; every other rule runs eagerly. They are used only
when autograd is not recording (under :func:`torch.no_grad`, or when no input
requires a gradient); a CRR training step, which needs gradients, runs eagerly.
Compiling needs a working :func:`torch.compile` backend: on a CPU, a C++ compiler.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

# A plain flag, not a ContextVar: TorchDynamo can trace a read of a module global
# (so a whole Taylor pass compiles into one graph), not ContextVar.get.
_ENABLED = [False]
_KERNELS: dict[tuple, Callable[[Tensor], Tensor]] = {}


def enabled() -> bool:
    """Whether the recurrences now running should use the compiled kernels."""
    return _ENABLED[0]


@contextlib.contextmanager
def compiled_series(on: bool = True) -> Iterator[None]:
    """Use (or not) the compiled recurrences inside the ``with`` block."""
    before = _ENABLED[0]
    _ENABLED[0] = bool(on)
    try:
        yield
    finally:
        _ENABLED[0] = before


# -- the recurrences, written for tracing: one expression per coefficient ----------


def _riccati(x: Tensor, order: int, degree: int, shift: bool) -> Tensor:
    """``tanh`` (``shift``) or the sigmoid: ``y' = z x'``, ``z = (1 or y) - y**2``."""
    y0 = torch.tanh(x[0]) if shift else torch.sigmoid(x[0])
    ys = [y0]
    zs = [1.0 - y0 * y0 if shift else y0 - y0 * y0]
    for k in range(1, order + 1):
        acc = x[1] * zs[k - 1] * (1.0 / k)
        for j in range(2, min(k, degree) + 1):
            acc = acc + (j / k) * (x[j] * zs[k - j])
        ys.append(acc)
        if k < order:
            square = ys[0] * ys[k]
            for i in range(1, (k + 1) // 2):
                square = square + ys[i] * ys[k - i]
            square = 2.0 * square
            if k % 2 == 0:
                square = square + ys[k // 2] * ys[k // 2]
            zs.append(-square if shift else ys[k] - square)
    return torch.stack(ys)


def _exp(x: Tensor, order: int, degree: int) -> Tensor:
    """``exp``: ``y[k] = sum_j (j / k) x[j] y[k - j]``."""
    ys = [torch.exp(x[0])]
    for k in range(1, order + 1):
        acc = x[1] * ys[k - 1] * (1.0 / k)
        for j in range(2, min(k, degree) + 1):
            acc = acc + (j / k) * (x[j] * ys[k - j])
        ys.append(acc)
    return torch.stack(ys)


def _log(x: Tensor, order: int, degree: int, plus_one: bool) -> Tensor:
    """``log`` (of ``1 + x`` with ``plus_one``): ``y[k] = (x[k] - sum_i ((k - i) /
    k) x[i] y[k - i]) / x[0]``, with ``1 + x[0]`` for ``x[0]`` under ``plus_one``."""
    ys = [torch.log1p(x[0]) if plus_one else torch.log(x[0])]
    inverse = 1.0 / (x[0] + 1.0) if plus_one else 1.0 / x[0]
    for k in range(1, order + 1):
        acc = x[k] if k <= degree else torch.zeros_like(x[0])
        for i in range(1, min(k - 1, degree) + 1):
            acc = acc - ((k - i) / k) * (x[i] * ys[k - i])
        ys.append(acc * inverse)
    return torch.stack(ys)


_FUNCTIONS = {"riccati": _riccati, "exp": _exp, "log": _log}


def series(name: str, x: Tensor, order: int, **options) -> Tensor:
    """The series ``name`` of ``x`` (shape ``(d + 1, *S)``), from a compiled kernel."""
    degree = x.shape[0] - 1
    key = (name, order, degree, tuple(sorted(options.items())))
    kernel = _KERNELS.get(key)
    if kernel is None:
        function = _FUNCTIONS[name]

        def run(flat: Tensor) -> Tensor:
            return function(flat, order, degree, **options)

        kernel = torch.compile(run, dynamic=True, fullgraph=True)
        _KERNELS[key] = kernel
    try:
        out = kernel(x.reshape(degree + 1, -1))
    except Exception as error:  # the backend's own errors are varied
        raise RuntimeError(
            "compile=True needs a working torch.compile backend (on a CPU, a C++ "
            f"compiler); compiling the {name} recurrence failed: {error}. Call "
            "directional_derivatives with compile=False to run eagerly."
        ) from error
    return out.view((order + 1,) + tuple(x.shape[1:]))
