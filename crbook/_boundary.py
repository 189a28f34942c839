"""Points near a classifier's decision boundary, where the paper measures λ.

The paper measures the curvature rate only at test points the model is unsure of:
those whose top softmax probability lies in a band, ``[0.45, 0.65]`` for Two Moons.
When the band holds no point, it takes the ``fallback`` points whose top
probability is closest to 0.5 instead.

See chapter 4, λ of a network.

Limitations
-----------
The fallback is used when the band holds fewer than ``min_points`` points (1 by
default: only an empty band). With many classes the top probability can be far
below 0.5, so "closest to 0.5" then picks confident points too; the result says
when the fallback was used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["BoundaryPoints", "boundary_points"]


@dataclass(frozen=True, eq=False)
class BoundaryPoints:
    """The result of :func:`boundary_points`.

    Attributes
    ----------
    x : Tensor
        The selected points.
    y : Tensor or None
        Their labels (``None`` when no labels were given).
    indices : Tensor
        Their positions in the input, int64, ascending.
    top_prob : Tensor
        Their top softmax probability, float64.
    predicted : Tensor
        The model's predicted class at each selected point.
    used_fallback : bool
        True when the band held fewer than ``min_points`` points and the points
        closest to 0.5 were taken instead.
    band : tuple of float
        The band ``(low, high)`` used.
    in_band : int
        How many points the band held (whether or not the fallback was used).
    """

    x: Tensor
    y: Tensor | None
    indices: Tensor
    top_prob: Tensor
    predicted: Tensor
    used_fallback: bool
    band: tuple[float, float]
    in_band: int

    def __len__(self) -> int:
        return int(self.indices.numel())

    def __repr__(self) -> str:
        how = (
            f"fallback: {len(self)} points closest to 0.5"
            if self.used_fallback
            else f"{len(self)} points with top probability in {list(self.band)}"
        )
        return f"BoundaryPoints({how})"


def _check(band, fallback, min_points, batch_size) -> tuple[float, float]:
    try:
        low, high = (float(b) for b in band)
    except (TypeError, ValueError):
        raise TypeError(f"band must be a pair of numbers, got {band!r}") from None
    if not 0 <= low <= high <= 1:
        raise ValueError(f"band must satisfy 0 <= low <= high <= 1, got {band!r}")
    for name, value in (
        ("fallback", fallback),
        ("min_points", min_points),
        ("batch_size", batch_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    return low, high


def boundary_points(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None,
    band: tuple[float, float] = (0.45, 0.65),
    fallback: int = 600,
    *,
    min_points: int = 1,
    batch_size: int = 1000,
) -> BoundaryPoints:
    """The points whose top softmax probability lies in ``band`` (ends included).

    The model runs in evaluation mode without gradients (in batches of
    ``batch_size``), and its mode is restored afterwards. When the band holds fewer
    than ``min_points`` points, the ``fallback`` points whose top probability is
    closest to 0.5 are returned instead (all points if there are fewer; ties go to
    the earlier index), with ``used_fallback=True``.

    Parameters
    ----------
    model:
        A classifier returning logits ``(B, classes)``.
    x:
        Points, ``(N, ...)``.
    y:
        Labels ``(N,)``, or ``None``.
    band:
        ``(low, high)`` with ``0 <= low <= high <= 1``; the paper's is
        ``(0.45, 0.65)``.
    fallback:
        Number of points taken when the band is (nearly) empty; the paper's is 600.
    min_points:
        The band must hold at least this many points to be used.
    batch_size:
        Points per forward pass.

    Returns
    -------
    BoundaryPoints

    See chapter 4, λ of a network.
    """
    low, high = _check(band, fallback, min_points, batch_size)
    if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(
            f"x must be a tensor (N, ...) with N >= 1, got {getattr(x, 'shape', x)!r}"
        )
    if y is not None and (not isinstance(y, Tensor) or y.shape != x.shape[:1]):
        raise ValueError(
            f"y must be None or a tensor of shape ({x.shape[0]},), got "
            f"{getattr(y, 'shape', y)!r}"
        )

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            probs = torch.cat(
                [model(chunk).double().softmax(1) for chunk in x.split(batch_size)]
            )  # (N, classes)
    finally:
        model.train(was_training)
    if probs.dim() != 2 or probs.shape[0] != x.shape[0]:
        raise ValueError(
            f"model must return logits of shape ({x.shape[0]}, classes), got "
            f"{tuple(probs.shape)}"
        )
    if not torch.isfinite(probs).all():
        raise ValueError("model returned non-finite logits")
    top, predicted = probs.max(1)

    inside = ((top >= low) & (top <= high)).nonzero().flatten()
    used_fallback = inside.numel() < min_points
    if used_fallback:
        distance = (top - 0.5).abs().cpu()
        order = torch.sort(distance, stable=True).indices
        indices = order[: min(fallback, x.shape[0])].sort().values
        indices = indices.to(x.device)
    else:
        indices = inside
    return BoundaryPoints(
        x=x[indices],
        y=None if y is None else y[indices.to(y.device)],
        indices=indices.long(),
        top_prob=top[indices],
        predicted=predicted[indices],
        used_fallback=bool(used_fallback),
        band=(low, high),
        in_band=int(inside.numel()),
    )
