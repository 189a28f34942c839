"""Curvature-rate regularisation (CRR): penalise the input derivatives of the loss.

For a batch of points ``x_i`` with labels ``y_i``, let ``ℓ_i(t)`` be the per-example
cross-entropy at ``x_i + t u_i``, with ``u_i`` a random unit direction, and let
``d_n(i)`` be its ``n``-th derivative at ``t = 0`` (raw normalisation: not divided
by ``n!``). For a set ``N`` of penalised orders the penalty is

    scale × (1/|N|) Σ_{n ∈ N} (1/B) Σ_i |d_n(i)|,

the scale times the mean over orders of the batch mean of ``|d_n|``. It is added to
the cross-entropy of the batch, so training pushes the loss surface towards small
derivatives along random input directions. The derivatives come from univariate
Taylor mode (:func:`crbook.directional_derivatives`), so they stay differentiable in
the parameters and cost about one forward pass per coefficient the jet carries.

See chapter 7, Curvature-rate regularisation.

Limitations
-----------
The penalty sees one random direction per example and step: it estimates the
average size of the derivatives over directions and says nothing about the steepest
direction. The model must treat the examples of a batch independently
(BatchNorm only in evaluation mode), as Taylor mode requires. On CPU, the Taylor
pass folds its two coefficients into the batch axis, so its activations are twice
the size of a plain pass's; with glibc's default allocator those above 32 MiB are
mapped afresh and page-faulted on every step, which makes a one-pass CRR step of
the MNIST CNN 1.15 to 1.3 times a SAM step (0.91 times when the allocator keeps its
memory). ``chunks=2`` (or 4) keeps them below that line: 0.84 to 0.94 times a SAM
step in a process that trains with one method. ``benchmarks/README.md`` ("CRR step
vs SAM step") gives the measurements and the ``MALLOC_MMAP_MAX_=0`` remedy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crbook._curvature import unit_directions
from crbook._jet import Jet
from crbook._taylor import directional_derivatives

__all__ = ["crr_objective", "crr_penalty"]

_DIRECTIONS = ("shared", "fresh")


def _check_batch(x: Tensor, y: Tensor) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise TypeError(
            "x must be a floating tensor of shape (B, ...) with a batch axis, got "
            f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}"
        )
    if x.shape[0] == 0:
        raise ValueError("x holds no examples: the batch is empty")
    if not isinstance(y, Tensor) or y.dtype not in (torch.int64, torch.int32):
        raise TypeError(
            f"y must be a tensor of integer class labels, got {type(y).__name__} "
            f"{getattr(y, 'dtype', '')}"
        )
    if y.shape != x.shape[:1]:
        raise ValueError(
            f"y must hold one label per example, shape ({x.shape[0]},), got "
            f"{tuple(y.shape)}"
        )


def _check_orders(orders: Sequence[int]) -> list[int]:
    if isinstance(orders, (str, bytes)) or not isinstance(orders, Sequence):
        raise TypeError(f"orders must be a sequence of ints, got {orders!r}")
    orders = list(orders)
    if not orders:
        raise ValueError("orders must hold at least one order, got []")
    bad = [n for n in orders if isinstance(n, bool) or not isinstance(n, int)]
    if bad or min(orders) < 1:
        raise ValueError(f"orders must be positive ints, got {orders}")
    if len(set(orders)) != len(orders):
        raise ValueError(f"orders must not repeat an order, got {orders}")
    return orders


def _check_scale(scale: float) -> float:
    if isinstance(scale, bool) or not isinstance(scale, Real):
        raise TypeError(f"scale must be a real number, got {scale!r}")
    if not (math.isfinite(scale) and scale >= 0):
        raise ValueError(f"scale must be finite and >= 0, got {scale}")
    return float(scale)


def _per_example_loss(model: nn.Module, y: Tensor, logits: list | None = None):
    """The per-example cross-entropy of ``model``, a function of the input.

    When ``logits`` is a list, each call appends the (detached) value of the
    model's output to it: the logits, read off the jet's zeroth coefficient.
    """

    def loss(z):
        out = model(z)
        if logits is not None:
            logits.append((out.coeffs[0] if isinstance(out, Jet) else out).detach())
        return F.cross_entropy(out, y, reduction="none")

    return loss


def _check_chunks(chunks: int, count: int) -> int:
    if isinstance(chunks, bool) or not isinstance(chunks, int):
        raise TypeError(f"chunks must be an int, got {chunks!r}")
    if not 1 <= chunks <= count:
        raise ValueError(
            f"chunks must be between 1 and the number of penalised examples "
            f"{count}, got {chunks}"
        )
    return chunks


def _chunked_derivatives(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    u: Tensor,
    order: int,
    chunks: int,
    method: str,
    check_finite: bool,
    logits: list | None = None,
) -> Tensor:
    """The derivatives of the per-example loss, in ``chunks`` groups of examples
    one after the other (the logits of each group go to ``logits``, when given).

    Every example's derivatives depend on that example alone, so splitting the
    batch changes nothing but the size of the tensors of each pass.
    """
    parts = [
        directional_derivatives(
            _per_example_loss(model, yy, logits),
            xx,
            uu,
            order,
            method=method,
            check_finite=check_finite,
        )
        for xx, yy, uu in zip(
            x.tensor_split(chunks),
            y.tensor_split(chunks),
            u.tensor_split(chunks),
            strict=True,
        )
    ]
    return parts[0] if chunks == 1 else torch.cat(parts, 1)


def crr_penalty(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    orders: Sequence[int],
    scale: float,
    directions: str = "shared",
    subset: int | None = None,
    generator: torch.Generator | None = None,
    *,
    method: str = "taylor",
    check_finite: bool = True,
    chunks: int = 1,
) -> Tensor:
    """The CRR penalty: ``scale`` × mean over orders of the batch mean of ``|d_n|``.

    With ``d_n(i)`` the ``n``-th derivative of ``t ↦ ℓ(x_i + t u_i, y_i)`` at
    ``t = 0`` (``ℓ`` the cross-entropy of ``model``, ``u_i`` a unit Gaussian
    direction, raw normalisation) and ``N`` the penalised orders, this returns::

        scale × (1/|N|) Σ_{n ∈ N} (1/B) Σ_i |d_n(i)|.

    Parameters
    ----------
    model:
        A classifier returning logits ``(B, classes)``. Its mode is left as the
        caller set it: in training mode dropout is active during the penalty (the
        paper's §5.6), in evaluation mode it is not (§5.4).
    x, y:
        The batch, shape ``(B, ...)``, and its integer labels, shape ``(B,)``.
    orders:
        The penalised orders, distinct positive ints, e.g. ``(1, 2, 3, 4)``.
    scale:
        The penalty's weight, finite and ``>= 0``. ``0`` returns an exact zero
        without running the model.
    directions:
        ``"shared"`` (default): one direction per example, used for every order;
        one Taylor pass to ``max(orders)``. ``"fresh"``: a new direction per example
        and per order, one Taylor pass per order (the paper's Two Moons code).
    subset:
        Penalise only ``subset`` examples of the batch, drawn without replacement
        (the paper: 64 on Two Moons, 32 on MNIST in §5.4); ``None`` uses them all.
    generator:
        Random generator (on ``x``'s device) for the subset and the directions.
        The subset is drawn first (``torch.randperm``), then the directions, one
        ``(B', ...)`` Gaussian draw per pass, in the order of ``orders``.
    method:
        ``"taylor"`` (default) or ``"autograd"`` (nested autograd, the slow
        reference), passed to :func:`crbook.directional_derivatives`.
    check_finite:
        Raise ``ValueError`` when a derivative is not finite. The check waits for
        the device; switch it off to keep a GPU training loop asynchronous.
    chunks:
        Run each Taylor pass on this many groups of the examples, one group after
        the other (default ``1``: the whole batch at once). The derivatives do not
        change, since each example's depend on that example alone; each pass's
        activations shrink by the factor. On a CPU, ``2`` keeps the largest tensors
        of a ReLU network's pass (two coefficients folded into the batch axis) the
        size of a plain pass's, which the caches and glibc's allocator then handle
        as they do for SAM (``benchmarks/README.md``, "CRR step vs SAM step"). With
        dropout active, each group draws its own masks.

    Returns
    -------
    Tensor
        A scalar, differentiable with respect to the parameters of ``model``.

    See chapter 7, Curvature-rate regularisation.
    """
    _check_batch(x, y)
    orders = _check_orders(orders)
    scale = _check_scale(scale)
    if directions not in _DIRECTIONS:
        raise ValueError(f"directions must be one of {_DIRECTIONS}, got {directions!r}")
    count = x.shape[0]
    if subset is not None:
        if isinstance(subset, bool) or not isinstance(subset, int):
            raise TypeError(f"subset must be an int or None, got {subset!r}")
        if not 1 <= subset <= count:
            raise ValueError(
                f"subset must be between 1 and the batch size {count}, got {subset}"
            )
    if scale == 0:
        return torch.zeros((), dtype=x.dtype, device=x.device)

    chunks = _check_chunks(chunks, count if subset is None else subset)
    if subset is not None and subset < count:
        keep = torch.randperm(count, generator=generator, device=x.device)[:subset]
        x, y = x[keep], y[keep]

    def derivatives(order: int) -> Tensor:
        u = unit_directions(
            x.shape, dtype=x.dtype, device=x.device, generator=generator
        )
        return _chunked_derivatives(
            model, x, y, u, order, chunks, method, check_finite
        )  # (order+1, B')

    if directions == "shared":
        sizes = derivatives(max(orders))[orders].abs()  # (|N|, B')
    else:
        sizes = torch.stack([derivatives(n)[n].abs() for n in orders])  # (|N|, B')
    return scale * sizes.mean()


def crr_objective(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    orders: Sequence[int],
    scale: float,
    generator: torch.Generator | None = None,
    *,
    method: str = "taylor",
    check_finite: bool = True,
    chunks: int = 1,
) -> tuple[Tensor, Tensor]:
    """The mean cross-entropy of the batch and its CRR penalty, from one Taylor pass.

    The zeroth coefficient of the jet that gives the derivatives ``d_n`` is the
    per-example loss itself, so the plain training loss comes for free: one CRR
    training step costs one Taylor pass (about two forward passes for a ReLU
    network, whose jet keeps two coefficients until the loss) plus its backward
    pass, instead of a forward pass for the loss and a Taylor pass for the penalty.

    This is :func:`crr_penalty` with ``directions="shared"`` and the whole batch
    (``subset=None``); ``penalty`` equals what that function returns for the same
    generator state. The loss and the penalty see the same dropout mask when the
    model is in training mode. Training minimises ``loss + penalty``.

    Parameters
    ----------
    model, x, y, orders, scale, generator, method, check_finite, chunks:
        As in :func:`crr_penalty`.

    Returns
    -------
    (loss, penalty)
        Two scalar tensors, both differentiable in the parameters: the batch mean
        of the cross-entropy, and the penalty. With ``scale == 0`` the loss comes
        from a plain forward pass and the penalty is an exact zero.

    See chapter 7, Curvature-rate regularisation.
    """
    _, loss, penalty = _objective(
        model, x, y, orders, scale, generator, method, check_finite, chunks
    )
    return loss, penalty


def _objective(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    orders: Sequence[int],
    scale: float,
    generator: torch.Generator | None,
    method: str,
    check_finite: bool,
    chunks: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`crr_objective`, and the batch's logits (detached) before it."""
    _check_batch(x, y)
    orders = _check_orders(orders)
    scale = _check_scale(scale)
    chunks = _check_chunks(chunks, x.shape[0])
    logits: list[Tensor] = []
    if scale == 0:
        loss = _per_example_loss(model, y, logits)(x).mean()
        return logits[0], loss, torch.zeros((), dtype=x.dtype, device=x.device)
    u = unit_directions(x.shape, dtype=x.dtype, device=x.device, generator=generator)
    d = _chunked_derivatives(
        model, x, y, u, max(orders), chunks, method, check_finite, logits
    )  # (order+1, B): d[0] is the per-example loss
    return torch.cat(logits), d[0].mean(), scale * d[orders].abs().mean()
