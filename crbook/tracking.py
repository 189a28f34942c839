"""Tracking λ while a network trains, and summarising many seeds.

:class:`LambdaTracker` is a per-epoch callback for :func:`crbook.train.fit`. After
each epoch it measures the curvature rate λ of the model (with
:func:`crbook.curvature_rate`) and the test error on the clean labels, and hands
them to the training history. It is a frozen dataclass whose ``cache_key`` holds
all its settings, so a cached training run is reused exactly when it was tracked
the same way.

Where λ is measured (``points``):

``"boundary"`` (default, the paper's choice)
    At the test points whose top softmax probability lies in ``band`` under the
    *current* model (:func:`crbook.boundary_points`, with its fallback). The
    points change from epoch to epoch as the boundary moves.
``"fixed"``
    At one fixed random subset of ``n_points`` test points, the same in every
    epoch (chosen by ``seed``). Then λ changes only because the model does.

In both cases the random directions come from a generator seeded with ``seed``
afresh in every epoch, so with fixed points the directions are fixed as well.

:func:`percentile_band` summarises curves across seeds by percentiles (2.5 and
97.5 by default: the range that holds the middle 95 % of the seeds, *not* a
confidence interval for a mean), and :func:`correlation` and
:func:`grouped_correlation` give Pearson and Spearman correlations across seeds,
within groups (such as noise levels) and pooled.

See chapter 5, λ during training.

Limitations
-----------
With ``points="boundary"`` a well-trained model may leave only a handful of test
points in the band, and λ then rests on few points; ``n_points`` records how many
were used each epoch. The tracker measures raw derivatives of the loss with the
stored (possibly noisy) test labels, like the paper; the clean labels enter only
the clean test error. Percentiles of a few seeds are coarse: with 10 seeds the
2.5 and 97.5 percentiles are interpolated between the two smallest and the two
largest values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from crbook._boundary import boundary_points
from crbook._curvature import CurvatureRate, curvature_rate

__all__ = [
    "Correlation",
    "GroupedCorrelation",
    "LambdaTracker",
    "PercentileBand",
    "correlation",
    "grouped_correlation",
    "percentile_band",
    "stack_metric",
]

_POINTS = ("boundary", "fixed")
_LABELS = ("true", "predicted")
_QUANTITIES = ("loss", "logit")
_FORMAT = 2  # bump when the tracker measures differently: old runs are not reused


@dataclass(frozen=True)
class LambdaTracker:
    """Per-epoch callback for :func:`crbook.train.fit` that records λ.

    Each epoch it returns, for :attr:`crbook.train.History.metrics`:

    ``lam``
        The curvature rate λ (raw normalisation) at the chosen points.
    ``lam_stderr``
        The standard error of the slope fit behind λ (misfit of the straight
        line over the orders, not a sampling error); NaN when ``orders`` holds
        only two orders, which leave the fit no residual.
    ``mean_log``
        The mean ``log |d_n|`` per order, a tensor ``(len(orders),)``.
    ``n_points``
        How many points λ was measured at.
    ``used_fallback``
        1 when the band was empty and the fallback points were used, else 0.
    ``n_clamped``
        How many ``|d_n|`` were raised to ``clamp``.
    ``clean_test_error``
        Test error against the clean labels (``data.y_test_clean``; the stored
        test labels when the data has no clean labels).

    Parameters
    ----------
    points:
        ``"boundary"`` (the paper's) or ``"fixed"``; see the module docstring.
    band:
        Band of top softmax probability for ``points="boundary"``.
    fallback:
        Points taken when the band is empty (``points="boundary"``).
    n_points:
        Size of the fixed subset (``points="fixed"``; all test points when the
        test set is smaller).
    orders:
        Derivative orders of the fit.
    directions:
        Random unit directions per point (``K``).
    labels:
        ``"true"``: the stored test labels (noisy where flipped, as in the
        paper); ``"predicted"``: the model's predictions.
    quantity:
        ``"loss"`` or ``"logit"``, as in :func:`crbook.curvature_rate`.
    clamp:
        Clamp of ``|d_n|`` before the log.
    seed:
        Seed of the random directions (re-seeded every epoch) and of the fixed
        subset.

    See chapter 5, λ during training.
    """

    points: str = "boundary"
    band: tuple[float, float] = (0.45, 0.65)
    fallback: int = 600
    n_points: int = 300
    orders: tuple[int, ...] = (1, 2, 3, 4)
    directions: int = 2
    labels: str = "true"
    quantity: str = "loss"
    clamp: float = 1e-12
    seed: int = 0

    def __post_init__(self) -> None:
        if self.points not in _POINTS:
            raise ValueError(f"points must be one of {_POINTS}, got {self.points!r}")
        if self.labels not in _LABELS:
            raise ValueError(f"labels must be one of {_LABELS}, got {self.labels!r}")
        if self.quantity not in _QUANTITIES:
            raise ValueError(
                f"quantity must be one of {_QUANTITIES}, got {self.quantity!r}"
            )
        try:
            band = tuple(float(b) for b in self.band)
        except (TypeError, ValueError):
            raise TypeError(
                f"band must be a pair of numbers, got {self.band!r}"
            ) from None
        if len(band) != 2 or not 0 <= band[0] <= band[1] <= 1:
            raise ValueError(
                f"band must be (low, high) with 0 <= low <= high <= 1, got {band!r}"
            )
        object.__setattr__(self, "band", band)
        orders = tuple(self.orders)
        if any(isinstance(n, bool) or not isinstance(n, int) for n in orders):
            raise TypeError(f"orders must be ints, got {list(orders)}")
        if len(set(orders)) < 2 or min(orders) < 1:
            raise ValueError(
                f"orders must hold at least 2 distinct positive ints, got "
                f"{list(orders)}"
            )
        object.__setattr__(self, "orders", orders)
        for name, low in (
            ("fallback", 1),
            ("n_points", 1),
            ("directions", 1),
            ("seed", 0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
            if value < low:
                raise ValueError(f"{name} must be at least {low}, got {value}")
        if not (isinstance(self.clamp, (int, float)) and self.clamp > 0):
            raise ValueError(f"clamp must be a positive number, got {self.clamp!r}")
        object.__setattr__(self, "clamp", float(self.clamp))

    @property
    def cache_key(self) -> dict[str, Any]:
        """All settings, for the cache key of :func:`crbook.train.fit`."""
        settings = asdict(self)
        settings["band"] = list(self.band)
        settings["orders"] = list(self.orders)
        return {"class": "crbook.tracking.LambdaTracker", "format": _FORMAT, **settings}

    def select(self, model: nn.Module, data: Any) -> tuple[Tensor, Tensor, bool]:
        """The points and labels λ is measured at now, and whether the fallback
        was used (always False for fixed points)."""
        device = _device_of(model)
        x, y = data.x_test.to(device), data.y_test.to(device)
        if self.points == "fixed":
            count = x.shape[0]
            chosen = torch.randperm(
                count, generator=torch.Generator().manual_seed(self.seed)
            )[: min(self.n_points, count)]
            chosen = chosen.sort().values.to(device)
            return x[chosen], y[chosen], False
        found = boundary_points(model, x, y, band=self.band, fallback=self.fallback)
        return found.x, found.y, found.used_fallback

    def _rate(self, model: nn.Module, data: Any) -> tuple[CurvatureRate, bool]:
        x, y, used_fallback = self.select(model, data)
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        rate = curvature_rate(
            model,
            x,
            None if self.labels == "predicted" else y,
            orders=self.orders,
            directions=self.directions,
            generator=generator,
            quantity=self.quantity,
            clamp=self.clamp,
        )
        return rate, used_fallback

    def measure(self, model: nn.Module, data: Any) -> CurvatureRate:
        """λ of ``model`` now, with these settings, as a :class:`CurvatureRate`.

        The same number the callback records, with all of the fit's details.
        """
        return self._rate(model, data)[0]

    def __call__(self, epoch: int, model: nn.Module, data: Any) -> dict[str, Any]:
        """Measure λ and the clean test error of ``model`` now."""
        rate, used_fallback = self._rate(model, data)
        device = _device_of(model)
        clean = getattr(data, "y_test_clean", data.y_test)
        with torch.no_grad():
            predicted = model(data.x_test.to(device)).argmax(1).cpu()
        error = (predicted != clean.cpu()).double().mean().item()
        stderr = rate.fit.stderr
        return {
            "lam": rate.lam,
            "lam_stderr": math.nan if stderr is None else stderr,
            "mean_log": torch.as_tensor(rate.mean_log),
            "n_points": rate.n_points,
            "used_fallback": int(used_fallback),
            "n_clamped": rate.n_clamped,
            "clean_test_error": error,
        }


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


# -- percentiles across seeds --------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PercentileBand:
    """The result of :func:`percentile_band`: percentiles across seeds.

    Attributes
    ----------
    low, median, high : numpy.ndarray
        The ``q_low``, 50th and ``q_high`` percentiles across seeds, one per
        epoch (or per column).
    q_low, q_high : float
        The percentiles, in percent.
    seeds : int
        How many curves (seeds) went in.
    """

    low: np.ndarray
    median: np.ndarray
    high: np.ndarray
    q_low: float
    q_high: float
    seeds: int

    def label(self) -> str:
        """A legend text such as ``"2.5–97.5 percentiles of 20 seeds"``."""
        return f"{self.q_low:g}–{self.q_high:g} percentiles of {self.seeds} seeds"


def percentile_band(
    curves: Any, q_low: float = 2.5, q_high: float = 97.5
) -> PercentileBand:
    """Percentiles across seeds of a stack of curves.

    Parameters
    ----------
    curves:
        Array-like ``(seeds, epochs)``: one row per seed (or one value per seed,
        ``(seeds,)``).
    q_low, q_high:
        The lower and upper percentiles, ``0 <= q_low < q_high <= 100``; the
        defaults give the middle 95 % of the seeds. These describe the spread of
        the runs, not the uncertainty of their mean.

    Returns
    -------
    PercentileBand
        ``low``, ``median``, ``high`` per epoch (linear interpolation between
        order statistics, numpy's default).

    See chapter 5, λ during training.
    """
    values = np.asarray(curves, dtype=float)
    if values.ndim not in (1, 2) or values.shape[0] < 2:
        raise ValueError(
            "curves must have shape (seeds, epochs) or (seeds,) with at least 2 "
            f"seeds, got shape {values.shape}"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError("curves must be finite (no NaN or inf)")
    if not 0 <= q_low < q_high <= 100:
        raise ValueError(
            f"need 0 <= q_low < q_high <= 100, got q_low={q_low}, q_high={q_high}"
        )
    low, median, high = np.percentile(values, [q_low, 50.0, q_high], axis=0)
    return PercentileBand(
        low=low,
        median=median,
        high=high,
        q_low=float(q_low),
        q_high=float(q_high),
        seeds=values.shape[0],
    )


# -- correlations across seeds -------------------------------------------------------


@dataclass(frozen=True)
class Correlation:
    """Pearson and Spearman correlation of two quantities across runs.

    Attributes
    ----------
    pearson, pearson_p : float
        Pearson's r and its two-sided p-value (``scipy.stats.pearsonr``).
    spearman, spearman_p : float
        Spearman's rank correlation and its two-sided p-value
        (``scipy.stats.spearmanr``).
    n : int
        Number of pairs.
    """

    pearson: float
    pearson_p: float
    spearman: float
    spearman_p: float
    n: int

    def __str__(self) -> str:
        return (
            f"Pearson r = {self.pearson:+.2f} (p = {self.pearson_p:.2g}), "
            f"Spearman ρ = {self.spearman:+.2f} (p = {self.spearman_p:.2g}), "
            f"n = {self.n}"
        )


def _pair(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(
            f"x and y must be 1-D of the same length, got shapes {a.shape} and "
            f"{b.shape}"
        )
    if a.size < 3:
        raise ValueError(f"a correlation needs at least 3 pairs, got {a.size}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("x and y must be finite (no NaN or inf)")
    for name, v in (("x", a), ("y", b)):
        if np.all(v == v[0]):
            raise ValueError(
                f"{name} is constant ({v[0]!r} for all {v.size} runs): its "
                "correlation is undefined"
            )
    return a, b


def correlation(x: Any, y: Any) -> Correlation:
    """Pearson and Spearman correlation of ``x`` and ``y`` (one value per run).

    Raises ``ValueError`` for fewer than 3 pairs, non-finite values or a
    constant input (where a correlation is undefined).

    See chapter 5, λ during training.
    """
    from scipy import stats

    a, b = _pair(x, y)
    pearson = stats.pearsonr(a, b)
    spearman = stats.spearmanr(a, b)
    return Correlation(
        pearson=float(pearson.statistic),
        pearson_p=float(pearson.pvalue),
        spearman=float(spearman.statistic),
        spearman_p=float(spearman.pvalue),
        n=int(a.size),
    )


@dataclass(frozen=True)
class GroupedCorrelation:
    """The result of :func:`grouped_correlation`.

    Attributes
    ----------
    within : dict
        Group → :class:`Correlation` of the runs of that group alone.
    pooled : Correlation
        All runs together, ignoring the groups.
    centred : Correlation
        All runs together after subtracting each group's mean from ``x`` and
        from ``y``: what is left of the pooled correlation once the groups'
        different levels are removed.
    """

    within: dict[Any, Correlation]
    pooled: Correlation
    centred: Correlation


def grouped_correlation(x: Any, y: Any, groups: Sequence[Any]) -> GroupedCorrelation:
    """Correlations of ``x`` and ``y`` within each group, pooled, and centred.

    When the groups differ in both ``x`` and ``y`` (say, label-noise levels that
    raise both λ and the test error), the pooled correlation can be large even
    if there is none inside any group: the group alone drives it. Comparing
    ``within`` and ``centred`` with ``pooled`` shows how much of it is that.

    Parameters
    ----------
    x, y:
        One value per run, 1-D of equal length.
    groups:
        The group of each run (any hashable labels); every group needs at least
        3 runs.

    Returns
    -------
    GroupedCorrelation

    See chapter 5, λ during training.
    """
    a, b = _pair(x, y)
    labels = list(groups)
    if len(labels) != a.size:
        raise ValueError(
            f"groups must give one label per run ({a.size}), got {len(labels)}"
        )
    order: dict[Any, list[int]] = {}
    for index, label in enumerate(labels):
        order.setdefault(label, []).append(index)
    if len(order) < 2:
        raise ValueError(f"need at least 2 groups, got {list(order)}")
    within = {}
    a_centred, b_centred = a.copy(), b.copy()
    for label, members in order.items():
        idx = np.asarray(members)
        if idx.size < 3:
            raise ValueError(
                f"group {label!r} holds {idx.size} runs; each needs at least 3"
            )
        within[label] = correlation(a[idx], b[idx])
        a_centred[idx] -= a[idx].mean()
        b_centred[idx] -= b[idx].mean()
    return GroupedCorrelation(
        within=within,
        pooled=correlation(a, b),
        centred=correlation(a_centred, b_centred),
    )


def stack_metric(histories: Sequence[Any], name: str) -> np.ndarray:
    """One metric of several training histories as an array ``(runs, epochs)``.

    ``name`` is a built-in list of :class:`crbook.train.History` (such as
    ``"test_accuracy"``) or a key of its ``metrics`` (such as ``"lam"``).
    """
    rows = []
    for history in histories:
        metrics: Mapping[str, Any] = getattr(history, "metrics", {})
        if name in metrics:
            values = metrics[name]
        elif hasattr(history, name):
            values = getattr(history, name)
        else:
            raise KeyError(
                f"history has no metric {name!r}; it has {sorted(metrics)} and the "
                "built-in train_loss, train_accuracy, test_loss, test_accuracy"
            )
        rows.append([float(v) for v in values])
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise ValueError(f"histories have different numbers of epochs: {lengths}")
    return np.asarray(rows, dtype=float)
