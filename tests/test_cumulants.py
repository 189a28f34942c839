"""Softmax cumulants against nested autograd, closed forms and Taylor mode."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crbook
from crbook import CumulantSplit, cumulant_split, softmax_cumulants


def problem(rows=40, classes=10, spread=3.0, seed=0):
    """Random logits (some rows confident, some not), velocities and labels."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, classes, dtype=torch.float64, generator=gen)
    z = z * torch.linspace(0.5, 3 * spread, rows, dtype=torch.float64)[:, None]
    v = torch.randn(rows, classes, dtype=torch.float64, generator=gen)
    y = torch.randint(0, classes, (rows,), generator=gen)
    return z, v, y


def nested(z, v, y, order):
    """dᵏ/dtᵏ of logsumexp(z + t v) − (z_y + t v_y) by nested autograd."""
    t = torch.zeros(z.shape[0], dtype=z.dtype, requires_grad=True)
    moved = z + t[:, None] * v
    g = torch.logsumexp(moved, 1)
    if y is not None:
        g = g - moved[torch.arange(z.shape[0]), y]
    out = [g.detach()]
    for _ in range(order):
        (g,) = torch.autograd.grad(g.sum(), t, create_graph=True)
        out.append(g.detach())
    return torch.stack(out)


@pytest.mark.parametrize("labelled", [True, False])
def test_cumulants_match_nested_autograd_of_logsumexp(labelled):
    z, v, y = problem()
    y = y if labelled else None
    order = 6
    ours = softmax_cumulants(z, v, order, y)
    reference = nested(z, v, y, order)
    assert ours.shape == (order + 1, z.shape[0])
    # relative to each order's largest value: tiny cumulants of confident rows
    # are compared at the scale of the order, where round-off lives
    scale = reference.abs().amax(1, keepdim=True)
    assert torch.allclose(ours, reference, rtol=0, atol=1e-12 * scale.max())
    assert ((ours - reference).abs() / scale).max() < 1e-12


def test_two_classes_give_the_bernoulli_cumulants():
    # two classes, label 0: D = v_1 − v_0 = δ with probability p = σ(z_1 − z_0)
    z = torch.tensor([[0.0, -1.3], [2.0, 2.5]], dtype=torch.float64)
    v = torch.tensor([[0.4, -0.8], [1.0, 3.0]], dtype=torch.float64)
    y = torch.tensor([0, 0])
    p = torch.sigmoid(z[:, 1] - z[:, 0])
    delta = v[:, 1] - v[:, 0]
    q = 1 - p
    closed = torch.stack(
        [
            F.softplus(z[:, 1] - z[:, 0]),  # the loss −log(1 − p)
            p * delta,
            p * q * delta**2,
            p * q * (1 - 2 * p) * delta**3,
            p * q * (1 - 6 * p * q) * delta**4,
        ]
    )
    assert torch.allclose(softmax_cumulants(z, v, 4, y), closed, rtol=1e-13)


def test_a_common_shift_of_the_velocity_changes_nothing_with_labels():
    z, v, y = problem(seed=1)
    base = softmax_cumulants(z, v, 5, y)
    shifted = softmax_cumulants(z, v + 7.0, 5, y)
    assert torch.allclose(base, shifted, rtol=1e-10, atol=1e-14)
    # without labels only the first cumulant (the mean of v_C) moves, by 7
    plain = softmax_cumulants(z, v, 5) - softmax_cumulants(z, v + 7.0, 5)
    assert torch.allclose(plain[1], torch.full_like(plain[1], -7.0))
    assert plain[2:].abs().max() < 1e-10


def test_cumulants_equal_taylor_mode_on_a_relu_network():
    torch.manual_seed(0)
    net = crbook.models.MLP((5, 32, 32, 4), activation="relu").double()
    x = torch.randn(30, 5, dtype=torch.float64)
    u = crbook.unit_directions(x.shape, dtype=torch.float64)
    y = torch.randint(0, 4, (30,))
    with torch.no_grad():
        d = crbook.directional_derivatives(
            lambda a: F.cross_entropy(net(a), y, reduction="none"), x, u, 4
        )
        z, v = crbook.directional_derivatives(net, x, u, 1)
    ours = softmax_cumulants(z, v, 4, y)
    scale = d.abs().amax(1, keepdim=True)
    assert ((ours - d).abs() / scale).max() < 1e-12


