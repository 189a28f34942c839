"""Sharpness-aware minimisation (SAM), the baseline CRR is compared with.

SAM (Foret et al., 2021) replaces the gradient at the weights ``w`` by the gradient
at the nearby point where the loss is (to first order) highest:

    ε = ρ g / ‖g‖,   g = ∇L(w),   then step with ∇L(w + ε).

The adaptive variant (ASAM, Kwon et al., 2021) measures the neighbourhood relative
to the size of each weight: ``ε = ρ |w|² ⊙ g / ‖|w| ⊙ g‖``, elementwise, so that
rescaling a layer does not change the step. Each SAM step needs two gradients, hence
two forward and two backward passes.

See chapter 8, CRR, SAM and plain Adam.

Limitations
-----------
The second forward pass draws new dropout masks; it runs in whatever mode the model
is in. BatchNorm running statistics are protected from the second pass only for the
modules handed over as ``model=`` (or wrapped in :func:`frozen_running_stats`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from numbers import Real
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["SAM", "frozen_running_stats"]


@contextlib.contextmanager
def frozen_running_stats(model: nn.Module | None) -> Iterator[None]:
    """Run a block without changing the running statistics of ``model``'s norm layers.

    Every BatchNorm (and InstanceNorm with ``track_running_stats``) inside ``model``
    has its ``running_mean``, ``running_var`` and ``num_batches_tracked`` copied on
    entry and written back in place on exit. The layers still normalise with the
    statistics of the current batch in training mode, so the forward pass itself is
    unchanged; only its side effect on the buffers is undone. ``None`` does nothing.

    See chapter 8, CRR, SAM and plain Adam.
    """
    if model is None:
        yield
        return
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module or None, got {model!r:.60}")
    saved: list[tuple[Tensor, Tensor]] = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase):
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                buffer = getattr(module, name, None)
                if buffer is not None:
                    saved.append((buffer, buffer.clone()))
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, copy in saved:
                buffer.copy_(copy)


def _check_rho(rho: Any) -> float:
    if isinstance(rho, bool) or not isinstance(rho, Real):
        raise TypeError(f"rho must be a real number, got {rho!r}")
    if not (math.isfinite(rho) and rho >= 0):
        raise ValueError(f"rho must be finite and >= 0, got {rho}")
    return float(rho)


class SAM(torch.optim.Optimizer):
    """Sharpness-aware minimisation around a base optimiser.

    One call of :meth:`step` does:

    1. ``ε = ρ g / ‖g‖`` from the gradients ``g`` in ``.grad`` (``‖·‖`` the norm
       over all parameters together; adaptive: ``ε = ρ |w|² ⊙ g / ‖|w| ⊙ g‖``);
    2. ``w ← w + ε`` and the gradient is computed again there, by the closure;
    3. ``w`` is restored (copied back, not ``w − ε``, so no rounding creeps in) and
       the base optimiser steps with the gradient from step 2.

    Parameters
    ----------
    params:
        Parameters or parameter groups, as for any optimiser. A group may set its
        own ``rho`` and ``adaptive``.
    base_optimizer:
        The optimiser class to step with, e.g. ``torch.optim.Adam`` (the paper's).
    rho:
        Radius of the neighbourhood, finite and ``>= 0`` (paper: 0.05). ``0`` gives
        the base optimiser's step (at twice the cost).
    adaptive:
        Use ASAM's weight-relative neighbourhood.
    model:
        The module being trained. When given, the closure's forward pass runs
        inside :func:`frozen_running_stats`, so BatchNorm running statistics are
        updated once per step (by the first pass), not twice.
    **base_kwargs:
        Hyperparameters of the base optimiser (``lr=1e-3``, ...).

    Notes
    -----
    :meth:`step` takes the gradients at ``w`` from ``.grad`` when at least one
    parameter has one (the usual loop: ``zero_grad``, forward, ``backward``,
    ``step(closure)``); when none has, it calls the closure once more first to get
    them. It returns the closure's loss at ``w + ε`` and leaves the gradients set to
    ``None``. For manual use::

        loss_fn(model(x), y).backward()
        sam.first_step(zero_grad=True)
        with sam.frozen_running_stats():
            loss_fn(model(x), y).backward()
        sam.second_step(zero_grad=True)

    ``state_dict`` is the base optimiser's (its groups carry ``rho`` and
    ``adaptive``); the perturbation is transient and not saved.

    See chapter 8, CRR, SAM and plain Adam.
    """

    requires_closure = True

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: type[torch.optim.Optimizer],
        rho: float = 0.05,
        adaptive: bool = False,
        *,
        model: nn.Module | None = None,
        **base_kwargs: Any,
    ) -> None:
        rho = _check_rho(rho)
        if not isinstance(adaptive, bool):
            raise TypeError(f"adaptive must be a bool, got {adaptive!r}")
        if not (
            isinstance(base_optimizer, type)
            and issubclass(base_optimizer, torch.optim.Optimizer)
        ):
            raise TypeError(
                "base_optimizer must be an optimiser class such as torch.optim.Adam "
                f"(not an instance), got {base_optimizer!r}"
            )
        if base_optimizer is SAM:
            raise TypeError("base_optimizer cannot be SAM itself")
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module or None, got {model!r:.60}")
        super().__init__(params, {"rho": rho, "adaptive": adaptive})
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups  # one list, shared
        self.defaults.update(self.base_optimizer.defaults)
        self.model = model
        self._moved: list[Tensor] = []  # the parameters first_step moved

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "rho" in param_group:
            param_group["rho"] = _check_rho(param_group["rho"])
        base = getattr(self, "base_optimizer", None)
        if base is None:  # called from Optimizer.__init__
            super().add_param_group(param_group)
            return
        param_group.setdefault("rho", self.defaults["rho"])
        param_group.setdefault("adaptive", self.defaults["adaptive"])
        base.add_param_group(param_group)

    def frozen_running_stats(self) -> contextlib.AbstractContextManager[None]:
        """:func:`frozen_running_stats` for the ``model`` given to the constructor."""
        return frozen_running_stats(self.model)

    def _gradient_norm(self) -> Tensor:
        """‖g‖ (adaptive groups: ‖|w| ⊙ g‖) over every parameter with a gradient."""
        norms = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad * p.abs() if group["adaptive"] else p.grad
                norms.append(torch.linalg.vector_norm(g))
        if not norms:
            raise RuntimeError(
                "SAM.first_step found no gradients: call backward() on the loss first"
            )
        device = norms[0].device
        return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move to the perturbed weights ``w + ε``, remembering ``w``."""
        if self._moved:
            raise RuntimeError(
                "SAM.first_step called twice: call second_step to return to w first"
            )
        norm = self._gradient_norm().clamp_min(1e-12)  # g = 0 gives ε = 0
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "origin" in state:
                    state["origin"].copy_(p)
                else:
                    state["origin"] = p.detach().clone()
                e = p.grad * (group["rho"] / norm.to(p.device))
                if group["adaptive"]:
                    e = e * p.square()
                p.add_(e)
                self._moved.append(p)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Return to ``w``; the base optimiser steps with the current gradients."""
        if not self._moved:
            raise RuntimeError("SAM.second_step called before first_step")
        for p in self._moved:
            p.copy_(self.state[p]["origin"])
        self._moved = []
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:
        """One SAM step; ``closure`` zeroes the gradients, computes the loss, calls
        ``backward`` and returns the loss."""
        if closure is None:
            raise TypeError(
                "SAM.step needs a closure that recomputes the loss and calls "
                "backward(); or call first_step and second_step yourself"
            )
        params = [p for group in self.param_groups for p in group["params"]]
        if all(p.grad is None for p in params):
            with torch.enable_grad():
                closure()
        self.first_step(zero_grad=True)
        with torch.enable_grad(), self.frozen_running_stats():
            loss = closure()
        self.second_step(zero_grad=True)
        return loss

    def state_dict(self) -> dict[str, Any]:
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups
