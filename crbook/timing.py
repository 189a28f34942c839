"""Measuring what derivatives cost, honestly, on a noisy shared machine.

A single wall-clock reading on a shared machine says little: another process,
a cache miss or a frequency change can double it. So every time reported here
is the **median** of several calls made after some warm-up calls, read with
:func:`time.perf_counter`, with CUDA synchronised before and after each call so
that queued kernels are not missed. A cell that was not measured (because a
time budget ran out) is reported as not measured, never extrapolated.

Next to the times, a count that no noise can move: :func:`graph_size`, the
number of nodes of an autograd graph, which is the number of recorded
operations a result depends on. It shows *why* one method is slower than
another; the times show *how much* on this machine.

See chapter 1, Differentiation dynamics.

Limitations
-----------
A median resists a few slow calls, not a machine that is slow throughout a
measurement: compare times taken in the same run only. For small networks
Python overhead dominates the time, so ratios to the forward pass describe
this machine and these sizes, not an asymptotic cost. :func:`graph_size` counts
operations, not floating-point work: an operation on a scalar counts as much as
one on a large tensor, and operations that need no gradient are not recorded.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from numbers import Integral
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from crbook._taylor import directional_derivatives

__all__ = [
    "DerivativeTimings",
    "TimingRow",
    "derivative_timings",
    "graph_size",
    "median_time",
]

_METHODS = ("taylor", "autograd")

Clock = Callable[[], float]


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _check_count(value: Any, name: str, minimum: int) -> int:
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _synchroniser(device: torch.device | str | None) -> Callable[[], None]:
    """A function that waits for queued CUDA work, or does nothing on CPU."""
    if device is not None:
        dev = torch.device(device)
        if dev.type == "cuda":
            return lambda: torch.cuda.synchronize(dev)
        return lambda: None
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.synchronize
    return lambda: None


def _samples(
    fn: Callable[[], Any],
    repeats: int,
    warmup: int,
    sync: Callable[[], None],
    clock: Clock,
) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn``, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        sync()
        times.append(clock() - start)
    return times


def median_time(
    fn: Callable[[], Any],
    repeats: int = 7,
    warmup: int = 1,
    *,
    device: torch.device | str | None = None,
    clock: Clock = time.perf_counter,
) -> float:
    """The median wall-clock time of one call of ``fn()``, in seconds.

    ``fn`` is called ``warmup`` times untimed (to fill caches and let lazy
    initialisation happen), then ``repeats`` times, each call timed on its own;
    the median of those times is returned.

    Parameters
    ----------
    fn
        A function of no arguments; its result is discarded.
    repeats
        Number of timed calls (at least 1).
    warmup
        Number of untimed calls before them (at least 0).
    device
        The device ``fn`` computes on. On a CUDA device the clock is read only
        after :func:`torch.cuda.synchronize`, so the time includes the kernels
        ``fn`` queued. With ``None``, CUDA is synchronised whenever it is
        available and already initialised.
    clock
        The clock, in seconds; :func:`time.perf_counter` unless a test needs a
        deterministic one.

    Returns
    -------
    float
        Median seconds per call.

    See chapter 1, Differentiation dynamics.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    repeats = _check_count(repeats, "repeats", 1)
    warmup = _check_count(warmup, "warmup", 0)
    times = _samples(fn, repeats, warmup, _synchroniser(device), clock)
    return float(statistics.median(times))


@dataclass(frozen=True)
class TimingRow:
    """One cell of a :class:`DerivativeTimings` table: a method at an order.

    Attributes
    ----------
    method : str
        ``"taylor"`` or ``"autograd"``.
    order : int
        The highest derivative order computed (all orders ``0 ... order`` are
        computed by one call).
    seconds : float or None
        Median seconds of one call; ``None`` when not measured.
    ratio : float or None
        ``seconds`` divided by the median seconds of one forward pass ``f(x)``;
        ``None`` when not measured.
    note : str
        Empty when measured, otherwise why not.
    """

    method: str
    order: int
    seconds: float | None
    ratio: float | None
    note: str = ""

    @property
    def measured(self) -> bool:
        """Whether this cell holds a measurement."""
        return self.seconds is not None


def _format_seconds(value: float) -> str:
    return f"{value:.3g}"


def _format_ratio(value: float) -> str:
    return f"{value:.3g}" if value < 1e4 else f"{value:.2e}"


