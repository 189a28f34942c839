"""The reference: directional derivatives by nested reverse-mode autograd.

This is how the paper computes them: differentiate, then differentiate the result
again, ``order`` times, keeping every graph alive. Each level differentiates the
whole graph built by the levels before it, so the cost grows exponentially with the
order. crbook uses it only to check :func:`crbook.directional_derivatives` in Taylor
mode.

See chapter 1, Differentiation dynamics.

Limitations
-----------
One scalar ``t_i`` per example is differentiated through ``f(x + t u)``, so ``f``
must treat the examples of a batch independently (no BatchNorm in training mode).
Every output entry of an example costs its own chain of ``order`` backward passes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def nested_derivatives(
    f: Callable[[Tensor], Any], x: Tensor, u: Tensor, order: int
) -> Tensor:
    """``d^k/dt^k f(x + t u)`` at ``t = 0``, ``k = 0 ... order``, by nested autograd.

    Same contract as :func:`crbook.directional_derivatives` with
    ``method="autograd"``; the result keeps the graph with respect to the
    parameters when gradients are enabled.
    """
    keep_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        t = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device, requires_grad=True)
        y = f(x + t.view((-1,) + (1,) * (x.dim() - 1)) * u)
        if not isinstance(y, Tensor):
            raise TypeError(f"f must return a tensor, got {type(y).__name__}")
        if y.dim() == 0 or y.shape[0] != x.shape[0]:
            raise ValueError(
                f"f must return one result per example, shape ({x.shape[0]}, ...); "
                f"got {tuple(y.shape)}"
            )
        flat = y.reshape(y.shape[0], -1)  # (B, M)
        columns = []
        for m in range(flat.shape[1]):
            g = flat[:, m]
            column = [g if keep_graph else g.detach()]
            for _ in range(order):
                if g.requires_grad:
                    (g,) = torch.autograd.grad(
                        g.sum(),
                        t,
                        create_graph=True,
                        allow_unused=True,
                        materialize_grads=True,
                    )
                else:
                    g = torch.zeros_like(column[0])
                column.append(g if keep_graph else g.detach())
            columns.append(torch.stack(column))  # (order+1, B)
    out = torch.stack(columns, -1)  # (order+1, B, M)
    return out.reshape((order + 1,) + tuple(y.shape))
