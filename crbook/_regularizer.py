"""CRR as a regulariser for the training loop: a settings object that is cacheable.

:func:`crbook.train.fit` adds ``regularizer(model, x, y)`` to the loss of every
batch and keys its cache by the regulariser's ``cache_key``. A lambda or a
``functools.partial`` of :func:`crbook.crr_penalty` would enter the key through a
repr that holds a memory address, so a rebuilt book could never reuse the run.
:class:`CRR` holds the penalty's settings in a frozen dataclass instead: two
regularisers with the same settings have the same key in every process, and any
change of a setting changes it.

See chapter 7, Curvature-rate regularisation.

Limitations
-----------
The random subset and directions come from PyTorch's global random generator
(which :func:`crbook.train.fit` seeds for each run), so the penalty is
reproducible only as part of a seeded run or after ``torch.manual_seed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from crbook._crr import (
    _DIRECTIONS,
    _check_orders,
    _check_scale,
    _objective,
    crr_penalty,
)

__all__ = ["CRR"]

_METHODS = ("taylor", "autograd")
_FORMAT = 2  # bump when the penalty is computed differently: old runs are stale


@dataclass(frozen=True)
class CRR:
    """Curvature-rate regularisation for ``crbook.train.fit(regularizer=...)``.

    Calling it returns :func:`crbook.crr_penalty` of the batch with these
    settings: ``scale`` × the mean over ``orders`` of the batch mean of ``|d_n|``,
    with ``d_n`` the raw ``n``-th derivative of the per-example cross-entropy
    along a random unit direction.

    Parameters
    ----------
    orders:
        The penalised orders, distinct positive ints (stored as a tuple).
    scale:
        The penalty's weight, finite and ``>= 0`` (stored as a float). ``0``
        adds an exact zero and draws no random numbers, so training is the
        same as without a regulariser.
    directions:
        ``"shared"`` (one direction per example for every order) or ``"fresh"``
        (a new direction per order), as in :func:`crbook.crr_penalty`.
    subset:
        Penalise a random subset of this many examples of each batch (all of
        them when the batch is smaller); ``None`` uses the whole batch.
    eval_mode:
        Put the model in evaluation mode while the penalty is computed (dropout
        off, as in the paper's MNIST sweep, §5.4) and restore its mode
        afterwards. ``False`` leaves the mode alone (dropout active, §5.6).
    method:
        ``"taylor"`` (default) or ``"autograd"`` (nested autograd, the slow
        reference).
    one_pass:
        ``True``: :func:`crbook.train.fit` takes the batch's loss and logits from
        the Taylor pass that gives the penalty (:func:`crbook.crr_objective`)
        instead of running a forward pass of its own, which saves about a third
        of a training step. The loss and the penalty then see the same dropout
        masks. Needs ``directions="shared"``, ``subset=None`` and
        ``eval_mode=False``, the settings under which the two passes would
        differentiate the same function. ``False`` (default): a forward pass for
        the loss, then the penalty, as in the paper's code.
    chunks:
        Run the Taylor pass on this many groups of each batch in turn (at most
        one per example), as in :func:`crbook.crr_penalty`. The derivatives do not
        change; on a CPU, ``2`` or ``4`` keeps a ReLU network's largest tensors
        the size of a plain pass's (``benchmarks/README.md``, "CRR step vs SAM
        step"). With dropout active, each group draws its own masks.

    Examples
    --------
    >>> reg = CRR(orders=(2, 3), scale=3e-3, directions="fresh", subset=64)
    >>> history = crbook.train.fit(model, data, epochs=25, regularizer=reg)

    See chapter 7, Curvature-rate regularisation.
    """

    orders: tuple[int, ...]
    scale: float
    directions: str = "shared"
    subset: int | None = None
    eval_mode: bool = False
    method: str = "taylor"
    one_pass: bool = False
    chunks: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "orders", tuple(_check_orders(self.orders)))
        object.__setattr__(self, "scale", _check_scale(self.scale))
        if self.directions not in _DIRECTIONS:
            raise ValueError(
                f"directions must be one of {_DIRECTIONS}, got {self.directions!r}"
            )
        if self.subset is not None:
            if isinstance(self.subset, bool) or not isinstance(self.subset, int):
                raise TypeError(f"subset must be an int or None, got {self.subset!r}")
            if self.subset < 1:
                raise ValueError(f"subset must be at least 1, got {self.subset}")
        if not isinstance(self.eval_mode, bool):
            raise TypeError(f"eval_mode must be a bool, got {self.eval_mode!r}")
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}")
        if not isinstance(self.one_pass, bool):
            raise TypeError(f"one_pass must be a bool, got {self.one_pass!r}")
        if self.one_pass and (
            self.directions != "shared" or self.subset is not None or self.eval_mode
        ):
            raise ValueError(
                "one_pass=True needs directions='shared', subset=None and "
                "eval_mode=False: otherwise the loss and the penalty come from "
                "different passes"
            )
        if isinstance(self.chunks, bool) or not isinstance(self.chunks, int):
            raise TypeError(f"chunks must be an int, got {self.chunks!r}")
        if self.chunks < 1:
            raise ValueError(f"chunks must be at least 1, got {self.chunks}")

    @property
    def cache_key(self) -> dict[str, Any]:
        """All settings, for the cache key of :func:`crbook.train.fit`."""
        return {
            "class": "crbook.CRR",
            "format": _FORMAT,
            "orders": list(self.orders),
            "scale": self.scale,
            "directions": self.directions,
            "subset": self.subset,
            "eval_mode": self.eval_mode,
            "method": self.method,
            "one_pass": self.one_pass,
            "chunks": self.chunks,
        }

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The penalty of the batch ``(x, y)``: a scalar, differentiable tensor."""
        subset = None if self.subset is None else min(self.subset, x.shape[0])
        if not self.eval_mode:
            return self._penalty(model, x, y, subset)
        was_training = model.training
        model.eval()
        try:
            return self._penalty(model, x, y, subset)
        finally:
            model.train(was_training)

    def objective(
        self, model: nn.Module, x: Tensor, y: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The batch's logits (detached), mean cross-entropy and penalty, from one
        Taylor pass (:func:`crbook.crr_objective`); for ``one_pass=True``."""
        if not self.one_pass:
            raise ValueError("objective() is for a CRR with one_pass=True")
        return _objective(
            model,
            x,
            y,
            self.orders,
            self.scale,
            None,
            self.method,
            True,
            min(self.chunks, x.shape[0]),
        )

    def _penalty(
        self, model: nn.Module, x: Tensor, y: Tensor, subset: int | None
    ) -> Tensor:
        return crr_penalty(
            model,
            x,
            y,
            self.orders,
            self.scale,
            directions=self.directions,
            subset=subset,
            method=self.method,
            chunks=min(self.chunks, x.shape[0] if subset is None else subset),
        )