def test_cumulants_miss_the_network_part_of_a_smooth_network():
    torch.manual_seed(0)
    net = crbook.models.MLP((5, 32, 4), activation="tanh").double()
    x = torch.randn(10, 5, dtype=torch.float64)
    u = crbook.unit_directions(x.shape, dtype=torch.float64)
    y = torch.randint(0, 4, (10,))
    with torch.no_grad():
        d = crbook.directional_derivatives(
            lambda a: F.cross_entropy(net(a), y, reduction="none"), x, u, 3
        )
        z, v = crbook.directional_derivatives(net, x, u, 1)
    ours = softmax_cumulants(z, v, 3, y)
    assert torch.allclose(ours[:2], d[:2], rtol=1e-12)  # value and slope agree
    assert not torch.allclose(ours[2:], d[2:], rtol=1e-3)  # curvature does not


def test_split_is_scale_plus_shape_and_matches_a_direct_fit():
    z, v, y = problem(seed=2)
    split = cumulant_split(z, v, y)
    assert isinstance(split, CumulantSplit)
    d = softmax_cumulants(z, v, 4, y)[1:]
    mean_log = d.abs().clamp_min(1e-12).log().mean(1).numpy()
    assert np.allclose(split.mean_log, mean_log, rtol=1e-12)
    direct = crbook.fit_rate(np.exp(mean_log), [1, 2, 3, 4])
    assert split.lam == pytest.approx(direct.lam, rel=1e-12)
    centred = v - v.mean(1, keepdim=True)
    scale = centred.norm(dim=1).log().mean().item()
    assert split.scale == pytest.approx(scale, rel=1e-12)
    assert split.lam == pytest.approx(split.scale + split.shape, abs=1e-12)
    assert np.allclose(split.mean_log_shape, mean_log - np.arange(1, 5) * scale)


def test_stretching_the_velocity_moves_only_the_scale_term():
    z, v, y = problem(seed=3)
    base = cumulant_split(z, v, y, clamp=1e-300)
    c = 2.5
    stretched = cumulant_split(z, c * v, y, clamp=1e-300)
    assert stretched.lam - base.lam == pytest.approx(math.log(c), abs=1e-10)
    assert stretched.scale - base.scale == pytest.approx(math.log(c), abs=1e-12)
    assert stretched.shape == pytest.approx(base.shape, abs=1e-10)


def test_margin_and_restrict():
    z, v, y = problem(seed=4)
    split = cumulant_split(z, v, y)
    rows = torch.arange(z.shape[0])
    others = z.clone()
    others[rows, y] = -math.inf
    margin = (z[rows, y] - others.amax(1)).numpy()
    assert np.allclose(split.margin, margin)
    keep = split.margin > 0
    assert 0 < keep.sum() < keep.size
    part = split.restrict(keep)
    direct = cumulant_split(z[keep], v[keep], y[keep])
    assert part.lam == pytest.approx(direct.lam, rel=1e-12)
    assert part.scale == pytest.approx(direct.scale, rel=1e-12)
    assert part.n_values == 4 * int(keep.sum())


def test_clamped_values_are_counted():
    z = torch.tensor([[40.0, 0.0, 0.0]], dtype=torch.float64)  # p_y ≈ 1 − 8e-18
    v = torch.tensor([[0.0, 1.0, -1.0]], dtype=torch.float64)
    split = cumulant_split(z, v, torch.tensor([0]))
    assert split.n_clamped == 4 and split.n_values == 4


def test_bad_input_raises_clear_errors():
    z, v, y = problem(rows=3)
    with pytest.raises(ValueError, match="velocity must have the shape"):
        softmax_cumulants(z, v[:, :5], 2, y)
    with pytest.raises(ValueError, match="labels must lie in"):
        softmax_cumulants(z, v, 2, y + 10)
    with pytest.raises(TypeError, match="floating"):
        softmax_cumulants(z.long(), v, 2, y)
    with pytest.raises(ValueError, match="order must be"):
        softmax_cumulants(z, v, -1, y)
    with pytest.raises(ValueError, match="at least 2 distinct"):
        cumulant_split(z, v, y, orders=[3, 3])
    flat = v.clone()
    flat[1] = 0.5
    with pytest.raises(ValueError, match=r"no spread .* rows \[1\]"):
        cumulant_split(z, flat, y)
    with pytest.raises(ValueError, match="selects no row"):
        cumulant_split(z, v, y).restrict(np.zeros(3, dtype=bool))
