"""Tests of crbook.timing: structure, bookkeeping and argument checks.

No test asserts how long anything takes on this machine. Where numbers matter,
a fake clock that advances only when the timed function says so makes every
"measured" time known in advance.
"""

import statistics

import pytest
import torch

import crbook
from crbook import timing
from crbook.timing import (
    DerivativeTimings,
    TimingRow,
    derivative_timings,
    graph_size,
    median_time,
)


class FakeClock:
    """A clock that moves only when ``advance`` is called."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- median_time -------------------------------------------------------------------


def test_median_time_is_the_median_of_the_timed_calls_only():
    clock = FakeClock()
    durations = iter([50.0, 60.0, 3.0, 1.0, 2.0, 8.0, 0.5])  # two warm-up calls

    def fn():
        clock.advance(next(durations))

    result = median_time(fn, repeats=5, warmup=2, clock=clock)
    assert result == pytest.approx(statistics.median([3.0, 1.0, 2.0, 8.0, 0.5]))
    assert next(durations, None) is None  # exactly warmup + repeats calls


def test_median_time_with_the_real_clock_calls_fn_warmup_plus_repeats_times():
    calls = []
    result = median_time(lambda: calls.append(1), repeats=4, warmup=3)
    assert isinstance(result, float) and result >= 0.0
    assert len(calls) == 7


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"repeats": 0}, ValueError, "repeats must be at least 1"),
        ({"repeats": 2.5}, TypeError, "repeats must be an int"),
        ({"repeats": True}, TypeError, "repeats must be an int"),
        ({"warmup": -1}, ValueError, "warmup must be at least 0"),
    ],
)
def test_median_time_rejects_bad_counts(kwargs, error, words):
    with pytest.raises(error, match=words):
        median_time(lambda: None, **kwargs)


def test_median_time_rejects_a_non_callable():
    with pytest.raises(TypeError, match="fn must be callable"):
        median_time(42)


def test_cuda_is_synchronised_only_for_cuda(monkeypatch):
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: synced.append(a))
    median_time(lambda: None, repeats=3, warmup=1, device="cuda")
    # once after the warm-up calls, once after each timed call
    assert len(synced) == 4
    synced.clear()
    median_time(lambda: None, repeats=3, device="cpu")
    assert synced == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    median_time(lambda: None, repeats=2, warmup=0)
    assert len(synced) == 3


# -- derivative_timings ------------------------------------------------------------

FORWARD, TAYLOR_PER_ORDER, AUTOGRAD = 0.5, 0.01, 4.0


def clocked_function(clock):
    """tanh summed over features; each call advances ``clock`` by a known cost.

    The cost depends on how the function is called: on a plain tensor (the
    forward pass), on a Taylor-mode jet (cost grows with its order) or on the
    tensor that nested autograd differentiates.
    """

    def f(z):
        if isinstance(z, crbook.Jet):
            clock.advance(TAYLOR_PER_ORDER * z.order)
        elif z.requires_grad:
            clock.advance(AUTOGRAD)
        else:
            clock.advance(FORWARD)
        return torch.tanh(z).sum(dim=1)

    return f


def inputs():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    u = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    return x, u


def test_table_holds_the_known_medians_and_ratios_from_them():
    clock = FakeClock()
    x, u = inputs()
    table = derivative_timings(
        clocked_function(clock),
        x,
        u,
        orders=[3, 1, 2],  # measured in increasing order whatever the input
        repeats=3,
        warmup=1,
        budget=None,
        clock=clock,
    )
    assert isinstance(table, DerivativeTimings)
    assert table.orders == (1, 2, 3)
    assert table.methods == ("taylor", "autograd")
    assert table.forward == pytest.approx(FORWARD)
    assert len(table.rows) == 6
    assert all(isinstance(r, TimingRow) and r.measured for r in table.rows)
    assert [(r.method, r.order) for r in table.rows] == [
        ("taylor", 1),
        ("taylor", 2),
        ("taylor", 3),
        ("autograd", 1),
        ("autograd", 2),
        ("autograd", 3),
    ]
    for n in table.orders:
        taylor, autograd = table.row("taylor", n), table.row("autograd", n)
        assert taylor.seconds == pytest.approx(TAYLOR_PER_ORDER * n)
        assert autograd.seconds == pytest.approx(AUTOGRAD)
        # the ratio is the measured median over the measured forward median
        assert taylor.ratio == taylor.seconds / table.forward
        assert autograd.ratio == autograd.seconds / table.forward
    assert table.seconds("taylor") == [
        table.row("taylor", n).seconds for n in (1, 2, 3)
    ]
    assert table.ratios("autograd") == pytest.approx([AUTOGRAD / FORWARD] * 3)
    # four calls per cell (one warm-up, three timed)
    assert table.spent["taylor"] == pytest.approx(4 * TAYLOR_PER_ORDER * (1 + 2 + 3))
    assert table.spent["autograd"] == pytest.approx(4 * AUTOGRAD * 3)


def test_budget_stops_a_method_after_the_order_that_crosses_it():
    clock = FakeClock()
    x, u = inputs()
    # Each autograd order costs 4 calls x 4 s = 16 s: order 1 leaves 16 <= 20,
    # order 2 brings 32 > 20, so orders 3 and 4 are not run. Taylor stays far
    # below the budget and runs every order.
    table = derivative_timings(
        clocked_function(clock),
        x,
        u,
        orders=range(1, 5),
        repeats=3,
        warmup=1,
        budget=20.0,
        clock=clock,
    )
    measured = {
        m: [r.order for r in table.rows if r.method == m and r.measured]
        for m in table.methods
    }
    assert measured == {"taylor": [1, 2, 3, 4], "autograd": [1, 2]}
    for n in (3, 4):
        cell = table.row("autograd", n)
        assert cell.seconds is None and cell.ratio is None
        assert "budget" in cell.note and "order 2" in cell.note
    assert table.spent["autograd"] == pytest.approx(32.0)
    text = table.to_markdown()
    assert text.count("not measured") == 2
    assert str(table) == text
    assert "6 of 8 cells measured" in repr(table)


def test_zero_budget_measures_the_lowest_order_only_and_none_measures_all():
    x, u = inputs()
    f = lambda z: torch.tanh(z).sum(dim=1)  # noqa: E731
    table = derivative_timings(f, x, u, [1, 2, 3], repeats=1, warmup=0, budget=0)
    for method in ("taylor", "autograd"):
        assert [table.row(method, n).measured for n in (1, 2, 3)] == [
            True,
            False,
            False,
        ]
    table = derivative_timings(f, x, u, [1, 2], repeats=1, warmup=0, budget=None)
    assert all(r.measured and r.ratio > 0 for r in table.rows)
    assert "not measured" not in table.to_markdown()


def test_a_single_method_may_be_named_as_a_string():
    x, u = inputs()
    f = lambda z: torch.tanh(z).sum(dim=1)  # noqa: E731
    table = derivative_timings(f, x, u, [2], methods="taylor", repeats=1)
    assert table.methods == ("taylor",)
    assert [(r.method, r.order) for r in table.rows] == [("taylor", 2)]
    with pytest.raises(KeyError, match="no cell for method 'autograd'"):
        table.row("autograd", 2)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"orders": []}, ValueError, "at least one order"),
        ({"orders": [1, 1]}, ValueError, "distinct"),
        ({"orders": [-1, 2]}, ValueError, "non-negative"),
        ({"orders": [1.5]}, TypeError, "orders must be ints"),
        ({"orders": 3}, TypeError, "iterable"),
        ({"repeats": 0}, ValueError, "repeats must be at least 1"),
        ({"methods": ("taylor", "jvp")}, ValueError, r"\['jvp'\]"),
        ({"methods": ()}, ValueError, "at least one"),
        ({"methods": ("taylor", "taylor")}, ValueError, "distinct"),
        ({"budget": -1.0}, ValueError, "budget must be >= 0"),
        ({"budget": float("nan")}, ValueError, "budget must be >= 0"),
        ({"budget": "1 s"}, TypeError, "budget must be a number"),
    ],
)
def test_derivative_timings_rejects_bad_arguments(kwargs, error, words):
    x, u = inputs()
    arguments = {"orders": [1, 2], "repeats": 1, "warmup": 0}
    arguments.update(kwargs)
    with pytest.raises(error, match=words):
        derivative_timings(lambda z: z.sum(dim=1), x, u, **arguments)


# -- graph_size --------------------------------------------------------------------


def test_graph_size_counts_each_node_once():
    x = torch.randn(4, requires_grad=True)
    assert graph_size(x) == 0  # a leaf has no grad_fn
    assert graph_size(torch.randn(3)) == 0
    # sum <- mul <- (sin, cos) <- one accumulator for x: 5 nodes, x shared
    y = (x.sin() * x.cos()).sum()
    assert graph_size(y) == 5
    with pytest.raises(TypeError, match="torch.Tensor"):
        graph_size([1.0])


def test_graph_of_nested_derivatives_grows():
    t = torch.zeros(1, requires_grad=True)
    g = torch.tanh(t + 0.3).sum()
    sizes = [graph_size(g)]
    for _ in range(4):
        (g,) = torch.autograd.grad(g, t, create_graph=True)
        g = g.sum()
        sizes.append(graph_size(g))
    assert all(b > a for a, b in zip(sizes, sizes[1:], strict=False))


def test_public_names_are_exported():
    assert set(timing.__all__) == {
        "DerivativeTimings",
        "TimingRow",
        "derivative_timings",
        "graph_size",
        "median_time",
    }