@dataclass(frozen=True, eq=False)
class DerivativeTimings:
    """The result of :func:`derivative_timings`.

    Attributes
    ----------
    forward : float
        Median seconds of one forward pass ``f(x)``.
    rows : tuple of TimingRow
        One row per method and order, grouped by method, orders increasing.
    methods : tuple of str
        The methods, in the order they were measured.
    orders : tuple of int
        The orders, increasing.
    repeats, warmup : int
        Timed and untimed calls per cell.
    budget : float or None
        Seconds of measuring allowed per method (``None``: no limit).
    spent : Mapping[str, float]
        Seconds actually spent measuring each method, warm-up calls included.
    """

    forward: float
    rows: tuple[TimingRow, ...]
    methods: tuple[str, ...]
    orders: tuple[int, ...]
    repeats: int
    warmup: int
    budget: float | None
    spent: Mapping[str, float]

    def row(self, method: str, order: int) -> TimingRow:
        """The cell of ``method`` at ``order``."""
        for r in self.rows:
            if r.method == method and r.order == order:
                return r
        raise KeyError(
            f"no cell for method {method!r} at order {order}; methods are "
            f"{list(self.methods)}, orders {list(self.orders)}"
        )

    def seconds(self, method: str) -> list[float | None]:
        """Median seconds of ``method`` at each order (``None``: not measured)."""
        return [self.row(method, n).seconds for n in self.orders]

    def ratios(self, method: str) -> list[float | None]:
        """Time of ``method`` over the forward pass at each order."""
        return [self.row(method, n).ratio for n in self.orders]

    def to_markdown(self) -> str:
        """The table in Markdown: seconds and ratio to the forward pass."""
        head = ["order"]
        for m in self.methods:
            head += [f"{m} (s)", f"{m} / forward"]
        lines = [
            "| " + " | ".join(head) + " |",
            "|" + "|".join("---:" for _ in head) + "|",
        ]
        for n in self.orders:
            cells = [str(n)]
            for m in self.methods:
                r = self.row(m, n)
                if r.seconds is None or r.ratio is None:
                    cells += ["not measured", "–"]
                else:
                    cells += [_format_seconds(r.seconds), _format_ratio(r.ratio)]
            lines.append("| " + " | ".join(cells) + " |")
        budget = "no budget" if self.budget is None else f"budget {self.budget:g} s"
        spent = ", ".join(f"{m} {self.spent[m]:.3g} s" for m in self.methods)
        lines += [
            "",
            f"Forward pass: {_format_seconds(self.forward)} s. Medians of "
            f"{self.repeats} timed calls after {self.warmup} warm-up call(s); "
            f"{budget} per method; spent {spent}.",
        ]
        notes = sorted({r.note for r in self.rows if r.note})
        lines += [f"Not measured: {note}." for note in notes]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def __repr__(self) -> str:
        measured = sum(r.measured for r in self.rows)
        return (
            f"DerivativeTimings(methods={list(self.methods)}, "
            f"orders={list(self.orders)}, forward={self.forward:.3g} s, "
            f"{measured} of {len(self.rows)} cells measured)"
        )

    def __str__(self) -> str:
        return self.to_markdown()


def _check_orders(orders: Any) -> tuple[int, ...]:
    try:
        values = list(orders)
    except TypeError:
        raise TypeError(
            f"orders must be an iterable of ints, got {type(orders).__name__}"
        ) from None
    if not values:
        raise ValueError("orders must hold at least one order, got []")
    bad = [n for n in values if not _is_int(n)]
    if bad:
        raise TypeError(f"orders must be ints, got {bad}")
    values = [int(n) for n in values]
    if any(n < 0 for n in values):
        raise ValueError(f"orders must be non-negative, got {values}")
    if len(set(values)) != len(values):
        raise ValueError(f"orders must be distinct, got {values}")
    return tuple(sorted(values))


def _check_methods(methods: Any) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = (methods,)
    values = tuple(methods)
    if not values:
        raise ValueError(f"methods must name at least one of {list(_METHODS)}")
    unknown = [m for m in values if m not in _METHODS]
    if unknown:
        raise ValueError(f"methods must be among {list(_METHODS)}, got {unknown}")
    if len(set(values)) != len(values):
        raise ValueError(f"methods must be distinct, got {list(values)}")
    return values


def _check_budget(budget: Any) -> float | None:
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise TypeError(
            f"budget must be a number of seconds or None, got {type(budget).__name__}"
        )
    if math.isnan(budget) or budget < 0:
        raise ValueError(f"budget must be >= 0 seconds (or None), got {budget}")
    return float(budget)


