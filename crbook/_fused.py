"""A whole Taylor pass compiled by ``torch.compile``: ``compile=True``.

In eager mode a Taylor pass runs one small kernel per term of every recurrence,
``O(order**2)`` of them per smooth layer, each streaming its operands through
memory, plus the Python work of dispatching every operation to its rule.
:func:`torch.compile` traces the whole pass once (the model, the jet's rules and
the recurrences: they are ordinary PyTorch code) and fuses the recurrences into a
few loops that keep an element's coefficients in registers. On a CPU deep orders
then cost several times less (``benchmarks/README.md`` gives the ratios).

While tracing, the recurrences take their functional form (each coefficient a new
tensor, as under autograd; see :mod:`crbook._series`), which the compiler fuses
better than writes into preallocated tensors.

Limitations
-----------
- The first call for each order (and for each new kind of model or input
  layout) compiles, which takes seconds: about 5 to 30 s on a 2-core CPU, less
  when TorchInductor's on-disk cache already holds the code. Without autograd,
  later calls with any batch size and any parameter values reuse it. Under
  autograd (a penalty in training) each new batch size compiles again, since
  TorchInductor fails on the backward pass of a convolution whose batch size is
  symbolic.
- Random operations (dropout in training mode) draw from the compiled code's own
  generator, so their masks differ from an eager pass with the same seed.
- Compiling needs a working :func:`torch.compile` backend (on a CPU, a C++
  compiler), and TorchInductor can still fail on some graphs; either raises a
  ``RuntimeError`` that says to run eagerly. Code that TorchDynamo cannot trace is
  run eagerly in pieces, which is correct but slower.
- An operation without a Taylor-mode rule still raises
  :class:`~crbook.UnsupportedOperationError` naming it, but not the layer it
  sits in: the hooks that track the running layer are left out of the traced
  pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

# Each order compiles its own code; allow more variants than TorchDynamo's default
# of eight per function (orders 1 ... 10 for two models need twenty).
_RECOMPILE_LIMIT = 64
_COMPILED: dict[bool, Callable] = {}


def compiled(taylor_pass: Callable[..., Tensor], grad: bool) -> Callable[..., Tensor]:
    """``taylor_pass`` compiled once per process and autograd mode.

    Without autograd the batch axis is symbolic (``run`` marks it), so one
    compiled pass serves every batch size. Under autograd every size is compiled
    in, and a new batch size compiles again: TorchInductor (torch 2.13) fails on
    the backward pass of a convolutional network with a symbolic batch.
    """
    if not _COMPILED:
        _COMPILED.update(
            {
                False: torch.compile(taylor_pass),
                True: torch.compile(taylor_pass, dynamic=False),
            }
        )
    return _COMPILED[grad]


def _batch_is_dynamic(*tensors: Any) -> None:
    """Mark the batch axis of the inputs symbolic, and only that axis."""
    mark = getattr(torch._dynamo, "maybe_mark_dynamic", None)
    if mark is None:  # before torch 2.2: sizes that change are made symbolic
        return
    for tensor in tensors:
        if isinstance(tensor, Tensor) and tensor.dim() > 0:
            mark(tensor, 0)


def run(taylor_pass: Callable[..., Tensor], *args: Any) -> Tensor:
    """Run the compiled ``taylor_pass`` on ``args``; name the backend on failure."""
    from torch._dynamo import config
    from torch._dynamo.exc import BackendCompilerFailed

    # named cache_size_limit before torch 2.6
    name = "recompile_limit"
    if not hasattr(config, name):
        name = "cache_size_limit"
    with config.patch(**{name: _RECOMPILE_LIMIT}):
        grad = torch.is_grad_enabled()
        if not grad:
            _batch_is_dynamic(*args)
        try:
            return compiled(taylor_pass, grad)(*args)
        except BackendCompilerFailed as error:
            raise RuntimeError(
                "compiling the Taylor pass with torch.compile failed (compile=True "
                "needs a working backend: on a CPU, a C++ compiler; TorchInductor "
                f"may also fail on a graph): {error}. Call directional_derivatives "
                "with compile=False to run eagerly."
            ) from error
