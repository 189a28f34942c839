"""Comparing training methods: what one trained classifier scores, and seed noise.

Two tools for setting methods such as CRR, SAM and plain Adam side by side:

- :func:`evaluate` measures one trained classifier on a test set the way the
  source paper's §5.6 does: accuracy, the expected calibration error (ECE) with its
  reliability table, the accuracy on the least confident test points, and the
  curvature rate λ at the uncertain points of hard digit pairs (4/9, 3/8, 6/7),
  with the number of points behind each λ.
- :func:`paired_difference` compares two methods trained with the same seeds. It
  takes the per-seed difference, so that whatever a seed does to both methods
  (initial weights, batch order) cancels, and sets the mean difference against
  the spread of each method across seeds. A difference smaller than that spread
  is *within seed noise*: another pair of seeds could reverse it.

See chapter 8, CRR, SAM and plain Adam.

Limitations
-----------
The seed-noise rule of :func:`paired_difference` is a rough screen, not a
significance test: with two or three seeds the spread across seeds is itself
poorly known, and a paired t-test has one or two degrees of freedom. A difference
it calls beyond seed noise is worth a larger run, not a claim. λ at a pair's
uncertain points rests on the few test points whose top probability lies in the
band; with fewer than two such points it is not measured (``nan``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from crbook.metrics import (
    PairCurvatureRate,
    Reliability,
    _check_band,
    least_confident_accuracy,
    pair_curvature_rate,
    reliability,
)

__all__ = [
    "Evaluation",
    "MNIST_PAIRS",
    "PairedDifference",
    "evaluate",
    "paired_difference",
]

MNIST_PAIRS: tuple[tuple[int, int], ...] = ((4, 9), (3, 8), (6, 7))
"""The digit pairs of the paper's §5.6: shapes that are easy to mistake."""


# -- one trained classifier --------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Evaluation:
    """The result of :func:`evaluate`.

    Attributes
    ----------
    accuracy : float
        Fraction of test points whose top class is the label.
    ece : float
        Expected calibration error over ``reliability.bins`` equal-width bins.
    reliability : Reliability
        The per-bin table behind ``ece`` (for a reliability diagram).
    least_confident_accuracy : float
        Accuracy on the ``fraction`` of test points of lowest confidence.
    fraction : float
        That fraction (the paper: 0.2).
    pairs : dict of (int, int) to PairCurvatureRate
        λ at the uncertain test points of each pair, with ``n_points``.
    probs : numpy.ndarray
        The test probabilities, ``(N, C)``, float64.
    """

    accuracy: float
    ece: float
    reliability: Reliability
    least_confident_accuracy: float
    fraction: float
    pairs: dict[tuple[int, int], PairCurvatureRate]
    probs: np.ndarray

    def pair_lam(self, a: int, b: int) -> float:
        """λ of the pair ``(a, b)``; ``nan`` when too few points were uncertain."""
        return self.pairs[(a, b)].lam

    def pair_points(self, a: int, b: int) -> int:
        """How many test points of the pair ``(a, b)`` lay in the band."""
        return self.pairs[(a, b)].n_points


def _check_pairs(pairs: Any) -> tuple[tuple[int, int], ...]:
    try:
        pairs = tuple((a, b) for a, b in pairs)
    except (TypeError, ValueError):
        raise TypeError(
            f"pairs must be a sequence of (a, b) class pairs, got {pairs!r}"
        ) from None
    for a, b in pairs:
        if any(
            isinstance(c, bool) or not isinstance(c, (int, np.integer)) for c in (a, b)
        ):
            raise TypeError(f"pairs must hold int classes, got {(a, b)!r}")
        if a == b:
            raise ValueError(f"a pair must hold two different classes, got {(a, b)}")
    if len(set(pairs)) != len(pairs):
        raise ValueError(f"pairs must not repeat a pair, got {list(pairs)}")
    return pairs