def derivative_timings(
    f: Callable[[Any], Any],
    x: Tensor,
    u: Tensor,
    orders: Iterable[int],
    methods: Iterable[str] = _METHODS,
    repeats: int = 5,
    warmup: int = 1,
    budget: float | None = 2.0,
    *,
    clock: Clock = time.perf_counter,
) -> DerivativeTimings:
    """Time derivatives of every order by each method against a forward pass.

    Measures the median seconds of one forward pass ``f(x)`` and of one call
    of :func:`crbook.directional_derivatives` ``(f, x, u, order, method)`` for
    each method and order, all under :func:`torch.no_grad` and with CUDA
    synchronised when ``x`` is on a CUDA device. Each method runs its orders
    from the lowest up; once the time spent measuring it (warm-up calls
    included) exceeds ``budget``, its higher orders are not run and are marked
    as not measured. Nested autograd grows exponentially with the order, so
    the budget is what keeps a table of it affordable.

    Parameters
    ----------
    f, x, u
        As for :func:`crbook.directional_derivatives`.
    orders
        Distinct non-negative orders (measured in increasing order).
    methods
        Any of ``"taylor"`` and ``"autograd"``.
    repeats, warmup
        Timed calls per cell (at least 1) and untimed calls before them.
    budget
        Seconds of measuring per method, or ``None`` for no limit. The order
        that crosses the budget is still reported; the orders above it are not
        run. ``0`` measures the lowest order only.
    clock
        The clock, in seconds (:func:`time.perf_counter`).

    Returns
    -------
    DerivativeTimings
        The table; ``str()`` or ``to_markdown()`` renders it.

    See chapter 1, Differentiation dynamics.
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    order_list = _check_orders(orders)
    method_list = _check_methods(methods)
    repeats = _check_count(repeats, "repeats", 1)
    warmup = _check_count(warmup, "warmup", 0)
    limit = _check_budget(budget)
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    sync = _synchroniser(x.device)

    with torch.no_grad():
        forward = statistics.median(
            _samples(lambda: f(x), repeats, warmup, sync, clock)
        )
        if not forward > 0:
            raise ValueError(
                f"the forward pass took {forward} s by the clock; ratios to it "
                "are undefined (is the clock too coarse?)"
            )
        rows: list[TimingRow] = []
        spent: dict[str, float] = {}
        for method in method_list:
            spent[method] = 0.0
            stopped_after: int | None = None
            for n in order_list:
                if stopped_after is not None:
                    note = (
                        f"{method} had spent {spent[method]:.3g} s of its "
                        f"{limit:g} s budget by order {stopped_after}"
                    )
                    rows.append(TimingRow(method, n, None, None, note))
                    continue

                def call(n: int = n, method: str = method) -> Any:
                    return directional_derivatives(
                        f, x, u, n, method=method, check_finite=False
                    )

                start = clock()
                seconds = statistics.median(
                    _samples(call, repeats, warmup, sync, clock)
                )
                spent[method] += clock() - start
                rows.append(TimingRow(method, n, seconds, seconds / forward))
                if limit is not None and spent[method] > limit:
                    stopped_after = n

    return DerivativeTimings(
        forward=forward,
        rows=tuple(rows),
        methods=method_list,
        orders=order_list,
        repeats=repeats,
        warmup=warmup,
        budget=limit,
        spent=MappingProxyType(spent),
    )


def graph_size(tensor: Tensor) -> int:
    """The number of distinct autograd nodes that ``tensor`` depends on.

    Walks ``tensor.grad_fn`` and its ``next_functions`` recursively, counting
    each node once (leaf accumulators included). ``0`` for a tensor without a
    graph. With gradients enabled, autograd records a node for every operation
    whose inputs need gradients, so the count is also the number of operations
    that produced ``tensor``: for derivatives of order ``n`` it grows
    geometrically in ``n`` with nested autograd and quadratically with Taylor
    mode. It is a measure of cost that no timing noise can move.

    See chapter 1, Differentiation dynamics.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    return len(_graph_nodes(tensor))


def _graph_nodes(tensor: Tensor) -> set[Any]:
    """The distinct autograd nodes that ``tensor`` depends on."""
    seen: set[Any] = set()
    stack = [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(child for child, _ in node.next_functions)
    return seen
