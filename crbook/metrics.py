"""What the CRR-versus-SAM comparison measures: accuracy, calibration, hard pairs.

Every function takes numpy arrays or torch tensors: class scores ``(N, C)``
(probabilities where the name says so) and integer labels ``(N,)``. The prediction
of a row is its top class (the first one on a tie) and its *confidence* is its top
probability.

- :func:`accuracy`, :func:`least_confident_accuracy`: fractions of correct
  predictions, on all points or on the least confident ones.
- :func:`ece`, :func:`reliability`, :func:`plot_reliability`: the expected
  calibration error (ECE) over equal-width confidence bins, and its diagram.
- :func:`pair_confusion_rate`, :func:`pair_curvature_rate`: how often two classes
  (4 and 9, 3 and 8, 6 and 7 in MNIST) are mistaken for each other, and the
  curvature rate λ at the uncertain points of that pair.

See chapter 8, CRR, SAM and plain Adam.

Limitations
-----------
ECE depends on the binning: with equal-width bins most points of a confident
classifier land in the top bin, and bins holding few points make a noisy estimate.
Empty bins contribute nothing to the ECE and report ``nan`` accuracy and confidence
in :class:`Reliability`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from crbook._curvature import CurvatureRate, curvature_rate

__all__ = [
    "PairCurvatureRate",
    "Reliability",
    "accuracy",
    "ece",
    "least_confident_accuracy",
    "pair_confusion_rate",
    "pair_curvature_rate",
    "plot_reliability",
    "reliability",
]

_SUM_TOLERANCE = 1e-3
"""How far a row of probabilities may sum from 1 (float32 softmax is well within)."""


# -- input checks ------------------------------------------------------------------


def _array(value: Any, name: str) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, (np.ndarray, list, tuple)):
        return np.asarray(value)
    raise TypeError(
        f"{name} must be a numpy array or a torch tensor, got {type(value).__name__}"
    )


def _scores(value: Any, name: str) -> np.ndarray:
    scores = _array(value, name)
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(
            f"{name} must have shape (N, C) with N, C >= 1, got {scores.shape}"
        )
    if not np.issubdtype(scores.dtype, np.floating):
        raise TypeError(f"{name} must hold floats, got {scores.dtype}")
    scores = scores.astype(np.float64)
    if not np.isfinite(scores).all():
        raise ValueError(f"{name} has non-finite entries (nan or inf)")
    return scores


def _probs(value: Any, name: str = "probs") -> np.ndarray:
    probs = _scores(value, name)
    if probs.min() < 0 or probs.max() > 1:
        raise ValueError(
            f"{name} must lie in [0, 1], got values in [{probs.min()}, {probs.max()}]; "
            "apply softmax to logits first"
        )
    worst = np.abs(probs.sum(1) - 1).max()
    if worst > _SUM_TOLERANCE:
        raise ValueError(
            f"each row of {name} must sum to 1 (within {_SUM_TOLERANCE}), but one is "
            f"off by {worst:.3g}; apply softmax to logits first"
        )
    return probs


def _labels(value: Any, count: int, classes: int | None) -> np.ndarray:
    labels = _array(value, "labels")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must hold integer classes, got {labels.dtype}")
    if labels.shape != (count,):
        raise ValueError(
            f"labels must have shape ({count},), one per row, got {labels.shape}"
        )
    if labels.min() < 0 or (classes is not None and labels.max() >= classes):
        top = "" if classes is None else f" and below {classes}"
        raise ValueError(
            f"labels must be >= 0{top}, got values in [{labels.min()}, {labels.max()}]"
        )
    return labels.astype(np.int64)


def _bins(bins: Any) -> int:
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)):
        raise TypeError(f"bins must be an int, got {bins!r}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    return int(bins)


def _pair(a: Any, b: Any, classes: int | None) -> tuple[int, int]:
    for name, value in (("a", a), ("b", b)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int class, got {value!r}")
        if value < 0 or (classes is not None and value >= classes):
            top = "" if classes is None else f" and below {classes}"
            raise ValueError(f"{name} must be a class >= 0{top}, got {value}")
    if a == b:
        raise ValueError(f"a and b must be two different classes, got {a} and {b}")
    return int(a), int(b)


# -- accuracy ----------------------------------------------------------------------


def accuracy(logits_or_probs: Any, labels: Any) -> float:
    """The fraction of rows whose top class (first on a tie) is the label.

    Parameters
    ----------
    logits_or_probs:
        Class scores, shape ``(N, C)``: logits or probabilities (argmax is the
        same).
    labels:
        Integer labels, shape ``(N,)``.

    See chapter 8, CRR, SAM and plain Adam.
    """
    scores = _scores(logits_or_probs, "logits_or_probs")
    labels = _labels(labels, scores.shape[0], scores.shape[1])
    return float((scores.argmax(1) == labels).mean())


def least_confident_accuracy(probs: Any, labels: Any, fraction: float = 0.2) -> float:
    """Accuracy on the ``fraction`` of points with the lowest confidence.

    The ``k = max(1, ⌊fraction · N + ½⌋)`` points of lowest top-class probability
    are kept (``N`` points; ``fraction = 0.2`` is the paper's 20 %). Ties in
    confidence are broken by position: of equally confident points, the earlier
    rows are taken first (a stable sort).

    Parameters
    ----------
    probs:
        Probabilities, shape ``(N, C)``, rows summing to 1.
    labels:
        Integer labels, shape ``(N,)``.
    fraction:
        In ``(0, 1]``.

    See chapter 8, CRR, SAM and plain Adam.
    """
    probs = _probs(probs)
    labels = _labels(labels, probs.shape[0], probs.shape[1])
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise TypeError(f"fraction must be a number, got {fraction!r}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    count = probs.shape[0]
    k = max(1, math.floor(fraction * count + 0.5))
    keep = np.argsort(probs.max(1), kind="stable")[:k]
    return float((probs[keep].argmax(1) == labels[keep]).mean())


# -- calibration -------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Reliability:
    """Per-bin calibration of a classifier; the result of :func:`reliability`.

    Attributes
    ----------
    edges : numpy.ndarray
        The ``bins + 1`` bin edges ``0, 1/bins, ..., 1``.
    counts : numpy.ndarray
        Points per bin (ints).
    accuracy : numpy.ndarray
        Fraction of correct predictions per bin; ``nan`` for an empty bin.
    confidence : numpy.ndarray
        Mean top-class probability per bin; ``nan`` for an empty bin.
    ece : float
        ``Σ_b (n_b / N) |accuracy_b − confidence_b|`` over the non-empty bins.
    """

    edges: np.ndarray
    counts: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray
    ece: float

    @property
    def bins(self) -> int:
        return len(self.counts)


def reliability(probs: Any, labels: Any, bins: int = 10) -> Reliability:
    """Bin the points by confidence and compare accuracy with confidence per bin.

    Bins have equal width on ``[0, 1]``. A point of confidence ``c`` (its top
    probability) goes to bin ``⌊bins · c⌋``, so bin ``b`` holds ``b/bins <= c <
    (b+1)/bins``; ``c = 1`` goes to the last bin (and ``c = 0`` to the first).

    Parameters
    ----------
    probs:
        Probabilities, shape ``(N, C)``, rows summing to 1.
    labels:
        Integer labels, shape ``(N,)``.
    bins:
        Number of bins, ``>= 1`` (the paper: 10).

    Returns
    -------
    Reliability

    See chapter 8, CRR, SAM and plain Adam.
    """
    probs = _probs(probs)
    labels = _labels(labels, probs.shape[0], probs.shape[1])
    bins = _bins(bins)
    confidence = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    index = np.minimum(np.floor(confidence * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    hits = np.bincount(index, weights=correct, minlength=bins)
    sure = np.bincount(index, weights=confidence, minlength=bins)
    filled = counts > 0
    acc = np.full(bins, np.nan)
    conf = np.full(bins, np.nan)
    acc[filled] = hits[filled] / counts[filled]
    conf[filled] = sure[filled] / counts[filled]
    weights = counts[filled] / probs.shape[0]
    error = float(np.sum(weights * np.abs(acc[filled] - conf[filled])))
    return Reliability(
        edges=np.arange(bins + 1) / bins,
        counts=counts,
        accuracy=acc,
        confidence=conf,
        ece=error,
    )


def ece(probs: Any, labels: Any, bins: int = 10) -> float:
    """Expected calibration error: ``Σ_b (n_b / N) |acc_b − conf_b|``.

    ``n_b`` points fall in bin ``b`` of ``bins`` equal-width bins of top-class
    confidence (binning as in :func:`reliability`), ``acc_b`` is their accuracy and
    ``conf_b`` their mean confidence; empty bins add nothing.

    See chapter 8, CRR, SAM and plain Adam.
    """
    return reliability(probs, labels, bins).ece


def plot_reliability(
    data: Reliability, ax: Any = None, title: str = "Reliability diagram"
) -> Any:
    """Draw a reliability diagram: accuracy per confidence bin against the diagonal.

    Bars show the accuracy of each bin; a dot marks the mean confidence of the bin,
    so the vertical gap between bar top and dashed diagonal is what the ECE
    averages. Returns the matplotlib ``Axes``.

    See chapter 8, CRR, SAM and plain Adam.
    """
    if not isinstance(data, Reliability):
        raise TypeError(
            f"data must be a Reliability (from crbook.metrics.reliability), got "
            f"{type(data).__name__}"
        )
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    edges = data.edges
    width = np.diff(edges)
    filled = data.counts > 0
    ax.bar(
        edges[:-1][filled],
        data.accuracy[filled],
        width=width[filled],
        align="edge",
        edgecolor="black",
        alpha=0.7,
        label="accuracy",
    )
    ax.plot(
        data.confidence[filled],
        data.accuracy[filled],
        "o",
        color="black",
        markersize=3,
        label="mean confidence",
    )
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} (ECE = {data.ece:.3f})")
    ax.legend(loc="upper left", fontsize="small")
    return ax


# -- class pairs -------------------------------------------------------------------


def pair_confusion_rate(probs_or_preds: Any, labels: Any, a: int, b: int) -> float:
    """How often the classes ``a`` and ``b`` are mistaken for each other.

    Among the points labelled ``a`` or ``b`` (there must be at least one), the
    fraction whose prediction is the *other* class of the pair:

        (#{y = a, ŷ = b} + #{y = b, ŷ = a}) / #{y ∈ {a, b}}.

    Points of the pair predicted as a third class count in the denominator only.

    Parameters
    ----------
    probs_or_preds:
        Class scores ``(N, C)`` (the prediction is the top class) or predicted
        classes ``(N,)``.
    labels:
        Integer labels, shape ``(N,)``.
    a, b:
        The two classes, different.

    See chapter 8, CRR, SAM and plain Adam.
    """
    values = _array(probs_or_preds, "probs_or_preds")
    if values.ndim == 2:
        scores = _scores(values, "probs_or_preds")
        preds, classes = scores.argmax(1), scores.shape[1]
    elif values.ndim == 1:
        preds = _labels(values, values.shape[0], None)
        classes = None
    else:
        raise ValueError(
            "probs_or_preds must be scores (N, C) or predictions (N,), got shape "
            f"{values.shape}"
        )
    labels = _labels(labels, preds.shape[0], classes)
    a, b = _pair(a, b, classes)
    in_pair = (labels == a) | (labels == b)
    total = int(in_pair.sum())
    if total == 0:
        raise ValueError(f"no point is labelled {a} or {b}")
    swapped = ((labels == a) & (preds == b)) | ((labels == b) & (preds == a))
    return float(swapped.sum() / total)


@dataclass(frozen=True, eq=False)
class PairCurvatureRate:
    """The result of :func:`pair_curvature_rate`.

    Attributes
    ----------
    a, b : int
        The pair of classes.
    band : tuple of float
        The closed interval of top-class probability the points were taken from.
    n_points : int
        How many points of the pair lay in the band.
    rate : CurvatureRate or None
        The measurement on those points; ``None`` when ``empty``.
    empty : bool
        True when fewer than 2 points lay in the band; ``lam`` is then ``nan``.
    """

    a: int
    b: int
    band: tuple[float, float]
    n_points: int
    rate: CurvatureRate | None

    @property
    def empty(self) -> bool:
        return self.rate is None

    @property
    def lam(self) -> float:
        """λ on the pair's uncertain points; ``nan`` for an empty result."""
        return math.nan if self.rate is None else self.rate.lam


def _probabilities(model: nn.Module, x: Tensor, chunk: int = 1024) -> Tensor:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.cat([model(part).softmax(1) for part in x.split(chunk)])
    finally:
        model.train(was_training)


def _check_band(band: Any) -> None:
    """Raise ``ValueError`` unless ``band`` is ``(low, high)``, 0 ≤ low ≤ high ≤ 1."""
    if (
        not isinstance(band, (tuple, list))
        or len(band) != 2
        or not all(isinstance(v, (int, float)) for v in band)
        or not 0 <= band[0] <= band[1] <= 1
    ):
        raise ValueError(
            f"band must be (low, high) with 0 <= low <= high <= 1, got {band!r}"
        )


def pair_curvature_rate(
    model: nn.Module,
    x: Tensor,
    y: Any,
    a: int,
    b: int,
    band: tuple[float, float] = (0.3, 0.7),
    **curvature_kwargs: Any,
) -> PairCurvatureRate:
    """The curvature rate λ at the uncertain test points of two classes.

    Keeps the points labelled ``a`` or ``b`` whose top softmax probability (model
    in evaluation mode) lies in the closed interval ``band`` (the paper: [0.3, 0.7]
    for the MNIST pairs 4/9, 3/8, 6/7) and measures λ there with
    :func:`crbook.curvature_rate`, using the true labels.

    With fewer than 2 such points λ is not measured: the result is flagged
    ``empty`` (``rate`` is ``None``, ``lam`` is ``nan``) and a warning says so, so
    that a sweep over seeds and pairs can go on and report the gap.

    Parameters
    ----------
    model:
        A classifier returning logits ``(B, C)``; its mode is restored afterwards.
    x:
        Test points, a tensor ``(N, ...)`` on the model's device.
    y:
        Integer labels ``(N,)``, a tensor or an array.
    a, b:
        The two classes, different.
    band:
        ``(low, high)`` with ``0 <= low <= high <= 1``.
    **curvature_kwargs:
        Passed to :func:`crbook.curvature_rate` (``orders``, ``directions``,
        ``generator``, ``quantity``, ``clamp``, ``method``).

    Returns
    -------
    PairCurvatureRate

    See chapter 8, CRR, SAM and plain Adam.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise TypeError(
            "x must be a floating tensor of shape (N, ...), got "
            f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}"
        )
    labels = _labels(y, x.shape[0], None)
    _check_band(band)
    probs = _probabilities(model, x)
    labels = torch.as_tensor(
        _labels(labels, x.shape[0], probs.shape[1]), device=x.device
    )
    a, b = _pair(a, b, probs.shape[1])
    top = probs.max(1).values
    keep = ((labels == a) | (labels == b)) & (top >= band[0]) & (top <= band[1])
    count = int(keep.sum())
    band = (float(band[0]), float(band[1]))
    if count < 2:
        warnings.warn(
            f"only {count} point(s) of classes {a} and {b} have a top probability in "
            f"{list(band)}; λ needs at least 2, the result is flagged empty",
            stacklevel=2,
        )
        return PairCurvatureRate(a, b, band, count, None)
    rate = curvature_rate(model, x[keep], labels[keep], **curvature_kwargs)
    return PairCurvatureRate(a, b, band, count, rate)