def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    pairs: Sequence[tuple[int, int]] = MNIST_PAIRS,
    band: tuple[float, float] = (0.3, 0.7),
    bins: int = 10,
    fraction: float = 0.2,
    seed: int = 0,
    batch_size: int = 1000,
    **curvature_kwargs: Any,
) -> Evaluation:
    """Accuracy, ECE, least-confident accuracy and pair λ of a trained classifier.

    The model runs in evaluation mode without gradients on ``x`` (in batches of
    ``batch_size``) and its mode is restored afterwards. The metrics are those of
    :mod:`crbook.metrics`: :func:`~crbook.metrics.reliability` with ``bins``
    equal-width bins, :func:`~crbook.metrics.least_confident_accuracy` with
    ``fraction``, and :func:`~crbook.metrics.pair_curvature_rate` for every pair
    with ``band``, each pair's random directions drawn from a generator seeded
    with ``seed`` (so every model of a comparison is probed the same way). A pair
    with fewer than two points in the band gives ``nan`` without a warning;
    ``n_points`` says why.

    Parameters
    ----------
    model:
        A classifier returning logits ``(B, C)``.
    x, y:
        Test points ``(N, ...)`` on the model's device, and integer labels
        ``(N,)``.
    pairs:
        Class pairs to measure λ on; the default is the paper's 4/9, 3/8, 6/7.
    band:
        Closed interval of top-class probability of the uncertain points.
    bins:
        Number of confidence bins of the ECE (the paper: 10).
    fraction:
        Share of least confident points (the paper: 0.2).
    seed:
        Seed of the random directions of λ.
    batch_size:
        Points per forward pass when the probabilities are computed.
    **curvature_kwargs:
        Passed on to :func:`crbook.curvature_rate` (``orders``, ``directions``,
        ...); the default is the paper's orders 1-4 with two directions.

    Returns
    -------
    Evaluation

    See chapter 8, CRR, SAM and plain Adam.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise TypeError(
            "x must be a floating tensor of shape (N, ...), got "
            f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}"
        )
    if not isinstance(y, Tensor) or y.shape != x.shape[:1]:
        raise ValueError(
            f"y must be a tensor of {x.shape[0]} labels, one per point, got "
            f"{type(y).__name__} {tuple(getattr(y, 'shape', ()))}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an int, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if "generator" in curvature_kwargs:
        raise TypeError(
            "evaluate draws its directions itself: pass seed=, not generator="
        )
    pairs = _check_pairs(pairs)
    _check_band(band)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            probs = torch.cat([model(part).softmax(1) for part in x.split(batch_size)])
    finally:
        model.train(was_training)
    probs_np = probs.double().cpu().numpy()
    table = reliability(probs_np, y, bins)
    classes = probs_np.shape[1]
    outside = [pair for pair in pairs if min(pair) < 0 or max(pair) >= classes]
    if outside:
        raise ValueError(
            f"pairs must hold classes 0 to {classes - 1} of the model, got {outside}"
        )
    labels = y.to(x.device)
    rates = {}
    for a, b in pairs:
        # Only the pair's points: the others never enter, and the network need
        # not run on the whole test set once more for every pair.
        mine = (labels == a) | (labels == b)
        if not bool(mine.any()):
            rates[(a, b)] = PairCurvatureRate(a, b, tuple(map(float, band)), 0, None)
            continue
        generator = torch.Generator(device=x.device).manual_seed(seed)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"only \d+ point")
            rates[(a, b)] = pair_curvature_rate(
                model,
                x[mine],
                labels[mine],
                a,
                b,
                band,
                generator=generator,
                **curvature_kwargs,
            )
    return Evaluation(
        accuracy=float((probs_np.argmax(1) == y.cpu().numpy()).mean()),
        ece=table.ece,
        reliability=table,
        least_confident_accuracy=least_confident_accuracy(probs_np, y, fraction),
        fraction=float(fraction),
        pairs=rates,
        probs=probs_np,
    )


# -- two methods over the same seeds -----------------------------------------------


@dataclass(frozen=True, eq=False)
class PairedDifference:
    """The result of :func:`paired_difference`: method A minus method B, per seed.

    Attributes
    ----------
    differences : numpy.ndarray
        ``a_s − b_s`` for each seed ``s``.
    mean : float
        Their mean: the difference between the methods.
    stderr : float
        Standard error of ``mean`` (sample standard deviation of the differences
        over ``√S``); ``nan`` for a single seed.
    spread_a, spread_b : float
        Range (largest minus smallest value) of each method across seeds: how far
        two seeds of one method fall apart.
    noise : float
        The larger of the two spreads.
    consistent : bool
        Every seed's difference has the same sign, and none is zero.
    beyond_noise : bool
        At least two seeds, ``consistent``, and ``|mean| > noise``. Otherwise the
        difference is within seed noise (or, with one seed, cannot be judged).
    """

    differences: np.ndarray
    mean: float
    stderr: float
    spread_a: float
    spread_b: float
    noise: float
    consistent: bool
    beyond_noise: bool

    @property
    def seeds(self) -> int:
        """Number of seeds compared."""
        return len(self.differences)

    def __str__(self) -> str:
        verdict = "beyond seed noise" if self.beyond_noise else "within seed noise"
        if self.seeds < 2:
            verdict = "one seed: noise unknown"
        per_seed = ", ".join(f"{d:+.4g}" for d in self.differences)
        return (
            f"mean difference {self.mean:+.4g} (per seed {per_seed}); spread across "
            f"seeds {self.spread_a:.4g} and {self.spread_b:.4g}: {verdict}"
        )


def _values(name: str, values: Any) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a sequence of numbers, got {values!r}"
        ) from None
    if array.ndim != 1 or array.size == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D sequence (one value per seed), got "
            f"shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError(
            f"{name} holds non-finite values {array.tolist()}: drop the seeds "
            "without a measurement from both methods first"
        )
    return array


def paired_difference(a: Any, b: Any) -> PairedDifference:
    """Method A minus method B over the same seeds, set against seed noise.

    With ``a_s`` and ``b_s`` the values (accuracy, ECE, λ, seconds, ...) of the
    two methods trained with seed ``s``, the differences ``d_s = a_s − b_s``
    remove what a seed does to both. Their mean is compared with the spread of
    each method across seeds, the range ``max_s a_s − min_s a_s``: if the gap
    between the methods is no larger than the gap between two seeds of one
    method, or the seeds disagree on its sign, it is *within seed noise*.

    Parameters
    ----------
    a, b:
        One finite value per seed each, in the same seed order, same length.

    Returns
    -------
    PairedDifference

    See chapter 8, CRR, SAM and plain Adam.
    """
    a, b = _values("a", a), _values("b", b)
    if a.shape != b.shape:
        raise ValueError(
            f"a and b must hold one value per seed for the same seeds, got "
            f"{a.size} and {b.size} values"
        )
    d = a - b
    count = d.size
    stderr = float(d.std(ddof=1) / math.sqrt(count)) if count > 1 else math.nan
    spread_a, spread_b = float(np.ptp(a)), float(np.ptp(b))
    noise = max(spread_a, spread_b)
    consistent = bool(np.all(d > 0) or np.all(d < 0))
    mean = float(d.mean())
    return PairedDifference(
        differences=d,
        mean=mean,
        stderr=stderr,
        spread_a=spread_a,
        spread_b=spread_b,
        noise=noise,
        consistent=consistent,
        beyond_noise=count > 1 and consistent and abs(mean) > noise,
    )
