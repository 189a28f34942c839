"""The paper's network estimator, checked against a direct re-implementation."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import crbook

D = torch.float64


def _model(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(2, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 3)
    ).to(D)


def _data(n=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g, dtype=D), torch.randint(3, (n,), generator=g)


def _by_hand(model, x, y, orders, directions, seed):
    """The paper's recipe with nested autograd, one point and direction at a time."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn((directions,) + tuple(x.shape), generator=g, dtype=D)
    logs = np.zeros((len(orders), directions, x.shape[0]))
    for k in range(directions):
        for i in range(x.shape[0]):
            direction = u[k, i] / u[k, i].norm()
            t = torch.zeros((), dtype=D, requires_grad=True)
            value = F.cross_entropy(model((x[i] + t * direction)[None]), y[i : i + 1])
            derivative = value
            for n in range(1, max(orders) + 1):
                (derivative,) = torch.autograd.grad(derivative, t, create_graph=True)
                if n in orders:
                    size = max(abs(derivative.item()), 1e-12)
                    logs[orders.index(n), k, i] = math.log(size)
    return np.polyfit(orders, logs.mean(axis=(1, 2)), 1)[0]


def test_matches_the_recipe_computed_by_hand():
    model = _model()
    x, y = _data(8)
    orders = [1, 2, 3, 4]
    got = crbook.curvature_rate(
        model, x, y, orders, directions=3, generator=torch.Generator().manual_seed(5)
    )
    want = _by_hand(model, x, y, orders, 3, seed=5)
    assert got.lam == pytest.approx(want, rel=1e-10)
    assert got.n_values == 4 * 3 * 8 and got.n_points == 8 and got.directions == 3
    assert got.lam_per_direction.shape == (3,)
    assert got.lam_spread == pytest.approx(np.std(got.lam_per_direction, ddof=1))


def test_scaling_the_input_shifts_lambda_by_log_c():
    model = _model()
    x, y = _data()
    c = 3.0
    scaled = nn.Sequential(_Scale(c), model)
    base = crbook.curvature_rate(
        model, x, y, generator=torch.Generator().manual_seed(2)
    )
    moved = crbook.curvature_rate(
        scaled, x / c, y, generator=torch.Generator().manual_seed(2)
    )
    assert moved.lam - base.lam == pytest.approx(math.log(c), abs=1e-9)


class _Scale(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x):
        return self.c * x


def test_constant_model_is_all_clamped():
    model = nn.Sequential(_Scale(0.0), nn.Linear(2, 3)).to(D)
    x, y = _data(5)
    result = crbook.curvature_rate(model, x, y, orders=(1, 2, 3))
    assert result.n_clamped == result.n_values == 5 * 2 * 3
    assert result.lam == pytest.approx(0.0, abs=1e-12)
    assert np.allclose(result.mean_log, math.log(1e-12))


def test_logit_of_a_linear_model_has_only_a_first_derivative():
    model = nn.Linear(2, 3).to(D)
    x, y = _data(6)
    result = crbook.curvature_rate(model, x, y, orders=(1, 2, 3), quantity="logit")
    assert result.n_clamped == 6 * 2 * 2
    loss = crbook.curvature_rate(model, x, y, orders=(1, 2, 3))
    assert loss.n_clamped == 0


def test_predicted_labels_and_mode_restored():
    model = _model(dropout=0.5).train()
    x, _ = _data()
    predicted = model.eval()(x).argmax(1)
    model.train()
    a = crbook.curvature_rate(
        model, x, None, generator=torch.Generator().manual_seed(0)
    )
    b = crbook.curvature_rate(
        model, x, predicted, generator=torch.Generator().manual_seed(0)
    )
    assert model.training
    assert a.lam == b.lam  # evaluation mode: dropout off, so the runs agree exactly


def test_taylor_and_autograd_agree():
    model = _model()
    x, y = _data(6)
    kwargs = dict(orders=(1, 2, 3, 4, 5), directions=2)
    a = crbook.curvature_rate(
        model, x, y, generator=torch.Generator().manual_seed(1), **kwargs
    )
    b = crbook.curvature_rate(
        model,
        x,
        y,
        generator=torch.Generator().manual_seed(1),
        method="autograd",
        **kwargs,
    )
    assert a.lam == pytest.approx(b.lam, rel=1e-10)


def test_compiled_taylor_pass_gives_the_same_rate():
    model = _model()
    x, y = _data(6)
    kwargs = dict(orders=(1, 2, 3, 4), directions=2)
    a = crbook.curvature_rate(
        model, x, y, generator=torch.Generator().manual_seed(1), **kwargs
    )
    b = crbook.curvature_rate(
        model, x, y, generator=torch.Generator().manual_seed(1), compile=True, **kwargs
    )
    assert b.lam == pytest.approx(a.lam, rel=1e-10)
    assert np.allclose(b.mean_log, a.mean_log, rtol=1e-10, atol=0)


def test_unit_directions():
    u = crbook.unit_directions((4, 3, 5, 5), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(u.flatten(1).norm(dim=1), torch.ones(4))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(orders=(2,)), ValueError, "2 distinct"),
        (dict(orders=(0, 1)), ValueError, "positive"),
        (dict(directions=0), ValueError, "at least 1"),
        (dict(quantity="margin"), ValueError, "quantity"),
        (dict(clamp=0.0), ValueError, "clamp"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    x, y = _data(4)
    with pytest.raises(error, match=match):
        crbook.curvature_rate(_model(), x, y, **kwargs)


def test_bad_labels():
    x, y = _data(4)
    with pytest.raises(ValueError, match="one label per point"):
        crbook.curvature_rate(_model(), x, y[:3])
    with pytest.raises(TypeError, match="integer labels"):
        crbook.curvature_rate(_model(), x, y.double())
